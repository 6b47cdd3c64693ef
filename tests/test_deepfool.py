"""DeepFool against closed forms (thesis eqs. 3.2, 3.8, 3.14) and its contracts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from boundaryscope import Classifier
from boundaryscope.attacks import DeepFool
from tests.conftest import affine_model

EXACT = {"box": "ignore", "refine_steps": 0, "min_step": 0.0}  # the paper, no step floor


def closed_form(W: np.ndarray, b: np.ndarray, x: np.ndarray, p: float) -> np.ndarray:
    """Minimal l_p perturbation of an affine classifier, by brute force over classes."""
    f = W @ x + b
    k0 = int(np.argmax(f))
    best, best_r = math.inf, None
    for k in range(len(b)):
        if k == k0:
            continue
        w = W[k] - W[k0]
        fk = f[k] - f[k0]
        if p == 2:
            dist = abs(fk) / np.linalg.norm(w)
            r = abs(fk) / np.dot(w, w) * w
        elif math.isinf(p):
            dist = abs(fk) / np.abs(w).sum()
            r = abs(fk) / np.abs(w).sum() * np.sign(w)
        else:  # p == 1: all mass on the largest |w_j|
            j = int(np.argmax(np.abs(w)))
            dist = abs(fk) / abs(w[j])
            r = np.zeros_like(w)
            r[j] = abs(fk) / w[j]
        if dist < best:
            best, best_r = dist, r
    return best_r


@pytest.mark.parametrize("p", [2.0, math.inf, 1.0])
@pytest.mark.parametrize("classes", [4, 7])
def test_exact_on_affine_multiclass(p, classes, seed):
    net = affine_model(d=6, classes=classes, seed=seed)
    W = net[1].weight.detach().numpy()
    b = net[1].bias.detach().numpy()
    clf = Classifier(net, bounds=(-100, 100))
    x = torch.randn(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    result = DeepFool(p=p, candidates=classes, **EXACT)(clf, x)
    assert bool(result.success.all())
    assert result.iterations.tolist() == [1] * 5
    for n in range(5):
        expected = closed_form(W, b, x[n].numpy(), p) * 1.02
        np.testing.assert_allclose(result.perturbation[n].numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("p", [1.5, 3.0])
def test_general_p_reaches_the_closed_form_distance(p):
    net = affine_model(d=5, classes=3, seed=1)
    W = net[1].weight.detach().numpy()
    b = net[1].bias.detach().numpy()
    clf = Classifier(net, bounds=(-100, 100))
    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    result = DeepFool(p=p, candidates=3, overshoot=0.0, **{**EXACT})(clf, x)
    q = p / (p - 1)
    for n in range(4):
        f = W @ x[n].numpy() + b
        k0 = int(np.argmax(f))
        expected = min(
            abs(f[k] - f[k0]) / np.linalg.norm(W[k] - W[k0], ord=q) for k in range(3) if k != k0
        )
        measured = np.linalg.norm(result.perturbation[n].numpy(), ord=p)
        assert measured == pytest.approx(expected, rel=1e-6)


def test_exact_on_affine_binary():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 1)).double().eval()
    w = net[1].weight.detach()[0]
    bias = net[1].bias.detach()[0]
    clf = Classifier(net, bounds=(-100, 100))
    x = torch.randn(8, 6, dtype=torch.float64)
    result = DeepFool(p=2, **EXACT)(clf, x)
    f = x @ w + bias
    expected = (-f / w.dot(w))[:, None] * w * 1.02  # thesis eq. 3.2 with overshoot
    torch.testing.assert_close(result.perturbation, expected, atol=1e-10, rtol=1e-8)
    assert bool(result.success.all())


def test_label_flips_and_bounds_on_lenet(lenet_clf, mnist_test):
    x, y = mnist_test.x[:40], mnist_test.y[:40]
    for p in (2, "inf"):
        result = DeepFool(p=p)(lenet_clf, x, y)
        assert bool(result.success.all())
        assert float(result.adversarial.min()) >= 0 and float(result.adversarial.max()) <= 1
        predicted = lenet_clf.predict(result.adversarial)
        assert bool((predicted != y).all())
        assert torch.equal(predicted, result.adversarial_label)


def test_refinement_never_increases_the_norm(lenet_clf, mnist_test):
    x = mnist_test.x[:30]
    plain = DeepFool(refine_steps=0)(lenet_clf, x)
    refined = DeepFool(refine_steps=10)(lenet_clf, x)
    assert bool(refined.success.all())
    assert bool((refined.norms <= plain.norms + 1e-6).all())


def test_batch_of_one_equals_in_batch(lenet_clf, mnist_test):
    x = mnist_test.x[:12]
    batch = DeepFool(batch_size=5)(lenet_clf, x)
    for i in (0, 7, 11):
        single = DeepFool()(lenet_clf, x[i : i + 1])
        torch.testing.assert_close(
            single.perturbation[0], batch.perturbation[i], atol=1e-5, rtol=1e-4
        )
        assert single.iterations[0] == batch.iterations[i]


def test_deterministic_and_no_mutation(lenet_clf, mnist_test):
    x = mnist_test.x[:16].clone()
    x_copy = x.clone()
    params = [p.clone() for p in lenet_clf.model.parameters()]
    first = DeepFool(p="inf")(lenet_clf, x)
    second = DeepFool(p="inf")(lenet_clf, x)
    assert torch.equal(first.adversarial, second.adversarial)
    assert torch.equal(x, x_copy)
    for before, after in zip(params, lenet_clf.model.parameters(), strict=True):
        assert torch.equal(before, after) and after.grad is None


def test_failures_are_reported(lenet_clf, mnist_test):
    x, y = mnist_test.x[:60], mnist_test.y[:60]
    result = DeepFool(steps=1, overshoot=0.0, **EXACT)(lenet_clf, x, y)
    failed = ~result.success
    assert int(failed.sum()) > 0
    assert bool(torch.isinf(result.norms[failed]).all())
    assert bool(torch.isfinite(result.norms[result.success]).all())


def test_identity_subspace_changes_nothing(lenet_clf, mnist_test):
    x = mnist_test.x[:10]
    # A subspace keeps the steps in it: the paper's step, landing, no polish.
    plain = DeepFool(box="ignore", polish_steps=0)(lenet_clf, x)
    projected = DeepFool(subspace=lambda g, index: g.clone())(lenet_clf, x)
    torch.testing.assert_close(plain.adversarial, projected.adversarial)


def test_targeted_reaches_target(lenet_clf, mnist_test):
    x = mnist_test.x[:10]
    target = (lenet_clf.predict(x) + 3) % 10
    result = DeepFool()(lenet_clf, x, target=target)
    assert bool(result.success.all())
    assert torch.equal(result.adversarial_label, target)


def test_misclassified_samples_need_no_step(lenet_clf, mnist_test):
    x = mnist_test.x[:5]
    wrong = (lenet_clf.predict(x) + 1) % 10
    result = DeepFool()(lenet_clf, x, wrong)
    assert bool(result.success.all())
    assert result.iterations.tolist() == [0] * 5
    assert float(result.norms.max()) == 0.0


def test_dtype_preserved():
    net = affine_model(d=4, classes=3)
    clf = Classifier(net, bounds=(-100, 100))
    x = torch.randn(3, 4, dtype=torch.float64)
    assert DeepFool()(clf, x).adversarial.dtype == torch.float64


@pytest.mark.parametrize(
    "kwargs", [{"steps": 0}, {"candidates": 1}, {"overshoot": -1.0}, {"p": 0.5}]
)
def test_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError):
        DeepFool(**kwargs)


# --- The default's box projection, landing and polish (docs/algorithms.md §1.3) -------------


def box_constrained_minimum(W, b, x, p, lo=0.0, hi=1.0):
    """min_k min ||r||_p s.t. class k beats the clean class, lo <= x + r <= hi (scipy).

    For an affine model the adversarial set is the union of these half-spaces, so this is
    the exact minimal adversarial perturbation inside the box.
    """
    from scipy.optimize import linprog, minimize

    f = W @ x + b
    k0 = int(np.argmax(f))
    d = x.size
    best = math.inf
    for k in range(len(b)):
        if k == k0:
            continue
        w, c = W[k] - W[k0], f[k] - f[k0]  # need c + w·r >= 0
        if math.isinf(p):  # LP in (r, t): min t, -t <= r_j <= t
            cost = np.r_[np.zeros(d), 1.0]
            rows = np.block([[np.eye(d), -np.ones((d, 1))], [-np.eye(d), -np.ones((d, 1))]])
            a_ub = np.vstack([rows, np.r_[-w, 0.0][None]])
            b_ub = np.r_[np.zeros(2 * d), c]
            bounds = [(lo - xi, hi - xi) for xi in x] + [(0, None)]
            res = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
            assert res.status in (0, 2), res.message  # 2: infeasible (class out of reach)
            if res.status == 0:
                best = min(best, res.fun)
        else:
            box = [(lo - xi, hi - xi) for xi in x]
            corner = np.array(
                [b_hi if wj > 0 else b_lo for wj, (b_lo, b_hi) in zip(w, box, strict=True)]
            )
            if c + w @ corner < 0:
                continue  # no point of the box reaches this class
            res = minimize(
                lambda r: r @ r,
                corner,  # a feasible start
                jac=lambda r: 2 * r,
                constraints=[
                    {"type": "ineq", "fun": lambda r, w=w, c=c: c + w @ r, "jac": lambda r, w=w: w}
                ],
                bounds=box,
                method="SLSQP",
                options={"ftol": 1e-14, "maxiter": 500},
            )
            assert res.success, res.message
            best = min(best, math.sqrt(res.fun))
    return best


def box_binding_affine(seed: int, classes: int = 3, d: int = 8):
    """An affine model and inputs near the faces of [0, 1], where clipping binds."""
    net = affine_model(d=d, classes=classes, seed=seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(6, d, dtype=torch.float64, generator=g)
    x = torch.where(x < 0.3, torch.zeros_like(x), torch.where(x > 0.7, torch.ones_like(x), x))
    return net, x


@pytest.mark.parametrize("p", [2.0, math.inf])
@pytest.mark.parametrize("seed", [1, 3, 5])
def test_default_never_longer_than_published_where_the_box_binds(p, seed):
    net, x = box_binding_affine(seed)
    clf = Classifier(net, bounds=(0.0, 1.0))
    published = DeepFool.as_published(p=p, candidates=3)(clf, x)
    default = DeepFool(p=p, candidates=3)(clf, x)
    assert bool(published.success.all()) and bool(default.success.all())
    # The paper's first step, clipped, may fall short; the projected second one is exact.
    assert set(default.iterations.tolist()) <= {1, 2}
    projected = DeepFool(p=p, candidates=3, box="project")(clf, x)
    assert projected.iterations.tolist() == [1] * 6  # exact from the clean point at once
    # Never longer than the paper's step, up to the margin the landing keeps for float
    # safety (1e-4 of the clean margin); measured: up to 19% shorter where the box binds.
    assert bool((default.norms <= published.norms * (1 + 1e-3)).all())
    W, b = net[1].weight.detach().numpy(), net[1].bias.detach().numpy()
    for n in range(6):
        exact = box_constrained_minimum(W, b, x[n].numpy(), p)
        assert exact * (1 - 1e-6) <= float(default.norms[n]) <= exact * (1 + 1e-3)


@pytest.mark.parametrize("p", [2.0, math.inf])
def test_projected_step_is_the_box_constrained_minimum_in_one_step(p):
    # Binary affine model: one linearisation is exact, so one projected step crosses.
    torch.manual_seed(3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(8, 1)).double().eval()
    x = box_binding_affine(3, classes=2)[1]
    clf = Classifier(net, bounds=(0.0, 1.0))
    result = DeepFool(p=p, refine_steps=0, overshoot=0.02, box="project")(clf, x)
    published = DeepFool.as_published(p=p, overshoot=0.02)(clf, x)
    ok = result.success
    assert bool(ok.any())
    assert bool((result.iterations[ok] == 1).all())
    assert bool((published.iterations[ok] >= result.iterations[ok]).all())


def test_landing_lands_on_an_affine_boundary_in_one_pass():
    from boundaryscope.attacks.landing import Side, adversarial_margin, land_on_boundary

    net = affine_model(d=6, classes=4, seed=5)
    clf = Classifier(net, bounds=(-100.0, 100.0))
    x = torch.randn(10, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    y = clf.predict(x)
    far = DeepFool.as_published(candidates=4, overshoot=0.5)(clf, x)
    assert bool(far.success.all())
    scores_x, scores_a = clf.forward_scores(x), clf.forward_scores(far.adversarial)
    found = Side.measured(far.adversarial, scores_a, y, None)
    landed = land_on_boundary(clf, x, found, y, None, 1, adversarial_margin(scores_x, y, None))
    assert bool((clf.predict(landed.points) != y).all())
    shrink = (landed.points - x).norm(dim=1) / (far.adversarial - x).norm(dim=1)
    # Along the ray the margin is piecewise affine; where the rival does not change it is
    # affine and the first guess lands within the aim (1e-3 of the bracket) past the root.
    margin = adversarial_margin(clf.forward_scores(landed.points), y, None)
    assert bool((margin >= 0).all()) and bool((shrink <= 1).all())
    assert float(shrink.median()) < 0.7


def test_polish_never_moves_away_and_stays_adversarial(lenet_clf, mnist_test):
    x, y = mnist_test.x[:40], mnist_test.y[:40]
    for p in (2, "inf"):
        landed_only = DeepFool(p=p, polish_steps=0)(lenet_clf, x, y)
        polished = DeepFool(p=p, polish_steps=2)(lenet_clf, x, y)
        assert bool(polished.success.all())
        assert bool((polished.norms <= landed_only.norms * (1 + 1e-6)).all())
        assert float(polished.norms.median()) < float(landed_only.norms.median())


def test_default_is_tighter_than_published_on_lenet(lenet_clf, mnist_test):
    # docs/algorithms.md §1.3: per image, on most images, and with fewer gradient passes.
    x, y = mnist_test.x[:60], mnist_test.y[:60]
    for p in (2, "inf"):
        lenet_clf.counter.reset()
        default = DeepFool(p=p)(lenet_clf, x, y)
        default_rows = lenet_clf.counter.backward_rows
        lenet_clf.counter.reset()
        published = DeepFool.as_published(p=p)(lenet_clf, x, y)
        published_rows = lenet_clf.counter.backward_rows
        ok = default.success & published.success & (published.norms > 0)  # 0: misclassified
        ratio = default.norms[ok] / published.norms[ok]
        assert float(ratio.median()) < 1.0 and float(ratio.mean()) < 1.0
        assert default_rows < 0.5 * published_rows


def test_default_on_a_cifar_shaped_batchnorm_net():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(4),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(256, 10),
    )  # fmt: skip
    with torch.no_grad():  # running statistics of the data, then frozen
        net.train()
        net(torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    net.eval()
    clf = Classifier(net, bounds=(0.0, 1.0))
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    for p in (2, "inf"):
        whole = DeepFool(p=p)(clf, x)
        assert bool(whole.success.all())
        assert float(whole.adversarial.min()) >= 0 and float(whole.adversarial.max()) <= 1
        assert not net.training
        split = DeepFool(p=p, batch_size=4)(clf, x)
        torch.testing.assert_close(split.adversarial, whole.adversarial, atol=1e-5, rtol=1e-4)
        published = DeepFool.as_published(p=p)(clf, x)
        assert float((whole.norms / published.norms).median()) <= 1.0


def test_box_and_polish_arguments_are_checked():
    with pytest.raises(ValueError, match="box must be one of"):
        DeepFool(box="clip")
    with pytest.raises(ValueError, match="box='project' needs p = 2 or inf"):
        DeepFool(p=1, box="project")
    with pytest.raises(ValueError, match="polish_steps"):
        DeepFool(p=1.5, polish_steps=1)
    with pytest.raises(ValueError, match="polish_steps"):
        DeepFool(refine_steps=0, polish_steps=1)
    assert DeepFool(p=1).box == "freeze" and DeepFool(p=1).polish_steps == 0
    assert DeepFool(p=2).box == "clip-then-project" and DeepFool(p="inf").polish_steps == 1
    assert DeepFool(subspace=lambda g, i: g).box == "ignore"
