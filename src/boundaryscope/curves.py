"""Fixed-budget comparisons: fooling ratio against ε, and Balda et al.'s ρ̂1, ρ̂2, ε99.

Balda et al. 2018, Fig. 2 (curves) and Table I (measures); docs/algorithms.md §5.

The fooling ratio is the share of correctly classified points whose label changes under
the attack. A minimal-perturbation attack (DeepFool) gives its whole curve from one run:
it fools a point at budget ε when its minimal perturbation has norm ≤ ε ("DeepFool limited
to the budget"). Budgeted attacks run once per ε on the whole batch.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from boundaryscope._numbers import parse_number
from boundaryscope._progress import tqdm_disable
from boundaryscope.attacks import (
    APGD,
    APGDT,
    BIM,
    FABT,
    FGSM,
    FMN,
    PGD,
    SPSA,
    Algorithm1,
    Algorithm2,
    Attack,
    BernoulliNoise,
    DeepFool,
    RandomDirection,
    SinglePixel,
    Square,
    margin,
)
from boundaryscope.attacks.base import check_labels, unknown_name
from boundaryscope.attacks.convex import ScoreSpace
from boundaryscope.classifier import Classifier, check_classifier
from boundaryscope.norms import dual_exponent, lp_norm, parse_p

__all__ = [
    "BUDGET_NORMS",
    "CURVE_ATTACKS",
    "BaldaRobustness",
    "FoolingCurves",
    "balda_robustness",
    "budget_attack",
    "epsilon_for_fooling",
    "fooling_curves",
    "fooling_ratio",
    "parse_epsilons",
]

# The names `fooling_curves` accepts: the attack registry's minimal-perturbation attacks
# with a whole curve per run, then the budgeted ones (`BUDGET_NORMS`).
CURVE_ATTACKS = (
    "deepfool",
    "fmn",
    "alg1",
    "alg1-N",
    "alg2",
    "fgsm",
    "pgd",
    "bim",
    "spsa",
    "random",
    "random-direction",
    "single-pixel",
    "apgd-ce",
    "apgd-t",
    "fab-t",
    "square",
)


def fooling_ratio(success: Tensor, correct: Tensor) -> float:
    """Share of correctly classified samples that the attack fooled."""
    correct = correct.bool()
    return float(success[correct].float().mean()) if bool(correct.any()) else math.nan


def epsilon_for_fooling(norms: Tensor, correct: Tensor, fraction: float = 0.99) -> float:
    """Smallest ε at which a minimal-perturbation attack fools more than `fraction`.

    With the norms of the correctly classified samples sorted, it is the
    ``(floor(fraction · n) + 1)``-th smallest (failures count as ``inf``).
    """
    values = norms[correct.bool()].sort().values
    if values.numel() == 0:
        return math.nan
    index = min(math.floor(fraction * values.numel()), values.numel() - 1)
    return float(values[index])


def parse_epsilons(spec: str) -> list[float]:
    """``"0:0.3:31"`` (start:stop:count, inclusive) or ``"0.1,0.2"`` into a list of floats.

    Budgets may be fractions, as they are usually quoted: ``"0:8/255:9"``,
    ``"2/255,4/255,8/255"``. Every budget must be finite and >= 0.
    """
    try:
        if ":" in spec:
            start, stop, count = spec.split(":")
            n = int(count)
            if n < 1:
                raise ValueError
            values = torch.linspace(parse_number(start), parse_number(stop), n).tolist()
        else:
            values = [parse_number(v) for v in spec.split(",") if v.strip()]
        if not values or not all(math.isfinite(v) and v >= 0 for v in values):
            raise ValueError
        return values
    except ValueError:
        raise ValueError(
            "eps must be 'start:stop:count' or a comma-separated list of budgets >= 0 "
            f"(fractions such as 8/255 allowed); got {spec!r}."
        ) from None


# Norms each budgeted attack implements; any other p is refused rather than ignored.
_ANY_P = "any p >= 1"
BUDGET_NORMS: dict[str, str] = {
    "alg1": _ANY_P,
    "alg2": _ANY_P,
    "fgsm": _ANY_P,
    "pgd": "2 or inf",
    "bim": "2 or inf",
    "spsa": "inf",
    "random": "inf",
    "random-direction": _ANY_P,
    "single-pixel": "1",
    "apgd-ce": "2 or inf",
    "apgd-t": "2 or inf",
    "fab-t": "2 or inf",
    "square": "2 or inf",
}


def budget_attack(
    name: str,
    eps: float,
    *,
    p: float | str = math.inf,
    steps: int | None = 20,
    seed: int = 0,
    space: ScoreSpace = "probabilities",
) -> Attack:
    """The budgeted attack called `name` at budget `eps` in the l_p norm (`CURVE_ATTACKS`).

    `steps` sets the iterations of PGD, BIM, SPSA, APGD and FAB-T, and the queries of
    Square (``None``: each class's default).

    Raises:
        ValueError: unknown `name`, or a `p` the attack does not implement (`BUDGET_NORMS`):
            an l2 budget is never silently spent as an l∞ one.
    """
    p = parse_p(p)
    match = re.fullmatch(r"alg1-(\d+)", name)
    base = "alg1" if match else name
    if base not in BUDGET_NORMS:
        raise unknown_name("attack", name, [*BUDGET_NORMS, "alg1-N"])
    allowed = BUDGET_NORMS[base]
    norms = {"2 or inf": (2.0, math.inf), "inf": (math.inf,), "1": (1.0,)}
    if allowed != _ANY_P and p not in norms[allowed]:
        raise ValueError(f"attack {name!r} supports p = {allowed}; got p={p:g}.")
    if match:
        return Algorithm1(eps=eps, p=p, steps=int(match.group(1)), space=space)
    iterations: dict[str, Any] = {} if steps is None else {"steps": steps}
    queries: dict[str, Any] = {} if steps is None else {"queries": steps}
    factories: dict[str, Callable[[], Attack]] = {
        "alg1": lambda: Algorithm1(eps=eps, p=p, space=space),
        "alg2": lambda: Algorithm2(eps=eps, p=p, space=space),
        "fgsm": lambda: FGSM(eps=eps, p=p),
        "pgd": lambda: PGD(eps=eps, p=p, seed=seed, **iterations),
        "bim": lambda: BIM(eps=eps, p=p, **iterations),
        "spsa": lambda: SPSA(eps=eps, seed=seed, **iterations),
        "random": lambda: BernoulliNoise(eps=eps, seed=seed),
        "random-direction": lambda: RandomDirection(eps=eps, p=p, seed=seed),
        "single-pixel": lambda: SinglePixel(eps=eps, space=space),
        "apgd-ce": lambda: APGD(eps=eps, p=p, seed=seed, **iterations),
        "apgd-t": lambda: APGDT(eps=eps, p=p, seed=seed, **iterations),
        "fab-t": lambda: FABT(eps=eps, p=p, seed=seed, **iterations),
        "square": lambda: Square(eps=eps, p=p, seed=seed, **queries),
    }
    return factories[base]()


@dataclass
class FoolingCurves:
    """Fooling ratio of each attack at each ε (l_inf unless the name says l2).

    Attributes:
        epsilons: Budgets.
        ratios: Attack name → fooling ratio per ε.
        n_correct: Correctly classified samples (the population).
        seconds: Attack name → wall time.
    """

    epsilons: list[float]
    ratios: dict[str, list[float]] = field(default_factory=dict)
    n_correct: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def fooling_curves(
    clf: Classifier,
    x: Tensor,
    y: Tensor,
    attacks: Sequence[str],
    epsilons: Sequence[float],
    *,
    p: float | str = math.inf,
    steps: int = 20,
    seed: int = 0,
    progress: bool | None = None,
) -> FoolingCurves:
    """Fooling ratio vs ε in the l_p norm for several attacks on one model.

    Balda et al. 2018, Fig. 2 (l∞). The names are the attack registry's, as in
    ``boundaryscope attack``: the minimal-perturbation attacks ``deepfool`` and ``fmn``
    give their whole curve from one run (an image is fooled at ε when its minimal
    perturbation has ``‖r‖_p ≤ ε``); the budgeted ones (`BUDGET_NORMS`, ``alg1-N`` for
    any N) run once per ε, in increasing order, on the correctly classified images they
    have not fooled at a smaller ε: a perturbation found within a smaller budget lies
    within every larger one, so each curve is the share fooled within ε by the attack
    run at some budget ``≤ ε`` (monotone; on a fragile model most images leave after
    the first budgets, which is most of the cost saved).

    Args:
        clf: The classifier.
        x: Inputs ``(N, *shape)``.
        y: Labels ``(N,)``.
        attacks: Attack names (``deepfool-linf``/``deepfool-l2``: older spellings of
            ``deepfool`` with ``p`` inf/2, still accepted).
        epsilons: Budgets.
        p: Norm of the budgets (default: l∞).
        steps: Iterations of PGD, BIM and SPSA.
        seed: Seed of the random attacks.
        progress: Progress bar (``None``: only on a terminal).
    """
    p = parse_p(p)
    names = [_check_curve_name(name, p) for name in attacks]
    clf = check_classifier(clf)
    x = clf.validate(x)
    predicted = clf.predict_unchecked(x)
    y = check_labels(y, x, clf, "y")
    correct = predicted == y
    curves = FoolingCurves(list(map(float, epsilons)), n_correct=int(correct.sum()))
    bar = tqdm(names, desc="fooling curves", disable=tqdm_disable(progress))
    for name in bar:
        start = time.perf_counter()
        minimal = _MINIMAL_CURVES.get("deepfool" if name in _LEGACY_DEEPFOOL else name)
        if minimal is not None:
            norms = minimal(p)(clf, x, y).norms[correct]
            curves.ratios[name] = [float((norms <= e).float().mean()) for e in epsilons]
        else:
            curves.ratios[name] = _budget_curve(clf, x, y, correct, name, epsilons, p, steps, seed)
        curves.seconds[name] = time.perf_counter() - start
    return curves


def _budget_curve(
    clf: Classifier,
    x: Tensor,
    y: Tensor,
    correct: Tensor,
    name: str,
    epsilons: Sequence[float],
    p: float,
    steps: int,
    seed: int,
) -> list[float]:
    """A budgeted attack's fooling ratio at each of `epsilons` (see `fooling_curves`)."""
    fooled = torch.zeros_like(correct)
    by_eps: dict[float, float] = {}
    for eps in sorted(set(map(float, epsilons))):
        todo = torch.nonzero(correct & ~fooled).flatten()
        if todo.numel():
            attack = budget_attack(name, eps, p=p, steps=steps, seed=seed)
            fooled[todo[attack(clf, x[todo], y[todo]).success]] = True
        by_eps[eps] = fooling_ratio(fooled, correct)
    return [by_eps[float(eps)] for eps in epsilons]


# Minimal-perturbation attacks whose norms give a whole curve at once.
_MINIMAL_CURVES: dict[str, Callable[[float], Attack]] = {
    "deepfool": lambda p: DeepFool(p=p),
    "fmn": lambda p: FMN(p=p),
}
_LEGACY_DEEPFOOL = {"deepfool-linf": math.inf, "deepfool-l2": 2.0}


def _check_curve_name(name: str, p: float) -> str:
    """`name` if it is a curve attack usable with `p` (a clear error otherwise)."""
    if name in _LEGACY_DEEPFOOL:
        if _LEGACY_DEEPFOOL[name] != p:
            raise ValueError(f"attack {name!r} measures another norm than p={p:g}; use 'deepfool'.")
        return name
    if name in _MINIMAL_CURVES:
        return name
    base = "alg1" if re.fullmatch(r"alg1-\d+", name) else name
    if base not in BUDGET_NORMS:
        raise unknown_name("attack", name, [*CURVE_ATTACKS])
    budget_attack(name, 0.0, p=p)  # refuses a norm the attack does not implement
    return name


@dataclass(frozen=True)
class BaldaRobustness:
    """Balda et al. Table I measures.

    Attributes:
        p: Norm.
        rho1: Mean ``||r(x)||_p / ||x||_p`` of DeepFool's minimal perturbation.
        rho2: Mean ``L(x) / ||∇L(x)||_q`` (Prop. 1's linearised lower bound on ε).
        eps99: Smallest ε at which DeepFool fools more than 99%.
        n_correct: Correctly classified samples (the population).
    """

    p: float
    rho1: float
    rho2: float
    eps99: float
    n_correct: int


def balda_robustness(
    clf: Classifier,
    x: Tensor,
    y: Tensor,
    *,
    p: float | str = math.inf,
    space: ScoreSpace = "logits",
    batch_size: int = 256,
) -> BaldaRobustness:
    """ρ̂1, ρ̂2 and ε99 over the correctly classified samples (Balda et al. 2018, Table I).

    ρ̂1 uses DeepFool with its defaults (projected step, landed and polished on the boundary).
    ρ̂2 uses the margin ``L = f_k0 - max_{l≠k0} f_l`` at the clean input, on logits by
    default. The seed computes ``L`` on probabilities; on confident models the softmax
    saturates, ``∇L`` underflows towards 0 and the mean explodes (10^4–10^9 on the
    shipped MNIST models), while the logit version sits just below ρ̂1 as the seed's
    numbers do. ``space="probabilities"`` gives the seed's definition.
    """
    p = parse_p(p)
    clf = check_classifier(clf)
    x = clf.validate(x)
    predicted = clf.predict_unchecked(x)
    y = check_labels(y, x, clf, "y")
    correct = predicted == y
    result = DeepFool(p=p, batch_size=batch_size)(clf, x, y)
    keep = correct & result.success
    rho1 = float((result.norms[keep] / lp_norm(x[keep], p).clamp_min(1e-12)).mean())
    ratios = []
    q = dual_exponent(p)
    for index in torch.nonzero(correct).flatten().split(batch_size):
        values, grad = clf.value_and_gradient(
            x[index], partial(margin, label=y[index], space=space)
        )
        ratios.append(values / lp_norm(grad, q).clamp_min(1e-12))
    rho2 = float(torch.cat(ratios).mean()) if ratios else math.nan
    eps99 = epsilon_for_fooling(result.norms, correct, 0.99)
    return BaldaRobustness(p, rho1, rho2, eps99, int(correct.sum()))
