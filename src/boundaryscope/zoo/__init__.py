"""Reference models: the seeds' architectures, small shipped weights and model specs.

A model spec, as every command accepts it, is one of:

- ``zoo:NAME`` — shipped weights (``zoo:lenet-mnist``, ``zoo:fc500-150-10-mnist``);
- ``PATH.pt`` — a state dict or a checkpoint written by ``boundaryscope train``, with
  ``arch`` naming the architecture unless the checkpoint records it;
- ``DIR`` — a run directory of ``boundaryscope train --defense …`` (its ``model.pt``,
  which records the architecture or the factory of the model it was trained from);
- ``package.module:factory`` — imported (the working directory is searched first) and
  called with no arguments; ``./path/file.py:factory`` imports the file itself.

Weights are always read with ``torch.load(..., weights_only=True)``: nothing else is
unpickled.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import json
import logging
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from boundaryscope.zoo.architectures import ARCHITECTURES

__all__ = [
    "ARCHITECTURES",
    "LoadedModel",
    "build",
    "load_model",
    "model_card",
    "parse_arch",
    "shipped_models",
]

WEIGHTS_DIR = Path(__file__).parent / "weights"
_logger = logging.getLogger("boundaryscope")


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


def parse_arch(spec: str) -> tuple[str, dict[str, Any]]:
    """``"lenet:num_classes=10,image_size=32"`` → ``("lenet", {"num_classes": 10, ...})``.

    Values are read as Python literals (ints, floats, booleans); anything else stays a
    string.

    Raises:
        ValueError: a setting is not ``key=value``.
    """
    name, _, settings = spec.partition(":")
    kwargs: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in settings.split(","))):
        key, equals, value = item.partition("=")
        if not equals or not key.strip().isidentifier():
            raise ValueError(
                f"--arch settings must be key=value pairs, e.g. 'lenet:num_classes=10,"
                f"image_size=32'; got {item!r} in {spec!r}."
            )
        try:
            kwargs[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            kwargs[key.strip()] = value.strip()
    return name.strip(), kwargs


def build(arch: str, **kwargs: Any) -> nn.Module:
    """Instantiates a zoo architecture (randomly initialised) for the inputs `kwargs` describe.

    `arch` may carry constructor settings (`parse_arch`): ``"lenet:image_size=32"``;
    keyword arguments override them. The new model is tried on one blank input of
    ``(in_channels, image_size, image_size)`` so that an architecture too large for the
    images (LeNet on 8×8 digits) is refused here, not deep inside a convolution later.

    Raises:
        ValueError: unknown architecture, unknown setting, or inputs it cannot take.
    """
    name, settings = parse_arch(arch)
    if name not in ARCHITECTURES:
        raise ValueError(
            f"The 'arch' parameter must be one of {sorted(ARCHITECTURES)}. Got {name!r} instead."
        )
    settings.update(kwargs)
    factory = ARCHITECTURES[name]
    parameters = inspect.signature(factory).parameters
    try:
        module = factory(**settings)
    except TypeError as error:
        raise ValueError(
            f"architecture {name!r} takes the settings {list(parameters)}; got "
            f"{sorted(settings)} ({error})."
        ) from None
    defaults = {key: parameter.default for key, parameter in parameters.items()}
    _check_fits(module, name, {**defaults, **settings})
    return module


def _check_fits(module: nn.Module, name: str, settings: dict[str, Any]) -> None:
    """Refuses an architecture that cannot take its inputs (one blank forward pass)."""
    channels, size = settings.get("in_channels"), settings.get("image_size")
    if not isinstance(channels, int) or not isinstance(size, int):
        return
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(torch.zeros(1, channels, size, size))
    except RuntimeError as error:
        small = [a for a in ("mlp", "fc500-150-10") if a in ARCHITECTURES]
        raise ValueError(
            f"architecture {name!r} cannot take {channels}×{size}×{size} images "
            f"({str(error).splitlines()[0]}); choose one for such inputs ({', '.join(small)}) "
            "or bring your own model as module:factory."
        ) from None
    finally:
        module.train(was_training)


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


def _read_weights(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with errors that say what the file is and what to do."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "global" not in str(error).lower():  # torch names the class it refused to load
            raise ValueError(
                f"{path} is not a PyTorch weights file (torch.load cannot read it as tensors)."
            ) from None
        raise ValueError(
            f"{path} holds pickled Python objects (e.g. a whole nn.Module saved with "
            "torch.save(model)), which boundaryscope never unpickles. Save "
            "model.state_dict() instead and pass --arch, or give the model as "
            "'module:factory' or './file.py:factory'."
        ) from None
    except Exception as error:  # zip/format errors: not a torch file at all
        raise ValueError(f"{path} is not a PyTorch weights file ({error}).") from None


def _is_state_dict(value: object) -> bool:
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    )


def _state_dict_from_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict and metadata of a weights file.

    Accepted: a bare state dict, a boundaryscope checkpoint (``state_dict`` plus metadata)
    or a training checkpoint with exactly one nested state dict (``{"model": ..., ...}``).
    """
    checkpoint = _read_weights(path)
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        meta = {k: v for k, v in checkpoint.items() if k != "state_dict"}
        return checkpoint["state_dict"], meta
    if _is_state_dict(checkpoint):
        return checkpoint, {}
    if isinstance(checkpoint, dict):
        nested = [k for k, v in checkpoint.items() if _is_state_dict(v)]
        if len(nested) == 1:
            _logger.info("%s: using the state dict under key %r", path, nested[0])
            return checkpoint[nested[0]], {}
        raise ValueError(
            f"{path} is a dict with keys {sorted(map(str, checkpoint))[:10]}, "
            + (
                f"several of which hold state dicts ({nested}); save the model's alone."
                if nested
                else "none of which is a state dict of tensors."
            )
        )
    raise ValueError(
        f"{path} must hold a state dict or a boundaryscope checkpoint; got a "
        f"{type(checkpoint).__name__}."
    )


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
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        expected, found = set(module.state_dict()), set(state)
        raise ValueError(
            f"The weights in {path} do not fit the architecture {arch or factory!r}: "
            f"missing {sorted(expected - found)[:4]}, unexpected {sorted(found - expected)[:4]}"
            f"{'' if expected != found else ', or shapes differ'}. Pass the --arch the "
            f"weights were trained with (one of {sorted(ARCHITECTURES)}), or "
            "'module:factory' for your own model. (torch: "
            f"{str(error).splitlines()[0]})"
        ) from None
    return module, meta


def _import_module(name: str, spec: str) -> ModuleType:
    """A module by dotted name (the working directory first on the path) or by file path."""
    if name.endswith(".py") or "/" in name or "\\" in name:
        path = Path(name)
        if not path.is_file():
            raise ValueError(f"--model {spec!r}: no such Python file {path}.")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        if module_spec is None or module_spec.loader is None:
            raise ValueError(f"--model {spec!r}: cannot import {path}.")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module
    cwd = str(Path.cwd())
    if cwd not in sys.path:  # the console script does not put it there, `python -m` does
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        raise ValueError(
            f"--model {spec!r}: cannot import {name!r} ({error}). Run from the folder that holds "
            f"it, or give the file: './{name.replace('.', '/')}.py:factory'."
        ) from None


def _from_factory(spec: str) -> nn.Module:
    module_name, _, factory_name = spec.rpartition(":")
    factory = getattr(_import_module(module_name, spec), factory_name, None)
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
