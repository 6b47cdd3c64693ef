"""One training loop for every defence: fit, adversarial fine-tuning, PGD-AT, CURE (Part III).

The seeds train with SGD + momentum (thesis §3.2.3) and harden networks in three ways,
all of which are an *objective* plugged into the same loop (`fit`):

- `Standard`: cross-entropy on clean images (the zoo models; "5 extra epochs on the
  original data", the baseline of Table 3.3).
- `PerturbedSet` (§3.3, §4.5): fine-tuning on a perturbed copy of the training set computed
  once, before the first epoch, from the network being fine-tuned ("the same training data
  was used through all 5 extra epochs"): DeepFool perturbations magnified by ``α``
  (`DeepFoolFinetune`, ``α = 1, 2, 3`` in Fig. 3.7), FGSM examples (`FGSMFinetune`), or
  the universal-perturbation pool of §4.5 (`UniversalPool`).
- Per-batch objectives: `PGDTraining` (Madry et al.'s adversarial training, the baseline
  users know) and `CURE` (§8.4, eq. 8.7: ``ℓ + λ ||∇ℓ(x + h z) − ∇ℓ(x)||²`` with
  ``z = sign(∇ℓ)/||sign(∇ℓ)||``).

`fit` always trains a *copy* of the given model, so the user's module is never touched. With
a ``run_dir`` it writes an atomic checkpoint after every epoch (model, optimiser, schedule,
every random state, history) and ``resume=True`` continues an interrupted run to exactly the
numbers an uninterrupted run gives. Every epoch is recorded: loss, training accuracy, the
numbers of an optional `Monitor` (held-out accuracy, ρ_adv, robust accuracy), the
backward passes spent per training image and the wall time.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from boundaryscope._io import load_checkpoint, remove_stale_temporaries
from boundaryscope._progress import tqdm_disable
from boundaryscope.attacks import FGSM, PGD, DeepFool, smallest_fooling_epsilon
from boundaryscope.classifier import Classifier, resolve_device
from boundaryscope.metrics import rho_adv
from boundaryscope.norms import lp_norm

__all__ = [
    "CURE",
    "DeepFoolFinetune",
    "FGSMFinetune",
    "FitResult",
    "Monitor",
    "Objective",
    "PGDTraining",
    "PerturbedSet",
    "Standard",
    "TrainConfig",
    "TrainHistory",
    "accuracy",
    "cure_penalty",
    "cure_step_size",
    "fit",
    "train_and_save",
]

_logger = logging.getLogger("boundaryscope")
CHECKPOINT = "checkpoint.pt"
PREPARED = "prepared.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of `fit`.

    Attributes:
        epochs: Passes over the training set.
        lr: Initial learning rate.
        momentum: SGD momentum (``β₁`` of Adam).
        weight_decay: L2 penalty.
        batch_size: Mini-batch size.
        seed: Seeds the shuffling, the objectives' random draws and dropout.
        optimizer: ``"sgd"`` (SGD + momentum, as the seeds) or ``"adam"`` (CURE's paper).
        schedule: ``"cosine"`` (annealed to 0 over the run, per step) or ``"constant"``.
    """

    epochs: int = 15
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    seed: int = 0
    optimizer: Literal["sgd", "adam"] = "sgd"
    schedule: Literal["cosine", "constant"] = "cosine"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                f"TrainConfig needs epochs >= 1 and batch_size >= 1; got epochs={self.epochs}, "
                f"batch_size={self.batch_size}."
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"TrainConfig.lr must be a positive number; got {self.lr!r}.")
        if self.optimizer not in ("sgd", "adam") or self.schedule not in ("cosine", "constant"):
            raise ValueError(
                "TrainConfig.optimizer must be 'sgd' or 'adam' and schedule 'cosine' or "
                f"'constant'; got {self.optimizer!r}, {self.schedule!r}."
            )


@dataclass
class TrainHistory:
    """One record per epoch; record 0 describes the model before training (if monitored).

    Each record holds ``epoch``, and after training epochs ``loss`` (mean objective),
    ``train_accuracy`` (on the inputs actually trained on), ``backward_per_image`` (backward
    passes through the network per training image, attacks included), ``seconds``, plus the
    monitor's numbers (``test_accuracy``, ``rho_adv``, ``pgd_accuracy@ε`` …).
    """

    records: list[dict[str, float]] = field(default_factory=list)

    @property
    def loss(self) -> list[float]:
        """Mean training objective per trained epoch."""
        return [r["loss"] for r in self.records if "loss" in r]

    @property
    def accuracy(self) -> list[float]:
        """Training accuracy per trained epoch."""
        return [r["train_accuracy"] for r in self.records if "train_accuracy" in r]


@dataclass
class FitResult:
    """The trained copy and how it got there.

    Attributes:
        model: The trained copy (in eval mode); the input model is left unchanged.
        history: Per-epoch records.
        preparation: Cost and facts of the objective's one-off preparation (a perturbed
            training set), empty for per-batch objectives.
        resumed_from: Epoch the run resumed after (0 for a fresh run).
    """

    model: nn.Module
    history: TrainHistory
    preparation: dict[str, Any] = field(default_factory=dict)
    resumed_from: int = 0


# ---------------------------------------------------------------------- objectives
class Objective(ABC):
    """What one training step minimises; subclasses are frozen dataclasses of settings.

    `prepare` may replace the training inputs once before the first epoch (a perturbed
    training set); `batch_loss` returns per-sample losses with a graph to the parameters.
    """

    name: ClassVar[str] = "objective"

    def settings(self) -> dict[str, Any]:
        """The objective's name and settings (checked on resume, written to the run card)."""
        values = asdict(self) if hasattr(self, "__dataclass_fields__") else {}  # type: ignore[call-overload]
        return {"objective": self.name, **values}

    def prepare(
        self, clf: Classifier, x: Tensor, y: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, Any]] | None:
        """A replacement training set ``(N, *shape)`` and facts about it, or ``None``."""
        return None

    @abstractmethod
    def batch_loss(self, step: TrainingStep) -> tuple[Tensor, Tensor]:
        """Per-sample losses and the logits behind the training accuracy.

        Returns:
            ``(losses (B,), logits (B, C))``; the losses carry a graph to the parameters.
        """


@dataclass
class TrainingStep:
    """What an objective sees at one step.

    Attributes:
        clf: Classifier around the copy being trained (attacks run through it, in eval mode).
        x: Batch inputs ``(B, *shape)`` (already the perturbed ones for `PerturbedSet`).
        y: Labels ``(B,)``.
        progress: Epochs done so far, fractional (``epoch + step / steps_per_epoch``).
        generator: The run's generator for the objective's random draws.
        backward_rows: Backward rows the objective spent beyond the parameter update's own
            backward (attacks, input gradients); objectives add to it.
    """

    clf: Classifier
    x: Tensor
    y: Tensor
    progress: float
    generator: torch.Generator
    backward_rows: int = 0

    def logits(self, x: Tensor) -> Tensor:
        """Training-mode logits with a graph to the parameters (preprocessing applied)."""
        return self.clf.differentiable_scores(x)


@dataclass(frozen=True)
class Standard(Objective):
    """Cross-entropy on the training images (the zoo's training, Table 3.3's baseline)."""

    name: ClassVar[str] = "standard"

    def batch_loss(self, step: TrainingStep) -> tuple[Tensor, Tensor]:
        """Cross-entropy of the training-mode logits."""
        logits = step.logits(step.x)
        return nn.functional.cross_entropy(logits, step.y, reduction="none"), logits


class PerturbedSet(Standard):
    """Cross-entropy on a training set perturbed once, before fine-tuning (thesis §3.3).

    Subclasses implement `perturb`; images the attack does not fool keep their clean
    version (there is no adversarial example to learn from).
    """

    name: ClassVar[str] = "perturbed-set"

    def prepare(
        self, clf: Classifier, x: Tensor, y: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, Any]]:
        """`perturb`'s set, with its cost (backward passes per image, seconds) and sizes."""
        start = time.perf_counter()
        clf.counter.reset()
        perturbed, facts = self.perturb(clf, x, y, generator)
        moved = (perturbed - x).flatten(1)
        changed = moved.abs().amax(dim=1) > 0
        facts = {
            **facts,
            "perturbed_share": float(changed.float().mean()),
            "median_l2": float(moved.norm(dim=1)[changed].median()) if changed.any() else 0.0,
            "median_linf": float(moved.abs().amax(1)[changed].median()) if changed.any() else 0.0,
            "backward_per_image": clf.counter.backward_rows / max(x.shape[0], 1),
            "seconds": time.perf_counter() - start,
        }
        return perturbed, facts

    @abstractmethod
    def perturb(
        self, clf: Classifier, x: Tensor, y: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, Any]]:
        """The perturbed training inputs and facts about them."""


@dataclass(frozen=True)
class DeepFoolFinetune(PerturbedSet):
    """Fine-tuning on DeepFool examples ``clip(x + α r(x))`` (thesis §3.3, Fig. 3.6–3.7).

    ``α = 1`` is the seed's DeepFool fine-tuning; ``α = 2, 3`` magnify the minimal
    perturbations (Fig. 3.7: robustness drops as ``α`` grows, because overly perturbed
    digits really change class, Fig. 3.8).

    Attributes:
        alpha: Magnification of the DeepFool perturbation.
        p: Its norm.
        overshoot: DeepFool's overshoot.
        steps: DeepFool's maximum iterations.
    """

    name: ClassVar[str] = "deepfool"
    alpha: float = 1.0
    p: float = 2.0
    overshoot: float = 0.02
    steps: int = 50

    def __post_init__(self) -> None:
        if not (self.alpha > 0 and math.isfinite(self.alpha)):
            raise ValueError(f"DeepFoolFinetune.alpha must be > 0; got {self.alpha!r}.")

    def perturb(
        self, clf: Classifier, x: Tensor, y: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, Any]]:
        """``clip(x + α r(x))`` where DeepFool succeeds, ``x`` elsewhere."""
        attack = DeepFool(p=self.p, overshoot=self.overshoot, steps=self.steps, progress=None)
        result = attack(clf, x, y)
        scale = torch.where(result.success, self.alpha, 0.0).to(x.dtype)
        shaped = scale.view(-1, *([1] * (x.ndim - 1)))
        perturbed = clf.clip(x + shaped * result.perturbation.to(x.device))
        return perturbed, {"attack_success": float(result.success.float().mean())}


@dataclass(frozen=True)
class FGSMFinetune(PerturbedSet):
    """Fine-tuning on FGSM examples ``clip(x + ε sign ∇ℓ)`` (thesis §3.3, Table 3.3).

    Attributes:
        eps: l∞ step; ``None`` takes FGSM's own robustness estimate, the smallest ε that
            fools 90% of the training images (as `boundaryscope attack fgsm` does), so that
            the examples are adversarial like DeepFool's — only larger.
    """

    name: ClassVar[str] = "fgsm"
    eps: float | None = None

    def perturb(
        self, clf: Classifier, x: Tensor, y: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, Any]]:
        """FGSM examples at `eps` (or at FGSM's 90% fooling ε)."""
        eps = self.eps
        if eps is None:
            eps = smallest_fooling_epsilon(clf, x, y).epsilon
            if not math.isfinite(eps):
                raise ValueError(
                    "FGSM cannot fool 90% of the training images inside the box; give "
                    "FGSMFinetune an explicit eps."
                )
        result = FGSM(eps=eps)(clf, x, y)
        facts = {"eps": eps, "attack_success": float(result.success.float().mean())}
        return result.adversarial, facts


@dataclass(frozen=True)
class PGDTraining(Objective):
    """Adversarial training (Madry et al. 2018): cross-entropy at the PGD maximiser.

    Every batch is replaced by ``argmax_{||δ||_p ≤ ε, x+δ ∈ box} ℓ(x + δ)`` found by PGD from a
    random start, all `steps` steps taken (no early stop), the model in eval mode for the
    attack and in train mode for the update.

    Attributes:
        eps: Radius of the threat model (input units).
        steps: PGD iterations.
        step_size: ``None``: ``2.5 ε / steps`` (Madry et al.'s rule).
        p: ``inf`` or 2.
    """

    name: ClassVar[str] = "pgd"
    eps: float = 0.1
    steps: int = 10
    step_size: float | None = None
    p: float = math.inf

    def __post_init__(self) -> None:
        if not (self.eps > 0 and math.isfinite(self.eps)) or self.steps < 1:
            raise ValueError(
                f"PGDTraining needs eps > 0 and steps >= 1; got eps={self.eps!r}, "
                f"steps={self.steps!r}."
            )

    def attack(self, seed: int) -> PGD:
        """The inner attack (one seed per batch, drawn from the run's generator)."""
        return PGD(
            eps=self.eps,
            p=self.p,
            steps=self.steps,
            step_size=self.step_size,
            seed=seed,
            early_stop=False,
        )

    def batch_loss(self, step: TrainingStep) -> tuple[Tensor, Tensor]:
        """Cross-entropy at the batch's PGD points."""
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=step.generator))
        before = step.clf.counter.backward_rows
        adversarial = self.attack(seed)(step.clf, step.x, step.y).adversarial.detach()
        step.backward_rows += step.clf.counter.backward_rows - before
        logits = step.logits(adversarial)
        return nn.functional.cross_entropy(logits, step.y, reduction="none"), logits


def cure_step_size(h: float, ramp_epochs: float, progress: float) -> float:
    """CURE's ``h`` at a point of training: linear from 0 to `h` over `ramp_epochs` (§8.4).

    The thesis "linearly increase[s] the value of h from 0 to 1.5 during the first 5
    epochs"; we ramp per step, ``h · min(1, progress / ramp_epochs)``.
    """
    if ramp_epochs <= 0:
        return h
    return h * min(1.0, max(progress, 0.0) / ramp_epochs)


def _cross_entropy(scores: Tensor, y: Tensor) -> Tensor:
    return nn.functional.cross_entropy(scores, y, reduction="none")


def cure_penalty(
    clf: Classifier,
    x: Tensor,
    y: Tensor,
    h: float,
    loss: Callable[[Tensor, Tensor], Tensor] = _cross_entropy,
) -> tuple[Tensor, Tensor]:
    """CURE's regulariser ``||∇ℓ(x + h z) − ∇ℓ(x)||²`` per sample (thesis §8.4, eq. 8.7).

    ``ℓ`` is the loss in the input (cross-entropy by default), ``z = sign(∇ℓ(x)) /
    ||sign(∇ℓ(x))||₂`` (so the finite-difference step has l2 length ``h``; the direction
    is held fixed, without a gradient). Both input gradients are built with
    ``create_graph=True`` so that the penalty is differentiable in the parameters (double
    backward). The model is in eval mode, as in the reference code; ``x + h z`` is not
    clipped to the box (the penalty measures the loss's variation, not an attack).

    Args:
        clf: Classifier around the model being trained.
        x: Inputs ``(B, *shape)``.
        y: Labels ``(B,)``.
        h: Finite-difference scale (input units, l2).
        loss: Per-sample loss of the scores ``(B, C)`` and labels, ``(B,)``.

    Returns:
        ``(penalty (B,), z (B, *shape))``.
    """

    def input_gradient(points: Tensor) -> Tensor:
        points = points.detach().requires_grad_(True)
        total = loss(clf.differentiable_scores(points), y).sum()
        (grad,) = torch.autograd.grad(total, points, create_graph=True)
        return grad

    with clf.session(), torch.enable_grad():
        g0 = input_gradient(x)
        signs = torch.sign(g0.detach())
        norms = signs.flatten(1).norm(dim=1).clamp_min(1.0).view(-1, *([1] * (x.ndim - 1)))
        z = signs / norms
        g1 = input_gradient(x + h * z)
        penalty = (g1 - g0).flatten(1).pow(2).sum(dim=1)
    return penalty, z


@dataclass(frozen=True)
class CURE(Objective):
    """Curvature regularisation (thesis §8.4–8.5): ``ℓ(x) + λ ||∇ℓ(x + h z) − ∇ℓ(x)||²``.

    Two input gradients per batch (the thesis' "2 backward passes") and one parameter
    backward through them; see `cure_penalty`. ``h`` ramps linearly from 0 over the first
    `ramp_epochs` (`cure_step_size`).

    Attributes:
        lam: ``λ``, the weight of the penalty.
        h: Final finite-difference scale (l2, input units).
        ramp_epochs: Epochs over which ``h`` grows from 0.
    """

    name: ClassVar[str] = "cure"
    lam: float = 4.0
    h: float = 1.5
    ramp_epochs: float = 5.0

    def __post_init__(self) -> None:
        if not (self.lam >= 0 and self.h >= 0 and self.ramp_epochs >= 0):
            raise ValueError(
                f"CURE needs lam >= 0, h >= 0 and ramp_epochs >= 0; got lam={self.lam!r}, "
                f"h={self.h!r}, ramp_epochs={self.ramp_epochs!r}."
            )

    def batch_loss(self, step: TrainingStep) -> tuple[Tensor, Tensor]:
        """Cross-entropy plus ``λ`` times `cure_penalty` at the ramped ``h``."""
        logits = step.logits(step.x)
        loss = nn.functional.cross_entropy(logits, step.y, reduction="none")
        h = cure_step_size(self.h, self.ramp_epochs, step.progress)
        if h > 0 and self.lam > 0:
            penalty, _ = cure_penalty(step.clf, step.x, step.y, h)
            step.backward_rows += 2 * step.x.shape[0]
            loss = loss + self.lam * penalty
        return loss, logits


# ---------------------------------------------------------------------- monitoring
@dataclass(frozen=True)
class Monitor:
    """Held-out numbers recorded before training and after every epoch.

    Attributes:
        x: Held-out inputs ``(N, *shape)``.
        y: Labels ``(N,)``.
        rho_p: Norm of the DeepFool ρ_adv (2 as Fig. 3.6; ``None`` skips it).
        pgd_eps: l∞ budgets at which PGD(`pgd_steps`) robust accuracy is recorded.
        pgd_steps: PGD iterations.
        batch_size: Rows per pass.
    """

    x: Tensor
    y: Tensor
    rho_p: float | None = 2.0
    pgd_eps: tuple[float, ...] = ()
    pgd_steps: int = 20
    batch_size: int = 256

    def __call__(self, clf: Classifier) -> dict[str, float]:
        """The numbers for the model `clf` wraps now."""
        x, y = clf.validate(self.x), self.y.to(clf.device)
        correct = clf.predict_unchecked(x, self.batch_size) == y
        out = {"test_accuracy": float(correct.float().mean())}
        if self.rho_p is not None:
            result = DeepFool(p=self.rho_p, batch_size=self.batch_size)(clf, x, y)
            inputs = lp_norm(x, result.p)
            out["rho_adv"] = rho_adv(result.norms, inputs, correct)
        for eps in self.pgd_eps:
            attack = PGD(eps=eps, steps=self.pgd_steps, batch_size=self.batch_size)
            fooled = attack(clf, x, y).success
            out[f"pgd_accuracy@{eps:g}"] = float((correct & ~fooled).float().mean())
        return out

    def settings(self) -> dict[str, Any]:
        """JSON-ready description (checked on resume)."""
        return {
            "n": int(self.x.shape[0]),
            "rho_p": self.rho_p,
            "pgd_eps": list(self.pgd_eps),
            "pgd_steps": self.pgd_steps,
        }


# ---------------------------------------------------------------------- the loop
def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(
            model.parameters(),
            lr=config.lr,
            betas=(config.momentum, 0.999),
            weight_decay=config.weight_decay,
        )
    return torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )


def _schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=config.epochs * steps_per_epoch
        )
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def _as_classifier(model: nn.Module | Classifier) -> tuple[Classifier, nn.Module]:
    """A classifier around a deep copy of the model (same box, preprocessing, device)."""
    if isinstance(model, Classifier):
        original = model.model
        bounds, preprocessing, device = model.bounds, model.preprocessing, model.device
    elif isinstance(model, nn.Module):
        original, bounds, preprocessing, device = model, (0.0, 1.0), None, None
    else:
        raise TypeError(
            "fit's 'model' must be a torch.nn.Module or a boundaryscope.Classifier; got "
            f"{type(model).__name__}."
        )
    was_training = original.training
    trained = copy.deepcopy(original).eval()
    clf = Classifier(trained, bounds=bounds, preprocessing=preprocessing, device=device)
    trained.train(was_training)
    return clf, trained


def _check_training_data(clf: Classifier, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    x = clf.validate(x, "x")
    if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.shape != (x.shape[0],):
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        dtype = y.dtype if isinstance(y, Tensor) else None
        raise ValueError(
            f"y must be an int64 tensor of shape ({x.shape[0]},) with one label per image; got "
            f"{shape} of dtype {dtype}."
        )
    return x, y.to(clf.device)


def _run_settings(
    config: TrainConfig, objective: Objective, x: Tensor, y: Tensor, monitor: Monitor | None
) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: settings and a fingerprint of the data."""
    fingerprint = {
        "n": int(x.shape[0]),
        "shape": list(x.shape[1:]),
        "x_sum": float(x.double().sum()),
        "y_sum": int(y.sum()),
    }
    settings = {
        "config": asdict(config),
        **objective.settings(),
        "data": fingerprint,
        "monitor": monitor.settings() if monitor is not None else None,
    }
    # JSON round trip: what was written is what is compared (tuples → lists).
    normalised: dict[str, Any] = json.loads(json.dumps(settings))
    return normalised


@dataclass
class _State:
    """Everything that changes from epoch to epoch (the checkpoint's content)."""

    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    history: TrainHistory
    epoch: int = 0

    def save(self, path: Path, model: nn.Module, settings: dict[str, Any]) -> None:
        from boundaryscope._io import save_torch

        save_torch(
            path,
            {
                "epoch": self.epoch,
                "model": model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "generator": self.generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "history": self.history.records,
                "settings": settings,
            },
        )

    def load(self, path: Path, model: nn.Module, settings: dict[str, Any]) -> None:
        saved = load_checkpoint(path, settings, "settings", ("model", "optimizer", "epoch"))
        model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved["schedule"])
        self.generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        self.history = TrainHistory([dict(r) for r in saved["history"]])
        self.epoch = int(saved["epoch"])


def _prepared_inputs(
    objective: Objective,
    clf: Classifier,
    x: Tensor,
    y: Tensor,
    generator: torch.Generator,
    run_dir: Path | None,
    settings: dict[str, Any],
) -> tuple[Tensor, dict[str, Any]]:
    """The objective's replacement training set, computed once and kept in the run directory."""
    from boundaryscope._io import save_torch

    path = run_dir / PREPARED if run_dir is not None else None
    if path is not None and path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("settings") == settings:
            return saved["x"].to(x.device), dict(saved["facts"])
    prepared = objective.prepare(clf, x, y, generator)
    if prepared is None:
        return x, {}
    inputs, facts = prepared
    if path is not None:
        save_torch(path, {"x": inputs.cpu(), "facts": facts, "settings": settings})
    return inputs, facts


def fit(
    model: nn.Module | Classifier,
    x: Tensor,
    y: Tensor,
    config: TrainConfig = TrainConfig(),
    *,
    objective: Objective | None = None,
    monitor: Monitor | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = True,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> FitResult:
    """Trains a copy of `model` on ``(x, y)`` with a pluggable objective (thesis §3.3, §8).

    Mini-batches of `config.batch_size` in an order drawn from a seeded generator; the
    objective's per-sample losses are averaged and one optimiser step taken per batch;
    the learning rate follows `config.schedule` per step. With a `monitor` the held-out
    numbers are recorded before training (record 0) and after every epoch.

    Args:
        model: An ``nn.Module`` (box ``[0, 1]``) or a `Classifier` (its box,
            preprocessing and device are kept). It is deep-copied, never modified.
        x: Training inputs ``(N, *shape)`` inside the box.
        y: Labels ``(N,)`` (int64).
        config: Optimisation settings.
        objective: What to minimise (default `Standard`).
        monitor: Held-out numbers to record per epoch.
        run_dir: Directory for ``checkpoint.pt`` (written atomically after every epoch)
            and ``prepared.pt`` (a perturbed training set); ``None`` keeps nothing.
        resume: Continue from ``run_dir/checkpoint.pt``; the run's settings, data and
            monitor must match. The result equals an uninterrupted run's bit for bit.
        progress: Progress bar (``None``: only on a terminal).
        on_epoch_end: Called as ``on_epoch_end(epoch, record)`` after each checkpoint.

    Returns:
        `FitResult` with the trained copy (eval mode) and its history.

    Raises:
        ValueError: bad data, a checkpoint in `run_dir` without ``resume=True``, or a
            checkpoint from other settings.
    """
    objective = objective or Standard()
    clf, trained = _as_classifier(model)
    x, y = _check_training_data(clf, x, y)
    clf.predict(x[:1])  # the classifier's first-call checks run in eval mode
    settings = _run_settings(config, objective, x, y, monitor)
    directory = Path(run_dir) if run_dir is not None else None
    checkpoint = directory / CHECKPOINT if directory is not None else None
    if directory is not None:
        remove_stale_temporaries(directory)  # left by a run killed while writing
    if checkpoint is not None and checkpoint.exists() and not resume:
        raise ValueError(
            f"{checkpoint} exists: pass resume=True (--resume) to continue that run, or choose "
            "another run directory."
        )
    # Dropout and other global-RNG draws are seeded inside a fork so that the caller's
    # random state is left as it was, and the saved state makes resume exact.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        steps_per_epoch = math.ceil(x.shape[0] / config.batch_size)
        optimizer = _optimizer(trained, config)
        state = _State(
            optimizer, _schedule(optimizer, config, steps_per_epoch), generator, TrainHistory()
        )
        if resume and checkpoint is not None and checkpoint.exists():
            state.load(checkpoint, trained, settings)
            _logger.info("resuming %s after epoch %d", checkpoint, state.epoch)
        resumed_from = state.epoch
        with clf.session():  # attacks on the untrained copy see it in eval mode
            inputs, preparation = _prepared_inputs(
                objective, clf, x, y, torch.Generator().manual_seed(config.seed + 1),
                directory, settings,
            )  # fmt: skip
            if state.epoch == 0 and monitor is not None:
                state.history.records.append({"epoch": 0, **monitor(clf)})
        bar = tqdm(
            range(state.epoch, config.epochs),
            desc=f"train ({objective.name})",
            disable=tqdm_disable(progress),
        )
        for epoch in bar:
            record = _train_epoch(clf, trained, inputs, y, config, objective, state, epoch)
            if monitor is not None:
                record.update(monitor(clf))
            state.history.records.append(record)
            state.epoch = epoch + 1
            if checkpoint is not None:
                state.save(checkpoint, trained, settings)
            bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "epoch"})
            _logger.info("epoch %d: %s", epoch + 1, record)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, record)
    trained.eval()
    return FitResult(trained, state.history, preparation, resumed_from)


def _train_epoch(
    clf: Classifier,
    trained: nn.Module,
    x: Tensor,
    y: Tensor,
    config: TrainConfig,
    objective: Objective,
    state: _State,
    epoch: int,
) -> dict[str, float]:
    """One pass over the data; returns the epoch's record."""
    start = time.perf_counter()
    n = x.shape[0]
    steps_per_epoch = math.ceil(n / config.batch_size)
    order = torch.randperm(n, generator=state.generator).to(x.device)
    total_loss, correct, backward_rows = 0.0, 0, 0
    trained.train()
    for i, index in enumerate(order.split(config.batch_size)):
        step = TrainingStep(clf, x[index], y[index], epoch + i / steps_per_epoch, state.generator)
        losses, logits = objective.batch_loss(step)
        loss = losses.mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"The training loss became {float(loss)} at epoch {epoch + 1}, step {i + 1}: "
                "lower the learning rate (or CURE's lam/h)."
            )
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        state.schedule.step()
        total_loss += float(loss.detach()) * index.numel()
        correct += int((logits.detach().argmax(1) == step.y).sum())
        backward_rows += step.backward_rows + index.numel()
    trained.eval()
    return {
        "epoch": float(epoch + 1),
        "loss": total_loss / n,
        "train_accuracy": correct / n,
        "backward_per_image": backward_rows / n,
        "seconds": time.perf_counter() - start,
    }


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy of `model` on ``(x, y)``; the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        correct = sum(
            int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
            for i in range(0, x.shape[0], batch_size)
        )
    finally:
        model.train(was_training)
    return correct / max(x.shape[0], 1)


def train_and_save(
    arch: str,
    data: str,
    config: TrainConfig,
    out: str | Path,
    command: str | None = None,
    progress: bool | None = True,
) -> dict[str, object]:
    """Trains a zoo architecture on a data spec and writes ``out`` (.pt) plus a model card.

    The checkpoint holds ``state_dict``, ``arch``, ``arch_kwargs`` and ``bounds`` and is
    readable with ``torch.load(..., weights_only=True)``. The card (``out`` with suffix
    ``.json``) records the config, seed, test accuracy on the held-out split and the
    command that reproduces it.

    Returns:
        The model card.
    """
    from boundaryscope._io import dump_json, save_torch
    from boundaryscope.data import load_dataset
    from boundaryscope.zoo import build

    train_set = load_dataset(data, "train")
    test_set = load_dataset(data, "test")
    arch_kwargs = {
        "num_classes": len(train_set.classes),
        "in_channels": int(train_set.x.shape[1]),
        "image_size": int(train_set.x.shape[-1]),
    }
    torch.manual_seed(config.seed)
    model = build(arch, **arch_kwargs)
    result = fit(model, train_set.x, train_set.y, config, progress=progress)
    test_accuracy = accuracy(result.model, test_set.x, test_set.y)
    path = Path(out)
    save_torch(
        path,
        {
            "state_dict": result.model.state_dict(),
            "arch": arch,
            "arch_kwargs": arch_kwargs,
            "bounds": [0.0, 1.0],
        },
    )
    card: dict[str, object] = {
        "arch": arch,
        "arch_kwargs": arch_kwargs,
        "data": data,
        "bounds": [0.0, 1.0],
        "preprocessing": None,
        "config": asdict(config),
        "train_size": len(train_set),
        "test_size": len(test_set),
        "train_accuracy": result.history.accuracy[-1],
        "test_accuracy": test_accuracy,
        "torch_version": torch.__version__,
        "command": command,
    }
    dump_json(path.with_suffix(".json"), card)
    return card


# ---------------------------------------------------------------------- named defences
@dataclass(frozen=True)
class DefenseRecipe:
    """A named defence: its objective and the schedule it fine-tunes with by default.

    Attributes:
        summary: One line for ``--help`` and the run card.
        lr_factor: Learning rate as a multiple of the base model's own training rate (its
            card's ``config.lr``; 0.05 when unknown): §3.3 fine-tunes "with a 50%
            decreased learning rate".
        schedule: Learning-rate schedule.
        epochs: Default number of extra epochs.
    """

    summary: str
    lr_factor: float
    schedule: Literal["cosine", "constant"]
    epochs: int


DEFENSES: dict[str, DefenseRecipe] = {
    "standard": DefenseRecipe(
        "extra epochs on clean data (Table 3.3's baseline)", 0.5, "constant", 5
    ),
    "deepfool": DefenseRecipe("fine-tune on DeepFool examples (§3.3)", 0.5, "constant", 5),
    "deepfool-alpha": DefenseRecipe(
        "fine-tune on DeepFool perturbations magnified by --alpha (Fig. 3.7)", 0.5, "constant", 5
    ),
    "fgsm": DefenseRecipe("fine-tune on FGSM examples (§3.3)", 0.5, "constant", 5),
    "universal": DefenseRecipe(
        "fine-tune on a pool of universal perturbations (§4.5)", 0.5, "constant", 5
    ),
    "pgd": DefenseRecipe("PGD adversarial training, Madry et al. (the baseline)", 0.2, "cosine", 5),
    "cure": DefenseRecipe("CURE curvature regularisation (§8.4)", 0.2, "cosine", 5),
}


def defense_objective(
    name: str,
    *,
    eps: float | None = None,
    alpha: float = 2.0,
    steps: int = 10,
    lam: float = 4.0,
    h: float = 1.0,
    ramp_epochs: float = 2.0,
    xi: float = 0.3,
    seed: int = 0,
    box_width: float = 1.0,
) -> Objective:
    """The objective of a named defence (see `DEFENSES`).

    Args:
        name: A key of `DEFENSES`.
        eps: FGSM's step (default: its 90% fooling ε) or PGD-AT's radius (default 0.2 of
            the box width: Madry et al.'s 0.3 collapsed the shipped LeNet to a constant
            classifier when fine-tuned at lr 0.01, measured in benchmarks/robust_training.py).
        alpha: DeepFool magnification of ``deepfool-alpha``.
        steps: PGD-AT's iterations.
        lam: CURE's ``λ``.
        h: CURE's final ``h`` (l2, input units; scaled by nothing — see the README).
        ramp_epochs: Epochs of CURE's ``h`` ramp.
        xi: Radius of the universal pool.
        seed: Seed of the universal pool.
        box_width: ``hi − lo`` of the input box (scales PGD-AT's default radius).
    """
    factories: dict[str, Callable[[], Objective]] = {
        "standard": Standard,
        "deepfool": DeepFoolFinetune,
        "deepfool-alpha": lambda: DeepFoolFinetune(alpha=alpha),
        "fgsm": lambda: FGSMFinetune(eps=eps),
        "pgd": lambda: PGDTraining(eps=eps if eps is not None else 0.2 * box_width, steps=steps),
        "cure": lambda: CURE(lam=lam, h=h, ramp_epochs=ramp_epochs),
    }
    if name == "universal":
        from boundaryscope.defenses.universal_finetune import UniversalPool

        return UniversalPool(xi=xi, seed=seed)
    if name not in factories:
        raise ValueError(f"defense must be one of {sorted(DEFENSES)}; got {name!r}.")
    return factories[name]()


def train_defense(
    model: str,
    defense: str | Objective,
    out: str | Path,
    *,
    data: str = "mnist5k",
    arch: str | None = None,
    config: TrainConfig | None = None,
    overrides: Mapping[str, Any] | None = None,
    train_n: int | None = None,
    monitor_n: int = 500,
    monitor_eps: Sequence[float] = (),
    resume: bool = False,
    device: str | None = None,
    command: str | None = None,
    progress: bool | None = None,
    **objective_options: Any,
) -> dict[str, Any]:
    """Fine-tunes a model spec with a named defence and writes a run directory.

    The directory holds ``checkpoint.pt`` (every epoch, for ``resume``), ``prepared.pt``
    (a perturbed training set, when the defence has one), ``model.pt`` (the defended
    model: ``state_dict`` with ``arch``/``arch_kwargs`` or ``factory``, ``bounds``,
    ``preprocessing``; readable with ``torch.load(..., weights_only=True)`` and usable as
    ``--model DIR`` everywhere) and ``train.json`` (the run card: settings, per-epoch
    history, cost, final test accuracy, the command).

    Args:
        model: Model spec of the network to defend (see `boundaryscope.zoo`).
        defense: A key of `DEFENSES`, or an `Objective`.
        out: Run directory.
        data: Data spec; the train split is trained on, the test split monitored.
        arch: Architecture of a bare weights file.
        config: Optimisation settings (default: the recipe's epochs, schedule and
            learning rate relative to the base model's).
        overrides: `TrainConfig` fields that replace those of `config` (or the recipe's).
        train_n: Train on the first `train_n` images of the (shuffled) train split only.
        monitor_n: Test images monitored per epoch (accuracy, ρ_adv).
        monitor_eps: l∞ budgets of a per-epoch PGD(20) robust accuracy.
        resume: Continue the run in `out`.
        device: ``cpu``, ``cuda``, … (default: CUDA when available).
        command: The command line, recorded in the card.
        progress: Progress bar (``None``: only on a terminal).
        **objective_options: Passed to `defense_objective`.

    Returns:
        The run card (also written to ``out/train.json``).
    """
    from boundaryscope._io import dump_json, save_torch
    from boundaryscope.data import load_dataset
    from boundaryscope.zoo import load_model

    loaded = load_model(model, arch=arch)
    run_device = resolve_device(device)
    clf = Classifier(
        loaded.module, bounds=loaded.bounds, preprocessing=loaded.preprocessing, device=run_device
    )
    recipe = DEFENSES["standard"]  # the schedule of a user-given objective
    if isinstance(defense, str):
        if defense not in DEFENSES:
            raise ValueError(f"defense must be one of {sorted(DEFENSES)}; got {defense!r}.")
        recipe = DEFENSES[defense]
        objective = defense_objective(
            defense, box_width=clf.bounds[1] - clf.bounds[0], **objective_options
        )
    else:
        objective = defense
    if config is None:
        base_lr = float(loaded.card.get("config", {}).get("lr", 0.05))
        config = TrainConfig(
            epochs=recipe.epochs, lr=base_lr * recipe.lr_factor, schedule=recipe.schedule
        )
    config = dataclasses.replace(config, **(overrides or {}))
    train = load_dataset(data, "train").subset(train_n)
    test = load_dataset(data, "test")
    monitored = test.subset(monitor_n)
    monitor = Monitor(monitored.x, monitored.y, pgd_eps=tuple(monitor_eps))
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = fit(
        clf,
        train.x,
        train.y,
        config,
        objective=objective,
        monitor=monitor,
        run_dir=directory,
        resume=resume,
        progress=progress,
    )
    trained_clf = Classifier(result.model, bounds=clf.bounds, preprocessing=clf.preprocessing)
    test_accuracy = float(
        (trained_clf.predict(test.x, 500) == test.y.to(trained_clf.device)).float().mean()
    )
    origin = (
        {"arch": loaded.card["arch"], "arch_kwargs": loaded.card.get("arch_kwargs", {})}
        if "arch" in loaded.card
        else {"arch": arch}
        if arch
        else {"factory": model}
    )
    save_torch(
        directory / "model.pt",
        {
            "state_dict": {k: v.cpu() for k, v in result.model.state_dict().items()},
            **origin,
            "bounds": list(clf.bounds),
            "preprocessing": loaded.preprocessing,
        },
    )
    card: dict[str, Any] = {
        **origin,
        "base_model": model,
        "defense": defense if isinstance(defense, str) else objective.name,
        "objective": objective.settings(),
        "config": asdict(config),
        "data": data,
        "bounds": list(clf.bounds),
        "preprocessing": loaded.preprocessing,
        "train_size": len(train),
        "test_size": len(test),
        "test_accuracy": test_accuracy,
        "base_test_accuracy": loaded.card.get("test_accuracy"),
        "history": result.history.records,
        "preparation": result.preparation,
        "resumed_from": result.resumed_from,
        "seconds": time.perf_counter() - start,
        "torch_version": torch.__version__,
        "command": command,
    }
    dump_json(directory / "train.json", card)
    return card
