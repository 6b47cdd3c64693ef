"""Theorems 3–4 (thesis §6.3–6.4) against closed forms, Monte Carlo and the theorems' own
guarantees on classifiers where their models hold exactly: an affine multiclass classifier
(Remark 1: flat boundaries, normals spanning L − 1 dimensions) and a ball (curvature 1/R).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from boundaryscope import Classifier
from boundaryscope.geometry.curvature import boundary_points
from boundaryscope.geometry.theory import (
    flat_fooling_probability,
    theorem3_radius,
    theorem4_radius,
)
from boundaryscope.geometry.universality import normal_section_curvatures, universality_check

from .conftest import affine_model
from .factories import cifar_resnet


class Ball(nn.Module):
    """Logits ``[0, ||x||² − R²]``: class 0 inside the ball of radius R (curvature 1/R)."""

    def __init__(self, radius: float) -> None:
        super().__init__()
        self.radius = radius

    def forward(self, x: Tensor) -> Tensor:
        f = x.flatten(1).pow(2).sum(1) - self.radius**2
        return torch.stack([torch.zeros_like(f), f], dim=1)


def orthonormal_rows(d: int, m: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, m, generator=g, dtype=torch.float64)).Q.T


@pytest.mark.parametrize("m", [1, 2, 5, 30])
def test_flat_fooling_probability_matches_monte_carlo(m, seed):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(200_000, m, generator=g, dtype=torch.float64)
    first = (u[:, 0] / u.norm(dim=1)).abs()
    t = torch.tensor([0.0, 0.05, 0.2, 0.5, 0.9, 1.0, 1.5], dtype=torch.float64)
    empirical = torch.stack([(first >= s).double().mean() for s in t])
    torch.testing.assert_close(flat_fooling_probability(m, t), empirical, atol=4e-3, rtol=0)


@pytest.mark.parametrize("m", [1, 3, 10, 100])
@pytest.mark.parametrize("delta", [0.05, 0.2, 0.5])
def test_theorem3_radius_keeps_its_lemma(m, delta):
    # At ρ = sqrt(e m)/δ (||r|| = 1, ξ = 0) the threshold is t = 1/ρ: Lemma 2 promises 1 − δ.
    t = torch.tensor([1 / theorem3_radius(m, delta)], dtype=torch.float64)
    assert float(flat_fooling_probability(m, t)) >= 1 - delta
    assert theorem3_radius(m, delta, xi=0.5) == pytest.approx(2 * theorem3_radius(m, delta))


def test_theorem4_radius_closed_form_and_refusals():
    kappa = torch.tensor([0.25, 1.0, 0.0, -1.0], dtype=torch.float64)
    radius = theorem4_radius(8, kappa, 0.1)
    expected = math.sqrt(2 * math.log(20) / 8) / 0.25 + 2.0
    assert float(radius[0]) == pytest.approx(expected)
    assert math.isinf(float(radius[2])) and math.isinf(float(radius[3]))
    with pytest.raises(ValueError, match="'delta'"):
        theorem4_radius(8, kappa, 1.5)
    with pytest.raises(ValueError, match="m >= 1"):
        theorem3_radius(0, 0.1)


def test_theorem3_on_an_affine_multiclass_classifier(seed):
    """Remark 1: the normals w_i − w_j span L − 1 dimensions and the flat model is exact."""
    d, classes = 30, 4
    model = affine_model(d=d, classes=classes, seed=seed)
    clf = Classifier(model, bounds=(-1e3, 1e3))
    w = model[1].weight.detach().double()
    differences = torch.stack([w[i] - w[j] for i in range(classes) for j in range(i)])
    q, s, _ = torch.linalg.svd(differences.T, full_matrices=False)
    basis = q[:, s > 1e-9 * s[0]].T
    assert basis.shape[0] == classes - 1
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(60, d, generator=g, dtype=torch.float64)
    m, delta = classes - 1, 0.2
    points = boundary_points(clf, x)
    distance = points.distance
    probe = universality_check(clf, x, basis, m, [1.0], curvature=False, points=points)
    torch.testing.assert_close(probe.projection, torch.ones_like(probe.projection))
    radius = float(probe.theorem3_radius.max())
    assert radius == pytest.approx(theorem3_radius(m, delta) * float(distance.max()))
    radii = [float(distance.median()), radius]
    check = universality_check(
        clf, x, basis, m, radii, delta=delta, draws=40, curvature=False, points=points, seed=seed
    )
    # Every (image, draw) the stripe model calls fooled is fooled as a direction.
    assert check.flat_agreement == 1.0
    # The theorem: at its radius, random directions of S fool at least 1 − δ of the images.
    assert check.direction_fooling[1] >= 1 - delta
    # Directions fool at least what vectors do, and the flat model is a lower bound here.
    assert all(a >= b for a, b in zip(check.direction_fooling, check.vector_fooling, strict=True))
    assert check.direction_fooling[0] >= check.flat_predicted[0] - 0.1
    assert torch.isnan(check.kappa).all() and torch.isinf(check.theorem4_radius).all()


def test_theorem4_on_a_ball(seed):
    """Inside a ball of radius R every normal section has curvature ||r||/R (units 1/||r||)."""
    d, m, radius_ball, delta, beta = 40, 10, 2.0, 0.2, 0.2
    clf = Classifier(Ball(radius_ball).double().eval(), bounds=(-1e3, 1e3))
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(25, d, generator=g, dtype=torch.float64)
    scale = 0.2 + 0.7 * torch.rand(25, 1, generator=g, dtype=torch.float64)
    x = radius_ball * scale * direction / direction.norm(dim=1, keepdim=True)
    basis = orthonormal_rows(d, m, seed)
    points = boundary_points(clf, x)
    assert len(points) == 25
    expected_kappa = points.distance / radius_ball
    some = torch.randn(25, 3, d, generator=g, dtype=torch.float64)
    sections = normal_section_curvatures(clf, points, some, method="exact")
    torch.testing.assert_close(sections, expected_kappa[:, None].expand(25, 3), rtol=1e-6, atol=0)
    check = universality_check(
        clf, x, basis, m, [1.0], delta=delta, beta=beta, method="exact", points=points, seed=seed
    )
    torch.testing.assert_close(check.kappa, expected_kappa, rtol=1e-6, atol=0)
    predicted = points.distance * theorem4_radius(m, expected_kappa, delta)
    torch.testing.assert_close(check.theorem4_radius, predicted)
    rho = float(check.theorem4_radius.max())
    at_radius = universality_check(
        clf, x, basis, m, [rho], delta=delta, beta=beta, draws=40, method="exact",
        points=points, seed=seed,
    )  # fmt: skip
    # Theorem 4's guarantee, and the curve's prediction at a radius every image meets.
    assert at_radius.curved_predicted == [pytest.approx(1 - delta - beta)]
    assert at_radius.vector_fooling[0] >= 1 - delta - beta


def test_theorem4_refuses_negatively_curved_regions(seed):
    """Outside a ball the sections bend away from the image: κ < 0, no radius, no promise."""
    d, m = 20, 4
    clf = Classifier(nn.Sequential(Ball(1.0), _Negate()).double().eval(), bounds=(-1e3, 1e3))
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(8, d, generator=g, dtype=torch.float64)
    x = 1.5 * direction / direction.norm(dim=1, keepdim=True)
    check = universality_check(clf, x, orthonormal_rows(d, m, seed), m, [0.5, 5.0],
                               method="exact", seed=seed)  # fmt: skip
    assert float(check.kappa.max()) < 0
    assert torch.isinf(check.theorem4_radius).all()
    assert check.curved_predicted == [0.0, 0.0]


class _Negate(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return -x


def test_universality_check_on_a_cifar_shaped_batchnorm_resnet(seed):
    net = cifar_resnet()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    clf = Classifier(net, bounds=(0, 1))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 3, 32, 32, generator=g)
    basis = orthonormal_rows(3 * 32 * 32, 4, seed).float().reshape(4, 3, 32, 32)
    first = universality_check(clf, x, basis, 2, [0.5, 4.0], draws=3, samples=4, seed=seed)
    again = universality_check(clf, x, basis, 2, [0.5, 4.0], draws=3, samples=4, seed=seed)
    assert first.summary() == again.summary()  # same seed, same numbers
    n = first.distance.numel()
    assert n >= 1 and first.kappa.shape == (n,) and torch.isfinite(first.kappa).all()
    for rates in (first.flat_predicted, first.direction_fooling, first.vector_fooling):
        assert all(0.0 <= rate <= 1.0 for rate in rates)
    assert all(a >= b for a, b in zip(first.direction_fooling, first.vector_fooling, strict=True))
    assert not net.training  # and BatchNorm's statistics and the weights are untouched
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())


def test_universality_check_rejects_bad_arguments():
    clf = Classifier(affine_model(d=6, classes=3), bounds=(-10, 10))
    x = torch.zeros(2, 6, dtype=torch.float64)
    basis = orthonormal_rows(6, 2, 0)
    with pytest.raises(ValueError, match=r"'m' parameter must lie in \[1, 2\]"):
        universality_check(clf, x, basis, 3, [1.0])
    with pytest.raises(ValueError, match="'basis' rows must have 6 entries"):
        universality_check(clf, x, orthonormal_rows(5, 2, 0), 1, [1.0])
    with pytest.raises(ValueError, match="'radii'"):
        universality_check(clf, x, basis, 1, [0.0])
    with pytest.raises(ValueError, match="'beta'"):
        universality_check(clf, x, basis, 1, [1.0], beta=1.0)
