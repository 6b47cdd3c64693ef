"""Label maps and path checks at a cost that follows the boundary (thesis §5.6, §7.3).

A dense cross-section spends one model row per grid point although the picture only changes
where the label does; a dense path check spends ``1 / spacing`` rows per segment although a
label change can only happen where the margin comes close to zero. Both are refined here:

- `refined_label_grid`: evaluate a coarse sub-grid (every ``coarse``-th point per axis),
  subdivide every cell whose four corners disagree on the label, and its eight neighbours
  (so that a boundary which leaves a cell through the edge it entered is still followed),
  halving the stride until it is 1. The other cells carry their corners' label; their
  real-valued maps (margin, loss) are interpolated bilinearly from the corners, so a zero
  level set (the region's boundary) only runs through cells whose corners were all
  evaluated. Cost ≈ coarse grid + boundary length × ``coarse``, not ``na × nb``.
- `segment_keeps_label`: the dense check "every sample ``t_i = i / count`` keeps the label"
  of Alg. 5, by bisection: a coarse sample set first (any label change ends the check), then
  an interval ``[i, j]`` with margins ``m_i, m_j > 0`` is split only when its margin could
  reach zero inside under the segment's largest observed slope ``L`` times `safety`:
  ``m_i + m_j <= safety · L · (j − i)`` (a Lipschitz margin with constant ``safety · L``
  stays above ``(m_i + m_j − safety · L (j − i)) / 2`` on the interval). Every sample it
  evaluates is one of the dense check's samples, so a segment it rejects the dense check
  rejects too; the converse rests on the slope bound and is tested against the dense check
  on the shipped LeNets (``tests/test_refinement.py``).

Both take the model through a callback on integer grid indices, so they know nothing of
tensors or models and are tested against brute force on synthetic label maps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.ndimage

__all__ = ["RefinedGrid", "check_coarse", "refined_label_grid", "segment_keeps_label"]

# Evaluates grid points ``(M, 2)`` of integer (row, column) indices: labels ``(M,)`` and
# real values ``(M, c)`` (margin, loss, ...).
GridEvaluator = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class RefinedGrid:
    """A label map from `refined_label_grid`.

    Attributes:
        labels: ``(na, nb)`` labels; exact at ``evaluated`` points, the corners' common label
            elsewhere.
        values: ``(na, nb, c)`` real maps; exact at ``evaluated`` points, bilinear in the
            corners of the unrefined cell elsewhere.
        evaluated: ``(na, nb)`` bool: points the model was run on.
    """

    labels: np.ndarray
    values: np.ndarray
    evaluated: np.ndarray

    @property
    def rows(self) -> int:
        """Model rows spent (evaluated points)."""
        return int(self.evaluated.sum())


def _axis_points(n: int, stride: int) -> np.ndarray:
    """Indices ``0, stride, 2 stride, …`` and ``n − 1`` of an axis of ``n`` points."""
    return np.unique(np.concatenate([np.arange(0, n, stride), [n - 1]]))


def _cells(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` index of every cell between consecutive points (one flat cell if 1)."""
    if points.size == 1:
        return points, points
    return points[:-1], points[1:]


def _parents(child_low: np.ndarray, parent_low: np.ndarray) -> np.ndarray:
    """Index of the parent cell (by its low edge) that contains each child cell."""
    return np.searchsorted(parent_low, child_low, side="right") - 1


def check_coarse(coarse: int) -> None:
    """Refuses a first stride that is not a power of two >= 1 (naming the value)."""
    if not isinstance(coarse, int) or coarse < 1 or coarse & (coarse - 1):
        raise ValueError(f"coarse must be a power of two >= 1 (1: every point); got {coarse!r}.")


def refined_label_grid(
    evaluate: GridEvaluator, shape: tuple[int, int], coarse: int = 8
) -> RefinedGrid:
    """A label map on an ``na × nb`` grid, evaluated densely only near label changes.

    Args:
        evaluate: Labels ``(M,)`` and values ``(M, c)`` at integer points ``(M, 2)``.
        shape: ``(na, nb)``.
        coarse: Stride of the first sub-grid, a power of two (1: every point, the dense grid).

    Returns:
        A `RefinedGrid`.

    Raises:
        ValueError: `coarse` is not a power of two or `shape` is empty.
    """
    na, nb = (int(v) for v in shape)
    check_coarse(coarse)
    if na < 1 or nb < 1:
        raise ValueError(f"shape must be (na, nb) with na, nb >= 1; got {shape}.")
    grid = _GridState(evaluate, na, nb)
    stride = coarse
    rows, cols = _axis_points(na, stride), _axis_points(nb, stride)
    first = np.zeros((na, nb), dtype=bool)
    first[np.ix_(rows, cols)] = True
    grid.run(first)
    region = np.ones((_cells(rows)[0].size, _cells(cols)[0].size), dtype=bool)
    settled: list[np.ndarray] = []  # (k, 4) cells [a0, a1] × [b0, b1] left unrefined, per level
    while stride > 1:
        (r_lo, r_hi), (c_lo, c_hi) = _cells(rows), _cells(cols)
        corners = np.stack([grid.labels[np.ix_(r, c)] for r in (r_lo, r_hi) for c in (c_lo, c_hi)])
        disagree = region & (corners != corners[0]).any(axis=0)
        # The neighbours too: a boundary may leave a cell through the edge it came in by.
        active = region & scipy.ndimage.binary_dilation(disagree, structure=np.ones((3, 3)))
        quiet = np.argwhere(region & ~active)
        settled.append(
            np.stack(
                [r_lo[quiet[:, 0]], r_hi[quiet[:, 0]], c_lo[quiet[:, 1]], c_hi[quiet[:, 1]]], 1
            )
        )
        stride //= 2
        rows, cols = _axis_points(na, stride), _axis_points(nb, stride)
        (nr_lo, nr_hi), (nc_lo, nc_hi) = _cells(rows), _cells(cols)
        region = active[np.ix_(_parents(nr_lo, r_lo), _parents(nc_lo, c_lo))]
        cell_r, cell_c = np.nonzero(region)
        wanted = np.zeros((na, nb), dtype=bool)  # the corners of every child of an active cell
        for r_end in (nr_lo, nr_hi):
            for c_end in (nc_lo, nc_hi):
                wanted[r_end[cell_r], c_end[cell_c]] = True
        grid.run(wanted)
    # Unevaluated points take the finest unrefined cell that holds them.
    filled = grid.evaluated.copy()
    for cells in reversed(settled):
        for a0, a1, b0, b1 in cells.tolist():
            _fill_cell(grid.labels, grid.values, filled, a0, a1, b0, b1)
    return RefinedGrid(labels=grid.labels, values=grid.values, evaluated=grid.evaluated)


class _GridState:
    """Labels and values of the points evaluated so far (``values`` sized on first use)."""

    def __init__(self, evaluate: GridEvaluator, na: int, nb: int) -> None:
        self.evaluate = evaluate
        self.labels = np.full((na, nb), -1, dtype=np.int64)
        self.evaluated = np.zeros((na, nb), dtype=bool)
        self.values = np.full((na, nb, 0), np.nan)

    def run(self, wanted: np.ndarray) -> None:
        """Evaluates the points of the ``(na, nb)`` mask `wanted` not evaluated yet."""
        todo = np.argwhere(wanted & ~self.evaluated)
        if todo.size == 0:
            return
        found, real = self.evaluate(todo)
        real = np.asarray(real, dtype=np.float64).reshape(todo.shape[0], -1)
        if self.values.shape[2] != real.shape[1]:
            self.values = np.full((*self.labels.shape, real.shape[1]), np.nan)
        self.labels[todo[:, 0], todo[:, 1]] = np.asarray(found)
        self.values[todo[:, 0], todo[:, 1]] = real
        self.evaluated[todo[:, 0], todo[:, 1]] = True


def _fill_cell(
    labels: np.ndarray, values: np.ndarray, filled: np.ndarray, a0: int, a1: int, b0: int, b1: int
) -> None:
    """Points of the cell ``[a0, a1] × [b0, b1]`` not yet set: corner label, bilinear values."""
    block = ~filled[a0 : a1 + 1, b0 : b1 + 1]
    if not block.any():
        return
    u = (np.arange(a0, a1 + 1) - a0) / max(a1 - a0, 1)
    v = (np.arange(b0, b1 + 1) - b0) / max(b1 - b0, 1)
    uu, vv = np.meshgrid(u, v, indexing="ij")
    weights = [(1 - uu) * (1 - vv), (1 - uu) * vv, uu * (1 - vv), uu * vv]
    corners = [values[a0, b0], values[a0, b1], values[a1, b0], values[a1, b1]]
    inner = sum(w[..., None] * c for w, c in zip(weights, corners, strict=True))
    values[a0 : a1 + 1, b0 : b1 + 1][block] = np.asarray(inner)[block]
    labels[a0 : a1 + 1, b0 : b1 + 1][block] = labels[a0, b0]
    filled[a0 : a1 + 1, b0 : b1 + 1] |= block


# The fewest intervals of a segment's first sample set: two samples alone say nothing of the
# slope in between (two anchors just inside the boundary, with the region left between).
MIN_INTERVALS = 32


def segment_keeps_label(
    margin_at: Callable[[np.ndarray], np.ndarray],
    count: int,
    *,
    coarse: int = 64,
    safety: float = 4.0,
) -> tuple[bool, int]:
    """Whether every sample ``i = 0 … count`` of a segment keeps the label, by bisection.

    Every ``16 · coarse``-th sample first, then every ``coarse``-th (any negative margin ends
    the check), then intervals are halved while `safety` times the largest slope seen says
    their margin could reach zero inside.

    Args:
        margin_at: Margins ``(M,)`` at sample indices ``(M,)``: ``f_c − max_{k≠c} f_k`` of
            the segment's label ``c``, ``−inf`` where the predicted label is another (a
            negative margin ends the check; a tie the label wins is 0).
        count: Last sample index (``count + 1`` samples, as the dense check).
        coarse: Stride of the first sample set.
        safety: Factor on the largest observed slope ``|Δm| / Δi`` of the bound that decides
            whether an interval can hide a label change.

    Returns:
        ``(keeps, samples)``: the verdict and the model rows spent.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1; got {count}.")
    # At least MIN_INTERVALS intervals, so that the largest slope is seen at all.
    coarse = max(min(int(coarse), count // MIN_INTERVALS), 1)
    # A sparser pass first: a segment that leaves the region usually fails within it.
    sparse = _axis_points(count + 1, 16 * coarse)
    margin = np.asarray(margin_at(sparse), dtype=np.float64)
    samples = int(sparse.size)
    if bool((margin < 0).any()):
        return False, samples
    index = _axis_points(count + 1, coarse)
    rest = np.setdiff1d(index, sparse)
    if rest.size:
        margin = np.concatenate([margin, np.asarray(margin_at(rest), dtype=np.float64)])
        samples += int(rest.size)
        margin = margin[np.argsort(np.concatenate([sparse, rest]), kind="stable")]
    slope = 0.0
    while True:
        if bool((margin < 0).any()):
            return False, samples
        width = np.diff(index)
        slope = max(slope, float(np.max(np.abs(np.diff(margin)) / width, initial=0.0)))
        split = (width > 1) & (margin[:-1] + margin[1:] <= safety * slope * width)
        if not split.any():
            return True, samples
        middle = index[:-1][split] + width[split] // 2
        found = np.asarray(margin_at(middle), dtype=np.float64)
        samples += int(middle.size)
        index = np.concatenate([index, middle])
        order = np.argsort(index, kind="stable")
        index, margin = index[order], np.concatenate([margin, found])[order]
