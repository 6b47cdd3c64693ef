"""Hessian-vector products and boundary curvature against independent references.

References: dense Hessians from `torch.autograd.functional.hessian`, `torch.linalg.eigvalsh`,
closed-form curvatures of spheres, cylinders and hyperplanes, `scipy.linalg.subspace_angles`.
"""

from __future__ import annotations

import math
import warnings

import pytest
import scipy.linalg
import torch
from torch import Tensor, nn

from boundaryscope import Classifier
from boundaryscope.geometry.curvature import (
    BoundaryPoints,
    average_curvature,
    boundary_points,
    curvature_ratios,
    curved_subspace,
    loss_curvature,
    noise_misclassification,
    principal_curvatures,
    projection_ratios,
    shared_directions,
    subspace_curvature,
)
from boundaryscope.geometry.hessian import (
    HessianOperator,
    batched_lanczos,
    cross_entropy_objective,
    score_difference_objective,
)
from boundaryscope.geometry.theory import theorem5_bounds, theorem5_simplified_bounds
from boundaryscope.zoo import load_model

from .conftest import affine_model, tiny_mlp


class Quadric(nn.Module):
    """Two logits ``[0, s·(Σ_{i<k} (x_i − c_i)² − R²)]``: the boundary is a sphere (k = d)
    or a cylinder (k < d) of radius R; s = +1 puts class 0 inside."""

    def __init__(self, d: int, k: int, radius: float, sign: float = 1.0) -> None:
        super().__init__()
        self.k, self.radius, self.sign = k, radius, sign
        self.register_buffer("center", torch.full((d,), 0.5, dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        z = x.flatten(1).to(self.center) - self.center
        f = self.sign * (z[:, : self.k].pow(2).sum(1) - self.radius**2)
        return torch.stack([torch.zeros_like(f), f], dim=1)


class Planted(nn.Module):
    """``f_1 − f_0 = wᵀx + b + Σ_i a_i (u_iᵀ x)²``: curved only inside span(U)."""

    def __init__(self, d: int, basis: Tensor, a: Tensor, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(d, generator=g, dtype=torch.float64)
        w = w - basis.T @ (basis @ w)
        self.register_buffer("w", 3 * w / w.norm())
        self.register_buffer("u", basis)
        self.register_buffer("a", a)

    def forward(self, x: Tensor) -> Tensor:
        z = x.flatten(1).to(self.w)
        f = z @ self.w - 1.0 + ((z @ self.u.T) ** 2 * self.a).sum(1)
        return torch.stack([torch.zeros_like(f), f], dim=1)


def dense_hessian(model: nn.Module, x: Tensor, i: int, j: int) -> Tensor:
    return torch.autograd.functional.hessian(
        lambda z: model(z[None])[0, i] - model(z[None])[0, j], x
    )


# ---------------------------------------------------------------------- HVPs
@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_exact_hvp_matches_dense_hessian(mode, seed):
    net = tiny_mlp(d=6, classes=3, seed=seed)
    clf = Classifier(net, bounds=(-5, 5))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, 6, generator=g, dtype=torch.float64)
    i, j = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 0, 2])
    op = HessianOperator(clf, x, score_difference_objective(i, j), method="exact", exact_mode=mode)
    v = torch.randn(4, 3, 6, generator=g, dtype=torch.float64)
    hv = op(v)
    assert hv.shape == v.shape and op.products == 12
    for n in range(4):
        dense = dense_hessian(net, x[n], int(i[n]), int(j[n]))
        torch.testing.assert_close(hv[n], v[n] @ dense, rtol=1e-10, atol=1e-12)


def test_finite_differences_converge_to_exact(seed):
    net = tiny_mlp(d=6, classes=3, seed=seed)
    clf = Classifier(net, bounds=(-5, 5))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 6, generator=g, dtype=torch.float64)
    objective = cross_entropy_objective(torch.tensor([0, 1, 2]))
    v = torch.randn(3, 6, generator=g, dtype=torch.float64)
    exact = HessianOperator(clf, x, objective, method="exact")(v)
    errors = [
        float((HessianOperator(clf, x, objective, method="fd", h=h)(v) - exact).abs().max())
        for h in (1e-1, 1e-2, 1e-3)
    ]
    # Central differences: error O(h²), so each tenfold smaller h gains ~100×.
    assert errors[0] > 30 * errors[1] > 900 * errors[2]
    assert errors[2] < 1e-6 * float(exact.abs().max())


def test_zero_exact_hessian_warns_and_auto_switches_to_fd():
    torch.manual_seed(0)
    relu = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).double().eval()
    clf = Classifier(relu, bounds=(-5, 5))
    x = torch.rand(2, 5, dtype=torch.float64)
    objective = score_difference_objective(torch.tensor([1, 2]), torch.tensor([0, 0]))
    with pytest.warns(UserWarning, match="identically zero"):
        HessianOperator(clf, x, objective, method="exact")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert HessianOperator(clf, x, objective, method="auto").method == "fd"
    assert HessianOperator(clf, x, objective, method="auto", h=0.5).h == 0.5


def test_hessian_operator_rejects_bad_arguments():
    clf = Classifier(tiny_mlp(), bounds=(0, 1))
    x = torch.rand(2, 6, dtype=torch.float64)
    objective = cross_entropy_objective(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="'h' parameter"):
        HessianOperator(clf, x, objective, h=-1.0)
    with pytest.raises(ValueError, match="'method' parameter"):
        HessianOperator(clf, x, objective, method="dense")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="v must have shape"):
        HessianOperator(clf, x, objective)(torch.zeros(2, 5, dtype=torch.float64))


# ---------------------------------------------------------------------- Lanczos
def test_batched_lanczos_matches_dense_eigvalsh(seed):
    g = torch.Generator().manual_seed(seed)
    d, n = 40, 5
    # A spectrum like the boundary's: mostly ~0, a few large values at both ends.
    q = torch.linalg.qr(torch.randn(n, d, d, generator=g, dtype=torch.float64)).Q
    spectrum = 0.01 * torch.randn(n, d, generator=g, dtype=torch.float64)
    spectrum[:, :3] = torch.tensor([5.0, 3.0, 2.0])
    spectrum[:, 3:6] = torch.tensor([-7.0, -4.0, -1.5])
    matrices = q @ torch.diag_embed(spectrum) @ q.transpose(1, 2)
    start = torch.randn(n, d, generator=g, dtype=torch.float64)
    result = batched_lanczos(
        lambda v, rows: (matrices[rows] @ v[..., None])[..., 0],
        start,
        k=3,
        which="both",
        tol=1e-8,
        max_steps=d,
    )
    dense = torch.linalg.eigvalsh(matrices).flip(-1)
    torch.testing.assert_close(result.values[:, :3], dense[:, :3], rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(result.values[:, 3:], dense[:, -3:], rtol=1e-6, atol=1e-8)
    assert int(result.steps.max()) < d  # converged before exhausting the space
    # Ritz vectors are eigenvectors.
    av = (matrices[:, None] @ result.vectors[..., None])[..., 0]
    torch.testing.assert_close(av, result.vectors * result.values[..., None], atol=1e-5, rtol=0)
    # Batched equals one point at a time.
    alone = batched_lanczos(
        lambda v, rows: (matrices[2:3] @ v[..., None])[..., 0],
        start[2:3],
        k=3,
        which="both",
        tol=1e-8,
        max_steps=d,
    )
    torch.testing.assert_close(alone.values[0], result.values[2], rtol=1e-8, atol=1e-10)


def test_lanczos_refuses_too_few_steps():
    with pytest.raises(ValueError, match="Lanczos steps"):
        batched_lanczos(lambda v, r: v, torch.ones(1, 4), k=3, which="both")


# ---------------------------------------------------------------------- known boundaries
def quadric_points(
    model: nn.Module, d: int, n: int, seed: int
) -> tuple[Classifier, BoundaryPoints]:
    clf = Classifier(model, bounds=(-10, 10))
    g = torch.Generator().manual_seed(seed)
    x = 0.5 + 0.2 * (torch.rand(n, d, generator=g, dtype=torch.float64) - 0.5)
    return clf, boundary_points(clf, x)


@pytest.mark.parametrize("solver", ["lanczos", "eigsh"])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_sphere_has_all_curvatures_one_over_radius(solver, sign, seed):
    d, radius = 6, 0.7
    model = Quadric(d, d, radius, sign).eval()
    clf = Classifier(model, bounds=(-10, 10))
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(3, d, generator=g, dtype=torch.float64)
    # Images on the inside (sign +1) or outside (sign −1) of the sphere.
    x = 0.5 + (0.5 if sign > 0 else 1.4) * radius * direction / direction.norm(dim=1, keepdim=True)
    points = boundary_points(clf, x)
    assert len(points) == 3
    torch.testing.assert_close(
        (points.z - 0.5).norm(dim=1), torch.full((3,), radius, dtype=torch.float64)
    )
    result = principal_curvatures(
        clf, points, k=d - 1, which="largest" if sign > 0 else "smallest", method="exact",
        solver=solver, max_steps=d,
    )  # fmt: skip
    # Positive when the boundary bends around the image (it is inside the ball).
    expected = torch.full((3, d - 1), sign / radius)
    torch.testing.assert_close(result.curvatures, expected, rtol=1e-5, atol=1e-6)


def test_cylinder_has_one_curved_direction(seed):
    d, radius = 6, 0.5
    clf, points = quadric_points(Quadric(d, 2, radius).eval(), d, 4, seed)
    result = principal_curvatures(clf, points, k=2, which="magnitude", method="exact", max_steps=d)
    torch.testing.assert_close(result.curvatures[:, 0], torch.full((4,), 1 / radius))
    assert float(result.curvatures[:, 1:].abs().max()) < 1e-6
    # The curved direction lies in the plane of the circle, tangent to it.
    direction = result.directions[:, 0]
    assert float(direction[:, 2:].abs().max()) < 1e-5


def test_hyperplane_is_flat_with_finite_differences(seed):
    clf, points = quadric_points(affine_model(d=6, classes=3, seed=seed), 6, 4, seed)
    result = principal_curvatures(clf, points, k=2, method="fd", max_steps=6)
    assert float(result.curvatures.abs().max()) < 1e-6
    mean, _ = average_curvature(clf, points, samples=8)
    assert float(mean.abs().max()) < 1e-6


def test_boundary_points_lie_on_the_boundary(lenet_clf, mnist_test):
    x = mnist_test.x[:6]
    points = boundary_points(lenet_clf, x)
    assert len(points) == 6
    assert float(points.value.abs().max()) < 1e-3 * float(points.grad_norm.min())
    scores = lenet_clf.forward_scores(points.z)
    top2 = scores.topk(2, dim=1).indices.sort(dim=1).values
    pair = torch.stack([points.source, points.target], 1).sort(dim=1).values
    assert torch.equal(top2, pair)  # the two classes of the boundary are the top two there
    torch.testing.assert_close(points.normal.flatten(1).norm(dim=1), torch.ones(6))


# ---------------------------------------------------------------------- estimators
def tanh_boundary(
    seed: int, d: int = 8, n: int = 5
) -> tuple[nn.Module, Classifier, BoundaryPoints]:
    net = tiny_mlp(d=d, classes=3, seed=seed)
    clf = Classifier(net, bounds=(-10, 10))
    g = torch.Generator().manual_seed(seed)
    points = boundary_points(clf, torch.rand(n, d, generator=g, dtype=torch.float64))
    return net, clf, points


def dense_curvature_matrix(net: nn.Module, points: BoundaryPoints, n: int) -> Tensor:
    hessian = dense_hessian(net, points.z[n], int(points.target[n]), int(points.source[n]))
    normal = points.normal[n]
    p = torch.eye(len(normal), dtype=torch.float64) - torch.outer(normal, normal)
    return p @ hessian @ p / points.grad_norm[n]


def test_principal_curvatures_match_dense_projected_hessian(seed):
    net, clf, points = tanh_boundary(seed)
    result = principal_curvatures(clf, points, k=2, method="exact", tol=1e-8, max_steps=8)
    for n in range(len(points)):
        eig = torch.linalg.eigvalsh(dense_curvature_matrix(net, points, n)).flip(0)
        expected = torch.cat([eig[:2], eig[-2:]]).float()
        torch.testing.assert_close(result.curvatures[n], expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(result.ritz_values, result.curvatures, rtol=1e-4, atol=1e-6)


def test_reported_curvature_is_measured_along_its_direction_on_relu_nets(seed):
    torch.manual_seed(seed)
    relu = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3)).double().eval()
    clf = Classifier(relu, bounds=(-10, 10))
    g = torch.Generator().manual_seed(seed)
    points = boundary_points(clf, torch.rand(4, 8, generator=g, dtype=torch.float64))
    result = principal_curvatures(clf, points, k=2, method="fd", h=0.2, max_steps=8)
    hessian = HessianOperator(
        clf, points.z, score_difference_objective(points.target, points.source), h=0.2
    )
    for n in range(len(points)):
        for j, v in enumerate(result.directions[n].double()):
            # Independent recomputation of κ_h(z, v) = vᵀ P H P v / ||∇F|| by two gradients.
            tangent = v - (v @ points.normal[n]) * points.normal[n]
            hv = hessian(tangent[None], torch.tensor([n]))[0]
            kappa = float(tangent @ hv / points.grad_norm[n])
            assert abs(float(result.curvatures[n, j]) - kappa) < 1e-5
    assert torch.all(result.curvatures[:, :2].diff(dim=1) <= 0)


def test_hutchinson_mean_curvature_within_three_standard_errors(seed):
    net, clf, points = tanh_boundary(seed, d=8, n=5)
    mean, stderr = average_curvature(clf, points, samples=200, method="exact", seed=seed)
    d = points.z.shape[1]
    for n in range(len(points)):
        exact = float(torch.trace(dense_curvature_matrix(net, points, n))) / (d - 1)
        assert abs(float(mean[n]) - exact) <= 3 * float(stderr[n]) + 1e-7


def planted_model(seed: int, d: int = 12, m: int = 3) -> tuple[Planted, Tensor]:
    g = torch.Generator().manual_seed(seed + 1)
    basis = torch.linalg.qr(torch.randn(d, m, generator=g, dtype=torch.float64)).Q.T
    return Planted(d, basis, torch.tensor([2.0, 1.5, 1.0], dtype=torch.float64), seed).eval(), basis


def test_shared_directions_recover_a_planted_curved_subspace(seed):
    d, m = 12, 3
    model, basis = planted_model(seed, d, m)
    clf = Classifier(model, bounds=(-10, 10))
    g = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.randn(40, d, generator=g, dtype=torch.float64)
    points = boundary_points(clf, x)
    result = principal_curvatures(clf, points, k=m, which="magnitude", method="exact", max_steps=d)
    shared = shared_directions(result, m)
    angles = scipy.linalg.subspace_angles(shared.flat.double().T.numpy(), basis.T.numpy())
    assert angles.max() < 0.1
    # ρ_i ≫ 1 along the shared directions on new points, small along the linear part's w
    # (curved only through its component in the tangent plane).
    fresh = boundary_points(clf, 0.1 * torch.randn(10, d, generator=g, dtype=torch.float64))
    ratios = curvature_ratios(clf, fresh, shared.basis, samples=64, method="exact", seed=seed)
    assert float(ratios.mean(0).min()) > 2.0, ratios.mean(0)
    orthogonal = model.w / model.w.norm()
    along_w = curvature_ratios(clf, fresh, orthogonal[None], method="exact")
    assert float(along_w.max()) < 0.25 * float(ratios.mean(0).min())
    # S_c: the top eigenvectors of the average curvature matrix span U too (all a_i > 0).
    curved, values = curved_subspace(clf, points, m, method="exact")
    assert float(values.min()) > 0
    angles = scipy.linalg.subspace_angles(curved.double().T.numpy(), basis.T.numpy())
    assert angles.max() < 0.1
    # Eq. 6.4: the curvature averaged in S_c is positive and larger than in random subspaces.
    in_sc = subspace_curvature(clf, fresh, curved, [m], method="exact")[m]
    assert float(in_sc.min()) > 0


def test_projection_ratios_and_noise_in_subspaces(seed):
    basis = torch.eye(6, dtype=torch.float64)[:2]
    v = torch.tensor([[3.0, 4.0, 0, 0, 0, 0], [0, 0, 1.0, 0, 0, 0], [1.0, 0, 1.0, 0, 0, 0]])
    torch.testing.assert_close(projection_ratios(basis, v), torch.tensor([1.0, 0.0, 2**-0.5]))
    # Affine classifier: noise orthogonal to its normal never changes a label.
    model = affine_model(d=6, classes=2, seed=seed)
    clf = Classifier(model, bounds=(-100, 100))
    weight = model[1].weight.detach()
    normal = (weight[1] - weight[0]) / (weight[1] - weight[0]).norm()
    x = torch.rand(50, 6, dtype=torch.float64)
    rates = noise_misclassification(clf, x, normal[None], [0.5, 5.0, 50.0], seed=seed)
    assert rates["S_perp"] == [0.0, 0.0, 0.0]
    assert rates["S"][-1] > 0.3 and rates["S"] == sorted(rates["S"])


# ---------------------------------------------------------------------- loss curvature
def test_theorem5_bounds_are_exact_when_gradient_is_the_top_eigenvector():
    g_norm, nu, c = torch.tensor([2.0]), torch.tensor([3.0]), torch.tensor([1.5])
    lower, upper = theorem5_bounds(g_norm, g_norm, nu, c)
    # Quadratic along g: c = ||g|| α + ν α² / 2.
    alpha = (-2.0 + math.sqrt(4.0 + 2 * 3.0 * 1.5)) / 3.0
    torch.testing.assert_close(lower, torch.tensor([alpha], dtype=torch.float64))
    torch.testing.assert_close(upper, lower)
    lin_lower, lin_upper = theorem5_bounds(g_norm, 0.5 * g_norm, torch.tensor([0.0]), c)
    torch.testing.assert_close(lin_lower, torch.tensor([0.75], dtype=torch.float64))
    torch.testing.assert_close(lin_upper, torch.tensor([1.5], dtype=torch.float64))
    lower, _ = theorem5_bounds(g_norm, g_norm, nu, torch.tensor([-1.0]))
    assert math.isnan(float(lower))


def test_loss_curvature_matches_dense_loss_hessian(seed):
    net = tiny_mlp(d=8, classes=3, seed=seed)
    clf = Classifier(net, bounds=(-10, 10))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, 8, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    result = loss_curvature(clf, x, y, k=2, method="exact", tol=1e-8, max_steps=8)
    for n in range(4):

        def loss(z, n=n):
            return nn.functional.cross_entropy(net(z[None]), y[n : n + 1])

        hessian = torch.autograd.functional.hessian(loss, x[n])
        eig, vec = torch.linalg.eigh(hessian)
        expected = torch.cat([eig.flip(0)[:2], eig.flip(0)[-2:]]).float()
        torch.testing.assert_close(result.eigenvalues[n], expected, rtol=1e-4, atol=1e-6)
        grad = torch.autograd.functional.jacobian(loss, x[n])
        alignment = float((grad @ vec[:, -1]).abs() / grad.norm())
        assert abs(float(result.alignment[n]) - alignment) < 1e-4


def test_smooth_zoo_model_fd_curvature_matches_exact(mnist_test):
    clf = Classifier(load_model("zoo:lenet-smooth-mnist").module)
    points = boundary_points(clf, mnist_test.x[:2])
    exact = principal_curvatures(clf, points, k=3, which="magnitude", method="exact")
    fd = principal_curvatures(clf, points, k=3, which="magnitude", method="fd", h=0.01)
    torch.testing.assert_close(fd.curvatures, exact.curvatures, rtol=1e-2, atol=1e-4)
    assert exact.method == "exact" and float(exact.curvatures.abs().min()) > 0


def test_eq_8_4_simplified_bounds_enclose_theorem5(seed):
    """Eq. 8.4 is looser than eqs. 8.2–8.3 on both sides and equal to them as ν → 0."""
    g = torch.Generator().manual_seed(seed)
    norm = 0.1 + torch.rand(500, generator=g, dtype=torch.float64) * 3
    dot = norm * torch.rand(500, generator=g, dtype=torch.float64).clamp_min(1e-3)
    nu = torch.rand(500, generator=g, dtype=torch.float64) * 10
    c = torch.rand(500, generator=g, dtype=torch.float64) * 2
    lower, upper = theorem5_bounds(norm, dot, nu, c)
    simple_lower, simple_upper = theorem5_simplified_bounds(norm, dot, nu, c)
    assert bool((simple_lower <= lower + 1e-12).all() and (upper <= simple_upper + 1e-12).all())
    flat = torch.full_like(nu, 1e-13)
    torch.testing.assert_close(theorem5_simplified_bounds(norm, dot, flat, c)[0], c / norm)
    torch.testing.assert_close(theorem5_bounds(norm, dot, flat, c)[1], c / dot, rtol=1e-6, atol=0)
    # Fig. 8.4's setting (||g|| = 1, c = 1, gᵀu = 0.5): the lower bound goes vacuous at ν = 1/2.
    one = torch.ones(3, dtype=torch.float64)
    low, _ = theorem5_simplified_bounds(one, 0.5 * one, torch.tensor([0.0, 0.5, 1.0]), one)
    torch.testing.assert_close(low, torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64))
    assert torch.isnan(theorem5_simplified_bounds(one, one, -one, one)[0]).all()
