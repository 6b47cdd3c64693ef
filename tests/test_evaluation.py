"""APGD, FAB-T, Square and the evaluator against closed forms and constructed failures.

On an affine classifier the minimal l_p distance of x to the region of another class is
``min_k (f_y − f_k)(x) / ‖w_y − w_k‖_q`` (q the dual exponent; the box is far away), so
a budget just above it must be broken and one below it never: the reference every budgeted
attack is held to here.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor, nn

from boundaryscope import Classifier
from boundaryscope.attacks import APGD, APGDT, FABT, Square, dlr_loss, dlr_targeted_loss
from boundaryscope.attacks.apgd import checkpoints
from boundaryscope.evaluation import EvaluationConfig, evaluate
from boundaryscope.norms import dual_exponent, lp_norm

from .test_hardening import NonFiniteOffData


def affine_images(seed: int = 0) -> tuple[Classifier, nn.Module, Tensor]:
    """An affine 4-class model on 1×4×4 images, inputs well inside a wide box."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4)).double().eval()
    clf = Classifier(model, bounds=(-20.0, 20.0))
    x = torch.rand(12, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return clf, model, x


def distance_to_boundary(model: nn.Module, x: Tensor, p: float) -> Tensor:
    """Closed form: ``min_k (f_y − f_k) / ‖w_y − w_k‖_q`` per image."""
    linear = model[1]
    scores = model(x)
    y = scores.argmax(1)
    q = dual_exponent(p)
    out = []
    for i in range(x.shape[0]):
        gaps = [
            (scores[i, y[i]] - scores[i, k])
            / torch.linalg.vector_norm(linear.weight[y[i]] - linear.weight[k], ord=q)
            for k in range(scores.shape[1])
            if k != y[i]
        ]
        out.append(torch.stack(gaps).min())
    return torch.stack(out).detach()


ATTACKS = {
    "apgd-ce": lambda eps, p: APGD(eps=eps, p=p, steps=100),
    "apgd-dlr": lambda eps, p: APGD(eps=eps, p=p, steps=100, loss="dlr"),
    "apgd-t": lambda eps, p: APGDT(eps=eps, p=p, steps=50, targets=3),
    "fab-t": lambda eps, p: FABT(eps=eps, p=p, steps=10, targets=3),
}


# The targeted attacks reach the nearest boundary exactly (the targeted loss is linear in x
# on an affine model, maximised at the minimal point); untargeted CE/DLR ascent maximises
# another function of the logits, so they are held to a wider margin above the distance.
EXACT = {"apgd-t": 1.02, "fab-t": 1.02, "apgd-ce": 2.0, "apgd-dlr": 2.0}


@pytest.mark.parametrize("p", [math.inf, 2.0])
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_budgeted_attacks_succeed_beyond_the_closed_form_distance_and_never_below(name, p):
    clf, model, x = affine_images()
    distance = distance_to_boundary(model, x, p)
    for scale, must in ((EXACT[name], True), (0.98, False)):
        for i in range(x.shape[0]):
            attack = ATTACKS[name](float(distance[i]) * scale, p)
            result = attack(clf, x[i : i + 1])
            assert bool(result.success[0]) is must, (name, p, scale, i)
            assert float(result.norms[0]) <= attack.eps * (1 + 1e-6) or not must


@pytest.mark.parametrize("p", [math.inf, 2.0])
def test_square_breaks_an_affine_model_beyond_the_distance_and_never_below(p):
    clf, model, x = affine_images(1)
    distance = distance_to_boundary(model, x, p)
    for i in range(6):
        below = Square(eps=float(distance[i]) * 0.98, p=p, queries=300)(clf, x[i : i + 1])
        assert not bool(below.success[0])
    if math.isinf(p):  # l∞: the optimum is a vertex of the ball, which Square samples
        above = [
            Square(eps=float(distance[i]) * 1.5, p=p, queries=1000)(clf, x[i : i + 1]).success
            for i in range(6)
        ]
        assert int(torch.cat(above).sum()) >= 5


BUDGETED = [
    APGD(eps=0.05, steps=15),
    APGD(eps=0.8, p=2, steps=15),
    APGDT(eps=0.05, steps=10, targets=2),
    APGDT(eps=0.8, p=2, steps=10, targets=2),
    FABT(eps=0.05, steps=10, targets=2),
    FABT(eps=0.8, p=2, steps=10, targets=2),
    Square(eps=0.05, queries=60),
    Square(eps=0.8, p=2, queries=60),
]


@pytest.mark.parametrize("attack", BUDGETED, ids=repr)
def test_budget_and_box_always_hold(attack, lenet_clf, mnist_test):
    x, y = mnist_test.x[:6], mnist_test.y[:6]
    result = attack(lenet_clf, x, y)
    norms = lp_norm(result.perturbation, attack.p)
    assert (norms <= attack.eps * (1 + 1e-5)).all()
    assert result.adversarial.min() >= 0 and result.adversarial.max() <= 1


@pytest.mark.parametrize("attack", BUDGETED, ids=repr)
def test_same_seed_same_bits_at_any_batch_size(attack, mnist_test):
    # float64 and a dense model: the model's own numerics do not depend on the batch (a
    # float32 convolution may round differently at another batch size), so any difference
    # would be the attack's.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.Tanh(), nn.Linear(32, 10))
    clf = Classifier(model.double().eval())
    x, y = mnist_test.x[:6].double(), mnist_test.y[:6]
    whole = attack(clf, x, y)
    attack.batch_size = 4
    split = attack(clf, x, y)
    attack.batch_size = 256
    assert torch.equal(split.adversarial, whole.adversarial)
    assert torch.equal(attack(clf, x[3:4], y[3:4]).adversarial[0], whole.adversarial[3])


def test_dlr_losses_against_hand_computation():
    z = torch.tensor([[3.0, 1.0, 2.5, -1.0, 0.5]])
    y, t = torch.tensor([0]), torch.tensor([4])
    # sorted: 3.0, 2.5, 1.0, 0.5, -1.0
    assert float(dlr_loss(z, y)) == pytest.approx(-(3.0 - 2.5) / (3.0 - 1.0))
    assert float(dlr_targeted_loss(z, y, t)) == pytest.approx(
        -(3.0 - 0.5) / (3.0 - (1.0 + 0.5) / 2)
    )
    # Scale invariance: the DLR of 10 z equals that of z.
    assert float(dlr_loss(10 * z, y)) == pytest.approx(float(dlr_loss(z, y)))


def test_checkpoints_follow_the_papers_schedule():
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


# ---------------------------------------------------------------------- the evaluator
def test_the_robust_set_never_grows_when_an_attack_is_added(lenet_clf, mnist_test):
    x, y = mnist_test.x[:30], mnist_test.y[:30]
    eps = [0.05, 0.1, 0.15]
    quick = EvaluationConfig(minimal_steps=5, apgd_steps=10, targets=2, fab_steps=5,
                             square_queries=50)  # fmt: skip
    results = {}
    for attacks in [(), ("apgd-ce",), ("apgd-ce", "apgd-t"), ("apgd-ce", "apgd-t", "square")]:
        config = EvaluationConfig(**{**quick.__dict__, "attacks": attacks})
        results[attacks] = evaluate(lenet_clf, x, y, eps, config=config)
    ordered = list(results.values())
    for smaller, larger in itertools.pairwise(ordered):
        for e in eps:
            assert not (larger.robust(e) & ~smaller.robust(e)).any()
    full = ordered[-1]
    for a, b in itertools.pairwise(eps):  # robust sets shrink as ε grows
        assert not (full.robust(b) & ~full.robust(a)).any()
    # Every image broken at ε names the stage that found a point within ε.
    for e in eps:
        for i, stage in enumerate(full.broken_by(e)):
            if stage in ("", "clean"):
                assert (stage == "clean") == (not bool(full.correct[i]))
                continue
            assert float(full.found[stage][i]) <= e * (1 + 1e-5)


def test_non_finite_outputs_never_count_in_the_evaluation():
    clf = Classifier(NonFiniteOffData(math.nan).eval(), bounds=(0.0, 1.0))
    x = 0.4 + 0.2 * torch.rand(8, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    result = evaluate(clf, x, clf.predict(x), [0.2, 0.5], config="quick")
    assert result.robust_accuracy(0.5) == result.clean_accuracy == 1.0
    assert {c.name for c in result.fired} == {"non_finite"}


class Quantised(nn.Module):
    """Input quantisation in front of a model: its gradient is zero almost everywhere."""

    def __init__(self, model: nn.Module, levels: int = 4) -> None:
        super().__init__()
        self.model, self.levels = model, levels

    def forward(self, x: Tensor) -> Tensor:
        return self.model(torch.round(x * self.levels) / self.levels)


def test_a_gradient_masked_model_is_flagged_and_measured_by_the_black_box(lenet_clf, mnist_test):
    masked = Classifier(Quantised(lenet_clf.model), bounds=(0.0, 1.0))
    x, y = mnist_test.x[:24], mnist_test.y[:24]
    config = EvaluationConfig(minimal_steps=10, apgd_steps=20, targets=2, fab_steps=10,
                              square_queries=300)  # fmt: skip
    result = evaluate(masked, x, y, [0.3], config=config)
    fired = {c.name for c in result.fired}
    assert {"zero_gradients", "square_beats_white_box"} <= fired
    broken = result.broken_by(0.3)
    assert broken.count("square") > 0
    assert result.robust_accuracy(0.3) < float(
        (result.correct & (result.minimal_norm > 0.3)).double().mean()
    )


def test_no_false_alarm_on_the_shipped_lenet(lenet_clf, mnist_test):
    result = evaluate(lenet_clf, mnist_test.x[:40], mnist_test.y[:40], [0.1, 0.2], config="quick")
    assert result.fired == []


class Softmaxed(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).softmax(dim=1)


class Noisy(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x + 0.05 * torch.randn_like(x))


def test_probabilities_and_randomness_are_flagged_and_randomness_gets_eot(lenet_clf, mnist_test):
    x, y = mnist_test.x[:8], mnist_test.y[:8]
    quick = EvaluationConfig(minimal_steps=2, apgd_steps=3, targets=1, fab_steps=2,
                             square_queries=5, attacks=("apgd-ce",))  # fmt: skip
    with pytest.warns(UserWarning):
        probabilities = evaluate(Classifier(Softmaxed(lenet_clf.model)), x, y, [0.1], config=quick)
    assert "probabilities" in {c.name for c in probabilities.fired}
    torch.manual_seed(0)
    with pytest.warns(UserWarning):
        noisy = evaluate(Classifier(Noisy(lenet_clf.model)), x, y, [0.1], config=quick)
    assert "stochastic" in {c.name for c in noisy.fired}
    assert noisy.config.eot_samples == 20


def test_the_evaluator_on_a_cifar_shaped_batchnorm_resnet():
    from boundaryscope.zoo import build

    torch.manual_seed(0)
    model = build("resnet18", num_classes=10, in_channels=3, image_size=32).eval()
    clf = Classifier(model, bounds=(0.0, 1.0))
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = clf.predict(x)
    quick = EvaluationConfig(minimal_steps=3, apgd_steps=4, targets=1, fab_steps=3,
                             square_queries=10)  # fmt: skip
    result = evaluate(clf, x, y, [2 / 255, 8 / 255], config=quick)
    assert result.clean_accuracy == 1.0
    assert all(0 <= result.robust_accuracy(e) <= 1 for e in result.epsilons)
    payload = result.to_dict()
    assert [b["eps"] for b in payload["budgets"]] == sorted([2 / 255, 8 / 255])
    assert len(payload["budgets"][0]["broken_by"]) == 3


def test_evaluate_command_writes_both_files(tmp_path):
    import json

    from boundaryscope.cli import main

    out = tmp_path / "ev"
    argv = ["evaluate", "--profile", "quick", "--n", "20", "--eps", "0.1,0.3", "--out", str(out)]
    assert main(argv) == 0
    payload = json.loads((out / "evaluate.json").read_text())
    assert [b["eps"] for b in payload["budgets"]] == [0.1, 0.3]
    assert len(payload["budgets"][0]["robust"]) == 20
    info = json.loads((out / "model_info.json").read_text())
    assert info["eps"] == "0.3" and info["threat_model"] == "Linf" and info["n_examples"] == 20


def test_the_training_monitor_records_the_trusted_robust_accuracy(lenet_clf, mnist_test):
    from boundaryscope.defenses import Monitor

    x, y = mnist_test.x[:20], mnist_test.y[:20]
    monitor = Monitor(x, y, rho_p=None, pgd_eps=(0.1, 0.2), pgd_steps=5)
    record = monitor(lenet_clf)
    reference = evaluate(lenet_clf, x, y, [0.1, 0.2], config="quick")
    for eps in (0.1, 0.2):
        assert record[f"robust_accuracy@{eps:g}"] == reference.robust_accuracy(eps)
        assert record[f"robust_accuracy@{eps:g}"] <= record["test_accuracy"]
        assert f"pgd_accuracy@{eps}" in record
    assert monitor.settings()["evaluation"] == "quick"
