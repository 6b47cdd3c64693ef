"""Shared helpers of the benchmark scripts: machine description and result writing."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
import types
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from boundaryscope._io import dump_json
from boundaryscope.data import load_fashion_mnist
from boundaryscope.defenses.training import TrainConfig, fit
from boundaryscope.zoo import build

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write(name: str, payload: dict[str, Any]) -> Path:
    return dump_json(RESULTS / f"{name}.json", {"machine": machine(), **payload})


def art_classifier(model: Any, input_shape: Any, classes: int = 10) -> Any:
    """ART's PyTorch wrapper for a [0, 1]-input classifier (cross-entropy loss)."""
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model,
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(input_shape),
        nb_classes=classes,
        clip_values=(0.0, 1.0),
    )


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def import_adv_lib() -> Any:
    """adv_lib.attacks without torchvision and visdom (LPIPS and the live plots: unused).

    adv_lib (``pip install --no-deps adv-lib``) imports LPIPS, which needs torchvision, and
    a visdom logger at package import: stub modules are registered first.
    """
    for name in ("torchvision", "visdom"):
        if name not in sys.modules:
            try:
                __import__(name)
            except ImportError:
                stub = types.ModuleType(name)
                stub.models = types.SimpleNamespace()  # type: ignore[attr-defined]
                stub.Visdom = object  # type: ignore[attr-defined]
                sys.modules[name] = stub
    import adv_lib.attacks as attacks

    return attacks


USER_MODEL = r"""
import torch
from torch import nn
from boundaryscope.zoo import build


def smooth_images(n, seed):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, {coarse}, {coarse}, generator=g)
    return nn.functional.interpolate(coarse, size={size}, mode="bilinear")


def factory():
    torch.manual_seed(0)
    model = build("{arch}", num_classes={classes}, in_channels=3, image_size={size})
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for seed in range({batches}):
            model(smooth_images({batch}, 100 + seed))
    return model.eval()
"""


def user_model_folder(
    folder: Path,
    arch: str,
    *,
    size: int,
    classes: int,
    coarse: int,
    batches: int,
    batch: int,
    images: int,
) -> None:
    """A user's model file and data, as a user would bring them, written into `folder`.

    ``model.py``: the zoo architecture `arch` with random weights and BatchNorm statistics
    averaged over `batches` batches of smooth random images (a random network's own are
    degenerate: every image gets one label); ``data.npz``: `images` smooth random images
    labelled by the model (so every test image is correctly classified).
    """
    import numpy as np

    text = USER_MODEL.format(
        arch=arch, size=size, classes=classes, coarse=coarse, batches=batches, batch=batch
    )
    (folder / "model.py").write_text(text)
    namespace: dict[str, Any] = {}
    exec(text, namespace)  # the text above, written by this module
    model = namespace["factory"]()
    x = namespace["smooth_images"](images, 0)
    with torch.no_grad():
        y = torch.cat([model(chunk).argmax(1) for chunk in x.split(64)])
    np.savez(folder / "data.npz", x=x.numpy(), y=y.numpy())


TRAINED_RESNET18 = Path.home() / ".cache" / "boundaryscope-bench" / "resnet18-fashion32.pt"


def as_cifar_shape(x: Tensor) -> Tensor:
    """Fashion-MNIST images (N, 1, 28, 28) as CIFAR-shaped ones: padded to 32, three channels."""
    return nn.functional.pad(x, (2, 2, 2, 2)).expand(-1, 3, -1, -1).contiguous()


def trained_resnet18() -> nn.Module:
    """The CIFAR-variant ResNet-18 trained on Fashion-MNIST at 3×32×32 (cached after one run).

    Two epochs of SGD (`boundaryscope.defenses.training.fit`, seed 0) on 10,000 training
    images drawn with seed 0: ≈ 6 min with two threads here, 86% test accuracy. The weights
    are kept under ``~/.cache/boundaryscope-bench`` and read back as tensors only.
    """
    model = build("resnet18", num_classes=10, in_channels=3, image_size=32)
    if TRAINED_RESNET18.is_file():
        model.load_state_dict(torch.load(TRAINED_RESNET18, weights_only=True))
        return model.eval()
    train = load_fashion_mnist("train")
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:10_000]
    config = TrainConfig(epochs=2, lr=0.05, batch_size=64, seed=0)
    trained = fit(model, as_cifar_shape(train.x[pick]), train.y[pick], config).model
    TRAINED_RESNET18.parent.mkdir(parents=True, exist_ok=True)
    torch.save(trained.state_dict(), TRAINED_RESNET18)
    return trained.eval()
