"""Robustness to random, semi-random and band-limited noise (thesis §3.4.2, §5.3–5.6).

- **Random noise** (``m = 1``): the smallest ``|t|`` with ``k̂(x + t v) ≠ k̂(x)`` along a
  random unit direction ``v``, found by bracketing on a geometric grid in both directions
  and bisection — the label along a line is not smooth enough for a gradient step.
- **Semi-random noise** (``m > 1``): the minimal perturbation inside a random
  ``m``-dimensional subspace, by subspace-constrained DeepFool (Alg. 3), one subspace per
  sample as in Table 5.1.
- **Spectral robustness**: the same inside bands of the 2-D DCT (eqs. 3.19–3.20).

The theory compares ``||r*_S||`` with ``sqrt(d/m) ||r*||`` (Theorem 1, Corollary 1) and
concerns the classifier as a function on ``R^d``: the measurements are therefore made on
the classifier without its box by default (``unbounded=True``), since random noise of norm
``sqrt(d) ||r*||`` leaves any image box.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from boundaryscope.attacks import Attack, DeepFool, RawAttack, register_attack
from boundaryscope.classifier import Classifier
from boundaryscope.geometry.theory import corollary1_interval, theorem1_interval
from boundaryscope.norms import lp_norm
from boundaryscope.subspaces import DCTBands, RandomSubspace

__all__ = [
    "NoiseRegime",
    "RandomLineSearch",
    "SpectralRobustness",
    "line_search",
    "semi_random_robustness",
    "spectral_robustness",
    "unbounded",
]


def unbounded(clf: Classifier) -> Classifier:
    """The same model and preprocessing without the box (for the noise-regime theory)."""
    return Classifier(
        clf.model,
        bounds=(-math.inf, math.inf),
        preprocessing=clf.preprocessing,
        device=clf.device,
        gradient_strategy=clf.gradient_strategy,
    )


def line_search(
    clf: Classifier,
    x: Tensor,
    direction: Tensor,
    reference: Tensor,
    *,
    t_start: float = 1e-3,
    t_max: float = 1e4,
    growth: float = 2.0,
    bisection_steps: int = 40,
) -> Tensor:
    """Smallest ``|t|`` with ``k̂(clip(x + t v)) ≠ reference``, along ``±v``, per sample.

    Scans ``t = t_start · growth^k`` (up to `t_max`) in both directions, one batched
    forward pass per grid point and sign; the first grid interval where the label changes
    is then bisected. On an affine classifier the region of a class is convex, so the
    crossing found is exact (up to ``growth^-bisection_steps`` relative).

    Args:
        clf: Classifier (its box applies).
        x: ``(N, *shape)`` inputs.
        direction: ``(N, *shape)`` directions ``v`` (unit norm for ``|t|`` to be a norm).
        reference: ``(N,)`` labels to leave.
        t_start: First grid point.
        t_max: Last grid point; no change up to it is a failure.
        growth: Ratio between grid points.
        bisection_steps: Bisection steps inside the bracketing interval.

    Returns:
        ``(N,)`` signed ``t`` (``inf`` where no change up to `t_max`).
    """
    steps = max(1, math.ceil(math.log(t_max / t_start, growth)) + 1)
    grid = [t_start * growth**k for k in range(steps)]
    n = x.shape[0]
    shape = (-1, *([1] * (x.ndim - 1)))
    best = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
    with clf.session():
        for sign in (1.0, -1.0):
            upper = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
            lower = torch.zeros(n, dtype=x.dtype, device=x.device)
            for t in grid:
                open_ = torch.isinf(upper)
                if not bool(open_.any()):
                    break
                moved = clf.clip(x + sign * t * direction)
                changed = clf.predict_unchecked(moved) != reference
                upper = torch.where(open_ & changed, torch.full_like(upper, t), upper)
                lower = torch.where(open_ & ~changed, torch.full_like(lower, t), lower)
            found = torch.isfinite(upper)
            lo, hi = torch.where(found, lower, 0.0), torch.where(found, upper, 1.0)
            for _ in range(bisection_steps):
                mid = 0.5 * (lo + hi)
                changed = (
                    clf.predict_unchecked(clf.clip(x + sign * mid.view(shape) * direction))
                    != reference
                )
                hi = torch.where(changed, mid, hi)
                lo = torch.where(changed, lo, mid)
            candidate = torch.where(found, hi, torch.full_like(hi, math.inf))
            better = candidate < best.abs()
            best = torch.where(better, sign * candidate, best)
    return best


@register_attack("random-line")
class RandomLineSearch(Attack):
    """Random-noise robustness as an attack: minimal ``|t|`` along a random direction ±v.

    ``v`` is uniform on the unit sphere, drawn per sample from ``(seed, sample position)``.
    ``||r||_2 = |t|``; by Theorem 1 it is about ``sqrt(d) ||r*||`` for flat boundaries.

    Args:
        seed: Seed of the directions.
        t_max: Largest ``|t|`` searched (failure beyond).
        bisection_steps: Bisection steps after bracketing.
    """

    def __init__(self, *, seed: int = 0, t_max: float = 1e4, bisection_steps: int = 40) -> None:
        self.seed = seed
        self.t_max = t_max
        self.bisection_steps = bisection_steps
        self.p = 2.0

    def directions(self, x: Tensor) -> Tensor:
        """Unit directions ``(N, *shape)``, the one of sample ``i`` seeded by ``(seed, i)``."""
        basis = RandomSubspace(1, seed=self.seed, per_sample=True)
        d = x[0].numel()
        rows = [basis.basis(d, i, x.dtype, x.device)[:, 0] for i in range(x.shape[0])]
        return torch.stack(rows).view_as(x) if rows else torch.zeros_like(x)

    def _run(
        self, clf: Classifier, x: Tensor, reference: Tensor, target: Tensor | None
    ) -> RawAttack:
        direction = self.directions(x)
        t = line_search(
            clf, x, direction, reference, t_max=self.t_max, bisection_steps=self.bisection_steps
        )
        t_safe = torch.where(torch.isfinite(t), t, torch.zeros_like(t))
        adversarial = clf.clip(x + t_safe.view(-1, *([1] * (x.ndim - 1))) * direction)
        iterations = torch.ones(x.shape[0], dtype=torch.int64, device=x.device)
        return RawAttack(adversarial, iterations, {"t": t})


@dataclass
class NoiseRegime:
    """Robustness in random ``m``-dimensional subspaces, against the theory (Table 5.1).

    Attributes:
        m: Subspace dimension (1 = random noise).
        d: Input dimension.
        ratios: ``||r*_S|| / ||r*||`` per sample where both attacks succeeded.
        beta_mean: Mean of ``β = sqrt(m/d) ||r*_S|| / ||r*||``.
        beta_std: Its standard deviation.
        n: Correctly classified samples measured.
        n_failures: Samples where either attack failed (excluded from the ratios).
        theorem1: Theorem 1's interval for the ratio (δ given).
        corollary1: Corollary 1's interval.
        inside_theorem1: Fraction of ratios inside Theorem 1's interval.
        inside_corollary1: Fraction inside Corollary 1's interval.
        delta: The δ of the intervals.
    """

    m: int
    d: int
    ratios: list[float] = field(repr=False)
    beta_mean: float
    beta_std: float
    n: int
    n_failures: int
    theorem1: tuple[float, float]
    corollary1: tuple[float, float]
    inside_theorem1: float
    inside_corollary1: float
    delta: float


def _regime(m: int, d: int, ratios: Tensor, n: int, failures: int, delta: float) -> NoiseRegime:
    beta = math.sqrt(m / d) * ratios
    t_lo, t_hi = theorem1_interval(m, d, delta)
    c_lo, c_hi = corollary1_interval(m, d, delta)

    def inside(lo: float, hi: float) -> float:
        return float(((ratios >= lo) & (ratios <= hi)).double().mean()) if len(ratios) else math.nan

    return NoiseRegime(
        m=m,
        d=d,
        ratios=ratios.tolist(),
        beta_mean=float(beta.mean()) if len(beta) else math.nan,
        beta_std=float(beta.std()) if len(beta) > 1 else math.nan,
        n=n,
        n_failures=failures,
        theorem1=(t_lo, t_hi),
        corollary1=(c_lo, c_hi),
        inside_theorem1=inside(t_lo, t_hi),
        inside_corollary1=inside(c_lo, c_hi),
        delta=delta,
    )


def semi_random_robustness(
    clf: Classifier,
    x: Tensor,
    y: Tensor,
    ms: Sequence[int],
    *,
    seed: int = 0,
    delta: float = 0.05,
    steps: int = 200,
    theory_mode: bool = True,
) -> list[NoiseRegime]:
    """β(f; m) and the theory's intervals for each ``m`` (thesis Table 5.1, Theorem 1).

    ``r*`` comes from DeepFool (l2); ``r*_S`` from the random-noise line search for
    ``m = 1`` and subspace DeepFool in a per-sample random subspace otherwise.

    Args:
        clf: Classifier.
        x: Inputs ``(N, *shape)``.
        y: Labels ``(N,)``; only correctly classified samples are measured.
        ms: Subspace dimensions.
        seed: Seed of the subspaces.
        delta: δ of the intervals.
        steps: DeepFool's iteration limit (small subspaces need more).
        theory_mode: Measure on the classifier without its box (see module docstring).
    """
    model = unbounded(clf) if theory_mode else clf
    x = clf.validate(x)
    y = y.to(clf.device)
    keep = clf.predict(x) == y
    x, y = x[keep], y[keep]
    d = x[0].numel()
    full = DeepFool(p=2, steps=steps)(model, x, y)
    regimes = []
    for m in ms:
        if m == 1:
            sub = RandomLineSearch(seed=seed)(model, x, y)
        else:
            projector = RandomSubspace(m, seed=seed, per_sample=True)
            sub = DeepFool(p=2, steps=steps, subspace=projector)(model, x, y)
        both = full.success & sub.success
        ratios = (sub.norms[both] / full.norms[both]).double().cpu()
        regimes.append(_regime(m, d, ratios, int(x.shape[0]), int((~both).sum()), delta))
    return regimes


@dataclass
class SpectralRobustness:
    """Robustness inside DCT frequency bands (thesis eqs. 3.19–3.20, Fig. 3.11).

    Attributes:
        block: Band size ``B``.
        bands: Band indices (0 = lowest frequencies).
        m: Dimension of each band's subspace.
        zeta: ``ζ = sqrt(m/d) ρ_S / ρ_adv`` per band (≈ 1 for a random subspace).
        rho_s: ``ρ_S`` per band (successful samples).
        rho_adv: ``ρ_adv`` in the full space.
        failures: Samples per band that no perturbation in the band fooled.
        n: Correctly classified samples measured.
    """

    block: int
    bands: list[int]
    m: list[int]
    zeta: list[float]
    rho_s: list[float]
    rho_adv: float
    failures: list[int]
    n: int


def spectral_robustness(
    clf: Classifier,
    x: Tensor,
    y: Tensor,
    *,
    block: int | None = None,
    bands: Sequence[int] | None = None,
    steps: int = 200,
    theory_mode: bool = True,
) -> SpectralRobustness:
    """``ζ`` per DCT band ``S_k`` (eq. 3.20): low values = fragile in that band.

    Args:
        clf: Classifier.
        x: Images ``(N, C, H, W)``.
        y: Labels ``(N,)``; only correctly classified samples are measured.
        block: Band size ``B`` (default `DCTBands.default_block`).
        bands: Bands to measure (default: all).
        steps: DeepFool's iteration limit.
        theory_mode: Measure without the box (as the seed does).
    """
    model = unbounded(clf) if theory_mode else clf
    x = clf.validate(x)
    y = y.to(clf.device)
    keep = clf.predict(x) == y
    x, y = x[keep], y[keep]
    height, width = x.shape[-2:]
    block = block or DCTBands.default_block(height)
    bands = list(bands) if bands is not None else list(range(DCTBands.count(height, width, block)))
    d = x[0].numel()
    x_norms = lp_norm(x, 2)
    full = DeepFool(p=2, steps=steps)(model, x, y)
    rho_adv = float((full.norms[full.success] / x_norms[full.success]).mean())
    zetas, rhos, dims, failures = [], [], [], []
    for k in bands:
        band = DCTBands(block, k)
        result = DeepFool(p=2, steps=steps, subspace=band)(model, x, y)
        m = band.dimension(x.shape[1:])
        ok = result.success
        rho_s = float((result.norms[ok] / x_norms[ok]).mean()) if bool(ok.any()) else math.inf
        dims.append(m)
        rhos.append(rho_s)
        zetas.append(math.sqrt(m / d) * rho_s / rho_adv)
        failures.append(int((~ok).sum()))
    return SpectralRobustness(block, bands, dims, zetas, rhos, rho_adv, failures, int(x.shape[0]))
