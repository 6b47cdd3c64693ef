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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import contourpy
import numpy as np
import torch
from torch import Tensor

from boundaryscope.classifier import Classifier
from boundaryscope.geometry.curvature import boundary_points

__all__ = [
    "CrossSection",
    "PlaneGrid",
    "SectionGallery",
    "normal_section",
    "orthonormal_direction",
    "plane_grid",
    "random_tangent",
    "region_boundary",
    "section_gallery",
    "section_summary",
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
    """

    a: np.ndarray
    b: np.ndarray
    labels: np.ndarray
    margin: np.ndarray
    loss: np.ndarray


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

    def boundary(self) -> list[np.ndarray]:
        """The boundary of the image's region: polylines ``(k, 2)`` of ``(a, b)`` points."""
        return region_boundary(self.a, self.b, self.margin)


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
) -> PlaneGrid:
    """Evaluates the model on ``origin + scale (a_i e1 + b_j e2)`` in one chunked sweep.

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

    Returns:
        A `PlaneGrid`; arrays are ``(na, nb)``, row i at ``a[i]``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    grid_a, grid_b = np.meshgrid(a, b, indexing="ij")
    coords = torch.from_numpy(np.stack([grid_a.ravel(), grid_b.ravel()], axis=1))
    device, dtype = origin.device, origin.dtype
    basis = torch.stack([e1.flatten(), e2.flatten()]).to(device=device, dtype=torch.float64)
    labels, margins, losses = [], [], []
    with clf.sweep() as scores_of:
        for start in range(0, coords.shape[0], batch_size):
            chunk = coords[start : start + batch_size].to(device) * scale
            points = (origin.double().flatten() + chunk @ basis).to(dtype)
            scores = scores_of(points.reshape(-1, *origin.shape)).double()
            labels.append(scores.argmax(dim=1).cpu())
            own = scores[:, label]
            others = scores.clone()
            others[:, label] = -torch.inf
            margins.append((own - others.max(dim=1).values).cpu())
            losses.append((-torch.log_softmax(scores, dim=1)[:, label]).cpu())
    shape = (a.size, b.size)
    return PlaneGrid(
        a=a,
        b=b,
        labels=torch.cat(labels).numpy().reshape(shape),
        margin=torch.cat(margins).numpy().reshape(shape),
        loss=torch.cat(losses).numpy().reshape(shape),
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


def _resolution(resolution: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(resolution, int):
        return resolution, resolution
    na, nb = resolution
    return int(na), int(nb)


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
        line_samples: Samples of the dense sweep along ``n`` (``crossing``).
        batch_size: Grid points per forward pass.

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
    grid = plane_grid(clf, x, normal, v, a, b, scale=radius, label=source, batch_size=batch_size)
    line = np.linspace(0.0, max(normal_range[1], 1.5), max(int(line_samples), 2))
    along = plane_grid(
        clf, x, normal, v, line, np.zeros(1), scale=radius, label=source, batch_size=batch_size
    )
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
    bar = tqdm(total=len(points) * len(names), desc="cross-sections", disable=_quiet(progress))
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
                )
            )
            bar.update()
        rows.append(row)
    bar.close()
    return SectionGallery(rows, [int(i) for i in points.index], names)


def _quiet(progress: bool | None) -> bool | None:
    return None if progress is None else not progress


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
