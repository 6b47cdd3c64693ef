"""Input-space Hessian-vector products and extreme eigenpairs, batched over points.

Boundary curvature (thesis §7.4, eq. 7.2), the average-curvature detector (§7.5) and the
loss-curvature profile (§8.2, eq. 8.1) all need ``H v`` where ``H = ∇²_x φ(x)`` is the
input Hessian of a per-sample scalar ``φ`` (a class-score difference ``f_i − f_j`` or the
loss) — never the ``d × d`` matrix itself (docs/algorithms.md §7). Two ways to get it:

- ``"exact"``: double backward (or forward-over-reverse), `Classifier.hessian_vector_product`.
  ReLU / max-pool networks are piecewise affine: their exact Hessian is zero almost
  everywhere, and a warning says so.
- ``"fd"``: the central finite difference of gradients at scale ``h`` (input units),

      H v ≈ ||v|| · (∇φ(x + h v̂) − ∇φ(x − h v̂)) / (2h),   v̂ = v / ||v||,

  the thesis' eq. 8.1 made second-order accurate. It measures how the gradient changes
  over a neighbourhood of radius ``h`` rather than at a point — for piecewise-affine
  networks it *is* the curvature (§8.2, footnote 3). ``h`` is the same distance for every
  direction because ``v`` is normalised first.

`HessianOperator` evaluates many points' products in one model pass (rows of a batch are
independent); `batched_lanczos` runs one Lanczos sequence per point with every step of all
points sharing that pass, and `point_operator` exposes one point's operator as a
`scipy.sparse.linalg.LinearOperator` for `scipy.sparse.linalg.eigsh`.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator
from torch import Tensor, nn

from boundaryscope.classifier import Classifier

__all__ = [
    "DEFAULT_H",
    "HessianOperator",
    "LanczosResult",
    "Objective",
    "batched_lanczos",
    "cross_entropy_objective",
    "objective_gradients",
    "point_operator",
    "score_difference_objective",
]

Method = Literal["fd", "exact", "auto"]
Objective = Callable[[Tensor, Tensor], Tensor]
"""``objective(scores (M, C), rows (M,)) -> (M,)``: a scalar per row; ``rows`` gives the index
of the point each row belongs to, so per-point labels can be gathered."""

DEFAULT_H = 0.1
"""Default finite-difference scale in input units, for inputs in a unit-width box.

Measured (``benchmarks/curvature.py``, README "Boundary curvature"): on the smooth LeNet
the fd principal curvatures at h = 0.1 are within 0.3% (most positive) and 1.7% (most
negative) of the exact ones, 0.15% at h = 0.03. On the shipped ReLU LeNet there is no
plateau: the mean most positive curvature of 20 boundary points falls from 1.85
(h = 0.003) to 1.17 (0.01), 0.87 (0.03), 0.56 (0.1) and 0.39 (0.3) — the curvature of a
piecewise-affine network is a property of a scale. 0.1 is about 5% of the median
distance to the boundary on MNIST (≈ 2): large enough to average over many ReLU switches,
small against the distances studied. Compare models at the same h. Scaled by the box width
``hi − lo`` for other boxes.
"""


def score_difference_objective(i: Tensor, j: Tensor) -> Objective:
    """``F = f_i − f_j`` per point (thesis eq. 7.2): ``i, j`` are ``(N,)`` class indices."""

    def objective(scores: Tensor, rows: Tensor) -> Tensor:
        rows = rows.to(scores.device)
        return (
            scores.gather(1, i.to(scores.device)[rows, None])
            - scores.gather(1, j.to(scores.device)[rows, None])
        )[:, 0]

    return objective


def cross_entropy_objective(y: Tensor) -> Objective:
    """The cross-entropy loss ``ℓ(x) = XEnt(f(x), y)`` per point (thesis §8.2)."""

    def objective(scores: Tensor, rows: Tensor) -> Tensor:
        labels = y.to(scores.device)[rows.to(scores.device)]
        return nn.functional.cross_entropy(scores, labels, reduction="none")

    return objective


@dataclass
class HessianOperator:
    """Batched Hessian-vector products of ``φ`` at fixed points ``x``.

    Calling it with ``v`` of shape ``(N, K, *shape)`` (``K`` directions per point) or
    ``(N, *shape)`` returns ``H_n v_n`` of the same shape; ``rows`` restricts the call to a
    subset of the points (``v`` then has ``len(rows)`` leading entries).

    Attributes:
        clf: The classifier.
        x: Points ``(N, *shape)`` (validated; they may lie outside the box, as boundary
            points after projection can).
        objective: The scalar function, see `Objective`.
        method: ``"fd"`` (default), ``"exact"``, or ``"auto"`` (exact unless the exact
            Hessian is identically zero at the first point, then fd).
        h: Finite-difference scale in input units (default `DEFAULT_H` × box width).
        batch_size: Rows per model pass (an fd product costs 2 rows, exact 1). 256 is the
            measured optimum for the MNIST LeNets on a 2-core CPU (6,980 gradient rows/s at
            128–256 rows, 5,100 at 512, 2,350 at 2,048: larger passes leave the cache); on
            a GPU use thousands.
        exact_mode: ``"reverse"`` (double backward) or ``"forward"`` (jvp of grad).
        products: Hessian-vector products computed so far (per point and direction).
    """

    clf: Classifier
    x: Tensor
    objective: Objective
    method: Method = "fd"
    h: float | None = None
    batch_size: int = 256
    exact_mode: Literal["reverse", "forward"] = "reverse"
    products: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.method not in ("fd", "exact", "auto"):
            raise ValueError(
                f"The 'method' parameter must be 'fd', 'exact' or 'auto'. Got {self.method!r}."
            )
        if self.h is None:
            lo, hi = self.clf.bounds
            self.h = DEFAULT_H * (hi - lo) if math.isfinite(hi - lo) else DEFAULT_H
        if not (math.isfinite(self.h) and self.h > 0):
            raise ValueError(f"The 'h' parameter must be a positive number. Got {self.h!r}.")
        if self.batch_size < 1:
            raise ValueError(f"The 'batch_size' parameter must be >= 1. Got {self.batch_size}.")
        if self.method != "fd" and self.x.shape[0]:
            probe = torch.randn(self.x[:1].shape, generator=torch.Generator().manual_seed(0))
            zero = not bool(self._exact(probe.to(self.x), torch.zeros(1, dtype=torch.long)).any())
            if zero and self.method == "auto":
                self.method = "fd"
            elif zero:
                warnings.warn(
                    "The exact input Hessian of this model is identically zero at the first "
                    "point (a piecewise-affine network: ReLU, max-pool); its curvature is only "
                    "visible to finite differences: use method='fd' with a scale h.",
                    UserWarning,
                    stacklevel=3,
                )
            else:
                self.method = "exact"

    @property
    def dim(self) -> int:
        """Input dimension ``d``."""
        return int(self.x[0].numel())

    def gradient(self, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(φ(x) (N,), ∇φ(x) (N, *shape))`` at the points (or at ``x[rows]``)."""
        rows = self._rows(rows)
        return self._gradients(self.x[rows], rows)

    def __call__(self, v: Tensor, rows: Tensor | None = None) -> Tensor:
        """Hessian-vector products for ``v`` ``(R, *shape)`` or ``(R, K, *shape)``."""
        rows = self._rows(rows)
        shape = self.x.shape[1:]
        single = v.shape[1:] == shape
        if not single and v.shape[2:] != shape:
            raise ValueError(
                f"v must have shape ({len(rows)}, *{tuple(shape)}) or ({len(rows)}, K, "
                f"*{tuple(shape)}); got {tuple(v.shape)}."
            )
        directions = v[:, None] if single else v
        k = directions.shape[1]
        flat_rows = rows.repeat_interleave(k)
        flat_v = directions.reshape(-1, *shape)
        self.products += flat_v.shape[0]
        if self.method == "exact":
            out = self._exact(flat_v, flat_rows)
        else:
            out = self._finite_difference(flat_v, flat_rows)
        out = out.reshape(directions.shape)
        return out[:, 0] if single else out

    # ------------------------------------------------------------------ internals
    def _rows(self, rows: Tensor | None) -> Tensor:
        if rows is None:
            return torch.arange(self.x.shape[0])
        return rows.to(dtype=torch.long, device="cpu")

    def _gradients(self, points: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        return objective_gradients(self.clf, points, self.objective, rows, self.batch_size)

    def _finite_difference(self, v: Tensor, rows: Tensor) -> Tensor:
        assert self.h is not None
        norms = v.flatten(1).norm(dim=1).view(-1, *[1] * (v.ndim - 1))
        unit = v / norms.clamp_min(1e-30)
        base = self.x[rows]
        # Both ends of every difference in one batch: rows of a pass are independent.
        points = torch.cat([base + self.h * unit, base - self.h * unit])
        _, grads = self._gradients(points, torch.cat([rows, rows]))
        plus, minus = grads.chunk(2)
        return (plus - minus) * (norms / (2 * self.h))

    def _exact(self, v: Tensor, rows: Tensor) -> Tensor:
        out = []
        # A double backward holds about two graphs per row.
        size = min(self.batch_size, self.clf.rows_per_pass(v, grad=True, per_row=2))
        for start in range(0, v.shape[0], size):
            chunk_rows = rows[start : start + size]
            out.append(
                self.clf.hessian_vector_product(
                    self.x[chunk_rows],
                    functools.partial(_at_rows, self.objective, chunk_rows),
                    v[start : start + size],
                    mode=self.exact_mode,
                )
            )
        return torch.cat(out) if out else torch.zeros_like(v)


def _at_rows(objective: Objective, rows: Tensor, scores: Tensor) -> Tensor:
    """`objective` as a function of the scores alone, for the points `rows`."""
    return objective(scores, rows)


def objective_gradients(
    clf: Classifier, points: Tensor, objective: Objective, rows: Tensor, batch_size: int = 256
) -> tuple[Tensor, Tensor]:
    """``(φ (M,), ∇φ (M, *shape))`` at `points`, whose point indices are `rows`, in chunks.

    A chunk has at most `batch_size` rows and at most what the memory budget allows
    (`Classifier.rows_per_pass`).
    """
    values, grads = [], []
    batch_size = min(batch_size, clf.rows_per_pass(points, grad=True))
    for start in range(0, points.shape[0], batch_size):
        chunk_rows = rows[start : start + batch_size]
        value, grad = clf.value_and_gradient(
            points[start : start + batch_size], functools.partial(_at_rows, objective, chunk_rows)
        )
        values.append(value)
        grads.append(grad)
    if not values:
        return points.new_zeros(0), torch.zeros_like(points)
    return torch.cat(values), torch.cat(grads)


MatVec = Callable[[Tensor, Tensor], Tensor]
"""``matvec(v (R, d), rows (R,)) -> (R, d)``: a symmetric operator per point, flattened."""


def point_operator(matvec: MatVec, row: int, dim: int, dtype: torch.dtype) -> LinearOperator:
    """One point's operator as a `scipy.sparse.linalg.LinearOperator` (float64 in and out).

    For `scipy.sparse.linalg.eigsh` (implicitly restarted Lanczos, ARPACK): each ``matvec``
    is one model pass for a single point, so this is the reference path; `batched_lanczos`
    shares passes between points.
    """
    index = torch.tensor([row])

    def apply(vector: np.ndarray) -> np.ndarray:
        v = torch.as_tensor(np.asarray(vector).reshape(1, dim), dtype=dtype)
        return matvec(v, index).double().numpy().reshape(np.shape(vector))

    return LinearOperator((dim, dim), matvec=apply, rmatvec=apply, dtype=np.float64)


@dataclass
class LanczosResult:
    """Ritz pairs of `batched_lanczos`, one row per point.

    Attributes:
        values: The wanted Ritz values ``(N, K)`` (``K = 2k`` for ``"both"``, else ``k``):
            decreasing for ``"both"``, ``"largest"`` and ``"smallest"``, by decreasing
            magnitude for ``"magnitude"``.
        vectors: Their Ritz vectors ``(N, K, d)`` (orthonormal per point).
        residuals: ``||A y − θ y||`` per pair ``(N, K)``.
        steps: Krylov dimension reached per point ``(N,)`` (= operator products).
    """

    values: Tensor
    vectors: Tensor
    residuals: Tensor
    steps: Tensor


def batched_lanczos(
    matvec: MatVec,
    start: Tensor,
    *,
    k: int,
    which: Literal["both", "largest", "smallest", "magnitude"] = "both",
    tol: float = 1e-3,
    max_steps: int = 120,
    check_every: int = 10,
) -> LanczosResult:
    """Lanczos with full reorthogonalisation and Rayleigh–Ritz, for many points at once.

    Each point ``n`` builds its own Krylov basis ``Q_n`` of its operator ``A_n`` from
    ``start[n]``; every step applies all active points' operators in one call to `matvec`
    (one batched model pass). Ritz pairs come from the projected matrix
    ``sym(Q_nᵀ A_n Q_n)`` (``torch.linalg.eigh``, batched); using the stored products
    ``A_n Q_n`` rather than the three-term recurrence keeps the method sound when ``A_n`` is
    only nearly symmetric (finite differences). A point stops when its `k` wanted Ritz pairs
    have residuals ``<= tol · max|θ|``; finished points leave the batch.

    Args:
        matvec: The operators (see `MatVec`).
        start: Starting vectors ``(N, d)``.
        k: Wanted eigenpairs per point: `k` from each end for ``"both"``, else `k`.
        which: ``"both"`` ends, ``"largest"`` / ``"smallest"`` algebraic, or largest
            ``"magnitude"``.
        tol: Relative residual tolerance.
        max_steps: Largest Krylov dimension (capped at ``d``).
        check_every: Steps between convergence checks.

    Returns:
        A `LanczosResult` with the wanted Ritz pairs of the final Krylov spaces.
    """
    n, d = start.shape
    steps_cap = min(max_steps, d)
    wanted = 2 * k if which == "both" else k
    if wanted > steps_cap:
        raise ValueError(
            f"k = {k} eigenpairs ({which}) need at least {wanted} Lanczos steps, but at most "
            f"{steps_cap} are allowed (max_steps = {max_steps}, d = {d})."
        )
    dtype = torch.float64
    basis = torch.zeros(n, steps_cap, d, dtype=dtype)
    images = torch.zeros(n, steps_cap, d, dtype=dtype)
    steps = torch.zeros(n, dtype=torch.long)
    q = start.to(dtype).reshape(n, d)
    q = q / q.norm(dim=1, keepdim=True).clamp_min(1e-30)
    active = torch.arange(n)
    generator = torch.Generator().manual_seed(0)
    for j in range(steps_cap):
        w = matvec(q.to(start.dtype), active).to(dtype).reshape(len(active), d)
        basis[active, j] = q
        images[active, j] = w
        steps[active] = j + 1
        q = _next_lanczos_vector(basis[active, : j + 1], w, generator)
        last = j + 1 == steps_cap
        if (j + 1 >= wanted and (j + 1) % check_every == 0) or last:
            done = _converged(basis[active, : j + 1], images[active, : j + 1], k, which, tol)
            if last:
                break
            keep = ~done
            active, q = active[keep], q[keep]
            if not len(active):
                break
    return _ritz_all(basis, images, steps, k, which)


def _next_lanczos_vector(basis: Tensor, w: Tensor, generator: torch.Generator) -> Tensor:
    """``w`` orthogonalised against the basis (twice: "twice is enough"), normalised."""
    for _ in range(2):
        w = w - torch.einsum("njd,nj->nd", basis, torch.einsum("njd,nd->nj", basis, w))
    norms = w.norm(dim=1, keepdim=True)
    scale = basis.shape[-1] ** -0.5
    broken = norms[:, 0] < 1e-10 * scale
    if broken.any():  # invariant subspace found: continue with a fresh orthogonal vector
        fresh = torch.randn(int(broken.sum()), w.shape[1], generator=generator, dtype=w.dtype)
        sub = basis[broken]
        for _ in range(2):
            fresh = fresh - torch.einsum("njd,nj->nd", sub, torch.einsum("njd,nd->nj", sub, fresh))
        w = w.clone()
        w[broken] = fresh
        norms = w.norm(dim=1, keepdim=True)
    return w / norms.clamp_min(1e-30)


def _rayleigh_ritz(basis: Tensor, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Ritz values (decreasing), coefficient matrices and residual norms."""
    projected = basis @ images.transpose(1, 2)
    projected = 0.5 * (projected + projected.transpose(1, 2))
    values, coefficients = torch.linalg.eigh(projected)
    values, coefficients = values.flip(-1), coefficients.flip(-1)
    # A y − θ y with y = Qᵀ s and A y = (AQ)ᵀ s: no extra operator products needed.
    residual = (
        images.transpose(1, 2) @ coefficients
        - (basis.transpose(1, 2) @ coefficients) * values[:, None, :]
    )
    return values, coefficients, residual.norm(dim=1)


def _wanted_mask(values: Tensor, k: int, which: str) -> Tensor:
    m = values.shape[1]
    mask = torch.zeros_like(values, dtype=torch.bool)
    if which in ("both", "largest"):
        mask[:, : min(k, m)] = True
    if which in ("both", "smallest"):
        mask[:, max(m - k, 0) :] = True
    if which == "magnitude":
        top = values.abs().topk(min(k, m), dim=1).indices
        mask.scatter_(1, top, True)
    return mask


def _converged(basis: Tensor, images: Tensor, k: int, which: str, tol: float) -> Tensor:
    values, _, residuals = _rayleigh_ritz(basis, images)
    scale = values.abs().amax(dim=1, keepdim=True).clamp_min(1e-30)
    ok = (residuals <= tol * scale) | ~_wanted_mask(values, k, which)
    return ok.all(dim=1)


def _select(values: Tensor, k: int, which: str) -> Tensor:
    """Indices of the wanted Ritz pairs among values sorted in decreasing order."""
    m = values.shape[1]
    if which == "both":
        return torch.cat([torch.arange(k), torch.arange(m - k, m)])[None].expand(len(values), -1)
    if which == "largest":
        return torch.arange(k)[None].expand(len(values), -1)
    if which == "smallest":
        return torch.arange(m - k, m)[None].expand(len(values), -1)
    return values.abs().topk(k, dim=1).indices


def _ritz_all(basis: Tensor, images: Tensor, steps: Tensor, k: int, which: str) -> LanczosResult:
    """The wanted Ritz pairs of every point's final Krylov space."""
    n, _, d = basis.shape
    wanted = 2 * k if which == "both" else k
    values = torch.zeros(n, wanted, dtype=basis.dtype)
    vectors = torch.zeros(n, wanted, d, dtype=basis.dtype)
    residuals = torch.zeros(n, wanted, dtype=basis.dtype)
    for size in steps.unique().tolist():
        group = (steps == size).nonzero()[:, 0]
        theta, coefficients, res = _rayleigh_ritz(basis[group, :size], images[group, :size])
        pick = _select(theta, k, which)
        values[group] = theta.gather(1, pick)
        residuals[group] = res.gather(1, pick)
        chosen = coefficients.gather(2, pick[:, None, :].expand(-1, size, -1))
        vectors[group] = chosen.transpose(1, 2) @ basis[group, :size]
    return LanczosResult(values, vectors, residuals, steps)
