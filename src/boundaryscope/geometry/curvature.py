"""Curvature of the decision boundary and of the loss, near the data (thesis §7.4, §6.4, §8.2).

At a point ``z`` on the boundary between the class ``s = k̂(x)`` of an image and the class
``t`` across it, with ``F = f_t − f_s`` (so ``F < 0`` on the image's side), the normal
curvature along a tangent ``v`` is (eq. 7.2)

    κ(z, v) = vᵀ H_F v / (||v||² ||∇F(z)||),

and the principal curvatures are the nonzero eigenvalues of ``G = P H_F P / ||∇F||`` with
``P = I − n nᵀ``, ``n = ∇F/||∇F||`` (docs/algorithms.md §7). **Sign convention**: ``κ > 0`` when
the boundary bends towards the image (the image's region is locally like a ball around it:
a sphere of radius R gives ``κ = 1/R``); the thesis finds the profile near natural images
skewed *negative* (Fig. 7.5b) and the universally fooling directions *positive* (§6.4).

Everything is computed from Hessian-vector products (`boundaryscope.geometry.hessian`),
batched over points: principal curvatures (batched Lanczos, or ARPACK per point), their
average profile, Hutchinson estimates of the mean curvature (eq. 7.4), the shared curved
directions and their relative curvature ``ρ_i`` (eq. 7.3, Fig. 7.6), projections of
perturbations on them (Table 7.1), noise in S vs S⊥ (Fig. 7.7), the average curvature in a
subspace (eq. 6.4) and its top eigenvectors ``S_c`` (§6.4.1, Fig. 6.9), and the
loss-curvature profile with Theorem 5's bounds and the gradient alignment (§8.2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, LinearOperator, eigsh
from torch import Tensor

from boundaryscope import memory
from boundaryscope.attacks import DeepFool
from boundaryscope.attacks.base import check_labels
from boundaryscope.classifier import Classifier, check_classifier
from boundaryscope.geometry.hessian import (
    HessianOperator,
    MatVec,
    Method,
    batched_lanczos,
    cross_entropy_objective,
    objective_gradients,
    point_operator,
    score_difference_objective,
)
from boundaryscope.geometry.theory import theorem5_bounds
from boundaryscope.universal import (
    fooling_rate,
    normal_subspace,
    subspace_fooling_rates,
    universal_perturbation,
)

__all__ = [
    "BoundaryPoints",
    "CurvatureConfig",
    "LossCurvature",
    "PrincipalCurvatures",
    "SharedDirections",
    "average_curvature",
    "boundary_points",
    "curvature_operator",
    "curvature_profile",
    "curvature_ratios",
    "curvature_study",
    "curved_subspace",
    "level_set_points",
    "loss_curvature",
    "noise_misclassification",
    "principal_curvatures",
    "projection_ratios",
    "quadratic_forms",
    "shared_directions",
    "subspace_curvature",
]

Which = Literal["both", "largest", "smallest", "magnitude"]


# ---------------------------------------------------------------------- boundary points
@dataclass
class BoundaryPoints:
    """Points on the decision boundary next to images (``z = x + r(x)``, thesis §7.4).

    Attributes:
        x: The images ``(N, *shape)`` (those DeepFool fooled).
        z: Boundary points ``(N, *shape)``; ``F(z) ≈ 0`` (they may leave the box slightly).
        source: Predicted class of each image ``(N,)``.
        target: Class across the boundary ``(N,)``; ``F = f_target − f_source``.
        normal: Unit normals ``∇F(z)/||∇F(z)||`` ``(N, *shape)``, pointing away from x.
        grad_norm: ``||∇F(z)||`` ``(N,)``.
        value: ``F(z)`` after projection ``(N,)`` (≈ 0).
        index: Positions of these images in the input batch ``(N,)``.
    """

    x: Tensor
    z: Tensor
    source: Tensor
    target: Tensor
    normal: Tensor
    grad_norm: Tensor
    value: Tensor
    index: Tensor

    def __len__(self) -> int:
        return int(self.z.shape[0])

    @property
    def distance(self) -> Tensor:
        """``||z − x||₂`` per point ``(N,)``."""
        return (self.z - self.x).flatten(1).norm(dim=1)

    def subset(self, rows: Tensor) -> BoundaryPoints:
        """The points at `rows`."""
        return BoundaryPoints(
            *(getattr(self, name)[rows] for name in self.__dataclass_fields__)  # type: ignore[arg-type]
        )


def boundary_points(
    clf: Classifier,
    x: Tensor,
    *,
    snap_steps: int = 3,
    steps: int = 50,
    batch_size: int = 256,
) -> BoundaryPoints:
    """The closest boundary points ``z = x + r(x)`` by DeepFool (l2), projected onto F = 0.

    DeepFool's point lies just past the boundary (overshoot, clipping); `snap_steps` Newton
    steps ``z ← z − F(z) ∇F(z) / ||∇F(z)||²`` along the normal put it on ``F = 0``, where
    eq. 7.2 holds. Images DeepFool does not fool within `steps` are left out (``index``
    says which were kept).

    Args:
        clf: The classifier.
        x: Images ``(N, *shape)``.
        snap_steps: Newton steps onto ``F = 0`` (one gradient each).
        steps: DeepFool iterations.
        batch_size: Samples per pass.

    Returns:
        `BoundaryPoints`.
    """
    x = clf.validate(x)
    result = DeepFool(p=2, steps=steps, batch_size=batch_size)(clf, x)
    index = result.success.nonzero()[:, 0].cpu()
    device_index = index.to(x.device)
    return level_set_points(
        clf,
        x[device_index],
        result.adversarial[device_index],
        result.original_label[index].cpu(),
        result.adversarial_label[index].cpu(),
        index=index,
        snap_steps=snap_steps,
        batch_size=batch_size,
    )


def level_set_points(
    clf: Classifier,
    x: Tensor,
    z: Tensor,
    source: Tensor,
    target: Tensor,
    *,
    index: Tensor | None = None,
    snap_steps: int = 0,
    batch_size: int = 256,
) -> BoundaryPoints:
    """Normals of ``F = f_target − f_source`` at points ``z`` (after `snap_steps` onto F = 0).

    With ``snap_steps = 0`` the points stay where they are: the level set of F through z
    is then what is measured — Alg. 6 evaluates the curvature at the image itself
    (thesis §7.5: "we approximate G(z) with G(x)").

    Args:
        clf: The classifier.
        x: The images the points belong to ``(N, *shape)``.
        z: The points ``(N, *shape)``.
        source: Classes ``(N,)`` on the images' side.
        target: Classes ``(N,)`` across the boundary.
        index: Positions in the caller's batch (default ``arange(N)``).
        snap_steps: Newton steps ``z ← z − F ∇F / ||∇F||²``.
        batch_size: Samples per pass.
    """
    source, target = source.cpu(), target.cpu()
    objective = score_difference_objective(target, source)
    rows = torch.arange(z.shape[0])
    value, grad = objective_gradients(clf, z, objective, rows, batch_size)
    for _ in range(snap_steps):
        sq = grad.flatten(1).pow(2).sum(1).clamp_min(1e-30)
        z = z - (value / sq).view(-1, *[1] * (z.ndim - 1)) * grad
        value, grad = objective_gradients(clf, z, objective, rows, batch_size)
    norm = grad.flatten(1).norm(dim=1)
    normal = grad / norm.clamp_min(1e-30).view(-1, *[1] * (z.ndim - 1))
    index = rows if index is None else index
    return BoundaryPoints(x, z, source, target, normal, norm, value, index)


# ---------------------------------------------------------------------- the operator G
def curvature_operator(
    clf: Classifier,
    points: BoundaryPoints,
    *,
    method: Method = "fd",
    h: float | None = None,
    batch_size: int = 256,
) -> tuple[HessianOperator, MatVec]:
    """``G_n v = P_n H_F P_n v / ||∇F(z_n)||`` on flattened vectors, for every point.

    Returns:
        The underlying `HessianOperator` of ``F`` at ``z`` (it counts the products) and
        the `MatVec` ``(v (R, d), rows (R,)) -> (R, d)``.
    """
    hessian = HessianOperator(
        clf,
        points.z,
        score_difference_objective(points.target, points.source),
        method=method,
        h=h,
        batch_size=batch_size,
    )
    normals = points.normal.flatten(1)
    scale = points.grad_norm.clamp_min(1e-30)
    shape = points.z.shape[1:]

    def matvec(v: Tensor, rows: Tensor) -> Tensor:
        n = normals[rows.to(normals.device)].to(v)
        tangent = v - (v * n).sum(1, keepdim=True) * n
        hv = hessian(tangent.reshape(-1, *shape).to(points.z), rows).flatten(1).to(v)
        hv = hv - (hv * n).sum(1, keepdim=True) * n
        return hv / scale[rows.to(scale.device)].to(v)[:, None]

    return hessian, matvec


def _tangent_gaussian(points: BoundaryPoints, count: int, generator: torch.Generator) -> Tensor:
    """``count`` Gaussian vectors per point projected on its tangent space ``(N, count, d)``."""
    d = points.normal[0].numel()
    g = torch.randn(len(points), count, d, generator=generator, dtype=torch.float64)
    n = points.normal.flatten(1).double().cpu()[:, None, :]
    return g - (g * n).sum(-1, keepdim=True) * n


# ---------------------------------------------------------------------- principal curvatures
@dataclass
class PrincipalCurvatures:
    """Extreme principal curvatures and directions at boundary points (eq. 7.2).

    Every value in `curvatures` is the normal curvature ``κ(z, v) = vᵀ G v`` measured along
    its returned direction ``v`` (one more operator product each), not only an eigenvalue
    estimate. For smooth models with exact products the two agree to the residual; with
    finite differences on a piecewise-affine network the operator ``v ↦ G v`` is not
    linear (the difference of gradients depends on which ReLUs switch along ``±h v``), the
    Ritz values of any eigensolver — and the eigenvalues of the d×d matrix built from d
    products — overstate the curvature actually measured along their vectors (about 2× on
    the shipped LeNet, README "Boundary curvature"); `ritz_values` keeps them.

    Attributes:
        curvatures: ``(N, K)`` measured curvatures, in decreasing order within each end
            (``k`` most positive then ``k`` most negative for ``which="both"``; by
            decreasing magnitude for ``"magnitude"``), in units of 1 / input units.
        directions: Principal directions ``(N, K, *shape)``, unit norm.
        ritz_values: The eigensolver's estimates for the same directions ``(N, K)``.
        residuals: Relative residuals ``||G v − θ v|| / max|θ|`` ``(N, K)``.
        products: Hessian-vector products per point (operator applications).
        method: ``"fd"`` or ``"exact"``.
        h: Finite-difference scale (input units).
        which: Which eigenvalues were asked for.
    """

    curvatures: Tensor
    directions: Tensor
    ritz_values: Tensor
    residuals: Tensor
    products: Tensor
    method: str
    h: float
    which: str


def principal_curvatures(
    clf: Classifier,
    points: BoundaryPoints,
    k: int = 10,
    *,
    which: Which = "both",
    method: Method = "fd",
    h: float | None = None,
    solver: Literal["lanczos", "eigsh"] = "lanczos",
    tol: float = 1e-3,
    max_steps: int = 120,
    batch_size: int = 256,
    seed: int = 0,
) -> PrincipalCurvatures:
    """The `k` extreme principal curvatures of the boundary at each point.

    ``solver="lanczos"`` runs `batched_lanczos` (every step of every point in one model
    pass); ``"eigsh"`` runs ARPACK's implicitly restarted Lanczos
    (`scipy.sparse.linalg.eigsh`) one point at a time — the reference path.

    Args:
        clf: The classifier.
        points: Boundary points (`boundary_points`).
        k: Eigenpairs per end (``which="both"``) or in total.
        which: ``"both"`` ends, ``"largest"``, ``"smallest"`` or ``"magnitude"``.
        method: Hessian-vector products: ``"fd"``, ``"exact"`` or ``"auto"``.
        h: Finite-difference scale (input units; default ``0.1 × box width``).
        solver: ``"lanczos"`` (batched) or ``"eigsh"`` (per point).
        tol: Relative residual tolerance.
        max_steps: Largest Krylov dimension (Lanczos).
        batch_size: Rows per model pass.
        seed: Seeds the starting vectors.

    Returns:
        `PrincipalCurvatures`.
    """
    if k < 1:
        raise ValueError(f"The 'k' parameter must be >= 1. Got {k!r}.")
    hessian, matvec = curvature_operator(clf, points, method=method, h=h, batch_size=batch_size)
    generator = torch.Generator().manual_seed(seed)
    start = _tangent_gaussian(points, 1, generator)[:, 0]
    d = start.shape[1]
    if solver == "lanczos":
        values, vectors, residuals, products = _lanczos_in_chunks(
            matvec, start, k, which, tol, max_steps, batch_size
        )
    elif solver == "eigsh":
        values, vectors, residuals, products = _eigsh_each(
            matvec, start, k, which, tol, d, points.z.dtype
        )
    else:
        raise ValueError(f"The 'solver' parameter must be 'lanczos' or 'eigsh'. Got {solver!r}.")
    scale = values.abs().amax(dim=1, keepdim=True).clamp_min(1e-30)
    measured = quadratic_forms(matvec, vectors.double())
    order = _measured_order(measured, k, which)
    assert hessian.h is not None
    return PrincipalCurvatures(
        measured.gather(1, order).float(),
        vectors.gather(1, order[..., None].expand_as(vectors))
        .float()
        .reshape(len(points), -1, *points.z.shape[1:]),
        values.gather(1, order).float(),
        (residuals / scale).gather(1, order).float(),
        products + order.shape[1],
        hessian.method,
        float(hessian.h),
        which,
    )


def _lanczos_in_chunks(
    matvec: MatVec,
    start: Tensor,
    k: int,
    which: Which,
    tol: float,
    max_steps: int,
    chunk: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """`batched_lanczos` over blocks of `chunk` points, concatenated.

    Each point's Krylov basis (``max_steps × d`` float64, twice: the basis and its
    images) lives only while its block runs, so memory is bounded by the block, not by
    the number of points (≈ 0.5 MB per MNIST point at 40 steps): a block has at most
    `chunk` points and at most what the memory budget (`boundaryscope.memory`) holds.
    Points are independent, so the result is the one-block result.
    """
    parts = []
    n, d = start.shape
    # Basis and images (float64), plus the Rayleigh–Ritz temporaries: ≈ 3 copies per step.
    chunk = min(chunk, memory.rows_within(3 * min(max_steps, d) * d * 8, device=start.device))
    for first in range(0, max(n, 1), max(chunk, 1)):
        block = start[first : first + max(chunk, 1)]

        def block_matvec(v: Tensor, rows: Tensor, first: int = first) -> Tensor:
            return matvec(v, rows + first)

        result = batched_lanczos(
            block_matvec, block, k=k, which=which, tol=tol, max_steps=max_steps, check_every=10
        )
        parts.append((result.values, result.vectors, result.residuals, result.steps))
    values, vectors, residuals, steps = (torch.cat(column) for column in zip(*parts, strict=True))
    return values, vectors, residuals, steps


def _measured_order(measured: Tensor, k: int, which: str) -> Tensor:
    """Sort order of the measured curvatures: within each end, or by magnitude."""
    if which == "magnitude":
        return measured.abs().argsort(dim=1, descending=True)
    if which != "both":
        return measured.argsort(dim=1, descending=True)
    top = measured[:, :k].argsort(dim=1, descending=True)
    bottom = measured[:, k:].argsort(dim=1, descending=True) + k
    return torch.cat([top, bottom], dim=1)


def _eigsh_each(
    matvec: MatVec, start: Tensor, k: int, which: str, tol: float, d: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """ARPACK per point; returns the same layout as `batched_lanczos`."""
    arpack_which = {"both": "BE", "largest": "LA", "smallest": "SA", "magnitude": "LM"}[which]
    count = 2 * k if which == "both" else k
    all_values, all_vectors, all_residuals, products = [], [], [], []
    for row in range(start.shape[0]):
        calls = [0]

        def counted(v: Tensor, rows: Tensor, calls: list[int] = calls) -> Tensor:
            calls[0] += v.shape[0]
            return matvec(v, rows)

        operator = point_operator(counted, row, d, dtype)
        values, vectors = _arpack(
            operator, k=count, which=arpack_which, tol=tol, v0=start[row].numpy()
        )
        order = np.argsort(-np.abs(values)) if which == "magnitude" else np.argsort(-values)
        values, vectors = values[order], vectors[:, order]
        applied = np.stack([operator.matvec(vectors[:, i]) for i in range(count)], axis=1)
        residual = np.linalg.norm(applied - vectors * values, axis=0)
        all_values.append(torch.from_numpy(values.copy()))
        all_vectors.append(torch.from_numpy(vectors.T.copy()))
        all_residuals.append(torch.from_numpy(residual))
        products.append(calls[0])
    return (
        torch.stack(all_values),
        torch.stack(all_vectors),
        torch.stack(all_residuals),
        torch.tensor(products),
    )


def _arpack(
    operator: LinearOperator, *, k: int, which: str, tol: float, v0: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`scipy.sparse.linalg.eigsh`, its failures turned into one clear ValueError.

    ARPACK fails on a zero operator ("starting vector is zero": the exact Hessian of a
    piecewise-affine network such as a ReLU net is 0 almost everywhere) and when it does
    not converge; its own status is checked here rather than trusting a partial answer.
    """
    try:
        return eigsh(operator, k=k, which=which, tol=tol, v0=v0)
    except ArpackNoConvergence as error:
        raise ValueError(
            f"ARPACK did not converge on the curvature operator ({len(error.eigenvalues)} of "
            f"{k} eigenvalues found); raise tol, lower k, or use more points."
        ) from None
    except ArpackError as error:
        raise ValueError(
            f"ARPACK failed on the curvature operator ({str(error).strip()}). The operator is "
            "probably zero: exact Hessian products vanish on piecewise-affine networks (ReLU, "
            "max-pool); use method='fd' (--method fd) with a scale h."
        ) from None


def curvature_profile(result: PrincipalCurvatures) -> dict[str, list[float]]:
    """The principal-curvature profile averaged over points (Fig. 7.5b).

    Returns:
        ``{"mean": ..., "std": ..., "median": ...}``: per rank (most positive first), over
        the points.
    """
    c = result.curvatures.double()
    return {
        "mean": c.mean(0).tolist(),
        "std": c.std(0).tolist() if len(c) > 1 else [0.0] * c.shape[1],
        "median": c.median(0).values.tolist(),
    }


# ---------------------------------------------------------------------- Hutchinson
def average_curvature(
    clf: Classifier,
    points: BoundaryPoints,
    samples: int = 32,
    *,
    method: Method = "fd",
    h: float | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Mean principal curvature ``κ̄ = tr(G)/(d − 1)`` by a Hutchinson estimate (eq. 7.4).

    ``κ̄ = E_v vᵀ G v`` for ``v`` uniform on the unit sphere of the tangent space (the
    thesis samples the whole sphere, whose expectation is ``tr(G)/d``; sampling tangent
    directions removes the ``(d − 1)/d`` bias and the normal's zero).

    Returns:
        ``(mean (N,), standard_error (N,))`` over the `samples` directions per point.
    """
    if samples < 2:
        raise ValueError(f"The 'samples' parameter must be >= 2. Got {samples!r}.")
    _, matvec = curvature_operator(clf, points, method=method, h=h, batch_size=batch_size)
    generator = torch.Generator().manual_seed(seed)
    v = _tangent_gaussian(points, samples, generator)
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    forms = quadratic_forms(matvec, v)
    return forms.mean(1).float(), (forms.std(1) / math.sqrt(samples)).float()


def quadratic_forms(matvec: MatVec, v: Tensor, points: Tensor | None = None) -> Tensor:
    """``v[n, j]ᵀ A_{p_n} v[n, j]`` for ``v`` ``(N, J, d)`` — one batched operator call.

    ``p_n = points[n]`` is the operator's point index of row ``n`` (default ``n``). Rows are
    taken in blocks whose ``(J, d)`` float64 products fit the memory budget
    (`boundaryscope.memory`); one block when they all do.
    """
    n, j, d = v.shape
    points = torch.arange(n) if points is None else points
    forms = []
    for block in memory.row_blocks(n, 4 * j * d * 8, device=v.device):
        rows = points[block].repeat_interleave(j)
        part = v[block]
        av = matvec(part.reshape(-1, d), rows).double().reshape(part.shape)
        forms.append((av * part.double()).sum(-1))
    return torch.cat(forms) if forms else v.new_zeros(n, j, dtype=torch.float64)


# ---------------------------------------------------------------------- shared directions
@dataclass
class SharedDirections:
    """Directions along which the boundary is curved at many points (§7.4, Fig. 7.6b).

    Attributes:
        basis: Orthonormal ``u_1..u_m`` ``(m, *shape)``.
        singular_values: Singular values of the stacked principal directions ``(m,)``.
    """

    basis: Tensor
    singular_values: Tensor

    @property
    def flat(self) -> Tensor:
        """The basis as an ``(m, d)`` matrix."""
        return self.basis.flatten(1)


def shared_directions(result: PrincipalCurvatures, m: int | None = None) -> SharedDirections:
    """The top right singular vectors of the matrix M of stacked principal directions.

    Every point contributes its computed principal directions (both ends by default),
    curvature-weighted or not: the thesis stacks the directions themselves (§7.4).

    Args:
        result: Principal curvatures at ~100 training points.
        m: Number of shared directions (default: all ``min(N·K, d)``).
    """
    stacked = result.directions.flatten(2).flatten(0, 1).double()
    _, singular, vh = torch.linalg.svd(stacked, full_matrices=False)
    m = vh.shape[0] if m is None else min(int(m), vh.shape[0])
    shape = result.directions.shape[2:]
    return SharedDirections(vh[:m].float().reshape(m, *shape), singular[:m].float())


def curvature_ratios(
    clf: Classifier,
    points: BoundaryPoints,
    basis: Tensor,
    *,
    samples: int = 32,
    method: Method = "fd",
    h: float | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> Tensor:
    """``ρ_i(z) = |u_iᵀ P H P u_i| / E_v |vᵀ P H P v|``, v uniform on the sphere (eq. 7.3).

    ``ρ_i ≫ 1``: the boundary at ``z`` is much more curved along ``u_i`` than along a
    random direction. The ``1/||∇F||`` of G cancels in the ratio.

    Args:
        clf: The classifier.
        points: Boundary points.
        basis: Directions ``(m, *shape)`` (e.g. `SharedDirections.basis`).
        samples: Random directions for the denominator.
        method: Hessian-vector products (see `principal_curvatures`).
        h: Finite-difference scale.
        batch_size: Rows per model pass.
        seed: Seeds the random directions.

    Returns:
        ``(N, m)`` ratios.
    """
    _, matvec = curvature_operator(clf, points, method=method, h=h, batch_size=batch_size)
    generator = torch.Generator().manual_seed(seed)
    n, d = len(points), points.normal[0].numel()
    b = basis.flatten(1).double()
    ratios = []
    # The random directions are drawn block by block of points (one block when they fit
    # the memory budget, as on MNIST): same distribution, bounded memory.
    for block in memory.row_blocks(n, 6 * (b.shape[0] + samples) * d * 8):
        rows = torch.arange(n)[block]
        g = torch.randn(len(rows), samples, d, generator=generator, dtype=torch.float64)
        v = torch.cat([b[None].expand(len(rows), -1, -1), g / g.norm(dim=-1, keepdim=True)], 1)
        forms = quadratic_forms(matvec, v, rows).abs()
        numerator, denominator = forms[:, : b.shape[0]], forms[:, b.shape[0] :].mean(1)
        ratios.append(numerator / denominator.clamp_min(1e-30)[:, None])
    return torch.cat(ratios).float() if ratios else torch.zeros(0, b.shape[0])


def projection_ratios(basis: Tensor, vectors: Tensor) -> Tensor:
    """``||P_S v|| / ||v||`` for each vector (Table 7.1); `basis` orthonormal ``(m, *shape)``."""
    b = basis.flatten(1).double()
    v = vectors.flatten(1).double().to(b.device)
    return ((v @ b.T).norm(dim=1) / v.norm(dim=1).clamp_min(1e-30)).float()


def noise_misclassification(
    clf: Classifier,
    x: Tensor,
    basis: Tensor,
    norms: Sequence[float],
    *,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, list[float]]:
    """Share of images whose label changes under Gaussian noise in S, in S⊥, and in R^d.

    Fig. 7.7: one noise direction per image, scaled to each l2 norm in `norms`; measured
    on R^d (no clipping to the box), like the noise regimes of `boundaryscope.noise_robustness`.

    Returns:
        ``{"S": rates, "S_perp": rates, "random": rates}``, one rate per norm.
    """
    x = clf.validate(x)
    clean = clf.predict_unchecked(x, batch_size)
    b = basis.flatten(1).double().cpu()
    generator = torch.Generator().manual_seed(seed)
    g = torch.randn(x.shape[0], b.shape[1], generator=generator, dtype=torch.float64)
    in_s = (g @ b.T) @ b
    kinds = {"S": in_s, "S_perp": g - in_s, "random": g}
    rates: dict[str, list[float]] = {}
    for name, noise in kinds.items():
        unit = (noise / noise.norm(dim=1, keepdim=True).clamp_min(1e-30)).to(x).view_as(x)
        rates[name] = [
            float(
                (clf.predict_unchecked(x + float(eps) * unit, batch_size) != clean).double().mean()
            )
            for eps in norms
        ]
    return rates


# ---------------------------------------------------------------------- subspaces (§6.4)
def subspace_curvature(
    clf: Classifier,
    points: BoundaryPoints,
    basis: Tensor,
    ms: Sequence[int],
    *,
    samples: int = 16,
    method: Method = "fd",
    h: float | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[int, Tensor]:
    """Average curvature in the span of the first m basis vectors (eq. 6.4, Fig. 6.9a).

    ``κ_S(z) = E_{v ∈ S, ||v|| = 1} (Pv)ᵀ H_F (Pv) / (||Pv||² ||∇F||)`` for each m.

    Returns:
        ``{m: (N,) average curvatures}``.
    """
    _, matvec = curvature_operator(clf, points, method=method, h=h, batch_size=batch_size)
    generator = torch.Generator().manual_seed(seed)
    b = basis.flatten(1).double()
    n = points.normal.flatten(1).double().cpu()[:, None, :]
    out: dict[int, Tensor] = {}
    for m in ms:
        m = min(int(m), b.shape[0])
        coefficients = torch.randn(len(points), samples, m, generator=generator, dtype=b.dtype)
        means = []
        for block in memory.row_blocks(len(points), 6 * samples * b.shape[1] * 8):
            rows = torch.arange(len(points))[block]
            v = coefficients[block] @ b[:m]
            pv = v - (v * n[block]).sum(-1, keepdim=True) * n[block]
            pv = pv / pv.norm(dim=-1, keepdim=True).clamp_min(1e-30)
            means.append(quadratic_forms(matvec, pv, rows).mean(1))
        out[m] = torch.cat(means).float() if means else torch.zeros(0)
    return out


def curved_subspace(
    clf: Classifier,
    points: BoundaryPoints,
    m: int,
    *,
    method: Method = "fd",
    h: float | None = None,
    tol: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """S_c: the top-m eigenvectors of the average curvature matrix ``Ḡ = mean_n G_n`` (§6.4.1).

    Each product ``Ḡ v`` applies ``v`` at every point in one batched pass and averages;
    ARPACK (`scipy.sparse.linalg.eigsh`, largest algebraic) finds the positively curved
    directions, along which the boundary bends towards the images and random vectors are
    universal perturbations (Theorem 4).

    Weighting, and how it differs from the seed: ``G_n = P_n H_n P_n / ||∇F(z_n)||`` is each
    point's *curvature* matrix (eq. 7.2), so every point weighs by the inverse of its
    gradient norm; the seed (§6.4.1) averages ``P_n H_n P_n`` itself, which weighs points
    by ``||∇F||`` (steep boundaries count more). The two agree when the gradient norms are
    equal; we keep the curvature form because eq. 6.4 and Theorem 4 are stated for
    curvatures and because it makes models with differently scaled logits comparable.

    Returns:
        ``(basis (m, *shape), eigenvalues (m,))``, eigenvalues decreasing.
    """
    _, matvec = curvature_operator(clf, points, method=method, h=h, batch_size=batch_size)
    n, d = len(points), points.normal[0].numel()
    rows = torch.arange(n)

    def mean_product(vector: np.ndarray) -> np.ndarray:
        v = torch.as_tensor(np.asarray(vector).reshape(1, d)).expand(n, d)
        out = matvec(v.to(points.z.dtype), rows).double().mean(0).numpy()
        return out.reshape(np.shape(vector))

    operator = LinearOperator((d, d), matvec=mean_product, dtype=np.float64)
    start = np.random.default_rng(seed).standard_normal(d)
    values, vectors = _arpack(operator, k=min(m, d - 1), which="LA", tol=tol, v0=start)
    order = np.argsort(-values)
    basis = torch.from_numpy(vectors[:, order].T.copy()).float()
    return basis.reshape(-1, *points.z.shape[1:]), torch.from_numpy(values[order].copy())


# ---------------------------------------------------------------------- loss curvature (§8.2)
@dataclass
class LossCurvature:
    """Input Hessian of the loss at data points and Theorem 5 (thesis §8.2–8.3).

    Attributes:
        eigenvalues: ``(N, 2k)`` extreme eigenvalues of ``∇²ℓ(x)``, decreasing.
        loss: ``ℓ(x)`` ``(N,)``.
        gradient_norm: ``||∇ℓ(x)||`` ``(N,)``.
        alignment: ``|gᵀu| / ||g||`` with ``u`` the top eigenvector ``(N,)``.
        lower: Theorem 5 lower bound on ``||r*||`` ``(N,)`` (NaN where it does not apply).
        upper: Theorem 5 upper bound ``(N,)``.
        threshold: Loss level ``t`` taken as "fooled" (``log 2``).
        products: Hessian-vector products per point.
    """

    eigenvalues: Tensor
    loss: Tensor
    gradient_norm: Tensor
    alignment: Tensor
    lower: Tensor
    upper: Tensor
    threshold: float
    products: Tensor


def loss_curvature(
    clf: Classifier,
    x: Tensor,
    y: Tensor,
    k: int = 10,
    *,
    method: Method = "fd",
    h: float | None = None,
    tol: float = 1e-3,
    max_steps: int = 120,
    batch_size: int = 256,
    seed: int = 0,
) -> LossCurvature:
    """The loss-curvature profile at data points, alignment and Theorem 5 bounds (§8.2).

    Eigenvalues of the input Hessian of the cross-entropy ``ℓ(x) = XEnt(f(x), y)`` by
    batched Lanczos on Hessian-vector products (eq. 8.1 with ``method="fd"``). Theorem 5
    bounds the smallest ``r`` with ``ℓ(x + r) >= t`` under the quadratic model, with
    ``c = t − ℓ(x)``, ``ν`` the top eigenvalue and ``u`` its eigenvector:

        ||g||/ν (sqrt(1 + 2νc/||g||²) − 1)  <=  ||r*||  <=  |gᵀu|/ν (sqrt(1 + 2νc/(gᵀu)²) − 1).

    We take ``t = log 2``: a label change needs ``p_y < 1/2``, i.e. ``ℓ > log 2``, so the
    lower bound also bounds the smallest fooling perturbation of a multi-class model (the
    upper bound is exact only for two classes).

    Returns:
        `LossCurvature`.

    Raises:
        TypeError, ValueError: `y` is not ``(N,)`` integer class indices of the model.
    """
    clf = check_classifier(clf)
    x = clf.validate(x)
    with clf.session():
        clf.predict_unchecked(x[:1])  # the number of classes, against which y is checked
    y = check_labels(y, x, clf, "y")
    objective = cross_entropy_objective(y)
    hessian = HessianOperator(clf, x, objective, method=method, h=h, batch_size=batch_size)
    loss, grad = hessian.gradient()
    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(x.shape[0], x[0].numel(), generator=generator, dtype=torch.float64)

    def matvec(v: Tensor, r: Tensor) -> Tensor:
        return hessian(v.reshape(-1, *x.shape[1:]).to(x), r).flatten(1).to(v)

    result = batched_lanczos(matvec, start, k=k, which="both", tol=tol, max_steps=max_steps)
    g = grad.flatten(1).double().cpu()
    g_norm = g.norm(dim=1)
    top = result.vectors[:, 0]
    g_dot_u = (g * top).sum(1).abs()
    threshold = math.log(2.0)
    lower, upper = theorem5_bounds(
        g_norm, g_dot_u, result.values[:, 0], threshold - loss.double().cpu()
    )
    return LossCurvature(
        result.values.float(),
        loss.float().cpu(),
        g_norm.float(),
        (g_dot_u / g_norm.clamp_min(1e-30)).float(),
        lower.float(),
        upper.float(),
        threshold,
        result.steps,
    )


# ---------------------------------------------------------------------- the whole study
@dataclass(frozen=True)
class CurvatureConfig:
    """Sizes of `curvature_study` (the report's and the CLI's settings).

    Attributes:
        n_train: Training images whose principal directions define the shared directions
            and S_c (the thesis uses 100).
        n_test: Held-out images for the profile, ρ_i, Table 7.1 and Fig. 7.7.
        k: Principal curvatures per end at each point.
        method: ``"fd"``, ``"exact"`` or ``"auto"``.
        h: Finite-difference scale (``None``: 0.1 × box width).
        samples: Random directions of the Hutchinson and ρ_i estimates.
        rho_m: Shared directions whose ρ_i is plotted.
        subspace_fraction: ``dim S / d`` of Table 7.1 and Fig. 7.7 (the thesis' 200 of
            CIFAR's 3072 dimensions).
        sc_m: Dimension of S_c.
        sc_ms: Subspace sizes for the fooling rates and eq. 6.4.
        xi_factor: l2 norm of the universal perturbations compared, as a multiple of the
            median ``||r(x)||₂`` of the training images.
        draws: Random vectors per subspace size.
        loss_n: Test images of the loss-curvature profile.
        max_steps: Lanczos steps per point.
        batch_size: Rows per model pass.
    """

    n_train: int = 100
    n_test: int = 100
    k: int = 10
    method: Method = "fd"
    h: float | None = None
    samples: int = 32
    rho_m: int = 50
    subspace_fraction: float = 200 / 3072
    sc_m: int = 20
    sc_ms: tuple[int, ...] = (1, 5, 20)
    xi_factor: float = 4.0
    draws: int = 10
    loss_n: int = 50
    max_steps: int = 120
    batch_size: int = 256


def curvature_study(
    clf: Classifier,
    x_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    config: CurvatureConfig = CurvatureConfig(),
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """Every curvature measurement of thesis §7.4, §6.4 and §8.2 on one model, JSON-ready.

    Principal curvatures at the boundary points of ``n_train`` training images give the
    shared curved directions ``u_i`` and S_c; held-out images give the profile (Fig. 7.5b),
    Hutchinson mean curvatures (eq. 7.4), ``ρ_i`` (eq. 7.3, Fig. 7.6a), Table 7.1, the
    noise curves of Fig. 7.7, the curvature averaged in S_c (eq. 6.4, Fig. 6.9a) and the
    fooling rates of random vectors from S_c, S_f, of Alg. 4 and of random directions at one
    l2 norm (Fig. 6.9b). The loss curvature (Fig. 8.2) with Theorem 5 closes it.

    Returns:
        A dict of lists and numbers (see the report section "Boundary curvature").
    """
    opts: dict[str, Any] = {"method": config.method, "h": config.h, "batch_size": config.batch_size}
    x_train, x_test = x_train[: config.n_train], x_test[: config.n_test]
    y_test = y_test[: config.n_test]
    train_points = boundary_points(clf, x_train, batch_size=config.batch_size)
    test_points = boundary_points(clf, x_test, batch_size=config.batch_size)
    d = int(x_test[0].numel())
    train_pc = principal_curvatures(
        clf, train_points, config.k, max_steps=config.max_steps, seed=seed, **opts
    )
    test_pc = principal_curvatures(
        clf, test_points, config.k, max_steps=config.max_steps, seed=seed + 1, **opts
    )
    mean, stderr = average_curvature(clf, test_points, config.samples, seed=seed, **opts)
    subspace_m = max(1, round(config.subspace_fraction * d))
    shared = shared_directions(train_pc, max(subspace_m, config.rho_m))
    rho = curvature_ratios(
        clf, test_points, shared.basis[: config.rho_m], samples=config.samples, seed=seed, **opts
    )
    s_basis = shared.basis[:subspace_m]
    vectors = _sensitivity_vectors(clf, x_test, y_test, test_points, seed)
    table = {
        name: {"mean": float(r.mean()), "std": float(r.std()) if len(r) > 1 else 0.0}
        for name, r in ((n, projection_ratios(s_basis, v)) for n, v in vectors.items())
    }
    image_norm = float(x_test.flatten(1).norm(dim=1).median())
    noise_levels = [image_norm * t for t in (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)]
    noise = noise_misclassification(
        clf, x_test, s_basis, noise_levels, seed=seed, batch_size=config.batch_size
    )
    sc_basis, sc_values = curved_subspace(clf, train_points, config.sc_m, seed=seed, **opts)
    in_sc = subspace_curvature(
        clf, test_points, sc_basis, config.sc_ms, samples=config.samples, seed=seed, **opts
    )
    in_sc_train = subspace_curvature(
        clf, train_points, sc_basis, config.sc_ms, samples=config.samples, seed=seed, **opts
    )
    xi = config.xi_factor * float(train_points.distance.median())
    generator = torch.Generator().manual_seed(seed)
    clean = clf.predict_unchecked(x_test, config.batch_size)
    sf_basis = normal_subspace(train_points.z - train_points.x)[2]
    fool = {
        "S_c": subspace_fooling_rates(
            clf, x_test, sc_basis, xi, config.sc_ms, draws=config.draws, generator=generator,
            clean=clean,
        ),
        "S_f": subspace_fooling_rates(
            clf, x_test, sf_basis, xi, config.sc_ms, draws=config.draws, generator=generator,
            clean=clean,
        ),
        "random": subspace_fooling_rates(
            clf, x_test, None, xi, [0], draws=config.draws, generator=generator, clean=clean
        )[0],
    }  # fmt: skip
    universal = universal_perturbation(
        clf, x_train, xi, p=2, variant="minibatch", max_passes=5, seed=seed
    )
    fool["alg4"] = fooling_rate(clf, x_test, universal.v, clean=clean)
    loss_n = min(config.loss_n, x_test.shape[0])
    loss = loss_curvature(
        clf, x_test[:loss_n], y_test[:loss_n], config.k, max_steps=config.max_steps, **opts
    )
    loss_points = test_points.index < loss_n
    return {
        "config": {**config.__dict__, "h": train_pc.h, "method": train_pc.method},
        "d": d,
        "n_train_points": len(train_points),
        "n_test_points": len(test_points),
        "distance_median": float(test_points.distance.median()),
        "profile": curvature_profile(test_pc),
        "curvatures": test_pc.curvatures.tolist(),
        "residual_median": float(test_pc.residuals.median()),
        "products_per_point": float(test_pc.products.double().mean()),
        "mean_curvature": mean.tolist(),
        "mean_curvature_stderr": stderr.tolist(),
        "shared_singular_values": shared.singular_values.tolist(),
        "shared_basis": shared.basis[:8].cpu().numpy().round(5).tolist(),
        "rho": {"mean": rho.mean(0).tolist(), "std": _spread(rho).tolist()},
        "subspace_m": subspace_m,
        "projections": table,
        "noise": {"levels": noise_levels, "image_norm": image_norm, "rates": noise},
        "sc_eigenvalues": sc_values.tolist(),
        "sc_basis": sc_basis[:4].cpu().numpy().round(5).tolist(),
        "sc_curvature": {str(m): [float(v.mean()), float(_spread(v))] for m, v in in_sc.items()},
        "sc_curvature_train": {
            str(m): [float(v.mean()), float(_spread(v))] for m, v in in_sc_train.items()
        },
        "fooling": {"xi": xi, **fool},
        "loss": {
            "eigenvalues_mean": loss.eigenvalues.double().mean(0).tolist(),
            "alignment": loss.alignment.tolist(),
            "lower": loss.lower.tolist(),
            "upper": loss.upper.tolist(),
            "deepfool_norm": _distances_by_index(test_points, loss_points, loss_n),
        },
    }


def _spread(values: Tensor) -> Tensor:
    """Standard deviation over the first axis; NaN (without torch's warning) for one row."""
    if values.shape[0] < 2:
        return torch.full(values.shape[1:], math.nan, dtype=values.dtype)
    return values.std(0)


def _distances_by_index(points: BoundaryPoints, keep: Tensor, n: int) -> list[float]:
    """``||r(x)||₂`` of the first `n` images, NaN for those DeepFool did not fool."""
    out = torch.full((n,), math.nan, dtype=torch.float64)
    out[points.index[keep]] = points.distance[keep].double().cpu()
    return out.tolist()


def _sensitivity_vectors(
    clf: Classifier, x: Tensor, y: Tensor, points: BoundaryPoints, seed: int
) -> dict[str, Tensor]:
    """The perturbations of Table 7.1: random, adversarial, x₂ − x₁, image and loss gradients.

    "Image gradient" is the spatial derivative of the image (thesis §7.4, footnote 5: the
    direction of a small translation), by `torch.gradient` along rows and columns; the
    loss gradient ``∇_x ℓ`` is listed too.
    """
    generator = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    pairs = torch.randperm(n, generator=generator)
    spatial = torch.gradient(x.double().cpu(), dim=(-2, -1)) if x.ndim == 4 else None
    _, loss_grad = clf.loss_gradient(clf.validate(x), y.to(clf.device))
    vectors = {
        "random": torch.randn(n, x[0].numel(), generator=generator, dtype=torch.float64),
        "adversarial (DeepFool)": (points.z - points.x).flatten(1),
        "x₂ − x₁": (x[pairs] - x).flatten(1)[pairs != torch.arange(n)],
        "loss gradient ∇ₓℓ": loss_grad.flatten(1),
    }
    if spatial is not None:
        vectors["image gradient (∂/∂row, ∂/∂col)"] = torch.cat(
            [spatial[0].flatten(1), spatial[1].flatten(1)]
        )
    return vectors
