"""Atomic file writes (temp file in the same directory + rename) and JSON helpers."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

__all__ = [
    "atomic_write",
    "dump_json",
    "from_jsonable",
    "load_checkpoint",
    "remove_stale_temporaries",
    "save_torch",
    "to_jsonable",
]

_TEMPORARY_SUFFIX = ".partial"


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Calls ``write(handle)`` on a temporary file, then renames it onto `path`.

    A reader never sees a half-written file, and an interrupted run leaves the previous
    version in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMPORARY_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; use normal permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Deletes the temporary files of writes that a killed run left in `directory`.

    Only `atomic_write`'s own hidden ``.NAME.XXXX.partial`` files are touched; the
    files they were meant to replace are complete (the previous version or none).
    Returns the paths removed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = [p for p in directory.glob(f".*{_TEMPORARY_SUFFIX}") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def to_jsonable(value: Any) -> Any:
    """Converts tensors, arrays, numpy scalars and non-finite floats to JSON-safe values.

    Non-finite floats become the strings ``"inf"``, ``"-inf"`` and ``"nan"`` so that failed
    attacks (infinite norms) survive a round trip.
    """
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def dump_json(path: str | Path, payload: Any) -> Path:
    """Writes `payload` as indented JSON, atomically."""
    text = json.dumps(to_jsonable(payload), indent=2, sort_keys=False)
    return atomic_write(path, lambda handle: handle.write(text.encode() + b"\n"))


def save_torch(path: str | Path, payload: Any) -> Path:
    """``torch.save`` through `atomic_write`."""
    return atomic_write(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(
    path: str | Path, settings: dict[str, Any], key: str, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A checkpoint of `save_torch`, after checking it was written with these `settings`.

    The checkpoint is a dict holding its run's settings under `key` and the `required`
    entries; resuming under other settings would silently answer another question.

    Raises:
        ValueError: an unreadable file, a dict without those entries, or other settings
            (each differing setting named with its value then and now; nested settings by
            their dotted path).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable file gets the same answer
        raise ValueError(f"Cannot read the checkpoint {path}: {error}") from error
    missing = sorted({key, *required} - set(state)) if isinstance(state, dict) else [key]
    if missing:
        raise ValueError(f"{path} is not a checkpoint of this kind or version (missing {missing}).")
    saved, now = dict(_flatten(state[key])), dict(_flatten(settings))
    differ = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    if differ:
        listed = ", ".join(
            f"{k}: {saved.get(k)!r} in the checkpoint, {now.get(k)!r} now" for k in differ
        )
        raise ValueError(
            f"The checkpoint {path} was written by a run with other settings ({listed}); "
            "resume with the same settings or start afresh in another directory."
        )
    return state


def _flatten(settings: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of every leaf of nested dicts."""
    if not isinstance(settings, dict):
        yield prefix.rstrip("."), settings
        return
    for name, value in settings.items():
        yield from _flatten(value, f"{prefix}{name}.")


_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def from_jsonable(value: Any) -> Any:
    """Inverse of `to_jsonable` for numbers: ``"inf"``, ``"-inf"``, ``"nan"`` become floats."""
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    if isinstance(value, dict):
        return {k: from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    return value
