"""Reference models: the seeds' architectures, small shipped weights and model specs.

A model spec, as every command accepts it, is one of:

- ``zoo:NAME`` — shipped weights (``zoo:lenet-mnist``, ``zoo:fc500-150-10-mnist``);
- ``PATH.pt`` — a state dict or a checkpoint written by ``boundaryscope train``, with
  ``arch`` naming the architecture unless the checkpoint records it;
- ``DIR`` — a run directory of ``boundaryscope train --defense …`` (its ``model.pt``,
  which records the architecture or the factory of the model it was trained from);
- ``package.module:factory`` — imported (the working directory is searched first) and
  called with no arguments; ``./path/file.py:factory`` imports the file itself. With
  ``weights=`` (``--weights``) the factory's model gets those weights: your own
  architecture and a plain state dict in one line;
- ``PATH.onnx`` — an ONNX model, converted to a torch module by ``onnx2torch`` (the
  optional extra ``boundaryscope[onnx]``). An ONNX file is a graph of standard operators
  and tensors: data, like a weights file. A model exported with a fixed batch size is run
  in chunks of that size.

Weights files are ``.pt``/``.pth`` (a state dict or checkpoint) or ``.safetensors`` (read
by the ``safetensors`` library, which holds tensors only: no pickle at all). A
``.safetensors`` file may record ``bounds``, ``preprocessing``, ``arch`` and
``arch_kwargs`` in its string metadata as JSON.

Security model (docs/security.md): what a *file* says is data. Weights are read with
``torch.load(..., weights_only=True)``, nothing else is unpickled, and code is imported
only when the user names it on the command line or in a call — ``--model
./net.py:factory``, or ``--arch ./net.py:factory`` for weights and run directories
trained from one's own code. A weights file or run directory that records the factory it
was trained from is refused until the user names that code; the record is only compared
with what the user named.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import inspect
import json
import logging
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from boundaryscope._inputs import closest_hint
from boundaryscope._io import read_torch
from boundaryscope.classifier import Preprocessing
from boundaryscope.zoo.architectures import ARCHITECTURES

__all__ = [
    "ARCHITECTURES",
    "FixedBatch",
    "InputSpec",
    "LoadedModel",
    "build",
    "default_data",
    "is_code_spec",
    "load_model",
    "model_card",
    "parse_arch",
    "read_run_card",
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
        origin: How to rebuild the architecture: ``{"arch", "arch_kwargs"}`` for a zoo
            architecture or ``{"factory"}`` for the user's own code (as the user named it);
            a new run writes it into its ``model.pt``.
    """

    module: nn.Module
    spec: str
    bounds: tuple[float, float] = (0.0, 1.0)
    preprocessing: dict[str, Any] | None = None
    card: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InputSpec:
    """What the user states about a model's inputs; it wins over what a card or file records.

    Attributes:
        bounds: The input box ``(lo, hi)``, e.g. ``(0, 255)``.
        mean: Per-channel means of the normalisation the model expects (applied inside the
            `Classifier`, so norms stay in input units); ``std`` alone means mean 0.
        std: Per-channel standard deviations; ``mean`` alone means std 1.

    Raises:
        ValueError: bounds that are not finite with lo < hi, or a normalisation the
            `Classifier` would refuse (checked by `Preprocessing.from_spec` itself).
    """

    bounds: tuple[float, float] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.bounds is not None:
            lo, hi = self.bounds
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(
                    f"bounds must be two finite numbers lo < hi; got {list(self.bounds)}."
                )
        Preprocessing.from_spec(self.preprocessing())

    def preprocessing(self) -> dict[str, Any] | None:
        """The stated normalisation as `Classifier` takes it; ``None`` when none was stated.

        A mean without std gets std 1 per channel, a std without mean gets mean 0.
        """
        if self.mean is None and self.std is None:
            return None
        channels = len(self.mean if self.mean is not None else self.std or ())
        mean = list(self.mean) if self.mean is not None else [0.0] * channels
        std = list(self.std) if self.std is not None else [1.0] * channels
        return {"mean": mean, "std": std, "axis": -3}

    def apply(self, loaded: LoadedModel) -> LoadedModel:
        """`loaded` with these bounds and this normalisation (the user's word wins)."""
        if self.bounds is not None:
            loaded.bounds = (float(self.bounds[0]), float(self.bounds[1]))
        stated = self.preprocessing()
        if stated is not None:
            loaded.preprocessing = stated
        return loaded

    def record(self) -> dict[str, Any]:
        """The stated values (for a run's metadata); empty when nothing was stated."""
        return {k: list(v) for k, v in vars(self).items() if v is not None}


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
        hint = closest_hint(name, shipped_models())
        raise ValueError(
            f"The zoo model must be one of {shipped_models()}. Got {name!r} instead{hint}."
        )
    card: dict[str, Any] = json.loads(path.read_text())
    return card


def _read_weights(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with errors that say what the file is and what to do.

    A ``.safetensors`` file is read by `_read_safetensors` instead.
    """
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        return read_torch(path, "PyTorch weights file")
    except ValueError as error:
        if "pickled Python objects" not in str(error):
            raise
        raise ValueError(
            f"{error} Save model.state_dict() and pass --arch, or give the model as "
            "'module:factory' or './file.py:factory'."
        ) from None


_SAFETENSORS_META = ("bounds", "preprocessing", "arch", "arch_kwargs")


def _read_safetensors(path: Path) -> dict[str, Any]:
    """A boundaryscope checkpoint ``{"state_dict", *metadata}`` from a ``.safetensors`` file.

    Only the metadata keys `_SAFETENSORS_META` are read (JSON text); a recorded factory is
    not one of them, so such a file can never name code.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        raise ValueError(f"The weights file {path} does not exist.")
    try:
        state = load_file(path, device="cpu")
        with safe_open(path, framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{path} is not a safetensors weights file ({error}).") from None
    meta: dict[str, Any] = {}
    for key in _SAFETENSORS_META:
        if key in header:
            try:
                meta[key] = json.loads(header[key])
            except json.JSONDecodeError:
                meta[key] = header[key]  # e.g. arch=lenet written without JSON quotes
    return {"state_dict": state, **meta}


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


def is_code_spec(spec: str) -> bool:
    """Whether `spec` names Python code (``pkg.module:factory``, ``./file.py:factory``).

    ``lenet:num_classes=10`` (a zoo architecture with settings) and ``zoo:NAME`` are not.
    """
    module, colon, factory = spec.rpartition(":")
    return (
        bool(colon and module and factory.isidentifier())
        and module not in ARCHITECTURES
        and module != "zoo"
    )


def _bounds(meta: dict[str, Any], path: Path) -> tuple[float, float]:
    """The input box a file records, checked: two finite numbers, low < high."""
    bounds = meta.get("bounds", (0.0, 1.0))
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(
            f"{path} records bounds {bounds!r}; expected two numbers [low, high]."
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"{path} records bounds {bounds!r}; expected finite low < high.")
    return low, high


def _build_recorded(
    path: Path, meta: dict[str, Any], arch: str | None, kwargs: dict[str, Any]
) -> tuple[nn.Module, dict[str, Any]]:
    """The untrained module for weights `path`, and its origin (`LoadedModel.origin`).

    `arch` is the user's (command line or call) and wins; what the file records is used
    only when it names a zoo architecture. A recorded factory is never imported: the
    user must name that code, and the record is only compared with it.
    """
    recorded_factory = meta.get("factory")
    if arch is not None and Path(arch).suffix == ".onnx":
        return _from_onnx(Path(arch)), {"onnx": arch}
    recorded_onnx = meta.get("onnx")
    if arch is None and recorded_onnx is not None:  # a graph file is data, not code
        if not isinstance(recorded_onnx, str) or not Path(recorded_onnx).is_file():
            raise ValueError(
                f"{path} was trained from the ONNX model {str(recorded_onnx)[:200]!r}, which "
                "is not a file here; pass its path as --arch (library: load_model(..., "
                "arch='model.onnx'))."
            )
        return _from_onnx(Path(recorded_onnx)), {"onnx": recorded_onnx}
    if arch is not None and is_code_spec(arch):
        if recorded_factory and str(recorded_factory) != arch:
            _logger.warning(
                "%s was trained from %r; building it from %r as you named it (the weights "
                "must fit)",
                path,
                recorded_factory,
                arch,
            )
        return _from_factory(arch), {"factory": arch}
    if arch is None and recorded_factory:
        raise ValueError(
            f"{path} records that it was trained from your own model code "
            f"{str(recorded_factory)[:200]!r}. boundaryscope never imports code that a file "
            "names; if you trust that code, name it yourself: --arch "
            f"{str(recorded_factory)[:200]} (library: load_model(..., arch=...))."
        )
    name = arch or meta.get("arch")
    if name is None:
        raise ValueError(
            f"The weights file {path} does not record its architecture; pass --arch with one "
            f"of {sorted(ARCHITECTURES)}, or your own model code as --arch ./net.py:factory."
        )
    if not isinstance(name, str):
        raise ValueError(f"{path} records the architecture {name!r}; expected a name.")
    recorded_kwargs = meta.get("arch_kwargs", {})
    if not isinstance(recorded_kwargs, dict):
        raise ValueError(f"{path} records arch_kwargs {recorded_kwargs!r}; expected a dict.")
    settings = {**recorded_kwargs, **kwargs}
    return build(name, **settings), {"arch": name, "arch_kwargs": settings}


def _load_weights(
    path: Path, arch: str | None, kwargs: dict[str, Any]
) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """The module with the weights of `path` loaded, the file's metadata and the origin."""
    state, meta = _state_dict_from_file(path)
    module, origin = _build_recorded(path, meta, arch, kwargs)
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        expected, found = set(module.state_dict()), set(state)
        built = origin.get("factory") or origin.get("arch")
        raise ValueError(
            f"The weights in {path} do not fit the architecture {built!r}: "
            f"missing {sorted(expected - found)[:4]}, unexpected {sorted(found - expected)[:4]}"
            f"{'' if expected != found else ', or shapes differ'}. Pass the --arch the "
            f"weights were trained with (one of {sorted(ARCHITECTURES)}), or "
            "'./net.py:factory' for your own model. (torch: "
            f"{str(error).splitlines()[0]})"
        ) from None
    return module, meta, origin


def _import_module(name: str, spec: str) -> ModuleType:
    """A module by dotted name (the working directory first on the path) or by file path.

    Only ever called with code the user named (`load_model`'s spec or arch), never with a
    name read from a file.
    """
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
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        raise ValueError(
            f"--model {spec!r}: cannot import {name!r} ({error}). Run from the folder that holds "
            f"it, or give the file: './{name.replace('.', '/')}.py:factory'."
        ) from None


@contextlib.contextmanager
def _working_directory_on_path() -> Iterator[None]:
    """The working directory first on ``sys.path`` while the user's own code loads and runs.

    The console script does not put it there (``python -m`` does). It is added only for
    the import and the call of the factory the user named, so that later imports never
    pick up a module that happens to lie in the working directory.
    """
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _from_onnx(path: Path) -> nn.Module:
    """The ONNX model at `path` as a torch module (``onnx2torch``), batched as exported.

    Raises:
        ValueError: the file is missing or not a valid ONNX model, an operator has no
            converter, or the optional extra is not installed.
    """
    if not path.is_file():
        raise ValueError(f"The ONNX model {str(path)!r} does not exist.")
    try:
        import onnx
        from onnx2torch import convert
    except ImportError as error:
        raise ValueError(
            f"Reading the ONNX model {path} needs the optional extra: pip install "
            f"'boundaryscope[onnx]' (onnx and onnx2torch; {error})."
        ) from None
    try:
        graph = onnx.load(str(path))
        onnx.checker.check_model(graph)
        module = convert(graph)
    except Exception as error:  # onnx and onnx2torch raise many kinds for a bad graph
        raise ValueError(
            f"{path} could not be converted to a torch module: {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}"
        ) from None
    batch = _fixed_batch(graph)
    return module if batch is None else FixedBatch(module, batch)


def _fixed_batch(graph: Any) -> int | None:
    """The batch size the graph's first input was exported with (``None``: symbolic)."""
    weights = {tensor.name for tensor in graph.graph.initializer}
    inputs = [value for value in graph.graph.input if value.name not in weights]
    if not inputs:
        return None
    dims = inputs[0].type.tensor_type.shape.dim
    return int(dims[0].dim_value) if dims and dims[0].HasField("dim_value") else None


class FixedBatch(nn.Module):
    """Runs a module exported for exactly `batch` rows on any number of rows.

    The rows are split into chunks of `batch`; the last is padded with copies of its last
    row, whose outputs are dropped (rows are independent in eval mode).
    """

    def __init__(self, module: nn.Module, batch: int) -> None:
        super().__init__()
        self.module = module
        self.batch = batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``module`` on `x` ``(N, *shape)`` in chunks of ``batch`` rows."""
        outputs = []
        for chunk in x.split(self.batch):
            rows = chunk.shape[0]
            if rows < self.batch:
                chunk = torch.cat([chunk, chunk[-1:].expand(self.batch - rows, *chunk.shape[1:])])
            outputs.append(self.module(chunk)[:rows])
        return torch.cat(outputs)


def _from_factory(spec: str) -> nn.Module:
    module_name, _, factory_name = spec.rpartition(":")
    with _working_directory_on_path():
        factory = getattr(_import_module(module_name, spec), factory_name, None)
        if factory is None or not callable(factory):
            raise ValueError(f"{module_name} has no callable {factory_name!r} (from {spec!r}).")
        module = factory()
    if not isinstance(module, nn.Module):
        raise ValueError(f"{spec} must return a torch.nn.Module; got {type(module).__name__}.")
    return module


_CARD_TYPES: dict[str, type | tuple[type, ...]] = {
    "defense": str,
    "base_model": str,
    "objective": dict,
    "config": dict,
    "history": list,
    "preparation": dict,
    "seconds": (int, float),
}


BUNDLED_DATA = ("mnist5k", "digits", "fashion-mnist")
"""Data specs that name no file: the only ones a card may choose for the user."""


def default_data(spec: str) -> str:
    """The data a model was trained on, as its card records it; ``"mnist5k"`` otherwise.

    A zoo model's card or a run directory's ``train.json`` names its data set. Only the
    bundled data sets (`BUNDLED_DATA`) are taken from a card: a card is data, and a path it
    names is not opened unless the user names it with ``--data``.

    Args:
        spec: A model spec (`load_model`).
    """
    card: dict[str, Any] = {}
    if spec.startswith("zoo:") and (WEIGHTS_DIR / f"{spec[4:]}.json").is_file():
        card = model_card(spec[4:])
    elif not is_code_spec(spec) and (Path(spec) / "train.json").is_file():
        with contextlib.suppress(ValueError):
            card = read_run_card(Path(spec) / "train.json")
    recorded = card.get("data")
    if isinstance(recorded, str) and recorded in BUNDLED_DATA:
        return recorded
    if recorded is not None:
        _logger.warning(
            "%s was trained on %r; pass it with --data to evaluate on it (using mnist5k)",
            spec,
            str(recorded)[:200],
        )
    return "mnist5k"


def read_run_card(path: Path) -> dict[str, Any]:
    """A run directory's ``train.json``, checked before any model is measured.

    The entries the page shows must have their types: a history is a list of records of
    numbers. Checking costs nothing; finding a bad card after minutes of attacks costs
    them all.

    Raises:
        ValueError: naming the file and the entry that is wrong.
    """
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a readable run card ({error}).") from None
    if not isinstance(card, dict):
        raise ValueError(f"{path} must hold a JSON object; got {type(card).__name__}.")
    for key, kind in _CARD_TYPES.items():
        if key in card and card[key] is not None and not isinstance(card[key], kind):
            raise ValueError(
                f"{path}: {key!r} must be of type {kind}; got {type(card[key]).__name__}."
            )
    for i, record in enumerate(card.get("history") or []):
        numbers = isinstance(record, dict) and all(
            isinstance(v, int | float) or v in ("nan", "inf", "-inf") for v in record.values()
        )
        if not numbers:
            raise ValueError(
                f"{path}: history[{i}] must be a record of numbers; got {str(record)[:80]!r}."
            )
    return card


def _from_run_directory(path: Path, arch: str | None) -> LoadedModel:
    """The defended model of a `boundaryscope train` run directory (``model.pt``)."""
    weights = path / "model.pt"
    if not weights.is_file():
        raise ValueError(
            f"The directory {path} holds no model.pt: it is not a finished `boundaryscope "
            "train` run (resume it with --resume, or pass a weights file)."
        )
    module, meta, origin = _load_weights(weights, arch, {})
    card_path = path / "train.json"
    card = read_run_card(card_path) if card_path.is_file() else meta
    return LoadedModel(
        module, str(path), _bounds(meta, weights), meta.get("preprocessing"), card, origin
    )


def load_model(
    spec: str,
    arch: str | None = None,
    weights: str | Path | None = None,
    *,
    inputs: InputSpec | None = None,
    **arch_kwargs: Any,
) -> LoadedModel:
    """Resolves a model spec (see module docstring) into a `LoadedModel` in eval mode.

    Args:
        spec: ``zoo:NAME``, a weights file, a run directory, or the user's own code
            ``module:factory`` / ``./file.py:factory``.
        arch: The architecture of a weights file or run directory: a zoo name (with
            optional settings) or the user's own code ``./net.py:factory``. Code is
            imported only from `spec` and `arch` — what the caller names — never from
            what a file records (docs/security.md).
        weights: Weights for the model of a code `spec` (``.pt``, ``.pth`` or
            ``.safetensors``): ``load_model("./net.py:Net", weights="w.safetensors")`` is
            ``load_model("w.safetensors", arch="./net.py:Net")``.
        inputs: Bounds and normalisation stated by the caller (`InputSpec`); they replace
            what the card or file records.
        **arch_kwargs: Constructor settings of a zoo architecture.

    Raises:
        ValueError: an unknown spec, unreadable or pickled weights, weights that do not fit,
            or a file that records its own model code which the caller did not name.
    """
    if weights is not None:
        if not is_code_spec(spec) or arch is not None:
            raise ValueError(
                f"weights ({str(weights)!r}) go with a model given as your own code, "
                f"'./net.py:factory' or 'package.module:factory', and no arch; got the model "
                f"{spec!r}{'' if arch is None else f' and arch {arch!r}'}. For a weights file "
                "of a zoo architecture pass the file as the model and the architecture as arch."
            )
        loaded = load_model(str(weights), arch=spec, inputs=inputs)
        loaded.spec = spec
        return loaded
    if spec.startswith("zoo:"):
        name = spec[4:]
        card = model_card(name)
        module, _, origin = _load_weights(
            WEIGHTS_DIR / f"{name}.pt", card["arch"], card.get("arch_kwargs", {})
        )
        bounds = tuple(card.get("bounds", (0.0, 1.0)))
        loaded = LoadedModel(
            module,
            spec,
            (float(bounds[0]), float(bounds[1])),
            card.get("preprocessing"),
            card,
            origin,
        )
    elif Path(spec).is_dir():
        loaded = _from_run_directory(Path(spec), arch)
    elif Path(spec).suffix == ".onnx":
        if arch is not None:
            raise ValueError(
                f"An ONNX model records its own architecture; got arch {arch!r} with {spec!r}."
            )
        loaded = LoadedModel(_from_onnx(Path(spec)), spec, origin={"onnx": spec})
    elif Path(spec).suffix in (".pt", ".pth", ".safetensors") or Path(spec).is_file():
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"The model weights file {spec!r} does not exist.")
        module, meta, origin = _load_weights(path, arch, arch_kwargs)
        loaded = LoadedModel(
            module, spec, _bounds(meta, path), meta.get("preprocessing"), meta, origin
        )
    elif ":" in spec:
        loaded = LoadedModel(_from_factory(spec), spec, origin={"factory": spec})
    else:
        raise ValueError(
            "The model spec must be 'zoo:NAME', a weights file 'PATH.pt' (with --arch), a "
            f"`boundaryscope train` run directory, or 'package.module:factory'. Got {spec!r} "
            "instead."
        )
    loaded.module.eval()
    return inputs.apply(loaded) if inputs is not None else loaded
