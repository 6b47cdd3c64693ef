"""Theorems 3 and 4 measured on a model: universal directions and vectors from a subspace.

Thesis §6.3–6.4 explains universal perturbations by two models of the boundary near the
data, each predicting how long a random vector of a subspace ``S`` (dimension ``m``) must be
to fool most images. With ``r(x)`` the minimal (DeepFool, l2) perturbation and
``r̂ = r/||r||``:

- **Flat model** (Theorem 3, eq. 6.2–6.3): the region of ``x`` is the stripe
  ``|r(x)ᵀv| < ||r(x)||²``; a *direction* fools ``x`` when ``x + v`` or ``x − v`` changes
  label. For ``v`` uniform on the sphere of radius ``ρ`` in ``S``, ``x`` is fooled with
  probability ``P(|u₁| >= t)``, ``t = ||r(x)|| / (ρ ||P_S r̂(x)||)`` (``u`` uniform on the
  unit sphere of ``R^m``; ``u₁² ~ Beta(1/2, (m−1)/2)``), and the theorem's radius is
  ``ρ₃ = sqrt(e m) / (δ (1 − ξ))`` in units of ``||r||`` when ``||P_S r̂|| >= 1 − ξ``.
- **Curved model** (Theorem 4): if along the normal section spanned by ``r(x)`` and
  ``v ∈ S`` the boundary's curvature ``κ`` — the smallest eigenvalue of
  ``Πᵀ H_F Π / ||∇F||`` with ``Π`` an orthonormal basis of ``span(r, v)``, in units of
  ``1/||r(x)||`` — holds for a share ``1 − β`` of ``v``, a random *vector* of norm
  ``ρ₄ = sqrt(2 log(2/δ)/m)/κ + κ^{-1/2}`` (units of ``||r||``) fools ``x`` with
  probability ``>= 1 − δ − β``.

`universality_check` measures, for one subspace, each image's ``||P_S r̂||`` and ``κ``, the
per-image radii of both theorems, what they predict at a ladder of norms, and what random
vectors of ``S`` actually achieve as directions (``±v``) and as vectors (``+v``). The
measured rates use the clipped points ``clip(x ± v)`` a user would see; the theorems know
no box.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from boundaryscope import memory
from boundaryscope.classifier import Classifier, check_classifier
from boundaryscope.geometry.curvature import (
    BoundaryPoints,
    boundary_points,
    curvature_operator,
    curved_subspace,
)
from boundaryscope.geometry.hessian import Method
from boundaryscope.geometry.theory import (
    check_probability,
    flat_fooling_probability,
    theorem3_radius,
    theorem4_radius,
)
from boundaryscope.universal import normal_subspace, perturbed_labels

__all__ = [
    "SUBSPACES",
    "TheoremsConfig",
    "UniversalityCheck",
    "normal_section_curvatures",
    "subspace_bases",
    "universality_check",
    "universality_study",
]


def normal_section_curvatures(
    clf: Classifier,
    points: BoundaryPoints,
    directions: Tensor,
    *,
    method: Method = "fd",
    h: float | None = None,
    batch_size: int = 256,
) -> Tensor:
    """Theorem 4's curvature of each normal section ``span(r(x), v)``, units ``1/||r(x)||``.

    With ``n`` the unit normal at ``z = x + r(x)`` and ``t`` the unit tangent part of ``v``,
    ``κ = ||r(x)|| · λ_min([[nᵀHn, nᵀHt], [tᵀHn, tᵀHt]]) / ||∇F(z)||`` for
    ``F = f_target − f_source`` (positive when the section bends around the image, as in
    `boundaryscope.geometry.curvature`). ``1 + J`` Hessian-vector products per point.

    Args:
        clf: The classifier.
        points: Boundary points of the images (`boundary_points`).
        directions: ``(N, J, *shape)`` or ``(N, J, d)`` directions ``v`` per point.
        method: Hessian-vector products, ``"fd"`` (ReLU networks) or ``"exact"``.
        h: Finite-difference scale (``None``: 0.1 × box width).
        batch_size: Rows per model pass.

    Returns:
        ``(N, J)`` float64 curvatures.
    """
    n_points, j = directions.shape[:2]
    d = points.normal[0].numel()
    # The Hessian of F at z itself (not the projected operator G): the section's normal-normal
    # and cross terms count in Theorem 4's condition.
    hessian, _ = curvature_operator(clf, points, method=method, h=h, batch_size=batch_size)
    normal = points.normal.flatten(1).double().cpu()
    scale = (points.distance.double() / points.grad_norm.double().clamp_min(1e-30)).cpu()
    out = []
    for block in memory.row_blocks(n_points, 4 * (j + 1) * d * 8):
        n = normal[block]
        v = directions[block].reshape(-1, j, d).double().cpu()
        t = v - (v * n[:, None]).sum(-1, keepdim=True) * n[:, None]
        t = t / t.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        stacked = torch.cat([n[:, None], t], dim=1)
        rows = torch.arange(n_points)[block]
        products = hessian(stacked.reshape(len(n), j + 1, *points.z.shape[1:]).to(points.z), rows)
        products = products.reshape(len(n), j + 1, d).double().cpu()
        nn_ = (products[:, 0] * n).sum(-1, keepdim=True)
        nt = (products[:, 1:] * n[:, None]).sum(-1)
        tn = (products[:, 0:1] * t).sum(-1)
        tt = (products[:, 1:] * t).sum(-1)
        # The finite-difference H is not exactly symmetric: use the symmetric part.
        off = (nt + tn) / 2
        smallest = (nn_ + tt) / 2 - torch.sqrt(((nn_ - tt) / 2) ** 2 + off**2)
        out.append(smallest * scale[block, None])
    return torch.cat(out) if out else torch.zeros(0, j, dtype=torch.float64)


@dataclass
class UniversalityCheck:
    """Theorems 3–4 next to the fooling rates of random vectors of one subspace (§6.3–6.4).

    Attributes:
        m: Dimension of the subspace.
        delta: The theorems' ``δ``.
        beta: Share of directions allowed to break Theorem 4's curvature condition.
        radii: l2 norms tried (input units).
        distance: ``||r(x)||`` per image ``(N,)``.
        projection: ``||P_S r̂(x)||`` per image ``(N,)``.
        kappa: Per image, the ``β``-quantile over the drawn directions of the normal-section
            curvature (units ``1/||r(x)||``) ``(N,)``; NaN when curvature was not measured.
        theorem3_radius: Per image ``sqrt(e m) ||r(x)|| / (δ ||P_S r̂(x)||)`` ``(N,)``.
        theorem4_radius: Per image ``||r(x)|| ρ₄(κ)``, ``inf`` where ``κ <= 0`` ``(N,)``.
        flat_predicted: Per radius, the mean over images of the flat model's probability
            that a random direction of ``S`` fools the image (exact, not the bound).
        curved_predicted: Per radius, Theorem 4's guarantee ``(1 − δ − β) · P_x(ρ₄(x) <= ρ)``.
        direction_fooling: Per radius, the measured share of images fooled by ``v`` or
            ``−v`` (eq. 6.2), averaged over the draws.
        vector_fooling: Per radius, the measured share fooled by ``+v``.
        flat_agreement: Share of (image, draw, radius) triples the flat model calls fooled
            (``|r̂ᵀv| >= ||r||``) that are fooled as a direction — how far condition
            ``L_s`` (eq. 6.3) holds; NaN when the model calls none fooled.
        draws: Random unit vectors of ``S`` per radius (the same for every image).
    """

    m: int
    delta: float
    beta: float
    radii: list[float]
    distance: Tensor
    projection: Tensor
    kappa: Tensor
    theorem3_radius: Tensor
    theorem4_radius: Tensor
    flat_predicted: list[float]
    curved_predicted: list[float]
    direction_fooling: list[float]
    vector_fooling: list[float]
    flat_agreement: float
    draws: int

    def summary(self) -> dict[str, object]:
        """Medians of the per-image quantities and the per-radius curves, JSON-ready."""
        finite4 = self.theorem4_radius[torch.isfinite(self.theorem4_radius)]
        kappa = self.kappa[~torch.isnan(self.kappa)]
        return {
            "m": self.m,
            "delta": self.delta,
            "beta": self.beta,
            "n": int(self.distance.numel()),
            "distance_median": _median(self.distance),
            "projection_median": _median(self.projection),
            "projection_p10": _quantile(self.projection, 0.1),
            "theorem3_radius_median": _median(self.theorem3_radius),
            "kappa_median": _median(kappa),
            "kappa_positive": float((kappa > 0).double().mean()) if kappa.numel() else math.nan,
            "theorem4_radius_median": _median(finite4),
            "radii": self.radii,
            "flat_predicted": self.flat_predicted,
            "curved_predicted": self.curved_predicted,
            "direction_fooling": self.direction_fooling,
            "vector_fooling": self.vector_fooling,
            "flat_agreement": self.flat_agreement,
            "draws": self.draws,
        }


def _median(values: Tensor) -> float:
    return float(values.double().median()) if values.numel() else math.nan


def _quantile(values: Tensor, q: float) -> float:
    return float(torch.quantile(values.double(), q)) if values.numel() else math.nan


def _unit_coefficients(m: int, count: int, generator: torch.Generator) -> Tensor:
    """``count`` uniform unit vectors of ``R^m``: coordinates of random unit vectors of S."""
    coefficients = torch.randn(count, m, generator=generator, dtype=torch.float64)
    return coefficients / coefficients.norm(dim=1, keepdim=True).clamp_min(1e-30)


def _normal_coordinates(points: BoundaryPoints, basis: Tensor) -> tuple[Tensor, Tensor]:
    """``(||r(x)|| (N,), coordinates of r̂(x) in the basis rows (N, m))``, block by block.

    Only ``(N, m)`` numbers are kept, never another ``(N, d)`` copy of the perturbations.
    """
    d = basis.shape[1]
    distances, coordinates = [], []
    for block in memory.row_blocks(len(points), 3 * d * 8):
        r = (points.z[block] - points.x[block]).flatten(1).double().cpu()
        norm = r.norm(dim=1)
        distances.append(norm)
        coordinates.append((r @ basis.T) / norm[:, None].clamp_min(1e-30))
    if not distances:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, basis.shape[0])
    return torch.cat(distances), torch.cat(coordinates)


def _section_kappa(
    clf: Classifier,
    points: BoundaryPoints,
    basis: Tensor,
    coefficients: Tensor,
    beta: float,
    **options: Any,
) -> Tensor:
    """Per point, the β-quantile of `normal_section_curvatures` over its directions of S.

    ``coefficients`` ``(N, J, m)``; the ``(J, d)`` directions of a block of points are formed
    only while that block is measured (memory bounded by the budget, not by ``N × J × d``).
    """
    n, j, _ = coefficients.shape
    out = []
    for block in memory.row_blocks(n, 6 * (j + 1) * basis.shape[1] * 8):
        rows = torch.arange(n)[block]
        directions = coefficients[block] @ basis
        sections = normal_section_curvatures(clf, points.subset(rows), directions, **options)
        out.append(torch.quantile(sections, beta, dim=1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def universality_check(
    clf: Classifier,
    x: Tensor,
    basis: Tensor,
    m: int,
    radii: Sequence[float],
    *,
    delta: float = 0.2,
    beta: float = 0.2,
    draws: int = 10,
    samples: int = 16,
    curvature: bool = True,
    points: BoundaryPoints | None = None,
    method: Method = "fd",
    h: float | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> UniversalityCheck:
    """Measure Theorems 3 and 4 for random vectors of ``S = span(basis[:m])`` (§6.3–6.4).

    Cost: DeepFool on ``x`` (unless `points` are given), ``(1 + samples)`` Hessian-vector
    products per image when `curvature` is on, and ``2 · draws · len(radii)`` forward passes
    of the images.

    Args:
        clf: The classifier.
        x: Held-out images ``(N, *shape)`` (those DeepFool cannot fool are left out).
        basis: Orthonormal rows ``(M, *shape)`` or ``(M, d)``, e.g. S_f or S_c.
        m: Subspace dimension (``<= M``).
        radii: l2 norms of the random vectors (input units).
        delta: The theorems' failure probability ``δ``.
        beta: Theorem 4's share of directions that may break the curvature condition.
        draws: Random unit vectors of ``S`` (shared by all images) per radius.
        samples: Directions of ``S`` per image for the curvature quantile.
        curvature: Measure Theorem 4's ``κ`` (else ``kappa`` is NaN).
        points: Boundary points of `x`, if already computed.
        method: Hessian-vector products (``"fd"`` for ReLU networks).
        h: Finite-difference scale.
        seed: Seeds the random vectors (the same draws for every image).
        batch_size: Rows per model pass.

    Returns:
        A `UniversalityCheck`.
    """
    clf = check_classifier(clf)
    x = clf.validate(x)
    check_probability(delta)
    check_probability(beta, "beta")
    flat_basis = basis.flatten(1).double().cpu()
    if not 1 <= m <= flat_basis.shape[0]:
        raise ValueError(
            f"The 'm' parameter must lie in [1, {flat_basis.shape[0]}] (rows of 'basis'). "
            f"Got {m!r}."
        )
    if flat_basis.shape[1] != x[0].numel():
        raise ValueError(
            f"The 'basis' rows must have {x[0].numel()} entries (the image size). "
            f"Got {flat_basis.shape[1]}."
        )
    radii = [float(r) for r in radii]
    if not radii or min(radii) <= 0:
        raise ValueError(f"The 'radii' parameter must be positive norms. Got {radii!r}.")
    points = boundary_points(clf, x, batch_size=batch_size) if points is None else points
    generator = torch.Generator().manual_seed(seed)
    basis_m = flat_basis[:m]
    distance, inside = _normal_coordinates(points, basis_m)  # r̂ = P_S r̂ + (orthogonal part)
    projection = inside.norm(dim=1)
    radius3 = theorem3_radius(m, delta) * distance / projection.clamp_min(1e-30)

    kappa = torch.full_like(distance, math.nan)
    if curvature and len(points):
        # One image after the other from one generator: the draws are those of the seed.
        coefficients = torch.stack(
            [_unit_coefficients(m, samples, generator) for _ in range(len(points))]
        )
        kappa = _section_kappa(
            clf, points, basis_m, coefficients, beta, method=method, h=h, batch_size=batch_size
        )
    radius4 = distance * theorem4_radius(m, kappa.nan_to_num(-1.0), delta)

    draws_in_s = _unit_coefficients(m, draws, generator)
    flat_predicted, curved_predicted, direction, vector = [], [], [], []
    agree = called = 0
    with clf.session():
        clean = clf.predict_unchecked(points.x, batch_size)
        for rho in radii:
            t = distance / (rho * projection).clamp_min(1e-30)
            flat_predicted.append(float(flat_fooling_probability(m, t).mean()))
            curved_predicted.append(float((1 - delta - beta) * (radius4 <= rho).double().mean()))
            fooled_both, fooled_plus = 0.0, 0.0
            for c in draws_in_s:
                v = (rho * (c @ basis_m)).view(x.shape[1:]).to(x)
                plus = _changed(clf, points.x, v, clean, batch_size)
                either = plus | _changed(clf, points.x, -v, clean, batch_size)
                fooled_plus += float(plus.double().mean())
                fooled_both += float(either.double().mean())
                # r̂ᵀv = (P_S r̂)ᵀv for v in S: the flat model's stripe test (eq. 6.3).
                stripe = (inside @ c).abs() * rho >= distance
                called += int(stripe.sum())
                agree += int((stripe & either).sum())
            direction.append(fooled_both / len(draws_in_s))
            vector.append(fooled_plus / len(draws_in_s))
    return UniversalityCheck(
        m=m,
        delta=delta,
        beta=beta,
        radii=radii,
        distance=distance,
        projection=projection,
        kappa=kappa,
        theorem3_radius=radius3,
        theorem4_radius=radius4,
        flat_predicted=flat_predicted,
        curved_predicted=curved_predicted,
        direction_fooling=direction,
        vector_fooling=vector,
        flat_agreement=agree / called if called else math.nan,
        draws=draws,
    )


def _changed(clf: Classifier, x: Tensor, v: Tensor, clean: Tensor, batch_size: int) -> Tensor:
    """Whether ``clip(x + v)`` changes each image's predicted label ``(N,)`` bool (CPU)."""
    if not len(x):
        return torch.zeros(0, dtype=torch.bool)
    return (perturbed_labels(clf, x, v, batch_size) != clean.to(x.device)).cpu()


SUBSPACES = ("S_f", "S_c", "random")


@dataclass(frozen=True)
class TheoremsConfig:
    """Sizes of `universality_study` (the CLI's ``geometry theorems`` settings).

    Attributes:
        subspaces: Which of ``S_f`` (normals of the training images, Theorem 3), ``S_c``
            (top eigenvectors of their average curvature matrix, Theorem 4) and ``random``.
        ms: Subspace dimensions (capped at the basis size).
        radius_factors: Radii as multiples of the held-out images' median ``||r(x)||``.
        delta: The theorems' ``δ``.
        beta: Theorem 4's share of directions that may break its curvature condition.
        draws: Random vectors of S per radius.
        samples: Directions of S per image for the curvature quantile.
        method: Hessian-vector products (``"fd"`` for ReLU networks, ``"exact"``, ``"auto"``).
        h: Finite-difference scale (``None``: 0.1 × box width).
        batch_size: Rows per model pass.
    """

    subspaces: tuple[str, ...] = SUBSPACES
    ms: tuple[int, ...] = (1, 5, 20)
    radius_factors: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)
    delta: float = 0.2
    beta: float = 0.2
    draws: int = 10
    samples: int = 16
    method: Method = "fd"
    h: float | None = None
    batch_size: int = 256


def subspace_bases(
    clf: Classifier, x_train: Tensor, config: TheoremsConfig = TheoremsConfig(), *, seed: int = 0
) -> dict[str, Tensor]:
    """The subspaces of `config.subspaces` as orthonormal rows ``(max(ms), d)`` (float64).

    S_f: right singular vectors of the unit normals at the training images' boundary points
    (§6.3); S_c: top eigenvectors of their average curvature matrix (§6.4.1, `curved_subspace`);
    random: a seeded Gaussian basis, orthonormalised.
    """
    unknown = sorted(set(config.subspaces) - set(SUBSPACES))
    if unknown or not config.subspaces:
        raise ValueError(
            f"The 'subspaces' setting must be among {list(SUBSPACES)}. Got {config.subspaces!r}."
        )
    m_max = max(config.ms)
    d = int(x_train[0].numel())
    bases: dict[str, Tensor] = {}
    if {"S_f", "S_c"} & set(config.subspaces):
        train = boundary_points(clf, x_train, batch_size=config.batch_size)
        if "S_f" in config.subspaces:
            bases["S_f"] = normal_subspace(train.z - train.x)[2][:m_max]
        if "S_c" in config.subspaces:
            sc, _ = curved_subspace(
                clf, train, min(m_max, d - 1), method=config.method, h=config.h, seed=seed
            )
            bases["S_c"] = sc.flatten(1).double()
    if "random" in config.subspaces:
        generator = torch.Generator().manual_seed(seed)
        gaussian = torch.randn(d, m_max, generator=generator, dtype=torch.float64)
        bases["random"] = torch.linalg.qr(gaussian).Q.T
    return {name: bases[name] for name in config.subspaces}


def universality_study(
    clf: Classifier,
    x_train: Tensor,
    x_test: Tensor,
    config: TheoremsConfig = TheoremsConfig(),
    *,
    seed: int = 0,
    bases: dict[str, Tensor] | None = None,
) -> dict[str, Any]:
    """Theorems 3–4 for S_f, S_c and a random subspace, built on `x_train`, on `x_test`.

    S_f and S_c come from the boundary points of the training images (the seed: 100;
    `subspace_bases`), or are given as `bases` (name → orthonormal rows: e.g. another
    model's S_c, Fig. 6.13). Every check runs on the held-out images at radii
    ``radius_factors × median ||r(x)||``.

    Returns:
        ``{"config", "distance_median", "radii", "rows": [summary per (subspace, m)]}``,
        JSON-ready (`UniversalityCheck.summary` rows with ``subspace`` added).
    """
    opts: dict[str, Any] = {"method": config.method, "h": config.h}
    bases = subspace_bases(clf, x_train, config, seed=seed) if bases is None else bases
    points = boundary_points(clf, x_test, batch_size=config.batch_size)
    if not len(points):
        raise ValueError("DeepFool found no boundary point next to any of the test images.")
    median = float(points.distance.median())
    radii = [factor * median for factor in config.radius_factors]
    rows = []
    for name, basis in bases.items():
        for m in config.ms:
            check = universality_check(
                clf,
                x_test,
                basis,
                min(int(m), basis.shape[0]),
                radii,
                delta=config.delta,
                beta=config.beta,
                draws=config.draws,
                samples=config.samples,
                points=points,
                seed=seed,
                batch_size=config.batch_size,
                **opts,
            )
            rows.append({"subspace": name, **check.summary()})
    return {
        "config": asdict(config),
        "n_train": int(x_train.shape[0]),
        "n_test_points": len(points),
        "distance_median": median,
        "radii": radii,
        "rows": rows,
    }
