"""Bounds of the noise-regime theory (thesis §5.4–5.5, Theorem 1, Corollary 1; ALGORITHMS §3).

For a random ``m``-dimensional subspace ``S`` of ``R^d`` and an affine ``L``-class classifier,
with probability at least ``1 − 2(L+1)δ`` (Theorem 1):

    sqrt(ζ1(m, δ)) · sqrt(d/m) · ||r*||  <=  ||r*_S||  <=  sqrt(ζ2(m, δ)) · sqrt(d/m) · ||r*||

and under a curvature condition on the boundaries of the closest classes (Corollary 1,
probability ``1 − 4(L+2)δ``) the constants widen by 0.875 and 1.45.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "corollary1_interval",
    "theorem1_interval",
    "theorem5_bounds",
    "zeta1",
    "zeta2",
]


def _check(m: int, delta: float) -> None:
    if m < 1 or not 0 < delta < 1:
        raise ValueError(f"Need m >= 1 and 0 < delta < 1; got m={m!r}, delta={delta!r}.")


def zeta1(m: int, delta: float) -> float:
    """``ζ1(m, δ) = (1 + 2 sqrt(ln(1/δ)/m) + 2 ln(1/δ)/m)^-1`` (eq. 5.4)."""
    _check(m, delta)
    log = math.log(1 / delta)
    return 1 / (1 + 2 * math.sqrt(log / m) + 2 * log / m)


def zeta2(m: int, delta: float) -> float:
    """``ζ2(m, δ) = (max((1/e) δ^(2/m), 1 − sqrt(2(1 − δ^(2/m)))))^-1`` (eq. 5.5)."""
    _check(m, delta)
    power = delta ** (2 / m)
    return 1 / max(power / math.e, 1 - math.sqrt(2 * (1 - power)))


def theorem1_interval(m: int, d: int, delta: float = 0.05) -> tuple[float, float]:
    """Theorem 1's interval for ``||r*_S|| / ||r*||``: ``sqrt(ζ1 d/m)`` to ``sqrt(ζ2 d/m)``."""
    scale = math.sqrt(d / m)
    return math.sqrt(zeta1(m, delta)) * scale, math.sqrt(zeta2(m, delta)) * scale


def corollary1_interval(m: int, d: int, delta: float = 0.05) -> tuple[float, float]:
    """Corollary 1's interval: Theorem 1's widened by the constants 0.875 and 1.45."""
    lo, hi = theorem1_interval(m, d, delta)
    return 0.875 * lo, 1.45 * hi


def theorem5_bounds(
    gradient_norm: Tensor, gradient_dot_u: Tensor, nu: Tensor, c: Tensor
) -> tuple[Tensor, Tensor]:
    """Theorem 5 (thesis §8.3, eqs. 8.2–8.3): bounds on the smallest fooling ``||r*||``.

    Under the quadratic model ``ℓ(x + r) ≈ ℓ(x) + gᵀr + rᵀHr/2`` with ``c = t − ℓ(x) >= 0``,
    ``ν = λ_max(H) >= 0`` and ``u`` its eigenvector:

        ||g||/ν (sqrt(1 + 2νc/||g||²) − 1) <= ||r*|| <= |gᵀu|/ν (sqrt(1 + 2νc/(gᵀu)²) − 1).

    As ``ν → 0`` both sides tend to the linear values ``c/||g||`` and ``c/|gᵀu|``, used for
    tiny ``ν`` to avoid cancellation. Elementwise over tensors; NaN where ``c < 0`` or
    ``ν < 0`` (the theorem does not apply).

    Returns:
        ``(lower, upper)``.
    """

    def bound(a: Tensor) -> Tensor:
        a = a.double().clamp_min(1e-300)
        ratio = 2 * nu.double() * c.double() / a**2
        # sqrt(1 + t) − 1 = t / (sqrt(1 + t) + 1): no cancellation for small t.
        return 2 * c.double() / (a * (torch.sqrt(1 + ratio) + 1))

    valid = (c >= 0) & (nu >= 0)
    nan = torch.tensor(math.nan, dtype=torch.float64)
    lower = torch.where(valid, bound(gradient_norm), nan)
    upper = torch.where(valid, bound(gradient_dot_u), nan)
    return lower, upper
