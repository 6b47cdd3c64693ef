"""Robust training on the models users bring (issue: defences that keep the model).

BatchNorm statistics recalibrated after every epoch (the stale-statistics failure reproduced
on a tiny BatchNorm model and shown fixed), TRADES against a hand computation, FGSM-RS's
uniform start and its catastrophic-overfitting check, bit-identical resume for every new
objective, and every defence run on a CIFAR-shaped BatchNorm CNN.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from scipy import stats
from torch import nn

from boundaryscope import Classifier
from boundaryscope.attacks.gradient import uniform_ball
from boundaryscope.defenses import (
    CURE,
    FGSMRS,
    NFGSM,
    TRADES,
    DeepFoolFinetune,
    FGSMFinetune,
    GradAlign,
    Monitor,
    Objective,
    OverfittingCheck,
    PGDTraining,
    Standard,
    TrainConfig,
    fit,
    recalibrate_batchnorm,
)
from boundaryscope.defenses.objectives import TrainingStep
from tests.test_training import _blobs


def _bn_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)).double()


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((Classifier(model).predict(x) == y).float().mean())


@pytest.fixture(scope="module")
def trained_bn_mlp():
    x, y = _blobs(96)
    base = fit(_bn_mlp(), x, y, TrainConfig(epochs=20, lr=0.05, batch_size=16), progress=False)
    return base.model, x, y


def test_stale_batchnorm_statistics_reproduced_and_fixed(trained_bn_mlp):
    """SGD fine-tuning moves the weights faster than BatchNorm's moving averages follow.

    With the moving averages kept ("running") the eval-mode model loses most of its
    accuracy in one epoch; with the statistics recalibrated it keeps it (same weights: the
    training itself runs on batch statistics and is identical in both runs).
    """
    base, x, y = trained_bn_mlp
    assert _accuracy(base, x, y) > 0.95
    config = TrainConfig(epochs=1, lr=0.1, batch_size=8, schedule="constant")
    running = dataclasses.replace(config, batchnorm="running")
    stale = fit(Classifier(base), x, y, running, progress=False)
    fixed = fit(Classifier(base), x, y, config, progress=False)
    for name, weight in stale.model.named_parameters():
        assert torch.equal(weight, dict(fixed.model.named_parameters())[name])
    assert _accuracy(stale.model, x, y) < 0.6
    assert _accuracy(fixed.model, x, y) > 0.9


def test_recalibrated_statistics_are_the_batch_averages(trained_bn_mlp):
    """running_mean/var = average over batches of the layer input's batch mean/variance."""
    base, x, _ = trained_bn_mlp
    model = copy.deepcopy(base)
    model[1].running_mean.fill_(5.0)
    with torch.no_grad():
        hidden = model[0](x[:40])
    batches = hidden.split(16)
    expected_mean = torch.stack([b.mean(0) for b in batches]).mean(0)
    expected_var = torch.stack([b.var(0, unbiased=True) for b in batches]).mean(0)
    momentum = model[1].momentum
    assert recalibrate_batchnorm(Classifier(model), x[:40], 16) == 1
    torch.testing.assert_close(model[1].running_mean, expected_mean)
    torch.testing.assert_close(model[1].running_var, expected_var)
    assert model[1].momentum == momentum and not model.training
    assert (
        recalibrate_batchnorm(Classifier(nn.Sequential(nn.Linear(6, 3)).double().eval()), x, 8) == 0
    )


def test_trades_kl_and_loss_match_a_hand_computation():
    from boundaryscope.defenses.adversarial_training import trades_kl

    torch.manual_seed(1)
    a, b = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    p, q = a.softmax(1).numpy(), b.softmax(1).numpy()
    expected = torch.tensor([stats.entropy(p[i], q[i]) for i in range(5)], dtype=torch.float64)
    torch.testing.assert_close(trades_kl(a, b), expected)

    x, y = _blobs(12)
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double().eval()
    clf = Classifier(model, bounds=(0, 1))
    objective = TRADES(eps=0.1, beta=3.0, steps=4)
    generator = torch.Generator().manual_seed(9)
    replay = torch.Generator().manual_seed(9)
    loss, logits = objective.batch_loss(TrainingStep(clf, x, y, 0.0, generator))
    adversarial = objective.maximise_kl(clf, x, replay)
    assert (adversarial - x).abs().max() <= 0.1 + 1e-12
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    with torch.no_grad():
        natural, perturbed = model(x), model(adversarial)
        log_p, log_q = natural.log_softmax(1), perturbed.log_softmax(1)
        hand = -log_p[torch.arange(12), y] + 3.0 * (log_p.exp() * (log_p - log_q)).sum(1)
    torch.testing.assert_close(loss.detach(), hand)
    torch.testing.assert_close(logits.detach(), natural)
    # The inner maximiser raises the divergence well above the start's.
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=x.dtype)
    start = clf.clip(x + 0.001 * noise)
    with torch.no_grad():
        assert (
            trades_kl(natural, model(adversarial)).sum()
            > 10 * trades_kl(natural, model(start)).sum()
        )


@pytest.mark.parametrize("kind", [PGDTraining, TRADES, FGSMRS])
def test_eps_ramp_grows_the_radius_from_zero_and_then_changes_nothing(kind):
    """A ramped PGD-AT / TRADES / FGSM-RS: clean at the start, half the radius half-way,
    then the same batch loss bit for bit as the unramped objective (same generator draws)."""
    x, y = _blobs(12)
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double().eval()
    clf = Classifier(model, bounds=(0, 1))
    sizes = {} if kind is FGSMRS else {"steps": 5}
    plain, ramped = kind(eps=0.2, **sizes), kind(eps=0.2, eps_ramp_epochs=2.0, **sizes)

    def loss(objective, progress):
        step = TrainingStep(clf, x, y, progress, torch.Generator().manual_seed(4))
        value, _ = objective.batch_loss(step)
        return value.detach(), step.backward_rows

    clean = nn.functional.cross_entropy(model(x), y, reduction="none").detach()
    at_start, rows = loss(ramped, 0.0)
    torch.testing.assert_close(at_start, clean)
    assert rows == 0  # no inner attack at radius 0
    after, _ = loss(ramped, 2.5)
    reference, _ = loss(plain, 2.5)
    assert torch.equal(after, reference)
    half_way, _ = loss(ramped, 1.0)
    assert float((half_way - clean).abs().max()) > 0  # the attack ran, at radius 0.1
    if kind is not TRADES:
        attack = ramped.attack(0, 0.1)
        moved = attack(clf, x, y).adversarial - x
        assert attack.eps == 0.1 and float(moved.abs().max()) <= 0.1 + 1e-12
    with pytest.raises(ValueError, match="eps_ramp_epochs >= 0"):
        kind(eps=0.2, eps_ramp_epochs=-1.0)


def test_fgsm_rs_start_is_uniform_in_the_ball_and_the_step_is_the_papers(seed):
    from boundaryscope._random import image_generators

    x = torch.rand(400, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    start = uniform_ball(image_generators(x, 3), 0.2, math.inf, x)
    assert start.abs().max() <= 0.2
    assert stats.kstest(((start + 0.2) / 0.4).flatten().numpy(), "uniform").pvalue > 1e-3
    # One step of 1.25 ε along sign ∇ℓ from that start, projected back into the ball.
    x, y = _blobs(30, d=5)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 3)).double().eval()
    clf = Classifier(model, bounds=(0, 1))
    objective = FGSMRS(eps=0.1)
    result = objective.attack(seed=3)(clf, x, y)
    begin = clf.clip(x + uniform_ball(image_generators(x, 3), 0.1, math.inf, x))
    _, grad = clf.loss_gradient(begin, y)
    expected = clf.clip(x + (begin - x + 0.125 * grad.sign()).clamp(-0.1, 0.1))
    torch.testing.assert_close(result.adversarial, expected)


def test_n_fgsm_point_is_noise_plus_one_signed_step_unprojected():
    """N-FGSM by hand: η ~ U[−2ε, 2ε] from the run's generator, one step of ε, no ball."""
    x, y = _blobs(40, d=5)
    torch.manual_seed(0)
    clf = Classifier(nn.Sequential(nn.Linear(5, 3)).double().eval(), bounds=(-10, 10))
    objective = NFGSM(eps=0.1)
    step = TrainingStep(clf, x, y, 0.0, torch.Generator().manual_seed(7))
    point = objective.perturb(step, 0.1)
    generator = torch.Generator().manual_seed(7)
    noise = uniform_ball([generator] * x.shape[0], 0.2, math.inf, x)
    _, grad = clf.loss_gradient(x + noise, y)
    torch.testing.assert_close(point, x + noise + 0.1 * grad.sign())
    assert step.backward_rows == x.shape[0]
    # Not projected: the perturbations fill [−3ε, 3ε], past the ball FGSM-RS stays in.
    assert float((point - x).abs().max()) > 0.25
    assert float((point - x).abs().max()) <= 0.3 + 1e-12
    with pytest.raises(ValueError, match="p = inf"):
        NFGSM(eps=0.1, p=2.0)


def _softplus_mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 7), nn.Softplus(), nn.Linear(7, 3)).double().eval()


def test_gradient_alignment_against_separate_gradients_and_finite_differences():
    """cos of two input gradients computed one by one, and d(cos)/dθ by central differences."""
    from boundaryscope.defenses.adversarial_training import gradient_alignment

    x, y = _blobs(6, d=5)
    model = _softplus_mlp()
    clf = Classifier(model, bounds=(-1, 2))
    eta = 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    cos = gradient_alignment(clf, x, y, eta)
    values = cos.detach()
    for i in range(x.shape[0]):
        g0 = clf.loss_gradient(x[i : i + 1], y[i : i + 1])[1].flatten()
        g1 = clf.loss_gradient(clf.clip(x[i : i + 1] + eta[i : i + 1]), y[i : i + 1])[1].flatten()
        assert float(values[i]) == pytest.approx(
            float(g0 @ g1 / (g0.norm() * g1.norm())), abs=1e-10
        )
    # The graph reaches the parameters: ∂ Σ cos / ∂W against central differences.
    weight = model[0].weight
    (analytic,) = torch.autograd.grad(cos.sum(), weight)
    h, k = 1e-6, (2, 3)
    with torch.no_grad():
        weight[k] += h
        up = float(gradient_alignment(clf, x, y, eta).sum())
        weight[k] -= 2 * h
        down = float(gradient_alignment(clf, x, y, eta).sum())
        weight[k] += h
    assert float(analytic[k]) == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-8)


def test_gradalign_loss_is_fgsm_cross_entropy_plus_the_alignment_term():
    from boundaryscope.defenses.adversarial_training import gradient_alignment

    x, y = _blobs(12, d=5)
    clf = Classifier(_softplus_mlp(), bounds=(0, 1))
    objective = GradAlign(eps=0.1, lam=0.7)
    step = TrainingStep(clf, x, y, 0.0, torch.Generator().manual_seed(5))
    loss, logits = objective.batch_loss(step)
    _, grad = clf.loss_gradient(x, y)
    fgsm = clf.clip(x + 0.1 * grad.sign())  # FGSM: one step of ε from x, no random start
    torch.testing.assert_close(logits, clf.scores(fgsm))
    generator = torch.Generator().manual_seed(5)
    eta = uniform_ball([generator] * x.shape[0], 0.1, math.inf, x)
    assert eta.abs().max() <= 0.1
    expected = nn.functional.cross_entropy(clf.scores(fgsm), y, reduction="none") + 0.7 * (
        1 - gradient_alignment(clf, x, y, eta)
    )
    torch.testing.assert_close(loss, expected)
    assert step.backward_rows == 3 * x.shape[0]  # FGSM's gradient and the two aligned ones
    assert objective.overfitting_check() is not None
    with pytest.raises(ValueError, match="lam"):
        GradAlign(lam=-1.0)


class _Sabotage(Objective):
    """Cross-entropy for one epoch, then on flipped labels: robustness falls at epoch 2."""

    name = "sabotage"

    def overfitting_check(self) -> OverfittingCheck | None:
        return OverfittingCheck(eps=0.02, steps=3, n=24)

    def batch_loss(self, step: TrainingStep) -> tuple[torch.Tensor, torch.Tensor]:
        logits = step.logits(step.x)
        labels = step.y if step.progress < 1 else (step.y + 1) % 3
        return nn.functional.cross_entropy(logits, labels, reduction="none"), logits


def test_overfitting_check_fires_rolls_back_and_stops(tmp_path):
    x, y = _blobs(48)
    torch.manual_seed(0)
    untrained = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).double().eval()
    model = fit(untrained, x, y, TrainConfig(epochs=20, lr=0.1, batch_size=8), progress=False).model
    config = TrainConfig(epochs=4, lr=0.2, batch_size=8, schedule="constant")
    with pytest.warns(UserWarning, match="catastrophic overfitting at epoch 2"):
        run = fit(model, x, y, config, objective=_Sabotage(), run_dir=tmp_path / "r")
    records = run.history.records
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[1]["overfitting"] == 1.0
    assert records[1]["check_pgd_accuracy"] < records[0]["check_pgd_accuracy"] - 0.2
    one = dataclasses.replace(config, epochs=1)
    after_one = fit(model, x, y, one, objective=_Sabotage(), progress=False)
    for key, value in after_one.model.state_dict().items():
        assert torch.equal(value, run.model.state_dict()[key]), key
    resumed = fit(model, x, y, config, objective=_Sabotage(), run_dir=tmp_path / "r", resume=True)
    assert resumed.resumed_from == 4 and len(resumed.history.records) == 2
    assert OverfittingCheck(eps=0.1).fired([{"check_pgd_accuracy": 0.5}], 0.29)
    assert not OverfittingCheck(eps=0.1).fired([{"check_pgd_accuracy": 0.5}], 0.31)
    assert not OverfittingCheck(eps=0.1).fired([], 0.0)


@pytest.mark.parametrize(
    "objective",
    [
        TRADES(eps=0.05, steps=2),
        FGSMRS(eps=0.05),
        NFGSM(eps=0.05),
        CURE(lam=1.0, h=0.1, ramp_epochs=1.0),
        GradAlign(eps=0.05, lam=0.5),
    ],
    ids=["trades", "fgsm-rs", "n-fgsm", "cure", "gradalign"],
)
def test_resume_is_bit_identical_for_the_new_objectives_on_a_batchnorm_model(tmp_path, objective):
    x, y = _blobs(32)
    config = TrainConfig(epochs=3, lr=0.05, batch_size=8, seed=4)
    monitor = Monitor(x[:8], y[:8], rho_p=None)
    clf = Classifier(_bn_mlp().eval(), bounds=(0, 1))
    settings = {"objective": objective, "monitor": monitor, "progress": False}
    full = fit(clf, x, y, config, run_dir=tmp_path / "a", **settings)

    class StopError(Exception):
        pass

    def stop(epoch: int, record: dict[str, float]) -> None:
        if epoch == 1:
            raise StopError

    with pytest.raises(StopError):
        fit(clf, x, y, config, run_dir=tmp_path / "b", on_epoch_end=stop, **settings)
    resumed = fit(clf, x, y, config, run_dir=tmp_path / "b", resume=True, **settings)
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in full.history.records]
    assert strip == [
        {k: v for k, v in r.items() if k != "seconds"} for r in resumed.history.records
    ]


def _cifar_bn_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(4),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )  # fmt: skip


@pytest.mark.parametrize(
    "objective",
    [
        Standard(),
        DeepFoolFinetune(steps=5),
        FGSMFinetune(),
        PGDTraining(eps=0.03, steps=2),
        TRADES(eps=0.03, steps=2),
        FGSMRS(eps=0.03),
        NFGSM(eps=0.03),
        GradAlign(eps=0.03),
        CURE(lam=1.0, h=0.5, ramp_epochs=0.5),
    ],
    ids=lambda o: o.name,
)
def test_every_defence_runs_on_a_cifar_shaped_batchnorm_cnn(objective):
    """One short epoch each: finite loss, user's module untouched, statistics recalibrated."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 32, 32, generator=generator)
    y = torch.arange(16) % 10
    model = _cifar_bn_cnn().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(epochs=1, lr=1e-3, batch_size=8, optimizer="adam")
    run = fit(model, x, y, config, objective=objective, progress=False)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    record = run.history.records[-1]
    assert math.isfinite(record["loss"]) and record["backward_per_image"] >= 1
    trained = run.model
    changed = any(
        not torch.equal(v, before[k]) for k, v in trained.state_dict().items() if "weight" in k
    )
    assert changed and not trained.training
    expected = trained[0](x)  # the first BatchNorm's input, batches of 8
    mean = torch.stack([b.mean((0, 2, 3)) for b in expected.detach().split(8)]).mean(0)
    torch.testing.assert_close(trained[1].running_mean, mean, rtol=1e-4, atol=1e-5)


def test_monitor_tracks_fgsm_estimate_and_loss_curvature_beside_rho():
    """Fig. 3.9's FGSM estimate and Fig. 8.10's curvature, each from its own reference."""
    from boundaryscope.attacks import smallest_fooling_epsilon
    from boundaryscope.geometry.curvature import loss_curvature

    x, y = _blobs(24)
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 12), nn.Softplus(), nn.Linear(12, 3)).double().eval()
    clf = Classifier(model, bounds=(0, 1))
    record = Monitor(x, y, rho_p=2.0, curvature_n=6, fgsm_rho=True)(clf)
    correct = clf.predict(x) == y
    search = smallest_fooling_epsilon(clf, x[correct], y[correct])
    assert record["rho_fgsm"] == pytest.approx(
        search.epsilon / float(x[correct].abs().amax(1).mean())
    )
    profile = loss_curvature(clf, x[:6], y[:6], k=1)
    top = profile.eigenvalues[:, 0]
    assert record["loss_curvature_top"] == pytest.approx(float(top.median()))
    relative = float((top / profile.gradient_norm).median())
    assert record["loss_curvature_relative"] == pytest.approx(relative)
    assert 0 <= record["loss_alignment"] <= 1


def test_recipe_settings_follow_the_base_models_card():
    """SGD at a fraction of a known rate; Adam 1e-4 without a card; CURE's own Adam."""
    from boundaryscope.defenses.catalogue import DEFENSES
    from boundaryscope.defenses.recipes import defense_objective, recipe_config

    card = {"config": {"lr": 0.05, "optimizer": "sgd"}}
    pgd = recipe_config(DEFENSES["pgd"], card)
    assert (pgd.optimizer, pgd.lr, pgd.epochs) == ("sgd", pytest.approx(0.01), 5)
    unknown = recipe_config(DEFENSES["trades"], {})
    assert (unknown.optimizer, unknown.lr) == ("adam", 1e-4)
    adam_card = {"config": {"lr": 0.01, "optimizer": "adam"}}
    assert recipe_config(DEFENSES["standard"], adam_card).optimizer == "adam"
    cure = recipe_config(DEFENSES["cure"], card)
    assert (cure.optimizer, cure.lr, cure.final_lr, cure.epochs) == ("adam", 1e-3, 1e-5, 20)
    assert defense_objective("cure", box_width=2.0) == CURE(lam=4.0, h=2.0, ramp_epochs=5.0)
    assert defense_objective("trades", box_width=2.0) == TRADES(eps=0.4)
    assert defense_objective("fgsm-rs", eps=0.1) == FGSMRS(eps=0.1)
    assert defense_objective("n-fgsm", eps=0.1, ramp_epochs=2.0) == NFGSM(
        eps=0.1, eps_ramp_epochs=2.0
    )
    assert defense_objective("gradalign", eps=0.1) == GradAlign(eps=0.1, lam=0.2)
    assert defense_objective("gradalign", eps=0.1, lam=1.0) == GradAlign(eps=0.1, lam=1.0)
    assert defense_objective("cure", lam=2.0).lam == 2.0
    with pytest.raises(ValueError, match="final_lr"):
        TrainConfig(lr=1e-3, final_lr=1e-2)
    with pytest.raises(ValueError, match="batchnorm"):
        TrainConfig(batchnorm="frozen")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eps_rule"):
        FGSMFinetune(eps_rule="half")  # type: ignore[arg-type]


def test_cli_trains_trades_and_fgsm_rs_runs(tmp_path, capsys):
    import json

    from boundaryscope.cli import main

    for defence in ("trades", "fgsm-rs"):
        run = tmp_path / defence
        argv = ["train", "--defense", defence, "--model", "zoo:fc500-150-10-mnist",
                "--epochs", "1", "--train-n", "32", "--monitor-n", "16",
                "--out", str(run)]  # fmt: skip
        assert main(argv) == 0
        card = json.loads((run / "train.json").read_text())
        assert card["objective"]["objective"] == defence and card["objective"]["eps"] == 0.2
        assert card["objective"].get("beta", 1.0) == 1.0  # TRADES' own default, not restated
        assert card["config"]["optimizer"] == "sgd" and card["config"]["lr"] == pytest.approx(0.01)
        assert card["config"]["batchnorm"] == "recalibrate"
    assert "check_pgd_accuracy" in card["history"][-1]


class _SabotageUnchecked(_Sabotage):
    def overfitting_check(self) -> OverfittingCheck | None:
        return None


def test_accuracy_budget_stops_and_keeps_the_epoch_before(tmp_path):
    """max_accuracy_drop: the first epoch more than the budget below the start is undone."""
    x, y = _blobs(48)
    torch.manual_seed(0)
    untrained = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).double().eval()
    model = fit(untrained, x, y, TrainConfig(epochs=20, lr=0.1, batch_size=8), progress=False).model
    monitor = Monitor(x, y, rho_p=None)
    config = TrainConfig(
        epochs=4, lr=0.2, batch_size=8, schedule="constant", max_accuracy_drop=0.03
    )
    with pytest.warns(UserWarning, match="more than 3% below"):
        run = fit(model, x, y, config, objective=_SabotageUnchecked(), monitor=monitor)
    records = run.history.records
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert records[2]["over_budget"] == 1.0 and records[2]["rolled_back"] == 1.0
    assert records[2]["test_accuracy"] < records[0]["test_accuracy"] - 0.03
    one = dataclasses.replace(config, epochs=1)
    after_one = fit(model, x, y, one, objective=_SabotageUnchecked(), progress=False)
    for key, value in after_one.model.state_dict().items():
        assert torch.equal(value, run.model.state_dict()[key]), key
    gentle = dataclasses.replace(config, lr=0.01)
    steady = fit(model, x, y, gentle, objective=Standard(), monitor=monitor, progress=False)
    assert len(steady.history.records) == 5 and not any(
        "over_budget" in r for r in steady.history.records
    )
    with pytest.raises(ValueError, match="max_accuracy_drop"):
        TrainConfig(max_accuracy_drop=0.0)


def test_ramp_epochs_default_per_defence():
    from boundaryscope.defenses.recipes import defense_objective

    assert defense_objective("pgd").eps_ramp_epochs == 0.0  # the full radius from the start
    assert defense_objective("trades", ramp_epochs=3.0).eps_ramp_epochs == 3.0
    assert defense_objective("cure").ramp_epochs == 5.0  # the seed's h ramp
    assert defense_objective("cure", ramp_epochs=2.0).ramp_epochs == 2.0
