"""Robustness metrics as pure functions over per-sample tensors, plus mergeable accumulators.

docs/algorithms.md §1: ``rho_adv = mean_x ||r(x)||_p / ||x||_p`` over correctly classified
points (thesis eq. 3.10, Table 3.1 for p = 2, Table 3.2 for p = inf). Failed attacks are
never dropped silently: they are counted, ``rho_adv`` is computed over the successful
points and reported next to the failure count, and medians treat failures as ``+inf`` (an
upper bound on the true median).

Accumulators follow the torchmetrics pattern: states with a declared
merge rule (``sum`` or ``cat``) so that shards computed by different processes combine
into the same numbers whatever their order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from boundaryscope.attacks.base import AttackResult
from boundaryscope.norms import lp_norm, parse_p

__all__ = [
    "CHANCE_MARGIN",
    "Budget",
    "RobustnessAccumulator",
    "RobustnessSummary",
    "chance_check",
    "data_family",
    "iteration_histogram",
    "median_norm",
    "mismatch_warning",
    "rho_adv",
    "success_rate",
    "usual_budgets",
]


def _mask(n: int, mask: Tensor | None, device: torch.device) -> Tensor:
    return torch.ones(n, dtype=torch.bool, device=device) if mask is None else mask.bool()


CHANCE_MARGIN = 0.02


def chance_check(accuracy: float, labels: Tensor) -> dict[str, Any]:
    """Whether `accuracy` is at chance level on test labels `labels`.

    Chance is the share of the most frequent class (what a constant classifier scores);
    an accuracy within `CHANCE_MARGIN` of it is at chance: a model a defence destroyed
    (the training commands then exit non-zero), or data that is not the model's.

    Returns:
        ``{"chance_accuracy", "at_chance"}``.
    """
    counts = torch.bincount(labels.cpu().long())
    chance = float(counts.max()) / max(int(labels.numel()), 1)
    return {"chance_accuracy": chance, "at_chance": bool(accuracy <= chance + CHANCE_MARGIN)}


def mismatch_warning(accuracy: float, labels: Tensor, source: str) -> str | None:
    """What to check when the clean accuracy on `source` is at chance (else ``None``).

    Clean accuracy at chance almost always means the data is not what the model was
    trained on: another class order (a folder's classes are its sub-folders sorted by
    name), another scale or normalisation, another image size. Every attack then measures
    only the few images that happen to be classified correctly.
    """
    if labels.numel() == 0:
        return None
    check = chance_check(accuracy, labels)
    # One class only: a model that agrees with it is no evidence of a mismatch.
    if not check["at_chance"] or accuracy >= 1 - CHANCE_MARGIN:
        return None
    return (
        f"clean accuracy {accuracy:.1%} on {labels.numel()} images of {source} is at chance "
        f"(the most frequent class holds {check['chance_accuracy']:.1%}): the data may not "
        "match the model. Check its class order (folder: sub-folders sorted by name are "
        "classes 0, 1, …), its scale and normalisation (--bounds, --mean, --std) and its "
        "image size; attacks measure only the correctly classified images."
    )


def rho_adv(norms: Tensor, input_norms: Tensor, mask: Tensor | None = None) -> float:
    """Mean ``||r||_p / ||x||_p`` over `mask` (e.g. correctly classified) and finite norms.

    Args:
        norms: ``(N,)`` perturbation norms; ``inf`` marks a failed attack (excluded).
        input_norms: ``(N,)`` ``||x||_p`` in the same norm.
        mask: ``(N,)`` bool selection; ``None`` = all.

    Returns:
        The mean ratio (``nan`` when nothing is selected).
    """
    keep = _mask(norms.shape[0], mask, norms.device) & torch.isfinite(norms)
    if not bool(keep.any()):
        return math.nan
    return float((norms[keep] / input_norms[keep].clamp_min(1e-12)).double().mean())


def median_norm(norms: Tensor, mask: Tensor | None = None) -> float:
    """Median perturbation norm over `mask`, failures counted as ``+inf`` (upper bound)."""
    keep = _mask(norms.shape[0], mask, norms.device)
    if not bool(keep.any()):
        return math.nan
    values = norms[keep].double().sort().values
    # The lower median of torch would under-report with an even count; use the mean of the
    # two middle values as numpy does.
    mid = values.shape[0] // 2
    if values.shape[0] % 2:
        return float(values[mid])
    return float(0.5 * (values[mid - 1] + values[mid]))


def success_rate(success: Tensor, mask: Tensor | None = None) -> float:
    """Fraction of selected samples on which the attack succeeded."""
    keep = _mask(success.shape[0], mask, success.device)
    return float(success[keep].float().mean()) if bool(keep.any()) else math.nan


def iteration_histogram(iterations: Tensor, mask: Tensor | None = None) -> list[int]:
    """Counts of samples by iterations used (index = iterations)."""
    keep = _mask(iterations.shape[0], mask, iterations.device)
    return [int(c) for c in torch.bincount(iterations[keep].cpu())]


@dataclass(frozen=True)
class RobustnessSummary:
    """Summary of a minimal-perturbation attack over a data set.

    Attributes:
        p: Norm of the perturbations.
        n: Samples attacked.
        n_correct: Correctly classified samples (the population of ``rho_adv``).
        n_failures: Correctly classified samples where the attack failed.
        rho_adv: Mean ``||r||_p/||x||_p`` over successful correctly classified samples.
        mean_norm: Mean ``||r||_p`` over the same samples.
        median_norm: Median ``||r||_p`` over correctly classified samples (failures = inf).
        success_rate: Success rate over correctly classified samples.
        mean_iterations: Mean iterations over correctly classified samples.
        iteration_histogram: Counts by iterations (correctly classified samples).
    """

    p: float
    n: int
    n_correct: int
    n_failures: int
    rho_adv: float
    mean_norm: float
    median_norm: float
    success_rate: float
    mean_iterations: float
    iteration_histogram: list[int]


@dataclass
class RobustnessAccumulator:
    """Accumulates attack results batch by batch (or shard by shard) into a summary.

    States and merge rules: ``n``, ``n_correct``, ``n_failures``, ``ratio_sum``,
    ``norm_sum`` — ``sum``; ``norms``, ``iterations`` — ``cat`` (kept for the median
    and the histogram). Merging is exact and order-independent up to float summation.

    Example:
        >>> acc = RobustnessAccumulator(p=2.0)
        >>> # acc.update(result, x, correct) for each batch, then acc.compute()
    """

    p: float
    n: int = 0
    n_correct: int = 0
    n_failures: int = 0
    ratio_sum: float = 0.0
    norm_sum: float = 0.0
    norms: list[Tensor] = field(default_factory=list)
    iterations: list[Tensor] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.p = parse_p(self.p)

    def update(self, result: AttackResult, x: Tensor, correct: Tensor) -> None:
        """Adds one batch: the attack result, its inputs and the clean-correct mask."""
        if result.p != self.p:
            raise ValueError(
                f"The attack result measures norms with p={result.p}; this accumulator "
                f"expects p={self.p}."
            )
        correct = correct.bool().to(result.norms.device)
        norms = result.norms[correct]
        finite = torch.isfinite(norms)
        input_norms = lp_norm(x.to(result.norms.device), self.p)[correct]
        self.n += len(result)
        self.n_correct += int(correct.sum())
        self.n_failures += int((~finite).sum())
        self.ratio_sum += float(
            (norms[finite] / input_norms[finite].clamp_min(1e-12)).double().sum()
        )
        self.norm_sum += float(norms[finite].double().sum())
        self.norms.append(norms.detach().cpu())
        self.iterations.append(result.iterations[correct].detach().cpu())

    def merge(self, other: RobustnessAccumulator) -> RobustnessAccumulator:
        """Returns a new accumulator holding both (sum and cat rules)."""
        if other.p != self.p:
            raise ValueError(f"Cannot merge accumulators with p={self.p} and p={other.p}.")
        return RobustnessAccumulator(
            p=self.p,
            n=self.n + other.n,
            n_correct=self.n_correct + other.n_correct,
            n_failures=self.n_failures + other.n_failures,
            ratio_sum=self.ratio_sum + other.ratio_sum,
            norm_sum=self.norm_sum + other.norm_sum,
            norms=[*self.norms, *other.norms],
            iterations=[*self.iterations, *other.iterations],
        )

    def compute(self) -> RobustnessSummary:
        """The summary of everything accumulated so far."""
        norms = torch.cat(self.norms) if self.norms else torch.zeros(0)
        iterations = (
            torch.cat(self.iterations) if self.iterations else torch.zeros(0, dtype=torch.int64)
        )
        successes = self.n_correct - self.n_failures
        return RobustnessSummary(
            p=self.p,
            n=self.n,
            n_correct=self.n_correct,
            n_failures=self.n_failures,
            rho_adv=self.ratio_sum / successes if successes else math.nan,
            mean_norm=self.norm_sum / successes if successes else math.nan,
            median_norm=median_norm(norms),
            success_rate=successes / self.n_correct if self.n_correct else math.nan,
            mean_iterations=float(iterations.double().mean()) if iterations.numel() else math.nan,
            iteration_histogram=iteration_histogram(iterations) if iterations.numel() else [],
        )


@dataclass(frozen=True)
class Budget:
    """A perturbation budget in the convention of a benchmark.

    Attributes:
        p: Norm (2.0 or ``math.inf``).
        eps: Radius in input units (already scaled to the classifier's box).
        label: The radius as the benchmark writes it for images in [0, 1] (``"8/255"``).
        convention: Where the budget is used (RobustBench, Madry et al., …).
    """

    p: float
    eps: float
    label: str
    convention: str


# Budgets for images in [0, 1], by kind of data: (p, eps, label, convention).
_MNIST_LIKE = (
    (math.inf, 0.1, "0.1", "MNIST, l∞ (Madry et al. 2018 evaluate 0.1 to 0.3)"),
    (math.inf, 0.3, "0.3", "MNIST, l∞ (Madry et al. 2018)"),
    (2.0, 2.0, "2.0", "MNIST, l2 (Croce & Hein 2020)"),
)
_CIFAR_LIKE = (
    (math.inf, 8 / 255, "8/255", "CIFAR-10, l∞ (RobustBench)"),
    (2.0, 0.5, "0.5", "CIFAR-10, l2 (RobustBench)"),
)
_IMAGENET_LIKE = (
    (math.inf, 4 / 255, "4/255", "ImageNet, l∞ (RobustBench)"),
    (2.0, 3.0, "3.0", "ImageNet, l2 (Croce et al. 2021)"),
)


_BUDGETS: dict[str, tuple[tuple[float, float, str, str], ...]] = {
    "mnist": _MNIST_LIKE,
    "cifar10": _CIFAR_LIKE,
    "imagenet": _IMAGENET_LIKE,
}


def data_family(shape: tuple[int, ...]) -> str:
    """The kind of data whose conventions apply to inputs of `shape`.

    ``"cifar10"`` for colour images up to 64 pixels a side, ``"imagenet"`` for larger
    colour images, ``"mnist"`` for everything else (grey-scale images, vectors).
    """
    if len(shape) != 3 or shape[0] != 3:
        return "mnist"
    return "cifar10" if max(shape[1:]) <= 64 else "imagenet"


def usual_budgets(shape: tuple[int, ...], bounds: tuple[float, float]) -> list[Budget]:
    """The budgets at which robust accuracy is usually quoted for inputs like these.

    Grey-scale images follow MNIST's conventions (l∞ 0.1 and 0.3, l2 2.0), colour images
    up to 64 pixels a side CIFAR-10's (RobustBench: l∞ 8/255, l2 0.5), larger colour
    images ImageNet's (l∞ 4/255, l2 3.0). The benchmarks state radii for pixels in
    [0, 1]; they are scaled by ``hi - lo`` of `bounds` (a [0, 255] box gets l∞ 8, not
    8/255). An infinite box keeps the [0, 1] radii.

    Args:
        shape: One input's shape ``(C, H, W)`` (or any shape; non-images are MNIST-like).
        bounds: The classifier's box ``(lo, hi)``.
    """
    table = _BUDGETS[data_family(shape)]
    width = bounds[1] - bounds[0]
    scale = width if math.isfinite(width) and width > 0 else 1.0
    # l2 radii scale linearly with the pixel range too (‖c·r‖₂ = c‖r‖₂).
    return [Budget(p, eps * scale, label, convention) for p, eps, label, convention in table]
