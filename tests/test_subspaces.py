"""Projectors against dense matrices and scipy.fft; subspace DeepFool and the noise theory."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import torch
from torch import nn

from boundaryscope import Classifier
from boundaryscope.attacks import DeepFool
from boundaryscope.geometry import (
    corollary1_interval,
    excluded_classes,
    theorem1_interval,
    theorem2_condition,
    theorem2_interval,
    theorem2_smallest_m,
    zeta1,
    zeta2,
)
from boundaryscope.noise_robustness import (
    RandomLineSearch,
    line_search,
    semi_random_robustness,
    spectral_robustness,
)
from boundaryscope.subspaces import Basis, DCTBands, Full, RandomSubspace, watermark_basis
from tests.conftest import affine_model


def dense(projector, shape):
    """The d×d matrix of a projector, column by column (tests only)."""
    d = math.prod(shape)
    eye = torch.eye(d, dtype=torch.float64).view(d, *shape)
    return projector.project(eye).reshape(d, d).T


@pytest.mark.parametrize(
    "projector",
    [
        RandomSubspace(5),
        RandomSubspace(3, seed=4),
        DCTBands(2, 1),
        DCTBands(3, 0),
        Basis(torch.randn(4, 2, 6, 6, dtype=torch.float64)),
    ],
    ids=repr,
)
def test_projectors_are_orthogonal_projections(projector):
    shape = (2, 6, 6)
    P = dense(projector, shape)
    torch.testing.assert_close(P @ P, P, atol=1e-10, rtol=0)  # idempotent
    torch.testing.assert_close(P, P.T, atol=1e-10, rtol=0)  # symmetric
    m = projector.dimension(shape)
    assert torch.linalg.matrix_rank(P) == m
    assert float(torch.trace(P)) == pytest.approx(m)


def test_random_subspace_basis_is_orthonormal_and_per_sample_differs():
    sub = RandomSubspace(7, seed=1, per_sample=True)
    a, b = sub.basis(50, 0, torch.float64), sub.basis(50, 1, torch.float64)
    torch.testing.assert_close(a.T @ a, torch.eye(7, dtype=torch.float64))
    assert float((a.T @ b).abs().max()) < 0.99
    g = torch.randn(3, 2, 50, dtype=torch.float64)
    projected = sub(g, torch.tensor([0, 1, 0]))
    torch.testing.assert_close(projected[0], projected[0] @ a @ a.T)
    torch.testing.assert_close(projected[2], g[2] @ a @ a.T)


def test_dct_band_matches_scipy():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(3, 8, 8))
    band = DCTBands(3, 1)
    mask = np.zeros((8, 8))
    mask[3:6, 3:6] = 1
    expected = scipy.fft.idctn(
        scipy.fft.dctn(image, axes=(1, 2), norm="ortho") * mask, axes=(1, 2), norm="ortho"
    )
    result = band.project(torch.from_numpy(image)[None])[0].numpy()
    np.testing.assert_allclose(result, expected, atol=1e-12)
    assert band.dimension((3, 8, 8)) == 27


def test_low_frequency_perturbation_keeps_its_energy_in_band_zero():
    i, j = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    smooth = torch.from_numpy(np.cos(np.pi * (2 * i + 1) / 32) * np.cos(np.pi * (2 * j + 1) / 32))
    smooth = smooth[None, None]  # DCT coefficient (1, 1): inside band 0 for B = 2
    low, high = DCTBands(2, 0).project(smooth), DCTBands(2, 3).project(smooth)
    assert float(low.norm() / smooth.norm()) == pytest.approx(1.0)
    assert float(high.norm()) < 1e-10


def test_watermark_basis_spans_what_it_renders():
    basis = watermark_basis(["NIPS", "2016"], (1, 28, 28), count=6, seed=3)
    rendered = basis.vectors.to(torch.float64)
    assert rendered.shape == (6, 1, 28, 28) and float(rendered.amax(dim=(1, 2, 3)).min()) > 0.5
    torch.testing.assert_close(basis.project(rendered), rendered, atol=1e-9, rtol=0)
    assert basis.dimension((1, 28, 28)) == 6


def test_full_subspace_deepfool_equals_deepfool(lenet_clf, mnist_test):
    x = mnist_test.x[:12]
    plain = DeepFool(box="ignore", polish_steps=0)(lenet_clf, x)  # a subspace's defaults
    full = DeepFool(subspace=Full())(lenet_clf, x)
    torch.testing.assert_close(plain.adversarial, full.adversarial)
    everything = DeepFool(subspace=RandomSubspace(784, seed=0))(lenet_clf, x)
    torch.testing.assert_close(everything.norms, plain.norms, rtol=1e-3, atol=1e-4)


def test_subspace_deepfool_closed_form_on_affine():
    net = affine_model(d=12, classes=3, seed=1)
    W, b = net[1].weight.detach(), net[1].bias.detach()
    clf = Classifier(net, bounds=(-1e3, 1e3))
    x = torch.randn(5, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    sub = RandomSubspace(4, seed=5)
    result = DeepFool.as_published(candidates=3, overshoot=0.02, min_step=0.0, subspace=sub)(clf, x)
    basis = sub.basis(12, None, torch.float64)
    P = basis @ basis.T
    for n in range(5):
        f = W @ x[n] + b
        k0 = int(f.argmax())
        expected = min(
            abs(float(f[k] - f[k0])) / float((P @ (W[k] - W[k0])).norm())
            for k in range(3)
            if k != k0
        )  # eq. 3.16-3.17
        assert float(result.norms[n]) == pytest.approx(1.02 * expected, rel=1e-9)
        residual = result.perturbation[n] - P @ result.perturbation[n]
        assert float(residual.norm()) < 1e-10  # the perturbation lies in S


def test_random_line_search_finds_the_affine_crossing():
    net = affine_model(d=8, classes=2, seed=3)
    w = (net[1].weight[1] - net[1].weight[0]).detach()
    bias = float((net[1].bias[1] - net[1].bias[0]).detach())
    clf = Classifier(net, bounds=(-math.inf, math.inf))
    x = torch.randn(6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    v = torch.randn(6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    v = v / v.norm(dim=1, keepdim=True)
    t = line_search(clf, x, v, clf.predict(x), t_max=1e6, bisection_steps=60)
    exact = -(x @ w + bias) / (v @ w)  # f(x + t v) = 0 on the line
    torch.testing.assert_close(t, exact, rtol=1e-9, atol=1e-12)


def test_theorem1_constants():
    assert zeta1(250, 0.05) > 0.8 and zeta2(250, 0.05) < 1.3  # text below Theorem 1
    lo, hi = theorem1_interval(16, 784, 0.05)
    assert lo == pytest.approx(math.sqrt(zeta1(16, 0.05) * 49))
    c_lo, c_hi = corollary1_interval(16, 784, 0.05)
    assert (c_lo, c_hi) == pytest.approx((0.875 * lo, 1.45 * hi))
    with pytest.raises(ValueError):
        zeta1(0, 0.05)


def test_beta_inside_theorem1_on_affine_at_the_predicted_rate():
    net = affine_model(d=400, classes=4, seed=4).float()
    clf = Classifier(net, bounds=(-math.inf, math.inf))
    x = torch.randn(60, 400, generator=torch.Generator().manual_seed(0))
    regimes = semi_random_robustness(clf, x, clf.predict(x), [1, 25, 100], delta=0.05)
    for regime in regimes:
        # Theorem 1: probability >= 1 - 2(L + 1) δ = 0.5 with L = 4; in practice far higher.
        assert regime.inside_theorem1 >= 0.9, regime
        assert regime.n_failures == 0
    assert regimes[2].beta_std < regimes[1].beta_std  # the spread shrinks as m grows
    assert abs(regimes[2].beta_mean - 1) < 0.1


def test_random_line_attack_and_spectral_smoke(lenet_clf, mnist_test):
    x, y = mnist_test.x[:6], mnist_test.y[:6]
    result = RandomLineSearch(seed=0)(lenet_clf, x, y)
    assert bool(((result.perturbation.flatten(1) != 0).sum(1) > 0).all())
    spectral = spectral_robustness(lenet_clf, x, y, block=7, bands=[0, 3], steps=30)
    assert spectral.m == [49, 49] and len(spectral.zeta) == 2
    assert spectral.zeta[0] < spectral.zeta[1]  # low frequencies are the fragile ones


class _Sphere(nn.Module):
    """Two classes split by the sphere ||x - c|| = R: class 1 inside, class 0 outside.

    Its boundary has curvature κ = 1/R everywhere (thesis §5.5.1).
    """

    def __init__(self, center: torch.Tensor, radius: float) -> None:
        super().__init__()
        self.register_buffer("center", center)
        self.radius = radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inside = self.radius**2 - (x - self.center).pow(2).sum(1)
        return torch.stack([torch.zeros_like(inside), inside], dim=1)


def test_theorem2_interval_contains_beta_on_a_sphere_boundary():
    """Theorem 2 on a quadratic classifier of known curvature κ = 1/R.

    From a point u = x0 - c outside the ball at distance ρ, the minimal perturbation inside a
    subspace S is ||P_S u|| - sqrt(R² - ||u_⊥||²) (closed form, the independent reference
    for subspace DeepFool); β = ||r_S|| / ||r|| must lie in Theorem 2's interval.
    """
    d, m, radius, rho, delta = 400, 100, 10.0, 0.2, 0.05
    kappa = 1 / radius
    assert theorem2_condition(m, d, rho, kappa, delta)  # ρ/R = 0.02 is flat enough
    lo, hi = theorem2_interval(m, d, rho, kappa, delta)
    t_lo, t_hi = theorem1_interval(m, d, delta)
    assert lo < t_lo and hi > t_hi  # curvature widens Theorem 1's interval
    generator = torch.Generator().manual_seed(0)
    center = torch.zeros(d, dtype=torch.float64)
    u = torch.randn(30, d, dtype=torch.float64, generator=generator)
    x = center + u / u.norm(dim=1, keepdim=True) * (radius + rho)
    clf = Classifier(_Sphere(center, radius).double().eval(), bounds=(-1e3, 1e3))
    assert (clf.predict(x) == 0).all()
    sub = RandomSubspace(m, seed=3, per_sample=True)
    attack = DeepFool.as_published(overshoot=0.0, min_step=0.0, subspace=sub, steps=200)
    result = attack(clf, x)
    full = DeepFool.as_published(overshoot=0.0, min_step=0.0, steps=200)(clf, x)
    torch.testing.assert_close(full.norms.double(), torch.full((30,), rho, dtype=torch.float64),
                               rtol=1e-4, atol=0)  # fmt: skip
    expected = []
    for n in range(30):
        basis = sub.basis(d, n, torch.float64)
        inside = basis.T @ (x[n] - center)
        outside = (x[n] - center).norm() ** 2 - inside.norm() ** 2
        expected.append(float(inside.norm() - torch.sqrt(radius**2 - outside)))
    measured = result.norms.double()
    torch.testing.assert_close(measured, torch.tensor(expected, dtype=torch.float64),
                               rtol=2e-3, atol=0)  # fmt: skip
    beta = measured / rho
    inside_share = float(((beta >= lo) & (beta <= hi)).double().mean())
    assert inside_share >= 1 - 4 * delta  # the theorem's probability; in practice all are
    # Far from flat, Theorem 2 says nothing and refuses to give an interval.
    assert not theorem2_condition(m, d, 5.0, kappa, delta)
    with pytest.raises(ValueError, match=r"eq\. 5\.9"):
        theorem2_interval(m, d, 5.0, kappa, delta)
    assert theorem2_interval(m, d, rho, 0.0, delta) == pytest.approx((t_lo, t_hi))


def test_excluded_classes_follow_eq_5_11():
    m, d, delta = 16, 784, 0.05
    factor = 1.45 * math.sqrt(zeta2(m, delta) * d / m)
    r = torch.tensor([[1.0, 2.0, factor - 1e-6, factor + 1e-6]], dtype=torch.float64)
    assert excluded_classes(r, m, d, delta).tolist() == [[False, False, False, True]]
    with pytest.raises(ValueError, match="shape"):
        excluded_classes(r[0], m, d, delta)


@pytest.mark.parametrize(
    ("d", "r_norm", "kappa"), [(784, 0.5, 0.01), (784, 2.0, 0.3), (100, 0.1, 0.0), (50, 5.0, 9.0)]
)
def test_theorem2_smallest_m_is_the_first_m_where_eq_5_9_holds(d, r_norm, kappa):
    holds = [m for m in range(1, d + 1) if theorem2_condition(m, d, r_norm, kappa)]
    assert theorem2_smallest_m(d, r_norm, kappa) == (holds[0] if holds else None)
    if holds:  # and it keeps holding above (what makes bisection valid)
        assert holds == list(range(holds[0], d + 1))
