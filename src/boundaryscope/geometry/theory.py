"""The seeds' theorems in closed form (thesis §5.4–5.5, §6.3–6.4, §8.3; ALGORITHMS §3, §6, §10).

For a random ``m``-dimensional subspace ``S`` of ``R^d`` and an affine ``L``-class classifier,
with probability at least ``1 − 2(L+1)δ`` (Theorem 1):

    sqrt(ζ1(m, δ)) · sqrt(d/m) · ||r*||  <=  ||r*_S||  <=  sqrt(ζ2(m, δ)) · sqrt(d/m) · ||r*||

and under a curvature condition on the boundaries of the closest classes (Corollary 1,
probability ``1 − 4(L+2)δ``) the constants widen by 0.875 and 1.45.

For one pair of classes with boundary curvature ``κ`` (§5.5.1: the inverse of the smallest
radius of the balls inscribed in the regions; ``1/R`` for a sphere of radius ``R``) and
minimal perturbation ``r^k`` towards class ``k``, Theorem 2 (eqs. 5.9–5.10, probability
``1 − 4δ``) holds when

    κ  <=  C · m / (ζ2(m, δ) · ||r^k|| · d)                              (5.9, C = 0.2)

and then

    (1 − C1 κ ||r^k|| ζ2 d/m) sqrt(ζ1 d/m)  <=  ||r^k_S|| / ||r^k||
                                           <=  (1 + C2 κ ||r^k|| ζ2 d/m) sqrt(ζ2 d/m)

with ``C1 = 0.625``, ``C2 = 2.25``. In the multi-class case the classes whose boundary is
far are excluded (eq. 5.11): ``A = {k : ||r^k|| >= 1.45 sqrt(ζ2) sqrt(d/m) ||r*||}``.

Universal perturbations (§6.3–6.4): Theorem 3's radius for random directions of a subspace
holding the normals, with the flat model's exact fooling probability, and Theorem 4's for
random vectors of a positively curved subspace (measured on models in
`boundaryscope.geometry.universality`). Theorem 5 (§8.3): bounds on the smallest
perturbation raising the loss to a level, exact (eqs. 8.2–8.3) and simplified (eq. 8.4).
"""

from __future__ import annotations

import math

import torch
from scipy.special import betainc
from torch import Tensor

__all__ = [
    "check_probability",
    "corollary1_interval",
    "excluded_classes",
    "flat_fooling_probability",
    "theorem1_interval",
    "theorem2_condition",
    "theorem2_interval",
    "theorem2_smallest_m",
    "theorem3_radius",
    "theorem4_radius",
    "theorem5_bounds",
    "theorem5_simplified_bounds",
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


THEOREM2_C, THEOREM2_C1, THEOREM2_C2 = 0.2, 0.625, 2.25


def theorem2_condition(m: int, d: int, r_norm: float, kappa: float, delta: float = 0.05) -> bool:
    """Whether eq. 5.9 holds: ``κ <= C m / (ζ2(m, δ) ||r^k|| d)`` with ``C = 0.2``.

    Args:
        m: Subspace dimension.
        d: Input dimension.
        r_norm: ``||r^k||_2``, the minimal perturbation towards class ``k``.
        kappa: The boundary's curvature ``κ(B_k)`` (>= 0).
        delta: Failure probability of the bound.
    """
    if r_norm < 0 or kappa < 0:
        raise ValueError(f"r_norm and kappa must be >= 0; got r_norm={r_norm!r}, kappa={kappa!r}.")
    return kappa * zeta2(m, delta) * r_norm * d <= THEOREM2_C * m


def theorem2_smallest_m(d: int, r_norm: float, kappa: float, delta: float = 0.05) -> int | None:
    """The smallest subspace dimension ``m <= d`` at which eq. 5.9 holds (§5.6's check).

    ``m ζ2(m, δ)^{-1}`` grows with ``m``, so the condition holds from some ``m`` on (or
    never, returning ``None``); found by bisection on `theorem2_condition`. ``κ = 0``
    (a flat boundary) gives ``1``.
    """
    if not theorem2_condition(d, d, r_norm, kappa, delta):
        return None
    lo, hi = 1, d  # the condition fails below lo's answer and holds at hi
    if theorem2_condition(lo, d, r_norm, kappa, delta):
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if theorem2_condition(mid, d, r_norm, kappa, delta):
            hi = mid
        else:
            lo = mid
    return hi


def theorem2_interval(
    m: int, d: int, r_norm: float, kappa: float, delta: float = 0.05
) -> tuple[float, float]:
    """Theorem 2's interval for ``||r^k_S|| / ||r^k||`` on a boundary of curvature `kappa`.

    Equals `theorem1_interval` at ``κ = 0`` (an affine boundary).

    Raises:
        ValueError: the curvature condition (5.9) does not hold (`theorem2_condition`), so
            the theorem says nothing.
    """
    if not theorem2_condition(m, d, r_norm, kappa, delta):
        raise ValueError(
            f"Theorem 2 needs kappa <= C m / (zeta2 ||r|| d) = "
            f"{THEOREM2_C * m / (zeta2(m, delta) * max(r_norm, 1e-300) * d):.4g} (eq. 5.9); got "
            f"kappa={kappa:.4g} with ||r||={r_norm:.4g}, m={m}, d={d}."
        )
    lo, hi = theorem1_interval(m, d, delta)
    spread = kappa * r_norm * zeta2(m, delta) * d / m
    return (1 - THEOREM2_C1 * spread) * lo, (1 + THEOREM2_C2 * spread) * hi


def excluded_classes(r_norms: Tensor, m: int, d: int, delta: float = 0.05) -> Tensor:
    """Eq. 5.11's set ``A``: classes whose boundary is too far to matter for ``r*_S``.

    Args:
        r_norms: ``(N, L)`` ``||r^k||`` per image and class (``inf`` for the predicted class
            itself, or for a class with no boundary).
        m: Subspace dimension.
        d: Input dimension.
        delta: Failure probability.

    Returns:
        ``(N, L)`` bool: ``||r^k|| >= 1.45 sqrt(ζ2(m, δ)) sqrt(d/m) ||r*||`` with
        ``||r*|| = min_k ||r^k||``.
    """
    if r_norms.dim() != 2:
        raise ValueError(f"r_norms must have shape (N, L); got {tuple(r_norms.shape)}.")
    r_star = r_norms.min(dim=1, keepdim=True).values
    return r_norms >= 1.45 * math.sqrt(zeta2(m, delta) * d / m) * r_star


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


def theorem5_simplified_bounds(
    gradient_norm: Tensor, gradient_dot_u: Tensor, nu: Tensor, c: Tensor
) -> tuple[Tensor, Tensor]:
    """Eq. 8.4: Theorem 5's bounds simplified (thesis §8.3).

        c/||g|| − 2ν c²/||g||³  <=  ||r*||  <=  c/|gᵀu|.

    Looser than `theorem5_bounds` (``sqrt(1 + t) − 1 >= t/2 − t²/8`` below, ``<= t/2``
    above) but readable: robustness grows with ``c/||g||`` and falls with the curvature
    ``ν`` and the misalignment of ``g`` with ``u``. NaN where ``c < 0`` or ``ν < 0``.

    Returns:
        ``(lower, upper)``; the lower bound may be negative (vacuous) for large ``ν``.
    """
    g, gu = gradient_norm.double(), gradient_dot_u.double().abs()
    c, nu = c.double(), nu.double()
    valid = (c >= 0) & (nu >= 0)
    nan = torch.tensor(math.nan, dtype=torch.float64)
    lower = torch.where(valid, c / g - 2 * nu * c**2 / g**3, nan)
    upper = torch.where(valid, c / gu, nan)
    return lower, upper


def check_probability(delta: float, name: str = "delta") -> None:
    """Refuses a probability parameter outside (0, 1), naming it."""
    if not 0 < delta < 1:
        raise ValueError(f"The {name!r} parameter must lie in (0, 1). Got {delta!r}.")


def theorem3_radius(m: int, delta: float, xi: float = 0.0) -> float:
    """Theorem 3's radius ``ρ = sqrt(e m) / (δ (1 − ξ))`` (units of ``||r(x)||``, §6.3).

    A random direction of norm ``ρ`` in an ``m``-dimensional subspace holding
    ``||P_S r̂(x)|| >= 1 − ξ`` fools ``x`` (eq. 6.2) with probability ``>= 1 − δ`` under the
    flat model (the proof's Lemma 2 bound).
    """
    if m < 1 or not 0 <= xi < 1:
        raise ValueError(f"Need m >= 1 and 0 <= xi < 1; got m={m!r}, xi={xi!r}.")
    check_probability(delta)
    return math.sqrt(math.e * m) / (delta * (1 - xi))


def theorem4_radius(m: int, kappa: Tensor | float, delta: float) -> Tensor:
    """Theorem 4's radius ``ρ = sqrt(2 log(2/δ)/m)/κ + κ^{-1/2}`` (units of ``||r(x)||``).

    ``κ`` is the normal-section curvature in units of ``1/||r(x)||``; ``inf`` where
    ``κ <= 0`` (the theorem needs a positively curved subspace).
    """
    if m < 1:
        raise ValueError(f"The 'm' parameter must be >= 1. Got {m!r}.")
    check_probability(delta)
    kappa = torch.as_tensor(kappa, dtype=torch.float64)
    positive = kappa > 0
    safe = torch.where(positive, kappa, torch.ones_like(kappa))
    radius = math.sqrt(2 * math.log(2 / delta) / m) / safe + safe.rsqrt()
    return torch.where(positive, radius, torch.full_like(radius, math.inf))


def flat_fooling_probability(m: int, t: Tensor) -> Tensor:
    """``P(|u₁| >= t)`` for ``u`` uniform on the unit sphere of ``R^m`` (exact, elementwise).

    ``u₁² ~ Beta(1/2, (m − 1)/2)``, so the probability is ``1 − I_{t²}(1/2, (m−1)/2)``
    (`scipy.special.betainc`); for ``m = 1``, ``|u₁| = 1``.
    """
    t = torch.as_tensor(t, dtype=torch.float64).clamp_min(0)
    if m == 1:
        return (t <= 1).double()
    squared = t.clamp_max(1).pow(2).numpy()
    return torch.from_numpy(1 - betainc(0.5, (m - 1) / 2, squared)).where(t <= 1, 0.0)
