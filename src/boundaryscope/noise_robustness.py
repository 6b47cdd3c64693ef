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

from torch import Tensor
from tqdm.auto import tqdm

from boundaryscope._progress import tqdm_disable
from boundaryscope.attacks import DeepFool, RandomLineSearch, line_search
from boundaryscope.attacks.base import check_labels
from boundaryscope.classifier import Classifier, check_classifier
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
    """The same model and preprocessing without the box (for the noise-regime theory).

    It shares `clf`'s pass counter, so the passes made through it are counted as `clf`'s.
    """
    free = Classifier(
        clf.model,
        bounds=(-math.inf, math.inf),
        preprocessing=clf.preprocessing,
        device=clf.device,
        gradient_strategy=clf.gradient_strategy,
    )
    free.counter = clf.counter
    return free


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


def _correctly_classified(clf: Classifier, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The validated samples that `clf` classifies correctly (the theory's population).

    Raises:
        ValueError: `y` is not ``(N,)`` class indices, or no sample is correctly classified
            (every statistic of the noise regimes would be undefined).
    """
    clf = check_classifier(clf)
    x = clf.validate(x)
    predicted = clf.predict_unchecked(x)
    y = check_labels(y, x, clf, "y")
    keep = predicted == y
    if not bool(keep.any()):
        raise ValueError(
            f"The noise analyses measure correctly classified images; none of the {x.shape[0]} "
            "given is (check that y holds the true labels and x the matching images)."
        )
    return x[keep], y[keep]


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
    progress: bool | None = False,
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
        progress: A bar over the subspace dimensions (``None``: only on a terminal).
    """
    clf = check_classifier(clf)
    model = unbounded(clf) if theory_mode else clf
    x, y = _correctly_classified(clf, x, y)
    d = x[0].numel()
    full = DeepFool(p=2, steps=steps)(model, x, y)
    regimes = []
    for m in tqdm(ms, desc="semi-random noise", unit="subspace", disable=tqdm_disable(progress)):
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
    progress: bool | None = False,
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
        progress: A bar over the bands (``None``: only on a terminal).
    """
    clf = check_classifier(clf)
    model = unbounded(clf) if theory_mode else clf
    x, y = _correctly_classified(clf, x, y)
    height, width = x.shape[-2:]
    block = block or DCTBands.default_block(height)
    bands = list(bands) if bands is not None else list(range(DCTBands.count(height, width, block)))
    d = x[0].numel()
    x_norms = lp_norm(x, 2)
    full = DeepFool(p=2, steps=steps)(model, x, y)
    rho_adv = float((full.norms[full.success] / x_norms[full.success]).mean())
    zetas, rhos, dims, failures = [], [], [], []
    for k in tqdm(bands, desc="spectral noise", unit="band", disable=tqdm_disable(progress)):
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
