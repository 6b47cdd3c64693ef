"""Two-dimensional normal cross-sections of the decision boundary (thesis §5.6, §6.4.1, §8.3).

The plane through an image ``x`` spanned by the unit normal ``n = r(x)/||r(x)||`` of its
closest boundary point and a second unit direction ``v ⟂ n`` is sampled on a grid,

    s(a, b) = x + ||r(x)|| (a n + b v),

so both axes are in units of ``||r(x)||`` (Fig. 5.5, 6.7): the clean image sits at
``(a, b) = (0, 0)`` and its DeepFool point at ``(1, 0)``. ``v`` is a random tangent, a
universal perturbation, a shared curved direction or any direction the caller gives,
orthogonalised against ``n``. Every grid point costs one forward row; the grid is swept in
chunks of ``batch_size`` rows, and the same scores give

- the label map ``k̂(s(a, b))``,
- the *margin* of the image's class ``m = f_s − max_{k≠s} f_k``, whose zero level set is the
  boundary of the image's classification region, extracted by ``contourpy`` (the contouring
  library behind matplotlib) with linear interpolation between grid points, and
- the loss ``ℓ(s) = −log softmax(f(s))_y`` whose negative is the surface of Fig. 8.3.

A dense sweep along ``n`` alone measures where the boundary really is on the normal line
(``crossing``, ≈ 1 when DeepFool's point is the closest boundary point along n).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import contourpy
import numpy as np
import torch
from torch import Tensor

from boundaryscope._progress import tqdm_disable
from boundaryscope.classifier import Classifier
from boundaryscope.geometry.curvature import boundary_points
from boundaryscope.geometry.refinement import check_coarse, refined_label_grid

__all__ = [
    "DIRECTIONS",
    "CrossSection",
    "PlaneGrid",
    "SectionGallery",
    "SectionsConfig",
    "normal_section",
    "orthonormal_direction",
    "plane_grid",
    "random_tangent",
    "region_boundary",
    "section_gallery",
    "section_summary",
    "sections_study",
    "study_directions",
]

DEFAULT_NORMAL_RANGE = (-2.0, 4.0)
DEFAULT_TANGENT_RANGE = (-4.0, 4.0)


@dataclass
class PlaneGrid:
    """Labels, margin and loss on a grid ``origin + scale (a_i e_1 + b_j e_2)``.

    Attributes:
        a: Vertical coordinates ``(na,)`` (along ``e_1``), in units of ``scale``.
        b: Horizontal coordinates ``(nb,)`` (along ``e_2``).
        labels: Predicted labels ``(na, nb)``.
        margin: ``f_s − max_{k≠s} f_k`` ``(na, nb)`` for the reference class ``s``;
            positive inside the reference class's region.
        loss: Cross-entropy at the reference label ``(na, nb)``.
        evaluated: ``(na, nb)`` bool, the points the model ran on (all of them unless the
            grid was refined; elsewhere margin and loss are interpolated).
    """

    a: np.ndarray
    b: np.ndarray
    labels: np.ndarray
    margin: np.ndarray
    loss: np.ndarray
    evaluated: np.ndarray | None = None

    @property
    def rows(self) -> int:
        """Model rows the grid cost."""
        return self.labels.size if self.evaluated is None else int(self.evaluated.sum())


@dataclass
class CrossSection:
    """One normal cross-section (thesis Fig. 5.5, 6.7, 8.1, 8.3).

    Attributes:
        a: Coordinates along the normal ``n`` ``(na,)``, units of ``||r(x)||``.
        b: Coordinates along the in-plane tangent ``v`` ``(nb,)``, same units.
        labels: Predicted label at each grid point ``(na, nb)``: row i is ``a[i]``.
        margin: ``f_s − max_{k≠s} f_k`` on the grid ``(na, nb)``, ``s`` the image's class.
        loss: Cross-entropy at label ``s`` on the grid ``(na, nb)`` (Fig. 8.3 shows ``−loss``).
        radius: ``||r(x)||₂``, the unit of both axes (input units).
        source: Predicted class ``s`` of the image.
        adversarial_label: Class of the DeepFool point.
        direction: Name of the tangent direction (``"random"``, ``"universal"``, …).
        crossing: First ``a > 0`` on the line ``x + a ||r|| n`` where the label leaves
            ``s`` (margin zero interpolated between samples); ``nan`` if it never does.
        rows: Model rows the grid and the line cost (fewer than their points when refined).
    """

    a: np.ndarray
    b: np.ndarray
    labels: np.ndarray
    margin: np.ndarray
    loss: np.ndarray
    radius: float
    source: int
    adversarial_label: int
    direction: str
    crossing: float
    rows: int = 0

    def boundary(self) -> list[np.ndarray]:
        """The boundary of the image's region: polylines ``(k, 2)`` of ``(a, b)`` points."""
        return region_boundary(self.a, self.b, self.margin)

    def plane_curvature(self, window: float = 1.0) -> float:
        """Curvature of the boundary in this plane at the normal crossing (1 / input units).

        A parabola ``a = c_0 + c_1 b + c_2 b²`` is fitted (least squares) to the boundary
        line that passes closest to ``(crossing, 0)``, on ``|b| <= window``; with both
        axes in units of ``R = ||r||``, ``κ = −2 c_2 / R``, signed as in
        `boundaryscope.geometry.curvature` (``κ > 0``: the boundary bends towards the
        image). ``nan`` when the line has fewer than 5 points in the window.
        """
        if not np.isfinite(self.crossing):
            return float("nan")
        lines = self.boundary()
        if not lines:
            return float("nan")
        target = np.array([self.crossing, 0.0])
        line = min(lines, key=lambda pts: float(np.min(np.linalg.norm(pts - target, axis=1))))
        near = line[np.abs(line[:, 1]) <= window]
        if near.shape[0] < 5:
            return float("nan")
        c2 = float(np.polyfit(near[:, 1], near[:, 0], 2)[0])
        return -2.0 * c2 / self.radius


@dataclass
class SectionGallery:
    """Sections of several images along several directions (Fig. 5.5, 6.7).

    Attributes:
        sections: ``sections[i][j]``: image ``i``, direction ``j``.
        index: Positions of the images in the caller's batch ``(N,)`` (DeepFool failures
            are left out).
        directions: Names of the directions, in column order.
    """

    sections: list[list[CrossSection]]
    index: list[int]
    directions: list[str]


# ---------------------------------------------------------------------- directions
def orthonormal_direction(normal: Tensor, direction: Tensor, name: str = "direction") -> Tensor:
    """``v = (u − (uᵀn) n) / ||u − (uᵀn) n||`` for a unit normal ``n`` (same shape).

    Raises:
        ValueError: `direction` has another shape or is (numerically) parallel to `normal`.
    """
    if direction.shape != normal.shape:
        raise ValueError(
            f"{name} must have the image shape {tuple(normal.shape)}; got {tuple(direction.shape)}."
        )
    u = direction.to(normal).double().flatten()
    n = normal.double().flatten()
    n = n / n.norm()
    residual = u - (u @ n) * n
    if not torch.isfinite(residual).all() or residual.norm() <= 1e-6 * u.norm().clamp_min(1e-30):
        raise ValueError(
            f"{name} must not be parallel to the normal r(x) (or zero); its component "
            f"orthogonal to the normal has norm {float(residual.norm()):.3g} of "
            f"{float(u.norm()):.3g}."
        )
    return (residual / residual.norm()).to(normal.dtype).reshape(normal.shape)


def random_tangent(normal: Tensor, generator: torch.Generator) -> Tensor:
    """A uniformly random unit vector orthogonal to `normal` (on CPU, then moved)."""
    u = torch.randn(normal.shape, generator=generator, dtype=torch.float64)
    return orthonormal_direction(normal, u.to(normal.device), "random direction")


# ---------------------------------------------------------------------- grid evaluation
def plane_grid(
    clf: Classifier,
    origin: Tensor,
    e1: Tensor,
    e2: Tensor,
    a: np.ndarray,
    b: np.ndarray,
    *,
    scale: float,
    label: int,
    batch_size: int = 128,
    coarse: int = 1,
) -> PlaneGrid:
    """Evaluates the model on ``origin + scale (a_i e1 + b_j e2)`` in chunked sweeps.

    With ``coarse > 1`` the grid is refined where the label changes
    (`boundaryscope.geometry.refinement.refined_label_grid`): every ``coarse``-th point per
    axis first, then the cells whose corners disagree and their neighbours, halving the
    stride; labels elsewhere are the cells' common label and margin and loss are bilinear
    between evaluated corners. The boundary (zero level of the margin) then only runs
    through evaluated cells; a loss surface wants ``coarse=1``.

    Args:
        clf: The classifier.
        origin: One input ``(*shape)``.
        e1: Vertical direction ``(*shape)`` (the normal, usually).
        e2: Horizontal direction ``(*shape)``.
        a: Vertical coordinates ``(na,)``.
        b: Horizontal coordinates ``(nb,)``.
        scale: Input units per coordinate unit.
        label: Reference class of the margin and loss.
        batch_size: Grid points per forward pass (128–256 is fastest for LeNet on CPU).
        coarse: Stride of the first sub-grid, a power of two (1: every point).

    Returns:
        A `PlaneGrid`; arrays are ``(na, nb)``, row i at ``a[i]``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    device, dtype = origin.device, origin.dtype
    basis = torch.stack([e1.flatten(), e2.flatten()]).to(device=device, dtype=torch.float64)
    start = origin.double().flatten()

    with clf.sweep() as scores_of:

        def evaluate(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            coords = torch.from_numpy(np.stack([a[points[:, 0]], b[points[:, 1]]], axis=1))
            labels, values = [], []
            for first in range(0, coords.shape[0], batch_size):
                chunk = coords[first : first + batch_size].to(device) * scale
                rows = (start + chunk @ basis).to(dtype).reshape(-1, *origin.shape)
                scores = scores_of(rows).double()
                own = scores[:, label]
                others = scores.clone()
                others[:, label] = -torch.inf
                margin = own - others.max(dim=1).values
                loss = -torch.log_softmax(scores, dim=1)[:, label]
                labels.append(scores.argmax(dim=1).cpu())
                values.append(torch.stack([margin, loss], dim=1).cpu())
            return torch.cat(labels).numpy(), torch.cat(values).numpy()

        grid = refined_label_grid(evaluate, (a.size, b.size), coarse)
    return PlaneGrid(
        a=a,
        b=b,
        labels=grid.labels,
        margin=grid.values[..., 0],
        loss=grid.values[..., 1],
        evaluated=grid.evaluated,
    )


def region_boundary(a: np.ndarray, b: np.ndarray, margin: np.ndarray) -> list[np.ndarray]:
    """Zero level set of ``margin`` (``(na, nb)`` on the grid ``a × b``) as ``(k, 2)`` (a, b).

    Marching squares by ``contourpy`` with linear interpolation between grid points: exact
    for a margin that is affine in the plane.
    """
    generator = contourpy.contour_generator(
        x=np.asarray(b, dtype=np.float64),
        y=np.asarray(a, dtype=np.float64),
        z=np.asarray(margin, dtype=np.float64),
        line_type=contourpy.LineType.Separate,
    )
    return [np.asarray(line)[:, ::-1].copy() for line in generator.lines(0.0)]


def _first_crossing(a: np.ndarray, margin: np.ndarray) -> float:
    """First ``a`` where a margin sampled along a line (``margin[0] > 0``) reaches zero."""
    below = np.nonzero(margin <= 0)[0]
    if below.size == 0 or below[0] == 0:
        return float("nan")
    i = int(below[0])
    m0, m1 = float(margin[i - 1]), float(margin[i])
    return float(a[i - 1] + (a[i] - a[i - 1]) * m0 / (m0 - m1))


# ---------------------------------------------------------------------- sections
def _axis(bounds: tuple[float, float], count: int, name: str) -> np.ndarray:
    lo, hi = (float(v) for v in bounds)
    if not hi > lo or count < 2:
        raise ValueError(
            f"{name} must be (low, high) with low < high and a resolution >= 2; got "
            f"{bounds} with {count} points."
        )
    return np.linspace(lo, hi, int(count))


# A section grid costs one forward row per point and keeps a label and a margin per point:
# 10⁶ points (1000 × 1000) is minutes on a CPU LeNet and 16 MB; beyond is refused.
MAX_GRID_POINTS = 1_000_000


def _resolution(resolution: int | tuple[int, int]) -> tuple[int, int]:
    """``(na, nb)`` of a resolution, refused when the grid exceeds `MAX_GRID_POINTS`."""
    na, nb = (resolution, resolution) if isinstance(resolution, int) else resolution
    na, nb = int(na), int(nb)
    if na * nb > MAX_GRID_POINTS:
        raise ValueError(
            f"resolution {na} × {nb} asks for {na * nb:,} grid points ({na * nb * 16 / 2**30:.1f} "
            f"GiB of labels and margins, as many forward rows); at most {MAX_GRID_POINTS:,} "
            f"points (resolution {math.isqrt(MAX_GRID_POINTS)}) are allowed."
        )
    return na, nb


def normal_section(
    clf: Classifier,
    x: Tensor,
    r: Tensor,
    direction: Tensor,
    *,
    name: str = "direction",
    normal_range: tuple[float, float] = DEFAULT_NORMAL_RANGE,
    tangent_range: tuple[float, float] = DEFAULT_TANGENT_RANGE,
    resolution: int | tuple[int, int] = 200,
    line_samples: int = 512,
    batch_size: int = 128,
    coarse: int = 8,
) -> CrossSection:
    """The cross-section of one image along ``n = r/||r||`` and `direction` (thesis Fig. 5.5).

    Args:
        clf: The classifier.
        x: One image ``(*shape)`` (no batch axis).
        r: Its minimal perturbation ``(*shape)`` (e.g. DeepFool's; ``x + r`` on the boundary).
        direction: The second direction ``(*shape)``; orthogonalised against ``n``.
        name: Label of `direction` in figures and results.
        normal_range: ``(low, high)`` of ``a`` along ``n``, units of ``||r||``.
        tangent_range: ``(low, high)`` of ``b`` along ``v``.
        resolution: Grid points ``na`` × ``nb`` (an int for both).
        line_samples: Samples of the sweep along ``n`` (``crossing``).
        batch_size: Grid points per forward pass.
        coarse: First stride of the grid and the line, refined where the label changes
            (`plane_grid`; 1: every point).

    Returns:
        A `CrossSection`.

    Raises:
        ValueError: ``r`` is zero, `direction` is parallel to it, or a range is empty.
    """
    radius = float(r.double().norm())
    if not radius > 0 or not np.isfinite(radius):
        raise ValueError(f"r must be a nonzero finite perturbation; got norm {radius}.")
    normal = r / radius
    v = orthonormal_direction(normal, direction.to(normal), name)
    na, nb = _resolution(resolution)
    a = _axis(normal_range, na, "normal_range")
    b = _axis(tangent_range, nb, "tangent_range")
    source = int(clf.predict(x[None])[0])
    adversarial = int(clf.predict(clf.clip(x + r)[None])[0])
    line = np.linspace(0.0, max(normal_range[1], 1.5), max(int(line_samples), 2))
    with clf.sweep():  # one model copy for the grid and the line
        grid = plane_grid(
            clf, x, normal, v, a, b, scale=radius, label=source, batch_size=batch_size,
            coarse=coarse,
        )  # fmt: skip
        along = plane_grid(
            clf, x, normal, v, line, np.zeros(1), scale=radius, label=source,
            batch_size=batch_size, coarse=coarse,
        )  # fmt: skip
    return CrossSection(
        a=a,
        b=b,
        labels=grid.labels,
        margin=grid.margin,
        loss=grid.loss,
        radius=radius,
        source=source,
        adversarial_label=adversarial,
        direction=name,
        crossing=_first_crossing(line, along.margin[:, 0]),
        rows=grid.rows + along.rows,
    )


def section_gallery(
    clf: Classifier,
    x: Tensor,
    directions: Mapping[str, Tensor | None],
    *,
    seed: int = 0,
    normal_range: tuple[float, float] = DEFAULT_NORMAL_RANGE,
    tangent_range: tuple[float, float] = DEFAULT_TANGENT_RANGE,
    resolution: int | tuple[int, int] = 200,
    batch_size: int = 128,
    coarse: int = 8,
    progress: bool | None = None,
) -> SectionGallery:
    """Normal sections of every image along every named direction (Fig. 5.5, 6.7).

    The normals come from `boundary_points` (DeepFool l2, then Newton steps onto the
    boundary between the image's class and DeepFool's), one batched attack for all images.

    Args:
        clf: The classifier.
        x: Images ``(N, *shape)``.
        directions: Name → direction: ``None`` draws a fresh random tangent per image, a
            tensor ``(*shape)`` is shared by all images (e.g. a universal perturbation or a
            shared curved direction), ``(N, *shape)`` gives one per image.
        seed: Seed of the random tangents.
        normal_range: Range along the normal, units of ``||r(x)||``.
        tangent_range: Range along the tangent, same units.
        resolution: Grid points per axis (or ``(na, nb)``).
        batch_size: Grid points per forward pass.
        coarse: First stride of each grid, refined where the label changes (1: dense).
        progress: Show a progress bar (``None``: only on a terminal).

    Returns:
        A `SectionGallery` (images DeepFool cannot fool are left out; see ``index``).
    """
    from tqdm.auto import tqdm

    x = clf.validate(x)
    points = boundary_points(clf, x)
    generator = torch.Generator().manual_seed(seed)
    names = list(directions)
    rows: list[list[CrossSection]] = []
    bar = tqdm(
        total=len(points) * len(names), desc="cross-sections", disable=tqdm_disable(progress)
    )
    with bar, clf.sweep():  # one model copy for every section of the gallery
        for i in range(len(points)):
            row = []
            r = points.z[i] - points.x[i]
            for name in names:
                given = directions[name]
                if given is None:
                    direction = random_tangent(r / r.norm(), generator)
                else:
                    direction = given if given.shape == r.shape else given[int(points.index[i])]
                row.append(
                    normal_section(
                        clf,
                        points.x[i],
                        r,
                        direction,
                        name=name,
                        normal_range=normal_range,
                        tangent_range=tangent_range,
                        resolution=resolution,
                        batch_size=batch_size,
                        coarse=coarse,
                    )
                )
                bar.update()
            rows.append(row)
    return SectionGallery(rows, [int(i) for i in points.index], names)


def section_summary(sections: Sequence[CrossSection]) -> dict[str, float]:
    """Where the boundary is along ``n``: median and spread of ``crossing`` (units of ||r||)."""
    crossing = np.asarray([s.crossing for s in sections], dtype=float)
    finite = crossing[np.isfinite(crossing)]
    return {
        "sections": float(len(sections)),
        "crossing_median": float(np.median(finite)) if finite.size else float("nan"),
        "crossing_min": float(finite.min()) if finite.size else float("nan"),
        "crossing_max": float(finite.max()) if finite.size else float("nan"),
        "crossing_within_5pct": float(np.mean(np.abs(finite - 1) <= 0.05)) if finite.size else 0.0,
        "no_crossing": float(np.mean(~np.isfinite(crossing))) if crossing.size else 0.0,
    }


# ---------------------------------------------------------------------- the study
@dataclass(frozen=True)
class SectionsConfig:
    """Sizes of `sections_study` (the report's and the CLI's settings).

    Attributes:
        n_images: Images whose sections form the gallery.
        directions: Tangent directions, among ``"random"``, ``"universal"`` (Alg. 4, l2)
            and ``"curved"`` (the first shared curved direction, thesis §7.4).
        resolution: Grid points per axis of each gallery section.
        normal_range: Range along ``n``, units of ``||r(x)||``.
        tangent_range: Range along the tangent, same units.
        n_train: Training images that define the universal and curved directions.
        curvature_k: Principal curvatures per end computed at each training point.
        max_steps: Lanczos steps per training point.
        universal_factor: l2 radius of the universal perturbation, as a multiple of the
            median ``||r(x)||₂`` of the training images (only its direction is used).
        loss_resolution: Grid points per axis of the loss surface (Fig. 8.3, always dense).
        batch_size: Grid points per forward pass.
        coarse: First stride of the gallery's grids, refined where the label changes
            (a power of two; 1: every grid point, the dense sweep).
    """

    n_images: int = 4
    directions: tuple[str, ...] = ("random", "universal", "curved")
    resolution: int = 121
    normal_range: tuple[float, float] = DEFAULT_NORMAL_RANGE
    tangent_range: tuple[float, float] = DEFAULT_TANGENT_RANGE
    n_train: int = 50
    curvature_k: int = 5
    max_steps: int = 40
    universal_factor: float = 4.0
    loss_resolution: int = 61
    batch_size: int = 128
    coarse: int = 8

    def __post_init__(self) -> None:
        # Checked here, before any work, not after the directions have been computed.
        _resolution(self.resolution)
        _resolution(self.loss_resolution)
        check_coarse(self.coarse)


DIRECTIONS = ("random", "universal", "curved")


def study_directions(
    clf: Classifier, x_train: Tensor, config: SectionsConfig, *, seed: int = 0
) -> dict[str, Tensor | None]:
    """The named tangent directions of `config` (``None`` = a random tangent per image).

    ``"universal"``: Alg. 4 (l2, mini-batch variant, thesis §4.2) on `x_train`;
    ``"curved"``: the first shared curved direction ``u_1`` (SVD of the principal
    directions at the training images' boundary points, thesis §7.4).
    """
    from boundaryscope.geometry.curvature import principal_curvatures, shared_directions
    from boundaryscope.universal import universal_perturbation

    unknown = [name for name in config.directions if name not in DIRECTIONS]
    if unknown:
        raise ValueError(f"directions must be among {DIRECTIONS}; got {unknown}.")
    out: dict[str, Tensor | None] = {}
    points = None
    if {"universal", "curved"} & set(config.directions):
        points = boundary_points(clf, x_train[: config.n_train], batch_size=256)
    for name in config.directions:
        if name == "random":
            out[name] = None
        elif name == "universal" and points is not None:
            xi = config.universal_factor * float(points.distance.median())
            result = universal_perturbation(
                clf, x_train[: config.n_train], xi, p=2, variant="minibatch", max_passes=3,
                seed=seed, progress=False,
            )  # fmt: skip
            out[name] = result.v
        elif points is not None:
            curvatures = principal_curvatures(
                clf, points, config.curvature_k, max_steps=config.max_steps, seed=seed
            )
            out[name] = shared_directions(curvatures, 1).basis[0]
    return out


def sections_study(
    clf: Classifier,
    x_train: Tensor,
    x: Tensor,
    config: SectionsConfig = SectionsConfig(),
    *,
    seed: int = 0,
    classes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The gallery of normal sections and one loss surface, JSON-ready (Fig. 5.5, 6.7, 8.3).

    Args:
        clf: The classifier.
        x_train: Images that define the universal and curved directions.
        x: Images whose sections are drawn (the first ``n_images`` DeepFool fools).
        config: Sizes.
        seed: Seed of every random choice.
        classes: Class names for the legend (default: the label numbers).

    Returns:
        ``{"a", "b", "directions", "images": [...], "loss": {...}, "summary": {...}, ...}``.
    """
    import time

    started = time.perf_counter()
    directions = study_directions(clf, x_train, config, seed=seed)
    gallery = section_gallery(
        clf,
        x[: config.n_images],
        directions,
        seed=seed,
        normal_range=config.normal_range,
        tangent_range=config.tangent_range,
        resolution=config.resolution,
        batch_size=config.batch_size,
        coarse=config.coarse,
    )
    flat = [s for row in gallery.sections for s in row]
    images = [
        {
            "index": index,
            "radius": row[0].radius,
            "source": row[0].source,
            "adversarial_label": row[0].adversarial_label,
            "sections": [_section_json(s) for s in row],
        }
        for index, row in zip(gallery.index, gallery.sections, strict=True)
    ]
    loss = None
    if gallery.index:
        first = gallery.index[0]
        timer = time.perf_counter()
        surface = section_gallery(
            clf,
            x[first : first + 1],
            {"random": None},
            seed=seed,
            normal_range=config.normal_range,
            tangent_range=config.tangent_range,
            resolution=config.loss_resolution,
            batch_size=config.batch_size,
            coarse=1,  # the surface wants every point's loss
            progress=False,
        ).sections[0][0]
        loss = {
            "index": first,
            "a": surface.a.tolist(),
            "b": surface.b.tolist(),
            "negative_loss": np.round(-surface.loss, 4).tolist(),
            "seconds": time.perf_counter() - timer,
        }
    names = [str(c) for c in classes] if classes is not None else None
    return {
        "config": {**config.__dict__},
        "a": flat[0].a.tolist() if flat else [],
        "b": flat[0].b.tolist() if flat else [],
        "directions": gallery.directions,
        "classes": names,
        "images": images,
        "loss": loss,
        "summary": {
            **section_summary(flat),
            "rows": sum(s.rows for s in flat),
            "points": sum(s.labels.size for s in flat),
            **{
                f"plane_curvature_{name}": _median(
                    [s.plane_curvature() for s in flat if s.direction == name]
                )
                for name in gallery.directions
            },
        },
        "seconds": time.perf_counter() - started,
    }


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.median(finite)) if finite else float("nan")


def _section_json(section: CrossSection) -> dict[str, Any]:
    return {
        "direction": section.direction,
        "labels": section.labels.astype(int).tolist(),
        "boundary": [np.round(line, 4).tolist() for line in section.boundary()],
        "crossing": section.crossing,
        "plane_curvature": section.plane_curvature(),
    }
