"""Balda et al. convex attacks against closed forms and a generic convex solver."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linprog, minimize
from torch import nn

from boundaryscope import Classifier
from boundaryscope.attacks import (
    ATTACKS,
    LBFGS,
    PGD,
    Algorithm1,
    SinglePixel,
    gnii_solution,
    infeasibility_bound,
    margin,
    regression_perturbation,
    spsa_gradient,
)
from boundaryscope.curves import budget_attack
from boundaryscope.norms import dual_exponent, lp_norm
from tests.conftest import affine_model, tiny_mlp


@pytest.mark.parametrize("p", [1.0, 1.5, 2.0, 3.0, math.inf])
def test_gnii_closed_form_matches_scipy(p, seed):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=5)
    eps = 0.7

    def norm_p(v):
        return np.abs(v).max() if math.isinf(p) else (np.abs(v) ** p).sum() ** (1 / p)

    if p in (1.0, math.inf):
        # Linear programs, solved exactly by HiGHS: the l∞ ball is a box; the l1 ball is
        # sum(u + w) <= eps with e = u − w, u, w >= 0.
        if math.isinf(p):
            solver = linprog(g, bounds=[(-eps, eps)] * 5, method="highs")
            reference_x = solver.x
        else:
            solver = linprog(
                np.r_[g, -g], A_ub=np.ones((1, 10)), b_ub=[eps], bounds=(0, None), method="highs"
            )
            reference_x = solver.x[:5] - solver.x[5:]
    else:
        # ||e||_p^p <= eps^p is smooth for p > 1 (no root), with an exact Jacobian.
        constraint = {
            "type": "ineq",
            "fun": lambda e: eps**p - (np.abs(e) ** p).sum(),
            "jac": lambda e: -p * np.sign(e) * np.abs(e) ** (p - 1),
        }
        solver = minimize(
            lambda e: g @ e,
            np.full(5, eps / 10),  # start inside the ball
            jac=lambda e: g,
            method="SLSQP",
            constraints=[constraint],
            options={"ftol": 1e-10, "maxiter": 500},
        )
        reference_x = solver.x
    # A reference that did not converge proves nothing: check its own status first.
    assert solver.success, solver.message
    eta = gnii_solution(torch.tensor(g)[None], eps, p)[0].numpy()
    assert norm_p(eta) == pytest.approx(eps, rel=1e-9)
    assert g @ eta == pytest.approx(-eps * np.linalg.norm(g, ord=dual_exponent(p)), rel=1e-9)
    assert g @ eta <= solver.fun + 1e-6  # never worse than the generic solver
    if p not in (1.0, math.inf):  # unique minimiser: compare the vectors too
        np.testing.assert_allclose(eta, reference_x, atol=2e-3)


def two_class_affine(seed: int = 0) -> nn.Module:
    return affine_model(d=6, classes=2, seed=seed)


@pytest.mark.parametrize("p", [2.0, math.inf, 3.0])
def test_algorithm1_attains_the_linear_bound_on_affine(p):
    net = two_class_affine()
    clf = Classifier(net, bounds=(-100, 100))
    x = torch.randn(8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = clf.predict(x)
    eps = 0.05
    result = Algorithm1(eps=eps, p=p, space="logits")(clf, x, y)
    w = net[1].weight.detach()
    grad = w[y] - w[1 - y]  # ∇(f_y - f_other)
    before = margin(clf.scores(x), y, "logits")
    after = margin(clf.scores(result.adversarial), y, "logits")
    expected = before - eps * lp_norm(grad, dual_exponent(p))
    torch.testing.assert_close(after, expected, rtol=1e-9, atol=1e-9)


def test_algorithm1_n_steps():
    net = two_class_affine()
    clf = Classifier(net, bounds=(-100, 100))
    x = torch.randn(8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    one = Algorithm1(eps=0.01, space="logits")(clf, x)
    named = budget_attack("alg1-1", 0.01, space="logits")(clf, x)
    torch.testing.assert_close(one.adversarial, named.adversarial)
    # The gradient of an affine margin is constant: n steps of ε/n add up to one step
    # (ε small enough that nothing is fooled on the way).
    assert not bool(one.success.any())
    five = Algorithm1(eps=0.01, steps=5, space="logits")(clf, x)
    torch.testing.assert_close(five.adversarial, one.adversarial)
    assert five.iterations.tolist() == [5] * 8


def attack_for(name: str, eps: float):
    budgeted = {"alg1", "alg2", "fgsm", "pgd", "bim", "spsa", "random", "random-direction"}
    if name in budgeted:
        kwargs = {"steps": 5} if name in ("pgd", "bim", "spsa") else {}
        return ATTACKS[name](eps=eps, **kwargs)
    if name == "single-pixel":
        return SinglePixel(eps=eps)
    if name == "lbfgs":
        return LBFGS(search_steps=4, max_iter=50)
    cascade = {"apgd-ce": {"steps": 10}, "apgd-t": {"steps": 10, "targets": 3},
               "square": {"queries": 200}}  # fmt: skip
    if name in cascade:
        return ATTACKS[name](eps=eps, **cascade[name])
    if name == "fab-t":
        return ATTACKS[name](steps=10, targets=3)
    return ATTACKS[name]()


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_prop1_certificate_never_violated_on_affine(name):
    net = affine_model(d=6, classes=4, seed=3)
    clf = Classifier(net, bounds=(-100, 100))
    x = torch.randn(24, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    if name == "geometric":  # it moves images: the same 6 numbers as 1×2×3 images
        x = x.view(24, 1, 2, 3)
    attack = attack_for(name, eps=1.0)
    result = attack(clf, x)
    bound = infeasibility_bound(clf, x, clf.predict(x), attack.p)
    fooled = result.success
    norms = lp_norm(result.perturbation, attack.p)
    assert bool((norms[fooled] >= bound[fooled] * (1 - 1e-9)).all())


def test_infeasibility_bound_is_the_exact_distance_on_affine():
    net = affine_model(d=5, classes=3, seed=5)
    clf = Classifier(net, bounds=(-100, 100))
    x = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    from boundaryscope.attacks import DeepFool

    deepfool = DeepFool.as_published(candidates=3, min_step=0.0)(clf, x)
    bound = infeasibility_bound(clf, x, clf.predict(x), 2.0)
    # One exact step, overshot by 2% (a point exactly on the boundary is not a flip).
    torch.testing.assert_close(deepfool.norms / 1.02, bound, rtol=1e-9, atol=1e-12)


def test_single_pixel_changes_one_coordinate(lenet_clf, mnist_test):
    x = mnist_test.x[:6]
    result = SinglePixel(eps=0.5)(lenet_clf, x)
    changed = (result.perturbation.flatten(1) != 0).sum(dim=1)
    assert bool((changed <= 1).all()) and int(changed.sum()) >= 1
    wide = Classifier(tiny_mlp(), bounds=(-10, 10))
    xs = torch.rand(4, 6, dtype=torch.float64)
    result = SinglePixel(eps=0.5, space="logits")(wide, xs)
    assert (result.perturbation != 0).sum(dim=1).tolist() == [1] * 4
    # The moved coordinate is the largest Jacobian column, checked densely.
    jac = torch.autograd.functional.jacobian(lambda z: wide.model(z[None])[0], xs[0])
    assert int((result.perturbation[0] != 0).nonzero()) == int(jac.norm(dim=0).argmax())


def test_regression_attack_matches_dense_svd():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(7, 12), nn.Tanh(), nn.Linear(12, 4)).double().eval()
    x = torch.randn(3, 7, dtype=torch.float64)
    eta = regression_perturbation(
        net, x, eps=0.3, iterations=200, generator=torch.Generator().manual_seed(0)
    )
    for n in range(3):
        jac = torch.autograd.functional.jacobian(lambda z: net(z[None])[0], x[n])
        top = torch.linalg.svd(jac).Vh[0]
        cosine = abs(float(eta[n] @ top)) / float(eta[n].norm())
        assert cosine > 0.9999
        assert float(eta[n].norm()) == pytest.approx(0.3)


@pytest.mark.parametrize("p", [math.inf, 2.0])
def test_pgd_stays_in_ball_and_box(p, lenet_clf, mnist_test):
    x = mnist_test.x[:16]
    eps = 0.1 if math.isinf(p) else 1.5
    result = PGD(eps=eps, p=p, steps=10)(lenet_clf, x)
    assert float(lp_norm(result.perturbation, p).max()) <= eps * (1 + 1e-6)
    assert float(result.adversarial.min()) >= 0 and float(result.adversarial.max()) <= 1


def test_lbfgs_minimal_on_affine_and_box():
    net = affine_model(d=5, classes=3, seed=7)
    clf = Classifier(net, bounds=(-100, 100))
    x = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    result = LBFGS(search_steps=12, kappa=1e-6)(clf, x)
    exact = infeasibility_bound(clf, x, clf.predict(x), 2.0)
    assert bool(result.success.all())
    torch.testing.assert_close(result.norms, exact, rtol=2e-3, atol=1e-5)
    boxed = Classifier(net, bounds=(-0.5, 0.5))
    xb = (torch.rand(6, 5, dtype=torch.float64) - 0.5) * 0.8
    inside = LBFGS(search_steps=6)(boxed, xb)
    assert float(inside.adversarial.min()) >= -0.5 and float(inside.adversarial.max()) <= 0.5


def test_spsa_gradient_correlates_with_true_gradient():
    net = tiny_mlp(d=6, classes=3, seed=1)
    x = torch.rand(4, 6, dtype=torch.float64)

    def fn(z):
        return net(z)[:, 0]

    estimate = spsa_gradient(
        fn, x, samples=2000, delta=1e-3, generator=torch.Generator().manual_seed(0)
    )
    x_var = x.clone().requires_grad_(True)
    (true,) = torch.autograd.grad(fn(x_var).sum(), x_var)
    cosine = torch.nn.functional.cosine_similarity(estimate, true, dim=1)
    assert bool((cosine > 0.9).all())


def test_certificate_reported_per_sample_and_never_violated_on_binary_affine():
    net = two_class_affine(seed=4)
    clf = Classifier(net, bounds=(-100, 100))
    x = torch.randn(30, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    for p in (2.0, math.inf):
        result = Algorithm1(eps=0.3, p=p, space="logits")(clf, x)
        certificate = result.details["certificate"]
        expected = infeasibility_bound(clf, x, clf.predict(x), p)  # one pair: same bound
        torch.testing.assert_close(certificate, expected, rtol=1e-9, atol=1e-12)
        infeasible = result.details["infeasible"]
        assert bool(infeasible.any()) and bool((~infeasible).any())
        assert not bool((result.success & infeasible).any())
