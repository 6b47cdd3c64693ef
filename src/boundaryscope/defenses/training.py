"""Supervised training with SGD + momentum, as the seeds trained their reference models.

Thesis §3.2.3: "Both networks are trained with SGD with momentum". This module trains the
zoo models that boundaryscope ships; adversarial fine-tuning and CURE (§3.3, §8) extend it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

__all__ = ["TrainConfig", "TrainHistory", "accuracy", "fit", "train_and_save"]

_logger = logging.getLogger("boundaryscope")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of `fit`.

    Attributes:
        epochs: Passes over the training set.
        lr: Initial learning rate (cosine-annealed to 0 over the run).
        momentum: SGD momentum.
        weight_decay: L2 penalty.
        batch_size: Mini-batch size.
        seed: Seeds the shuffling generator (initialisation is seeded by the caller).
    """

    epochs: int = 15
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    seed: int = 0


@dataclass
class TrainHistory:
    """Per-epoch mean training loss and accuracy."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)


def fit(
    model: nn.Module, x: Tensor, y: Tensor, config: TrainConfig, progress: bool | None = True
) -> TrainHistory:
    """Trains `model` in place on ``(x, y)`` with cross-entropy, SGD + momentum.

    Args:
        model: Classifier returning logits ``(N, C)``.
        x: Inputs ``(N, *shape)``.
        y: Labels ``(N,)``.
        config: Hyperparameters.
        progress: Show a progress bar; ``None`` shows it only on a terminal.

    Returns:
        The per-epoch history.
    """
    if config.epochs < 1 or config.batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1; got {config}.")
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    steps_per_epoch = math.ceil(x.shape[0] / config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.epochs * steps_per_epoch
    )
    history = TrainHistory()
    model.train()
    bar = tqdm(
        range(config.epochs), desc="train", disable=None if progress is None else not progress
    )
    for epoch in bar:
        order = torch.randperm(x.shape[0], generator=generator)
        total_loss, correct = 0.0, 0
        for start in range(0, x.shape[0], config.batch_size):
            index = order[start : start + config.batch_size]
            logits = model(x[index])
            loss = nn.functional.cross_entropy(logits, y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += float(loss.detach()) * index.numel()
            correct += int((logits.detach().argmax(1) == y[index]).sum())
        history.loss.append(total_loss / x.shape[0])
        history.accuracy.append(correct / x.shape[0])
        bar.set_postfix(loss=f"{history.loss[-1]:.4f}", acc=f"{history.accuracy[-1]:.4f}")
        _logger.info(
            "epoch %d: loss %.4f, train accuracy %.4f",
            epoch + 1,
            history.loss[-1],
            history.accuracy[-1],
        )
    model.eval()
    return history


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
    out: str,
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
    from pathlib import Path

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
    history = fit(model, train_set.x, train_set.y, config, progress=progress)
    test_accuracy = accuracy(model, test_set.x, test_set.y)
    path = Path(out)
    save_torch(
        path,
        {
            "state_dict": model.state_dict(),
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
        "train_accuracy": history.accuracy[-1],
        "test_accuracy": test_accuracy,
        "torch_version": torch.__version__,
        "command": command,
    }
    dump_json(path.with_suffix(".json"), card)
    return card
