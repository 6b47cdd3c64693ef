"""Reference models: the seeds' architectures, small shipped weights and model specs.

A model spec, as every command accepts it, is one of:

- ``zoo:NAME`` — shipped weights (``zoo:lenet-mnist``, ``zoo:fc500-150-10-mnist``);
- ``PATH.pt`` — a state dict or a checkpoint written by ``boundaryscope train``, with
  ``arch`` naming the architecture unless the checkpoint records it;
- ``DIR`` — a run directory of ``boundaryscope train --defense …`` (its ``model.pt``,
  which records the architecture or the factory of the model it was trained from);
- ``package.module:factory`` — imported explicitly and called with no arguments.

Weights are always read with ``torch.load(..., weights_only=True)``: nothing else is
unpickled.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from boundaryscope.zoo.architectures import ARCHITECTURES

__all__ = ["ARCHITECTURES", "LoadedModel", "build", "load_model", "model_card", "shipped_models"]

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass
class LoadedModel:
    """A model resolved from a spec, with what the report needs to know about it.

    Attributes:
        module: The ``nn.Module`` (in eval mode).
        spec: The spec it came from.
        bounds: Input box the model was trained on.
        preprocessing: ``None`` or ``{mean, std, axis}``.
        card: The model card (empty for user models).
    """

    module: nn.Module
    spec: str
    bounds: tuple[float, float] = (0.0, 1.0)
    preprocessing: dict[str, Any] | None = None
    card: dict[str, Any] = field(default_factory=dict)


def build(arch: str, **kwargs: Any) -> nn.Module:
    """Instantiates a zoo architecture by name (``lenet``, ``fc500-150-10``, …)."""
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"The 'arch' parameter must be one of {sorted(ARCHITECTURES)}. Got {arch!r} instead."
        )
    return ARCHITECTURES[arch](**kwargs)


def shipped_models() -> list[str]:
    """Names usable as ``zoo:NAME``."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.json"))


def model_card(name: str) -> dict[str, Any]:
    """The model card (JSON) of shipped weights ``name``."""
    path = WEIGHTS_DIR / f"{name}.json"
    if not path.exists():
        raise ValueError(f"The zoo model must be one of {shipped_models()}. Got {name!r} instead.")
    card: dict[str, Any] = json.loads(path.read_text())
    return card


def _state_dict_from_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        meta = {k: v for k, v in checkpoint.items() if k != "state_dict"}
        return checkpoint["state_dict"], meta
    if isinstance(checkpoint, dict):
        return checkpoint, {}
    raise ValueError(f"{path} must hold a state dict or a boundaryscope checkpoint.")


def _load_weights(
    path: Path, arch: str | None, kwargs: dict[str, Any]
) -> tuple[nn.Module, dict[str, Any]]:
    state, meta = _state_dict_from_file(path)
    arch = arch or meta.get("arch")
    factory = meta.get("factory")
    if arch is None and factory:
        module = _from_factory(str(factory))
    elif arch is None:
        raise ValueError(
            f"The weights file {path} does not record its architecture; pass --arch with one "
            f"of {sorted(ARCHITECTURES)}."
        )
    else:
        module = build(arch, **{**meta.get("arch_kwargs", {}), **kwargs})
    module.load_state_dict(state)
    return module, meta


def _from_factory(spec: str) -> nn.Module:
    module_name, _, factory_name = spec.partition(":")
    factory = getattr(importlib.import_module(module_name), factory_name, None)
    if factory is None or not callable(factory):
        raise ValueError(f"{module_name} has no callable {factory_name!r} (from {spec!r}).")
    module = factory()
    if not isinstance(module, nn.Module):
        raise ValueError(f"{spec} must return a torch.nn.Module; got {type(module).__name__}.")
    return module


def _from_run_directory(path: Path) -> LoadedModel:
    """The defended model of a `boundaryscope train` run directory (``model.pt``)."""
    weights = path / "model.pt"
    if not weights.is_file():
        raise ValueError(
            f"The directory {path} holds no model.pt: it is not a finished `boundaryscope "
            "train` run (resume it with --resume, or pass a weights file)."
        )
    module, meta = _load_weights(weights, None, {})
    card_path = path / "train.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else meta
    bounds = tuple(meta.get("bounds", (0.0, 1.0)))
    return LoadedModel(
        module, str(path), (float(bounds[0]), float(bounds[1])), meta.get("preprocessing"), card
    )


def load_model(spec: str, arch: str | None = None, **arch_kwargs: Any) -> LoadedModel:
    """Resolves a model spec (see module docstring) into a `LoadedModel` in eval mode."""
    if spec.startswith("zoo:"):
        name = spec[4:]
        card = model_card(name)
        module, _ = _load_weights(
            WEIGHTS_DIR / f"{name}.pt", card["arch"], card.get("arch_kwargs", {})
        )
        bounds = tuple(card.get("bounds", (0.0, 1.0)))
        loaded = LoadedModel(
            module, spec, (float(bounds[0]), float(bounds[1])), card.get("preprocessing"), card
        )
    elif Path(spec).is_dir():
        loaded = _from_run_directory(Path(spec))
    elif Path(spec).suffix in (".pt", ".pth") or Path(spec).is_file():
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"The model weights file {spec!r} does not exist.")
        module, meta = _load_weights(path, arch, arch_kwargs)
        bounds = tuple(meta.get("bounds", (0.0, 1.0)))
        loaded = LoadedModel(
            module, spec, (float(bounds[0]), float(bounds[1])), meta.get("preprocessing"), meta
        )
    elif ":" in spec:
        loaded = LoadedModel(_from_factory(spec), spec)
    else:
        raise ValueError(
            "The model spec must be 'zoo:NAME', a weights file 'PATH.pt' (with --arch), a "
            f"`boundaryscope train` run directory, or 'package.module:factory'. Got {spec!r} "
            "instead."
        )
    loaded.module.eval()
    return loaded
