"""Robust accuracy the field trusts: minimal norms first, then AutoAttack's cascade.

`evaluate` measures, for one norm and a list of budgets ε, which test images are robust —
correctly classified and not fooled within ε by any attack we have — in the order that
makes it cheap (docs/algorithms.md §11):

1. **Minimal norms.** DeepFool refined by FMN (thesis §3.2, Pintor et al. 2021) gives every
   image's smallest adversarial norm found, hence the whole accuracy-vs-ε curve at once: an
   image whose minimal norm is within ε is broken at ε without any budgeted attack.
2. **The cascade on the survivors.** AutoAttack's standard ensemble (Croce & Hein, ICML
   2020) — APGD-CE, APGD-T (DLR, most likely targets), FAB-T, Square — runs, in that order
   and budget by budget (smallest first), only on the images still robust, as AutoAttack
   runs each attack only on the points the previous ones left.

Every adversarial point any stage finds lowers that image's best norm, and an image is
robust at ε exactly when its best norm exceeds ε: the robust set shrinks monotonically in
ε and never grows when an attack is added. Each image records which attack broke it first
at each ε.

During the evaluation the known signs of a failed evaluation are checked (AutoAttack's
flags; Pintor et al., "Indicators of attack failure", NeurIPS 2022): non-finite outputs,
outputs that are probabilities, a model whose outputs change between two calls (the
gradient attacks then average `eot_samples` gradients, Expectation over Transformation),
vanishing input gradients, the black-box Square beating every white-box attack, the
minimal-norm attack disagreeing with the budgeted cascade, and APGD's loss not rising.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from boundaryscope._progress import tqdm_disable
from boundaryscope.attacks import APGD, APGDT, FABT, FMN, Attack, Square
from boundaryscope.classifier import Classifier, check_classifier
from boundaryscope.norms import parse_p

__all__ = [
    "CASCADE",
    "PROFILES",
    "Evaluation",
    "EvaluationConfig",
    "FailureCheck",
    "evaluate",
]

CASCADE = ("apgd-ce", "apgd-t", "fab-t", "square")
# Float32 rounding puts a point found at the ball's surface a hair beyond ε; a norm within
# this relative tolerance of ε counts as within ε everywhere below.
TOLERANCE = 1e-5
MINIMAL = "minimal"  # the minimal-norm stage (DeepFool + FMN), first in every cascade
CLEAN = "clean"  # a misclassified image: broken without any perturbation


@dataclass(frozen=True)
class EvaluationConfig:
    """Sizes of the evaluation (AutoAttack's standard values by default).

    Attributes:
        minimal_steps: FMN refinement steps after DeepFool (0: DeepFool alone).
        apgd_steps: APGD-CE and APGD-T iterations per target.
        targets: Target classes of APGD-T and FAB-T (most likely first).
        fab_steps: FAB-T iterations per target.
        square_queries: Square's queries per image.
        attacks: The cascade after the minimal-norm stage, a subsequence of `CASCADE`.
        eot_samples: Gradients averaged per step; ``None``: 1, or 20 when the model's
            outputs change between two calls.
        batch_size: Images per model pass.
    """

    minimal_steps: int = 30
    apgd_steps: int = 100
    targets: int = 9
    fab_steps: int = 100
    square_queries: int = 5000
    attacks: tuple[str, ...] = CASCADE
    eot_samples: int | None = None
    batch_size: int = 256

    def __post_init__(self) -> None:
        unknown = [a for a in self.attacks if a not in CASCADE]
        if unknown:
            raise ValueError(f"attacks must be among {list(CASCADE)}; got {unknown}.")
        counts = (self.apgd_steps, self.targets, self.fab_steps, self.square_queries)
        if self.minimal_steps < 0 or min(counts) < 1 or self.batch_size < 1:
            raise ValueError(
                "EvaluationConfig needs minimal_steps >= 0 and positive steps, targets, "
                f"queries and batch_size; got {self}."
            )


PROFILES: dict[str, EvaluationConfig] = {
    # AutoAttack's "standard" version: 100 steps, 9 targets, 5,000 Square queries.
    "standard": EvaluationConfig(),
    # Fewer targets and queries (the report's default on a CPU): an upper bound a little
    # above the standard one on robust models.
    "fast": EvaluationConfig(targets=3, fab_steps=50, square_queries=1000),
    # Seconds, for tests and smoke runs.
    "quick": EvaluationConfig(
        minimal_steps=10, apgd_steps=20, targets=2, fab_steps=10, square_queries=100
    ),
}


@dataclass(frozen=True)
class FailureCheck:
    """One sign of a failed evaluation, and whether it fired.

    Attributes:
        name: Short key (``non_finite``, ``probabilities``, ``stochastic``,
            ``zero_gradients``, ``square_beats_white_box``, ``minimal_disagrees``,
            ``loss_not_increasing``).
        fired: Whether the evaluation is suspect on this count.
        value: The measured share or count.
        threshold: Above it the check fires.
        message: What it means and what to do, for the report.
    """

    name: str
    fired: bool
    value: float
    threshold: float
    message: str


@dataclass
class Evaluation:
    """Per-image robustness at each budget, which attack broke each image, the checks.

    Attributes:
        p: The norm.
        epsilons: Budgets, increasing.
        correct: ``(N,)`` correctly classified images.
        minimal_norm: ``(N,)`` the minimal-norm stage's norms (``inf``: it failed; ``0`` for
            misclassified images).
        best_norm: ``(N,)`` smallest adversarial norm any stage found.
        found: Per stage, ``(N,)`` the smallest norm it found (``inf``: none).
        checks: The failure checks.
        cost: Per stage: seconds, images attacked, forward and backward rows.
        config: The settings used (EoT resolved).
        minimal_label: What produced the minimal norms (``"DeepFool + FMN-30"``).
    """

    p: float
    epsilons: list[float]
    correct: Tensor
    minimal_norm: Tensor
    best_norm: Tensor
    found: dict[str, Tensor]
    checks: list[FailureCheck]
    cost: dict[str, dict[str, float]]
    config: EvaluationConfig
    minimal_label: str = ""

    @property
    def clean_accuracy(self) -> float:
        """Share of correctly classified images."""
        return float(self.correct.double().mean()) if self.correct.numel() else math.nan

    def robust(self, eps: float) -> Tensor:
        """``(N,)`` correctly classified and no adversarial point found within `eps`."""
        return self.correct & ~_within(self.best_norm, eps)

    def robust_accuracy(self, eps: float) -> float:
        """Share of images robust at `eps` (an upper bound: stronger attacks lower it)."""
        return float(self.robust(eps).double().mean()) if self.correct.numel() else math.nan

    def broken_by(self, eps: float) -> list[str]:
        """Per image, the first stage that broke it within `eps` (``""``: robust)."""
        stages = [MINIMAL, *self.config.attacks]
        out = []
        for i in range(self.correct.numel()):
            if not bool(self.correct[i]):
                out.append(CLEAN)
                continue
            name = next((s for s in stages if bool(_within(self.found[s][i], eps))), "")
            out.append(name)
        return out

    @property
    def fired(self) -> list[FailureCheck]:
        """The checks that fired."""
        return [c for c in self.checks if c.fired]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: per ε the accuracies and per-image records, the checks and the cost."""
        budgets = []
        for eps in self.epsilons:
            broken = self.broken_by(eps)
            budgets.append(
                {
                    "eps": eps,
                    "clean_accuracy": self.clean_accuracy,
                    "robust_accuracy": self.robust_accuracy(eps),
                    "robust_accuracy_minimal_only": float(
                        (self.correct & ~_within(self.minimal_norm, eps)).double().mean()
                    ),
                    "robust": self.robust(eps).tolist(),
                    "broken_by": broken,
                    "broken_by_count": {
                        s: broken.count(s) for s in [CLEAN, MINIMAL, *self.config.attacks]
                    },
                }
            )
        return {
            "p": self.p,
            "n": int(self.correct.numel()),
            "epsilons": list(self.epsilons),
            "evaluation": describe(self.config, self.minimal_label),
            "clean_accuracy": self.clean_accuracy,
            "budgets": budgets,
            "minimal_norm": self.minimal_norm.tolist(),
            "smallest_norm": self.best_norm.tolist(),
            "found": {k: v.tolist() for k, v in self.found.items()},
            "checks": [asdict(c) for c in self.checks],
            "cost": self.cost,
            "config": asdict(self.config),
        }

    def model_info(
        self, name: str, dataset: str, threat_model: str | None = None
    ) -> dict[str, Any]:
        """RobustBench's ``model_info`` fields for the largest budget, ready to submit.

        ``autoattack_acc`` is our cascade's robust accuracy (AutoAttack's attacks, run on
        the survivors of the minimal-norm stage); ``additional_data`` and the paper's
        fields are left for the author.
        """
        eps = max(self.epsilons)
        return {
            "name": name,
            "dataset": dataset,
            "threat_model": threat_model or ("Linf" if math.isinf(self.p) else "L2"),
            "eps": f"{eps:g}",
            "clean_acc": f"{100 * self.clean_accuracy:.2f}",
            "reported": "",
            "autoattack_acc": f"{100 * self.robust_accuracy(eps):.2f}",
            "external": "",
            "n_examples": int(self.correct.numel()),
            "footnote": f"boundaryscope evaluate: {describe(self.config, self.minimal_label)}",
            "additional_data": False,
        }


def describe(config: EvaluationConfig, minimal_label: str = "") -> str:
    """One line naming the stages and their sizes."""
    stages = [minimal_label or f"DeepFool + FMN-{config.minimal_steps}"]
    names = {
        "apgd-ce": f"APGD-CE ({config.apgd_steps} steps)",
        "apgd-t": f"APGD-T ({config.targets} targets × {config.apgd_steps} steps)",
        "fab-t": f"FAB-T ({config.targets} targets × {config.fab_steps} steps)",
        "square": f"Square ({config.square_queries} queries)",
    }
    stages += [names[a] for a in config.attacks]
    return " → ".join(stages)


def evaluate(
    clf: Classifier,
    x: Tensor,
    y: Tensor,
    epsilons: Sequence[float],
    p: float | str = math.inf,
    config: EvaluationConfig | str = "standard",
    *,
    minimal: Tensor | None = None,
    minimal_label: str = "given minimal norms",
    seed: int = 0,
    progress: bool | None = None,
) -> Evaluation:
    """Robust accuracy at each of `epsilons`, minimal norms first, then the cascade.

    Args:
        clf: The classifier.
        x: ``(N, *shape)`` test images inside the box.
        y: ``(N,)`` labels.
        epsilons: Budgets (input units), any order; reported increasing.
        p: ``inf`` or 2.
        config: An `EvaluationConfig` or the name of one in `PROFILES`.
        minimal: ``(N,)`` norms of a minimal-norm attack already run on these images
            (``inf`` where it failed); the minimal-norm stage is then skipped.
        minimal_label: What produced `minimal`, for the description.
        seed: Seed of every random start and search.
        progress: Progress bar over the stages (``None``: only on a terminal).

    Returns:
        An `Evaluation`.

    Raises:
        ValueError: a bad norm, budget or profile.
    """
    clf = check_classifier(clf)
    p = parse_p(p)
    if p not in (2.0, math.inf):
        raise ValueError(f"evaluate supports p = 2 or inf; got p={p!r}.")
    settings = _config(config)
    budgets = sorted({float(e) for e in epsilons})
    if not budgets or any(not (e > 0 and math.isfinite(e)) for e in budgets):
        raise ValueError(f"epsilons must be positive finite budgets; got {list(epsilons)}.")
    x = clf.validate(x)
    y = y.to(clf.device)
    checks = _Checks(clf, x, y)
    if settings.eot_samples is None:
        settings = replace(settings, eot_samples=20 if checks.stochastic else 1)
    correct = checks.correct
    n = x.shape[0]
    best = torch.where(correct, math.inf, 0.0).to(torch.float64)
    found: dict[str, Tensor] = {}
    cost: dict[str, dict[str, float]] = {}
    stages = [MINIMAL, *settings.attacks]
    bar = tqdm(total=len(stages) * len(budgets), desc="evaluate", disable=tqdm_disable(progress))

    def run_stage(name: str, make: Callable[[float], Attack | None]) -> None:
        norms = torch.full((n,), math.inf, dtype=torch.float64, device=x.device)
        spent = {"seconds": 0.0, "images": 0.0, "forward_rows": 0.0, "backward_rows": 0.0}
        for eps in budgets:
            todo = torch.nonzero(correct & ~_within(best, eps)).flatten()
            attack = make(eps)
            bar.update(1)
            if attack is None or not todo.numel():
                continue
            before = (clf.counter.forward_rows, clf.counter.backward_rows)
            start = time.perf_counter()
            result = attack(clf, x[todo], y[todo])
            spent["seconds"] += time.perf_counter() - start
            spent["images"] += todo.numel()
            spent["forward_rows"] += clf.counter.forward_rows - before[0]
            spent["backward_rows"] += clf.counter.backward_rows - before[1]
            checks.saw(name, result, todo)
            hit = result.success & _within(result.norms.double(), eps)
            norms[todo[hit]] = torch.minimum(norms[todo[hit]], result.norms[hit].double())
            best[todo[hit]] = torch.minimum(best[todo[hit]], result.norms[hit].double())
        found[name] = norms
        cost[name] = spent

    # 1. Minimal norms: one attack for every budget at once.
    if minimal is not None:
        if tuple(minimal.shape) != (n,):
            raise ValueError(f"minimal must have shape ({n},); got {tuple(minimal.shape)}.")
        found[MINIMAL] = torch.where(correct, minimal.to(x.device).double(), math.inf)
        cost[MINIMAL] = {"seconds": 0.0, "images": 0.0, "forward_rows": 0.0, "backward_rows": 0.0}
        bar.update(len(budgets))
    else:
        start = time.perf_counter()
        before = (clf.counter.forward_rows, clf.counter.backward_rows)
        todo = torch.nonzero(correct).flatten()
        attack = FMN(p=p, steps=max(settings.minimal_steps, 1), batch_size=settings.batch_size)
        norms = torch.full((n,), math.inf, dtype=torch.float64, device=x.device)
        if todo.numel():
            result = attack(clf, x[todo], y[todo])
            checks.saw(MINIMAL, result, todo)
            norms[todo] = torch.where(result.success, result.norms.double(), math.inf)
        found[MINIMAL] = norms
        cost[MINIMAL] = {
            "seconds": time.perf_counter() - start,
            "images": float(todo.numel()),
            "forward_rows": float(clf.counter.forward_rows - before[0]),
            "backward_rows": float(clf.counter.backward_rows - before[1]),
        }
        bar.update(len(budgets))
    minimal_norm = torch.where(correct, found[MINIMAL], 0.0)
    best = torch.minimum(best, found[MINIMAL])
    # 2. The cascade on the survivors, budget by budget.
    eot = settings.eot_samples or 1
    size = settings.batch_size
    makers: dict[str, Callable[[float], Attack | None]] = {
        "apgd-ce": lambda e: APGD(
            eps=e, p=p, steps=settings.apgd_steps, eot_samples=eot, seed=seed, batch_size=size
        ),
        "apgd-t": lambda e: (
            APGDT(eps=e, p=p, steps=settings.apgd_steps, targets=settings.targets,
                  eot_samples=eot, seed=seed, batch_size=size)
            if clf.num_classes > 2 else None
        ),
        "fab-t": lambda e: FABT(
            eps=e, p=p, steps=settings.fab_steps, targets=settings.targets, seed=seed,
            batch_size=size,
        ),
        "square": lambda e: Square(
            eps=e, p=p, queries=settings.square_queries, seed=seed, batch_size=size
        ),
    }  # fmt: skip
    for name in settings.attacks:
        run_stage(name, makers[name])
    bar.close()
    evaluation = Evaluation(
        p=p,
        epsilons=budgets,
        correct=correct,
        minimal_norm=minimal_norm,
        best_norm=best,
        found=found,
        checks=[],
        cost=cost,
        config=settings,
        minimal_label=(
            minimal_label if minimal is not None else f"DeepFool + FMN-{settings.minimal_steps}"
        ),
    )
    evaluation.checks = checks.results(evaluation)
    return evaluation


def _within(norms: Tensor, eps: float) -> Tensor:
    """``norms <= ε`` up to `TOLERANCE` (relative)."""
    return norms <= eps * (1 + TOLERANCE)


def _config(config: EvaluationConfig | str) -> EvaluationConfig:
    if isinstance(config, EvaluationConfig):
        return config
    if config not in PROFILES:
        raise ValueError(f"config must be one of {sorted(PROFILES)}; got {config!r}.")
    return PROFILES[config]


# ---------------------------------------------------------------------- failure checks
@dataclass
class _Checks:
    """Collects the evidence of the failure checks while the evaluation runs."""

    clf: Classifier
    x: Tensor
    y: Tensor
    correct: Tensor = field(init=False)
    stochastic: bool = field(init=False)
    probabilities: bool = field(init=False)
    non_finite: int = field(init=False)
    zero_gradient_share: float = field(init=False)
    non_finite_points: int = 0
    apgd_stalled: int = 0
    apgd_attacked: int = 0

    def __post_init__(self) -> None:
        clf, x, y = self.clf, self.x, self.y
        with clf.session(), torch.no_grad():
            first = clf.scores(x, 256) if len(x) else x.new_zeros(0, 2)
            probe = x[: min(16, len(x))]
            again = clf.forward_scores(probe) if len(probe) else probe
        finite = torch.isfinite(first).all(dim=1)
        self.non_finite = int((~finite).sum())
        labels = torch.where(finite, first.argmax(dim=1), torch.full_like(y, -1))
        self.correct = labels == y
        self.stochastic = bool(len(probe)) and not torch.allclose(
            again, first[: len(probe)], rtol=1e-4, atol=1e-5, equal_nan=True
        )
        rows = first[finite]
        self.probabilities = bool(
            rows.numel() and rows.shape[1] > 1 and bool((rows >= 0).all())
            and bool((rows <= 1).all())
            and bool(torch.allclose(rows.sum(1), torch.ones_like(rows[:, 0]), atol=1e-3))
        )  # fmt: skip
        self.zero_gradient_share = self._zero_gradients()

    def _zero_gradients(self) -> float:
        """Share of correct images whose margin ``z_y − max_{j≠y} z_j`` has a zero gradient.

        The margin's gradient vanishes only where the model is locally constant in the
        input (quantisation, a saturated non-differentiable layer), unlike the
        cross-entropy's, which underflows on very confident images.
        """
        index = torch.nonzero(self.correct).flatten()[:256]
        if not index.numel():
            return 0.0
        y = self.y[index]

        def margin(scores: Tensor) -> Tensor:
            true = scores.gather(1, y[:, None])[:, 0]
            return true - scores.scatter(1, y[:, None], -math.inf).amax(dim=1)

        _, grad = self.clf.value_and_gradient(self.x[index], margin)
        zero = grad.flatten(1).abs().amax(dim=1) == 0
        return float(zero.double().mean())

    def saw(self, stage: str, result: Any, rows: Tensor) -> None:
        """Records what one attack call shows: non-finite points, APGD-CE's loss gains."""
        self.non_finite_points += int((result.adversarial_label < 0).sum())
        if stage == "apgd-ce" and "loss_gain" in result.details:
            failed = ~result.success
            self.apgd_attacked += int(failed.sum())
            self.apgd_stalled += int((result.details["loss_gain"][failed] <= 0).sum())

    def results(self, evaluation: Evaluation) -> list[FailureCheck]:
        """The checks, with their thresholds (AutoAttack's flags, Pintor et al. 2022)."""
        correct = max(int(evaluation.correct.sum()), 1)
        square = evaluation.found.get("square")
        white = [s for s in (MINIMAL, *evaluation.config.attacks) if s != "square"]
        white_best = torch.stack([evaluation.found[s] for s in white]).amin(dim=0)
        square_wins = (
            int(((square < math.inf) & (white_best == math.inf)).sum()) if square is not None else 0
        )
        cascade = [evaluation.found[s] for s in evaluation.config.attacks if s in evaluation.found]
        budgeted = torch.stack(cascade).amin(dim=0) if cascade else evaluation.best_norm
        disagree = (budgeted < math.inf) & (evaluation.minimal_norm > 1.5 * budgeted)
        disagree_share = float((disagree & evaluation.correct).sum()) / correct
        stalled = self.apgd_stalled / max(self.apgd_attacked, 1)
        return [
            FailureCheck(
                "non_finite", self.non_finite + self.non_finite_points > 0,
                float(self.non_finite + self.non_finite_points), 0.0,
                "the model returned NaN or ±inf; such points are never counted as fooled, "
                "and robust accuracy may be overstated where the attacks stepped into them",
            ),
            FailureCheck(
                "probabilities", self.probabilities, float(self.probabilities), 0.0,
                "the outputs look like probabilities: remove the final softmax, or gradients "
                "saturate and the attacks underperform",
            ),
            FailureCheck(
                "stochastic", self.stochastic, float(self.stochastic), 0.0,
                "the outputs change between two calls: gradients were averaged over "
                f"{evaluation.config.eot_samples} passes (EoT); use an adaptive attack too",
            ),
            FailureCheck(
                "zero_gradients", self.zero_gradient_share > 0.01, self.zero_gradient_share,
                0.01,
                "input gradients vanish on correctly classified images (masked gradients: "
                "quantisation or a non-differentiable layer); trust the black-box Square",
            ),
            FailureCheck(
                "square_beats_white_box", square_wins / correct > 0.01, float(square_wins),
                0.01 * correct,
                "the black-box Square fooled images every gradient attack failed on: the "
                "gradients are misleading (gradient masking)",
            ),
            FailureCheck(
                "minimal_disagrees", disagree_share > 0.05, disagree_share, 0.05,
                "the minimal-norm attack overestimated the distance to the boundary of many "
                "images by more than 1.5× what a budgeted attack found",
            ),
            FailureCheck(
                "loss_not_increasing", stalled > 0.2 and self.apgd_attacked >= 5, stalled, 0.2,
                "APGD-CE could not raise the loss on many images it failed on (incomplete "
                "optimisation or uninformative gradients)",
            ),
        ]  # fmt: skip
