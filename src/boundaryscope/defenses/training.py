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
from boundaryscope.classifier import Classifier
from boundaryscope.defenses.objectives import Objective, Standard, TrainingStep
from boundaryscope.defenses.watch import BEST, CollapseWatch, Monitor, OverfittingCheck

__all__ = [
    "FitResult",
    "Monitor",
    "TrainConfig",
    "TrainHistory",
    "accuracy",
    "fit",
    "recalibrate_batchnorm",
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
        schedule: ``"cosine"`` (annealed to `final_lr` over the run, per step) or
            ``"constant"``.
        final_lr: Where the cosine schedule ends (CURE's paper decays Adam's rate from
            1e-4 to 1e-6).
        max_accuracy_drop: With a monitor: an epoch whose held-out accuracy is more than this
            (a fraction) below the accuracy before training stops the run, and the weights
            of the epoch before are kept — the most robust model within the accuracy
            budget, never a destroyed one. 1 disables it (the default of `fit`; the named
            defences use 0.03).
        batchnorm: ``"recalibrate"``: after every epoch, BatchNorm running statistics are
            recomputed on the clean training images with the epoch's final weights
            (`recalibrate_batchnorm`); ``"running"``: the moving averages are kept as
            training left them. The moving averages lag weights that fine-tuning moves:
            with the same weights, recalibrated statistics were worth 16–48 points of
            eval-mode accuracy in three exploratory runs (a small BatchNorm CNN at two
            learning rates, a tiny BN MLP — the case tests/test_adversarial_training.py
            reproduces).
    """

    epochs: int = 15
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    seed: int = 0
    optimizer: Literal["sgd", "adam"] = "sgd"
    schedule: Literal["cosine", "constant"] = "cosine"
    final_lr: float = 0.0
    max_accuracy_drop: float = 1.0
    batchnorm: Literal["recalibrate", "running"] = "recalibrate"

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
        if not (0 <= self.final_lr <= self.lr):
            raise ValueError(
                f"TrainConfig.final_lr must be in [0, lr={self.lr!r}]; got {self.final_lr!r}."
            )
        if not 0 < self.max_accuracy_drop <= 1:
            raise ValueError(
                f"TrainConfig.max_accuracy_drop must be in (0, 1]; got {self.max_accuracy_drop!r}."
            )
        if self.batchnorm not in ("recalibrate", "running"):
            raise ValueError(
                f"TrainConfig.batchnorm must be 'recalibrate' or 'running'; got {self.batchnorm!r}."
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
            optimizer, T_max=config.epochs * steps_per_epoch, eta_min=config.final_lr
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
        check = objective.overfitting_check()
        guarded = check is not None or (monitor is not None and config.max_accuracy_drop < 1)
        for epoch in bar:
            before = _state_copy(trained) if guarded else None
            record = _train_epoch(clf, trained, inputs, y, config, objective, state, epoch, x)
            stop = check is not None and _overfitted(
                check, clf, x, y, config.seed, state.history.records, record
            )
            if monitor is not None:
                record.update(monitor(clf))
                stop = stop or _over_budget(config, watch, record)
                if not stop:
                    _keep_if_best(watch, epoch + 1, record, trained, directory)
            if stop and before is not None:
                # The epoch's numbers stay in the history as evidence; its weights go.
                trained.load_state_dict(before)
                record["rolled_back"] = 1.0
            state.history.records.append(record)
            # A stopped run is finished: resume does not train further.
            state.epoch = config.epochs if stop else epoch + 1
            if checkpoint is not None:
                state.save(checkpoint, trained, settings)
            bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "epoch"})
            _logger.info("epoch %d: %s", epoch + 1, record)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, record)
            if stop:
                break
    trained.eval()
    summary = watch.summary() if monitor is not None else {}
    return FitResult(trained, state.history, preparation, resumed_from, summary, watch.best_state)


def _state_copy(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy of the weights and buffers (the roll-back point of a check)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _over_budget(config: TrainConfig, watch: CollapseWatch, record: dict[str, float]) -> bool:
    """Whether the monitored accuracy fell more than ``max_accuracy_drop`` below the start."""
    start, accuracy = watch.start_accuracy, record.get("test_accuracy")
    if start is None or accuracy is None or accuracy >= start - config.max_accuracy_drop:
        return False
    return _stop(
        record,
        "over_budget",
        f"held-out accuracy {accuracy:.1%} at epoch {int(record['epoch'])} is more than "
        f"{config.max_accuracy_drop:.0%} below the {start:.1%} the model started with: training "
        "stops and the weights of the epoch before are kept (raise max_accuracy_drop, "
        "--max-accuracy-drop, to trade more accuracy for robustness).",
    )


def _overfitted(
    check: OverfittingCheck,
    clf: Classifier,
    x: Tensor,
    y: Tensor,
    seed: int,
    history: list[dict[str, float]],
    record: dict[str, float],
) -> bool:
    """Runs the catastrophic-overfitting check; records it; warns when it fires."""
    accuracy = check.accuracy(clf, x, y, seed)
    record["check_pgd_accuracy"] = accuracy
    record["check_backward_rows"] = float(min(check.n, x.shape[0]) * check.steps)
    if not check.fired(history, accuracy):
        return False
    return _stop(
        record,
        "overfitting",
        f"catastrophic overfitting at epoch {int(record['epoch'])}: PGD({check.steps}) "
        f"accuracy on {min(check.n, x.shape[0])} training images fell to {accuracy:.1%}, more "
        f"than {check.drop:.0%} below its best; training stops and the weights of the epoch "
        "before are kept (Wong et al. 2020's early stop).",
    )


def _stop(record: dict[str, float], reason: str, message: str) -> bool:
    """Marks the epoch's record with `reason`, warns `message`; returns True.

    A warning, not a log line too: the command line shows each warning once as a log line.
    """
    record[reason] = 1.0
    warnings.warn(message, UserWarning, stacklevel=5)
    return True


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
    x_clean: Tensor,
) -> dict[str, float]:
    """One pass over the data (`x`: what the objective trains on); returns the record.

    `x_clean` are the unperturbed training images the BatchNorm statistics are
    recalibrated on.
    """
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
    if config.batchnorm == "recalibrate":
        recalibrate_batchnorm(clf, x_clean, config.batch_size)
    return {
        "epoch": float(epoch + 1),
        "loss": total_loss / n,
        "train_accuracy": correct / n,
        "backward_per_image": backward_rows / n,
        "seconds": time.perf_counter() - start,
    }


RECALIBRATION_IMAGES = 4096


@torch.no_grad()
def recalibrate_batchnorm(
    clf: Classifier, x: Tensor, batch_size: int, max_images: int = RECALIBRATION_IMAGES
) -> int:
    """Recomputes every BatchNorm layer's running statistics with the current weights.

    "Precise BatchNorm" (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021): the
    exponential moving averages kept during training mix the statistics of weights from
    many steps back; while fine-tuning moves the weights quickly (small data, a
    regulariser, an adversarial objective) they lag, and the model in eval mode — the one
    that is attacked, monitored and shipped — normalises with the wrong numbers. Here each
    layer's ``running_mean``/``running_var`` become the average over batches of `x`
    (the first `max_images`, in order: deterministic, so resume stays exact) of the batch
    statistics the layer sees in train mode, with everything else (dropout) in eval
    mode. The weights do not change; the model is left in eval mode.

    Args:
        clf: Classifier around the network being trained (only its BatchNorm buffers
            change; the classifier's preprocessing is applied as in every pass).
        x: Clean inputs ``(N, *shape)`` in the box, on the classifier's device.
        batch_size: Rows per batch (the training batch size: the statistics BatchNorm
            was trained with).
        max_images: Images used at most.

    Returns:
        The number of BatchNorm layers recalibrated (0: nothing to do).
    """
    model = clf.model
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    tracked = [m for m in layers if m.track_running_stats and m.running_mean is not None]
    if not tracked:
        return 0
    momenta = [m.momentum for m in tracked]
    clf.predict(x[:1])  # the classifier's first-call checks run now, in eval mode
    model.eval()
    for layer in tracked:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the batches below
        layer.train()
    try:
        for batch in x[:max_images].split(batch_size):
            if batch.shape[0] > 1:  # one image has no batch variance
                clf.differentiable_scores(batch)
    finally:
        for layer, momentum in zip(tracked, momenta, strict=True):
            layer.momentum = momentum
        model.eval()
    return len(tracked)


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
