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

from boundaryscope._io import dump_json

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
    from torch import nn

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
