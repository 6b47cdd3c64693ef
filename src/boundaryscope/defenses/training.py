"""One training loop for every defence: `fit`, its checkpoints and its watch (Part III).

The seeds train with SGD + momentum (thesis §3.2.3) and harden networks in several ways,
each an *objective* (`boundaryscope.defenses.objectives`) plugged into this one loop; the
named defences and the run directories are in `boundaryscope.defenses.recipes`.

`fit` always trains a *copy* of the given model, so the user's module is never touched. With
a ``run_dir`` it writes an atomic checkpoint after every epoch (model, optimiser, schedule,
every random state, history) and ``resume=True`` continues an interrupted run to exactly the
numbers an uninterrupted run gives. Every epoch is recorded: loss, training accuracy, the
numbers of an optional `Monitor` (held-out accuracy, ρ_adv, robust accuracy), the
backward passes spent per training image and the wall time. With a monitor, the loop
also watches the held-out accuracy: it keeps the best epoch's weights and warns loudly
when the accuracy collapses (`CollapseWatch`), so a defence never silently destroys the
model.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from boundaryscope._io import (
    load_checkpoint,
    output_lock,
    read_torch,
    remove_stale_temporaries,
)
from boundaryscope._progress import tqdm_disable
from boundaryscope.attacks import PGD, DeepFool
from boundaryscope.classifier import Classifier
from boundaryscope.defenses.objectives import Objective, Standard, TrainingStep
from boundaryscope.metrics import rho_adv
from boundaryscope.norms import lp_norm

__all__ = [
    "FitResult",
    "Monitor",
    "TrainConfig",
    "TrainHistory",
    "accuracy",
    "fit",
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
        watch: What `CollapseWatch` saw (empty without a monitor): the best epoch by
            held-out accuracy and the epochs where the accuracy collapsed.
        best_state: The best epoch's weights (``None`` without a monitor).
    """

    model: nn.Module
    history: TrainHistory
    preparation: dict[str, Any] = field(default_factory=dict)
    resumed_from: int = 0
    watch: dict[str, Any] = field(default_factory=dict)
    best_state: dict[str, Tensor] | None = field(default=None, repr=False)


BEST = "best.pt"


@dataclass
class CollapseWatch:
    """Watches the monitored clean accuracy epoch by epoch; keeps the best weights.

    A defence that destroys the model (too high a learning rate for the data, a
    regulariser out of scale) shows it first in the held-out accuracy. After each epoch,
    an accuracy more than `drop` below the best so far (epoch 0, the model before
    training, included) is a collapse: a warning says so loudly at once, naming the best
    epoch, whose weights are kept — in memory and, with a run directory, in ``best.pt``.
    Everything is derived from the history, so a resumed run watches the same way.

    Attributes:
        drop: Fall in accuracy (fraction) below the best that counts as a collapse.
        best_epoch: Epoch with the highest accuracy so far (``-1``: none seen).
        best_accuracy: That accuracy.
        collapsed: Epochs at which a collapse was seen.
        best_state: The best epoch's weights (CPU copies).
        start_accuracy: The accuracy before training (epoch 0), if monitored.
    """

    drop: float = 0.2
    best_epoch: int = -1
    best_accuracy: float = -math.inf
    collapsed: list[int] = field(default_factory=list)
    best_state: dict[str, Tensor] | None = None
    start_accuracy: float | None = None

    def replay(self, records: list[dict[str, float]]) -> None:
        """Best epoch and collapses of an earlier part of the run (on resume)."""
        for record in records:
            self._judge(int(record["epoch"]), record.get("test_accuracy"))

    def observe(self, epoch: int, record: dict[str, float], model: nn.Module) -> bool:
        """Judges one epoch; returns whether its weights are the best so far (then kept)."""
        improved, collapsed = self._judge(epoch, record.get("test_accuracy"))
        if improved:
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if collapsed:
            message = (
                f"held-out accuracy fell to {record['test_accuracy']:.1%} at epoch {epoch}, "
                f"from {self.best_accuracy:.1%} at epoch {self.best_epoch}: the defence is "
                "destroying the model (lower --lr, or the defence's strength); the weights of "
                f"epoch {self.best_epoch} are kept ({BEST} in a run directory)."
            )
            _logger.warning(message)
            warnings.warn(message, UserWarning, stacklevel=3)
        return improved

    def _judge(self, epoch: int, accuracy: float | None) -> tuple[bool, bool]:
        if accuracy is None or not math.isfinite(accuracy):
            return False, False
        if epoch == 0:
            self.start_accuracy = float(accuracy)
        collapsed = accuracy < self.best_accuracy - self.drop
        if collapsed:
            self.collapsed.append(epoch)
        improved = accuracy > self.best_accuracy
        if improved:
            self.best_epoch, self.best_accuracy = epoch, float(accuracy)
        return improved, collapsed

    def summary(self) -> dict[str, Any]:
        """JSON-ready: start, best epoch and accuracy, collapsed epochs, the threshold."""
        return {
            "start_test_accuracy": self.start_accuracy,
            "best_epoch": self.best_epoch,
            "best_test_accuracy": self.best_accuracy,
            "collapsed_epochs": list(self.collapsed),
            "drop": self.drop,
        }


# ---------------------------------------------------------------------- monitoring
@dataclass(frozen=True)
class Monitor:
    """Held-out numbers recorded before training and after every epoch.

    Attributes:
        x: Held-out inputs ``(N, *shape)``.
        y: Labels ``(N,)``.
        rho_p: Norm of the DeepFool ρ_adv (2 as Fig. 3.6; ``None`` skips it).
        pgd_eps: l∞ budgets at which robust accuracy is recorded: the trusted one
            (``robust_accuracy@ε``, `boundaryscope.evaluation` with the `evaluation`
            profile: minimal norms, then AutoAttack's cascade) and PGD(`pgd_steps`)'s
            (``pgd_accuracy@ε``, an upper bound kept for comparison with older runs).
        pgd_steps: PGD iterations.
        evaluation: Profile of the trusted evaluation (``None``: PGD only).
        batch_size: Rows per pass.
    """

    x: Tensor
    y: Tensor
    rho_p: float | None = 2.0
    pgd_eps: tuple[float, ...] = ()
    pgd_steps: int = 20
    evaluation: str | None = "quick"
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
        if self.pgd_eps and self.evaluation is not None:
            from boundaryscope.evaluation import evaluate

            trusted = evaluate(clf, x, y, self.pgd_eps, math.inf, self.evaluation, progress=False)
            for eps in self.pgd_eps:
                out[f"robust_accuracy@{eps:g}"] = trusted.robust_accuracy(eps)
        for eps in self.pgd_eps:
            attack = PGD(eps=eps, steps=self.pgd_steps, batch_size=self.batch_size)
            fooled = attack(clf, x, y).success
            out[f"pgd_accuracy@{eps}"] = float((correct & ~fooled).float().mean())
        return out

    def settings(self) -> dict[str, Any]:
        """JSON-ready description (checked on resume)."""
        return {
            "n": int(self.x.shape[0]),
            "rho_p": self.rho_p,
            "pgd_eps": list(self.pgd_eps),
            "pgd_steps": self.pgd_steps,
            "evaluation": self.evaluation,
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
        saved = read_torch(path, "PyTorch file of a prepared training set")
        if isinstance(saved, dict) and saved.get("settings") == settings:
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
    with output_lock(directory) if directory is not None else contextlib.nullcontext():
        return _fit_into(
            clf, trained, x, y, config, objective, monitor, directory, resume, progress,
            on_epoch_end, settings,
        )  # fmt: skip


def _fit_into(
    clf: Classifier,
    trained: nn.Module,
    x: Tensor,
    y: Tensor,
    config: TrainConfig,
    objective: Objective,
    monitor: Monitor | None,
    directory: Path | None,
    resume: bool,
    progress: bool | None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None,
    settings: dict[str, Any],
) -> FitResult:
    """`fit`'s loop, run while holding the run directory's lock."""
    checkpoint = directory / CHECKPOINT if directory is not None else None
    if directory is not None:
        remove_stale_temporaries(directory)  # left by a run killed while writing
    if checkpoint is not None and checkpoint.exists() and not resume:
        raise ValueError(
            f"{checkpoint} exists: pass resume=True (--resume) to continue that run, or choose "
            "another run directory."
        )
    watch = CollapseWatch()
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
            watch.replay(state.history.records)
            watch.best_state = _read_best(directory)
        resumed_from = state.epoch
        with clf.session():  # attacks on the untrained copy see it in eval mode
            inputs, preparation = _prepared_inputs(
                objective, clf, x, y, torch.Generator().manual_seed(config.seed + 1),
                directory, settings,
            )  # fmt: skip
            if state.epoch == 0 and monitor is not None:
                state.history.records.append({"epoch": 0, **monitor(clf)})
                _keep_if_best(watch, 0, state.history.records[-1], trained, directory)
        bar = tqdm(
            range(state.epoch, config.epochs),
            desc=f"train ({objective.name})",
            disable=tqdm_disable(progress),
        )
        for epoch in bar:
            record = _train_epoch(clf, trained, inputs, y, config, objective, state, epoch)
            if monitor is not None:
                record.update(monitor(clf))
                _keep_if_best(watch, epoch + 1, record, trained, directory)
            state.history.records.append(record)
            state.epoch = epoch + 1
            if checkpoint is not None:
                state.save(checkpoint, trained, settings)
            bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "epoch"})
            _logger.info("epoch %d: %s", epoch + 1, record)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, record)
    trained.eval()
    summary = watch.summary() if monitor is not None else {}
    return FitResult(trained, state.history, preparation, resumed_from, summary, watch.best_state)


def _keep_if_best(
    watch: CollapseWatch,
    epoch: int,
    record: dict[str, float],
    model: nn.Module,
    directory: Path | None,
) -> None:
    """Lets `watch` judge the epoch; the best weights so far go to ``best.pt`` too."""
    if watch.observe(epoch, record, model) and directory is not None:
        from boundaryscope._io import save_torch

        save_torch(
            directory / BEST,
            {
                "state_dict": watch.best_state,
                "epoch": epoch,
                "test_accuracy": record["test_accuracy"],
            },
        )


def _read_best(directory: Path | None) -> dict[str, Tensor] | None:
    """The best weights a run directory kept (``None`` if it kept none)."""
    if directory is None or not (directory / BEST).is_file():
        return None
    saved = read_torch(directory / BEST, "PyTorch checkpoint of the best epoch")
    state = saved.get("state_dict") if isinstance(saved, dict) else None
    return state if isinstance(state, dict) else None


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
