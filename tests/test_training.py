"""The training loop and its objectives (thesis §3.3, §8.4): references, invariants, resume."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from boundaryscope import Classifier
from boundaryscope.defenses import (
    CURE,
    DeepFoolFinetune,
    FGSMFinetune,
    Monitor,
    PGDTraining,
    Standard,
    TrainConfig,
    cure_penalty,
    cure_step_size,
    fit,
)
from tests.conftest import tiny_mlp


def _blobs(n: int = 48, d: int = 6, classes: int = 3, seed: int = 0):
    """Separable Gaussian blobs inside [0, 1]^d (float64)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(classes, d, generator=generator, dtype=torch.float64) * 0.6 + 0.2
    y = torch.arange(n) % classes
    x = centres[y] + 0.05 * torch.randn(n, d, generator=generator, dtype=torch.float64)
    return x.clamp(0, 1), y


def _cross_entropy_input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """∇ₓ of the summed cross-entropy by central finite differences (independent of autograd)."""
    step = 1e-6
    grad = torch.zeros_like(x)
    with torch.no_grad():
        for j in range(x.shape[1]):
            shift = torch.zeros_like(x)
            shift[:, j] = step
            up = nn.functional.cross_entropy(model(x + shift), y, reduction="none")
            down = nn.functional.cross_entropy(model(x - shift), y, reduction="none")
            grad[:, j] = (up - down) / (2 * step)
    return grad


def test_cure_penalty_matches_finite_differences():
    model = tiny_mlp(d=6, classes=3)
    clf = Classifier(model, bounds=(0, 1))
    x, y = _blobs(8)
    h = 0.3
    penalty, z = cure_penalty(clf, x, y, h)
    g0 = _cross_entropy_input_gradient(model, x, y)
    expected_z = torch.sign(g0) / torch.sign(g0).norm(dim=1, keepdim=True)
    assert torch.allclose(z, expected_z)
    assert torch.allclose(z.norm(dim=1), torch.ones(8, dtype=torch.float64))
    g1 = _cross_entropy_input_gradient(model, x + h * expected_z, y)
    reference = (g1 - g0).pow(2).sum(dim=1)
    assert torch.allclose(penalty.detach(), reference, rtol=1e-5, atol=1e-9)
    assert bool((reference > 0).all())  # a curved loss: the test can fail


def test_cure_penalty_parameter_gradient_matches_finite_differences():
    model = tiny_mlp(d=4, classes=3, seed=1)
    clf = Classifier(model, bounds=(0, 1))
    x, y = _blobs(5, d=4, seed=1)
    h = 0.25
    penalty, _ = cure_penalty(clf, x, y, h)
    weight = model[1].weight
    (autograd,) = torch.autograd.grad(penalty.sum(), weight)
    numeric = torch.zeros_like(weight)
    step = 1e-6
    for index in [(0, 0), (3, 2), (7, 1), (15, 3)]:
        with torch.no_grad():
            weight[index] += step
        up = float(cure_penalty(clf, x, y, h)[0].detach().sum())
        with torch.no_grad():
            weight[index] -= 2 * step
        down = float(cure_penalty(clf, x, y, h)[0].detach().sum())
        with torch.no_grad():
            weight[index] += step
        numeric[index] = (up - down) / (2 * step)
        assert float(autograd[index]) == pytest.approx(float(numeric[index]), rel=1e-4, abs=1e-8)
    assert float(numeric.abs().max()) > 0  # the checked entries do move the penalty


def test_cure_penalty_is_zero_for_a_loss_linear_in_an_affine_model(seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 4)).double().eval()
    clf = Classifier(model, bounds=(0, 1))
    x = torch.rand(6, 5, dtype=torch.float64)
    y = torch.randint(0, 4, (6,))

    def negative_score(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return -scores.gather(1, labels[:, None])[:, 0]

    linear, _ = cure_penalty(clf, x, y, 1.0, loss=negative_score)
    assert torch.allclose(linear, torch.zeros(6, dtype=torch.float64), atol=1e-24)
    curved, _ = cure_penalty(clf, x, y, 1.0)  # the softmax bends the cross-entropy
    assert bool((curved > 1e-8).all())


def test_cure_h_ramp():
    assert cure_step_size(1.5, 5, 0.0) == 0.0
    assert cure_step_size(1.5, 5, 2.5) == pytest.approx(0.75)
    assert cure_step_size(1.5, 5, 5.0) == pytest.approx(1.5)
    assert cure_step_size(1.5, 5, 12.0) == pytest.approx(1.5)
    assert cure_step_size(1.5, 0, 0.0) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="lam"):
        CURE(lam=-1.0)


def test_cure_with_zero_weight_is_standard_training():
    x, y = _blobs(30)
    config = TrainConfig(epochs=2, lr=0.1, batch_size=8, seed=3)
    standard = fit(tiny_mlp(), x, y, config, objective=Standard(), progress=False)
    cure = fit(tiny_mlp(), x, y, config, objective=CURE(lam=0.0), progress=False)
    for a, b in zip(standard.model.parameters(), cure.model.parameters(), strict=True):
        assert torch.equal(a, b)
    weighted = fit(tiny_mlp(), x, y, config, objective=CURE(lam=1.0, h=0.5, ramp_epochs=1))
    assert weighted.history.records[-1]["backward_per_image"] == pytest.approx(3.0)
    assert standard.history.records[-1]["backward_per_image"] == pytest.approx(1.0)


def test_pgd_training_attack_stays_in_ball_and_box(lenet_clf, mnist_test):
    x, y = mnist_test.x[:16], mnist_test.y[:16]
    objective = PGDTraining(eps=0.1, steps=5)
    result = objective.attack(seed=7)(lenet_clf, x, y)
    delta = result.adversarial - x
    assert float(delta.abs().max()) <= 0.1 + 1e-6
    assert float(result.adversarial.min()) >= 0.0 and float(result.adversarial.max()) <= 1.0
    assert bool((result.iterations == 5).all())  # no early stop: every step is taken
    clean_loss = lenet_clf.loss_gradient(x, y)[0]
    adversarial_loss = lenet_clf.loss_gradient(result.adversarial, y)[0]
    assert float(adversarial_loss.mean()) > float(clean_loss.mean())


def test_fit_never_touches_the_users_module(seed):
    model = tiny_mlp(seed=seed).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _blobs(24)
    x_before = x.clone()
    clf = Classifier(model.eval(), bounds=(0, 1))
    model.train()
    result = fit(
        clf, x, y, TrainConfig(epochs=1, lr=0.1, batch_size=8), objective=DeepFoolFinetune()
    )
    assert model.training  # its mode is left as it was
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(x, x_before)
    assert result.model is not model and not result.model.training
    assert any(
        not torch.equal(a, b)
        for a, b in zip(model.parameters(), result.model.parameters(), strict=True)
    )


def test_deepfool_finetune_magnifies_the_minimal_perturbation():
    model = tiny_mlp(seed=2)
    clf = Classifier(model, bounds=(-50, 50))  # a box that never clips
    x, _ = _blobs(12)
    y = clf.predict(x)  # an untrained net: attack its own labels, so every image moves
    generator = torch.Generator()
    one, facts = DeepFoolFinetune(alpha=1.0).prepare(clf, x, y, generator)
    three, _ = DeepFoolFinetune(alpha=3.0).prepare(clf, x, y, generator)
    assert facts["perturbed_share"] == pytest.approx(1.0)
    assert torch.allclose(three - x, 3 * (one - x), atol=1e-10)
    assert bool((clf.predict(one) != clf.predict(x)).all())  # α = 1 points are adversarial


def test_fgsm_finetune_uses_fgsm_steps():
    model = tiny_mlp(seed=2)
    clf = Classifier(model, bounds=(0, 1))
    x, y = _blobs(12)
    perturbed, facts = FGSMFinetune(eps=0.05).prepare(clf, x, y, torch.Generator())
    moved = (perturbed - x).abs()
    inside = (x > 0.05) & (x < 0.95)
    assert torch.allclose(moved[inside], torch.full_like(moved[inside], 0.05))
    assert facts["eps"] == 0.05


def _dropout_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3)).double()


def test_resume_equals_an_uninterrupted_run(tmp_path):
    x, y = _blobs(40)
    monitor = Monitor(x[:12], y[:12], rho_p=2.0)
    config = TrainConfig(epochs=3, lr=0.05, batch_size=8, seed=5, schedule="cosine")
    objective = PGDTraining(eps=0.05, steps=2)
    clf = Classifier(_dropout_mlp().eval(), bounds=(0, 1))
    full = fit(clf, x, y, config, objective=objective, monitor=monitor, run_dir=tmp_path / "a")

    class SimulatedKillError(Exception):
        pass

    def stop_after_two(epoch: int, record: dict[str, float]) -> None:
        if epoch == 2:
            raise SimulatedKillError

    run = tmp_path / "b"
    with pytest.raises(SimulatedKillError):
        fit(clf, x, y, config, objective=objective, monitor=monitor, run_dir=run,
            on_epoch_end=stop_after_two)  # fmt: skip
    with pytest.raises(ValueError, match="resume"):
        fit(clf, x, y, config, objective=objective, monitor=monitor, run_dir=run)
    with pytest.raises(ValueError, match="other settings"):
        fit(clf, x, y, TrainConfig(epochs=3, lr=0.01, batch_size=8, seed=5),
            objective=objective, monitor=monitor, run_dir=run, resume=True)  # fmt: skip
    resumed = fit(clf, x, y, config, objective=objective, monitor=monitor, run_dir=run, resume=True)
    assert resumed.resumed_from == 2
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key

    def numbers(records):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in records]

    assert numbers(full.history.records) == numbers(resumed.history.records)
    assert len(full.history.records) == 4 and full.history.records[0]["epoch"] == 0


def test_fit_checks_its_inputs():
    x, y = _blobs(10)
    with pytest.raises(ValueError, match="int64"):
        fit(tiny_mlp(), x, y.float(), TrainConfig(epochs=1))
    with pytest.raises(ValueError, match="bounds"):
        fit(tiny_mlp(), x + 2, y, TrainConfig(epochs=1))
    with pytest.raises(TypeError, match="Module"):
        fit("model", x, y)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="eps"):
        PGDTraining(eps=math.nan)


def test_defended_model_loads_with_weights_only(tmp_path, mnist_test):
    from boundaryscope.defenses.recipes import train_defense
    from boundaryscope.zoo import load_model

    card = train_defense(
        "zoo:fc500-150-10-mnist", "deepfool", tmp_path / "run", train_n=64, monitor_n=16,
        config=TrainConfig(epochs=1, lr=0.01, batch_size=32), progress=False,
    )  # fmt: skip
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert saved["arch"] == "fc500-150-10" and set(saved) >= {"state_dict", "bounds"}
    loaded = load_model(str(tmp_path / "run"))
    clf = Classifier(loaded.module)
    accuracy = float((clf.predict(mnist_test.x) == mnist_test.y).float().mean())
    assert accuracy == pytest.approx(card["test_accuracy"])
    assert [r["epoch"] for r in card["history"]] == [0, 1]
    assert card["preparation"]["perturbed_share"] > 0.9
