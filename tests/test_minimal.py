"""Truly minimal perturbations: the FMN refinement and the exact MILP (`boundaryscope.verify`).

References are independent of the code under test: closed forms on affine models, a
brute-force grid on a 2-D ReLU net, scipy's SLSQP for the projection, and the MILP itself
as the ground truth the attacks may never beat.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torch import nn

from boundaryscope import Classifier
from boundaryscope.attacks import FGSM, FMN, AttackResult, DeepFool
from boundaryscope.data import load_digits
from boundaryscope.norms import lp_norm, project_ball_and_box
from boundaryscope.verify import ReLUNetwork, minimal_perturbation
from boundaryscope.zoo import load_model

INF = math.inf


def _affine(seed: int = 0, d: int = 5, classes: int = 3) -> Classifier:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(d, classes)).eval()
    return Classifier(model, bounds=(-50.0, 50.0))


def _closed_form(clf: Classifier, x: torch.Tensor, p: float) -> torch.Tensor:
    """min_k |f_k − f_y| / ||w_k − w_y||_q for an affine model without active box."""
    linear = clf.model[1]
    w, b = linear.weight.detach().double(), linear.bias.detach().double()
    scores = x.double() @ w.T + b
    y = scores.argmax(1)
    q = {2.0: 2.0, INF: 1.0, 1.0: INF}[p]
    best = torch.full((x.shape[0],), INF, dtype=torch.float64)
    for k in range(w.shape[0]):
        gap = (scores[:, k] - scores.gather(1, y[:, None]).squeeze(1)).abs()
        dist = gap / torch.linalg.vector_norm(w[k] - w[y], ord=q, dim=1)
        best = torch.where(y == k, best, torch.minimum(best, dist))
    return best


@pytest.fixture(scope="module")
def digits_mlp():
    loaded = load_model("zoo:mlp-digits")
    clf = Classifier(loaded.module, bounds=loaded.bounds)
    test = load_digits("test")
    x, y = test.x[:12], test.y[:12]
    keep = clf.predict(x) == y
    return clf, x[keep][:3], y[keep][:3]


# ------------------------------------------------------------------------ projection
@pytest.mark.parametrize("p", [1.0, 2.0, INF])
def test_ball_and_box_projection_matches_slsqp(p):
    rng = np.random.default_rng(int(p) if p != INF else 7)
    for _ in range(5):
        v = rng.normal(size=6) * 2
        lower, upper = -rng.uniform(0, 1.5, 6), rng.uniform(0, 1.5, 6)
        radius = float(rng.uniform(0.3, 1.5))
        got = project_ball_and_box(
            torch.tensor(v)[None],
            torch.tensor([radius], dtype=torch.float64),
            p,
            torch.tensor(lower)[None],
            torch.tensor(upper)[None],
            iterations=60,
        )[0].numpy()
        assert np.all(got >= lower - 1e-12) and np.all(got <= upper + 1e-12)
        assert np.linalg.norm(got, ord=p) <= radius * (1 + 1e-9)
        # Exact characterisation of a projection onto a convex set C:
        # <v − P(v), z − P(v)> <= 0 for every z in C. Checked on random points of C.
        for _ in range(200):
            z = rng.uniform(lower, upper)
            z = z * min(1.0, radius / np.linalg.norm(z, ord=p))
            assert (v - got) @ (z - got) <= 1e-6
        if p == 1.0:
            continue
        # Reference solver for l2 and l∞ (status checked before its answer is trusted).
        if p == 2.0:
            # Analytic gradients: with finite differences SLSQP can stop on "positive
            # directional derivative" at this precision (scipy 1.17, one thread).
            cons = [
                {"type": "ineq", "fun": lambda z, r=radius: r**2 - z @ z, "jac": lambda z: -2 * z}
            ]
            bounds = list(zip(lower, upper, strict=True))
        else:
            cons = []
            bounds = [
                (max(lo, -radius), min(u, radius)) for lo, u in zip(lower, upper, strict=True)
            ]
        res = minimize(
            lambda z, target=v: 0.5 * np.sum((z - target) ** 2),
            np.zeros(6),
            jac=lambda z, target=v: z - target,
            bounds=bounds,
            constraints=cons,
            method="SLSQP",
            options={"ftol": 1e-14, "maxiter": 500},
        )
        assert res.success, res.message
        reference = res.x
        np.testing.assert_allclose(got, reference, atol=1e-5)


# ------------------------------------------------------------------------ FMN
@pytest.mark.parametrize("p", [2.0, INF, 1.0])
def test_fmn_stays_adversarial_in_box_and_never_grows(p, lenet_clf, mnist_test):
    x, y = mnist_test.x[:12], mnist_test.y[:12]
    start = DeepFool(p=p)(lenet_clf, x, y)
    result = FMN(p=p, steps=15, init=start)(lenet_clf, x, y)
    assert bool(result.success.all())
    lo, hi = lenet_clf.bounds
    assert float(result.adversarial.min()) >= lo and float(result.adversarial.max()) <= hi
    assert torch.equal(result.details["init_norms"], start.norms)
    assert bool((result.norms <= start.norms * (1 + 1e-6)).all())
    # It is a refinement: on LeNet DeepFool is well above the minimum, so it shrinks.
    assert float((result.norms / start.norms).median()) < 0.995
    # The start given as an attack or as its result gives the same numbers.
    again = FMN(p=p, steps=15, init=DeepFool(p=p))(lenet_clf, x, y)
    torch.testing.assert_close(again.norms, result.norms)


@pytest.mark.parametrize("p", [2.0, INF, 1.0])
def test_fmn_is_exact_in_one_step_on_affine_models(p):
    clf = _affine(seed=3, d=6, classes=4)
    x = torch.randn(8, 6)
    exact = _closed_form(clf, x, p)
    one = FMN(p=p, steps=1, init=DeepFool(p=p, overshoot=1e-6, min_step=0.0))(clf, x)
    assert bool(one.success.all())
    torch.testing.assert_close(one.norms.double(), exact, rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize("p", [2.0, INF])
def test_fmn_converges_from_a_poor_start_on_affine_models(p):
    # Binary: one boundary, so the refinement cannot settle in another class's region.
    clf = _affine(seed=4, d=6, classes=2)
    x = torch.randn(8, 6)
    exact = _closed_form(clf, x, p)
    # Adversarial starts twice as far as needed, in a direction off the optimal one.
    points = []
    for i in range(x.shape[0]):
        fgsm = FGSM(eps=2.0 * float(exact[i]), p=p)(clf, x[i : i + 1])
        assert bool(fgsm.success.all())
        points.append(fgsm.adversarial)
    adversarial = torch.cat(points)
    start = AttackResult(
        adversarial=adversarial,
        perturbation=adversarial - x,
        success=torch.ones(8, dtype=torch.bool),
        norms=lp_norm(adversarial - x, p),
        iterations=torch.ones(8, dtype=torch.int64),
        original_label=clf.predict(x),
        adversarial_label=clf.predict(adversarial),
        p=p,
    )
    refined = FMN(p=p, steps=100, init=start, shrink_steps=0)(clf, x)
    assert bool(refined.success.all())
    assert float((refined.norms.double() / exact).max()) < 1.01


def test_fmn_targeted_and_validation(lenet_clf, mnist_test):
    x, y = mnist_test.x[:6], mnist_test.y[:6]
    target = (y + 1) % 10
    result = FMN(p=2, steps=10)(lenet_clf, x, y, target=target)
    assert torch.equal(result.success, lenet_clf.predict(result.adversarial) == target)
    assert float(result.success.float().mean()) == 1.0
    with pytest.raises(ValueError, match="p = 1, 2 or inf"):
        FMN(p=3)
    with pytest.raises(TypeError, match="init must be"):
        FMN(init="pgd")
    with pytest.raises(ValueError, match="gamma"):
        FMN(gamma=1.5)


# ------------------------------------------------------------------------ MILP
@pytest.mark.parametrize("p", [INF, 1.0])
def test_milp_equals_the_closed_form_on_affine_models(p):
    clf = _affine(seed=1, d=5, classes=4)
    x = torch.randn(4, 5)
    result = minimal_perturbation(clf, x, p=p, attack=None)
    exact = _closed_form(clf, x, p)
    assert result.status == ["optimal"] * 4 and bool(result.exact.all())
    torch.testing.assert_close(result.lower, exact, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(result.upper, exact, rtol=2e-4, atol=1e-7)
    assert bool((clf.predict(result.adversarial) != clf.predict(x)).all())


@pytest.mark.parametrize("p", [INF, 1.0])
def test_milp_matches_a_brute_force_grid_in_2d(p):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 10), nn.ReLU(), nn.Linear(10, 6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        net[0].weight.mul_(4)  # two classes share the unit square (checked below)
    clf = Classifier(net.eval(), bounds=(0.0, 1.0))
    x = torch.tensor([[0.3, 0.6], [0.7, 0.2], [0.5, 0.5]])
    result = minimal_perturbation(clf, x, p=p, attack=None)
    axis = torch.linspace(0, 1, 801)
    grid = torch.cartesian_prod(axis, axis)
    grid_labels = clf.predict(grid)
    step = float(axis[1] - axis[0])
    for i in range(x.shape[0]):
        other = grid_labels != clf.predict(x[i : i + 1])
        assert bool(other.any())
        grid_best = float(lp_norm(grid[other] - x[i], p).min())
        # No grid point beats the MILP, and the MILP is within one grid cell of the grid.
        assert grid_best >= float(result.lower[i]) - 1e-9
        assert grid_best <= float(result.upper[i]) + 2 * step
    assert bool(result.exact.all())
    # No attack beats the certified lower bound either.
    for attack in (DeepFool(p=p), FMN(p=p, steps=50)):
        found = attack(clf, x)
        assert bool((found.norms.double() >= result.lower * (1 - 1e-6) - 1e-9).all())


def test_milp_on_the_digits_mlp_is_never_beaten(digits_mlp):
    clf, x, y = digits_mlp
    result = minimal_perturbation(clf, x, y, p=INF)
    assert bool(result.exact.all()), result.status
    assert bool((clf.predict(result.adversarial) != y).all())
    assert bool((lp_norm(result.adversarial - x, INF).double() <= result.upper + 1e-6).all())
    for attack in (DeepFool(p=INF), FMN(p=INF, steps=30)):
        norms = attack(clf, x, y).norms.double()
        assert bool((norms >= result.lower * (1 - 1e-6)).all())
    # The attack's radius was the initial upper bound: the MILP never ends above it.
    assert bool((result.upper <= result.attack_norms * (1 + 1e-4)).all())


def test_time_limited_milp_returns_valid_bounds(digits_mlp):
    clf, x, y = digits_mlp
    exact = minimal_perturbation(clf, x[:2], y[:2], p=1.0)
    assert bool(exact.exact.all())
    rushed = minimal_perturbation(
        clf, x[:2], y[:2], p=1.0, attack=None, time_limit=0.01, tighten=False
    )
    assert bool((rushed.lower <= exact.upper * (1 + 1e-6)).all())
    assert bool((rushed.upper >= exact.lower * (1 - 1e-6)).all())
    assert "time limit" in rushed.status or bool(rushed.exact.all())


def test_network_extraction_folds_preprocessing_conv_and_pooling():
    torch.manual_seed(5)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(3, 4),
        nn.ReLU(),
        nn.Linear(4, 3),
    ).eval()
    with torch.no_grad():  # two classes share the box for this seed (checked below)
        net[0].weight.mul_(3)
        net[-1].weight.mul_(10)
    clf = Classifier(net, bounds=(0, 1), preprocessing={"mean": 0.5, "std": 0.25})
    x = torch.rand(3, 1, 4, 4)
    network = ReLUNetwork.from_classifier(clf, x)
    np.testing.assert_allclose(
        network.logits(x.double().flatten(1).numpy()),
        clf.scores(x).double().numpy(),
        atol=1e-5,
    )
    result = minimal_perturbation(clf, x, p=INF)
    assert bool(result.exact.all())
    assert bool(torch.isfinite(result.upper).all())
    assert bool((clf.predict(result.adversarial) != clf.predict(x)).all())


def test_milp_refuses_what_it_cannot_do(lenet_clf, mnist_test):
    clf = _affine()
    with pytest.raises(ValueError, match="p = 1 or inf"):
        minimal_perturbation(clf, torch.zeros(1, 5), p=2)
    with pytest.raises(ValueError, match="MaxPool2d"):
        minimal_perturbation(lenet_clf, mnist_test.x[:1], p=INF, attack=None)
    with pytest.raises(ValueError, match="time_limit"):
        minimal_perturbation(clf, torch.zeros(1, 5), time_limit=0)


@pytest.mark.parametrize("targeted", [False, True])
def test_shrink_lands_where_a_dense_scan_first_crosses(seed, targeted):
    """FMN's last move against 20,001 points of each ray (tiny tanh MLP, float64)."""
    from boundaryscope.attacks import shrink_to_boundary
    from tests.conftest import tiny_mlp

    # A wide box, so that every seed's random network has boundaries inside it.
    clf = Classifier(tiny_mlp(d=6, classes=3, seed=seed), bounds=(-8, 8))
    g = torch.Generator().manual_seed(seed)
    x = 16 * torch.rand(200, 6, generator=g, dtype=torch.float64) - 8
    y = clf.predict(x)
    far = 16 * torch.rand(200, 6, generator=g, dtype=torch.float64) - 8  # other points
    labels = clf.predict(far)
    # Targeted: towards the class at the far end where it is another class than x's.
    target = torch.where(labels != y, labels, (y + 1) % 3) if targeted else None
    moved = labels == target if targeted else labels != y
    assert int(moved.sum()) >= 5  # enough rays with an adversarial end
    shrunk = shrink_to_boundary(clf, x, far, y, target, 10, 16)
    changed = (shrunk != far).any(dim=1)  # a ray may cross inside though its end does not
    adversarial = clf.predict(shrunk) == target if targeted else clf.predict(shrunk) != y
    assert bool(adversarial[changed].all())
    s = torch.linspace(0, 1, 20_001, dtype=torch.float64)
    compared = 0
    for i in moved.nonzero().flatten().tolist():
        ray = x[i] + s[:, None] * (far[i] - x[i])
        hits = clf.predict(ray) == target[i] if targeted else clf.predict(ray) != y[i]
        first = float(s[hits.nonzero()[0, 0]])  # the dense scan's first adversarial scale
        landed = float((shrunk[i] - x[i]).norm() / (far[i] - x[i]).norm())
        label = int(clf.predict(shrunk[i : i + 1])[0])
        assert label == int(target[i]) if targeted else label != int(y[i])  # still adversarial
        assert landed <= 1.0 + 1e-12  # never farther
        # On the first crossing where the ray crosses once, else on some later crossing.
        crossings = int((hits[1:] != hits[:-1]).sum())
        if crossings == 1:
            assert landed == pytest.approx(first, abs=2e-3)
            compared += 1
    assert compared >= 5


def test_fmn_restarts_rank_only_the_top_scoring_classes_on_many_classes(seed):
    """40 classes: the restarts' ranking costs 10 backward rows per image, not 40, and
    equals the all-class linearisation on the classes it ranks."""
    from tests.conftest import tiny_mlp

    clf = Classifier(tiny_mlp(d=6, classes=40, seed=seed), bounds=(0, 1))
    x = torch.rand(12, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    y = clf.predict(x)
    attack = FMN(p=2, steps=3)
    before = clf.counter.backward_rows
    closeness = attack._linear_closeness(clf, x, y)
    assert clf.counter.backward_rows - before == 12 * 10
    ranked = torch.isfinite(closeness)
    assert ranked.sum(1).eq(10).all() and not ranked.gather(1, y[:, None]).any()
    scores = clf.scores(x).scatter(1, y[:, None], -math.inf)
    top = scores.topk(10, dim=1).indices
    assert torch.equal(ranked, torch.zeros_like(ranked).scatter(1, top, True))
    every = torch.arange(40).expand(12, -1)
    _, diff, grad = clf.score_gradients(x, y, every)
    reference = -diff.abs() / grad.flatten(2).norm(dim=2).clamp_min(1e-12)
    torch.testing.assert_close(closeness[ranked], reference[ranked])
    result = attack(clf, x, y)  # the restarts run on top of it, and still only refine
    assert bool(result.success.all())
