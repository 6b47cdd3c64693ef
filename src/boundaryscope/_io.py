"""Atomic file writes (temp file in the same directory + rename) and JSON helpers."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import pickle
import re
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
    "output_lock",
    "read_torch",
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
    # The writer's pid is in the name, so that a temporary is removed later only when the
    # process that made it is gone (`remove_stale_temporaries`).
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=_TEMPORARY_SUFFIX, dir=path.parent
    )
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
    """Deletes the temporary files that killed runs left in `directory`.

    Only `atomic_write`'s own hidden ``.NAME.PID.XXXX.partial`` files are touched, and only
    those whose writer (PID) is no longer running: a temporary of a live process — another
    run writing into the same directory — is never removed. The files they were meant to
    replace are complete (the previous version or none). Returns the paths removed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = [
        p
        for p in directory.glob(f".*{_TEMPORARY_SUFFIX}")
        if p.is_file() and not _writer_alive(p.name)
    ]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _writer_alive(name: str) -> bool:
    """Whether the process that named the temporary `name` (``.NAME.PID.XXXX.partial``) runs."""
    parts = name.split(".")
    pid = int(parts[-3]) if len(parts) >= 4 and parts[-3].isdigit() else None
    if pid is None:  # a name without a pid: an older version's temporary, stale
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


_LOCK_NAME = ".boundaryscope.lock"
_held_locks: dict[Path, int] = {}


@contextlib.contextmanager
def output_lock(directory: str | Path) -> Iterator[Path]:
    """Holds an exclusive lock on an output directory for the duration of a run.

    Two runs writing into one directory would overwrite each other's results and delete
    each other's temporaries; the second is refused at once. The lock is an ``flock`` on
    ``DIR/.boundaryscope.lock``, which the system releases when its process ends, even by
    ``kill -9``, so a killed run never blocks the next. Re-entrant within a process.

    Raises:
        ValueError: another live process holds the lock (its pid is named).
    """
    directory = Path(directory).resolve()
    if directory in _held_locks:
        _held_locks[directory] += 1
        try:
            yield directory
        finally:
            _held_locks[directory] -= 1
        return
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / _LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise ValueError(
                f"Another boundaryscope run (pid {holder}) is writing into {directory}; wait "
                "for it to finish, or choose another --out."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _held_locks[directory] = 1
        try:
            yield directory
        finally:
            del _held_locks[directory]
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing releases the flock


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


_BLOCKED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def read_torch(path: str | Path, what: str = "PyTorch file") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that never advise the unsafe path.

    Only tensors and plain containers are unpickled. torch's own refusal suggests retrying
    with ``weights_only=False`` — arbitrary code execution for a file someone sent — so its
    text is replaced by one line saying what the file holds (docs/security.md).

    Args:
        path: The file.
        what: What the file should be, for the messages (``"weights file"``, ``"checkpoint"``).

    Raises:
        ValueError: the file is missing, is not a torch file, or holds pickled objects.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"The {what} {path} does not exist.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        blocked = _BLOCKED_GLOBAL.search(str(error))
        if blocked is None and "global" not in str(error).lower():
            raise ValueError(f"{path} is not a {what} (torch.load cannot read it).") from None
        name = f" ({blocked.group(1)})" if blocked else ""
        raise ValueError(
            f"{path} holds pickled Python objects{name}, which boundaryscope never unpickles: "
            f"a {what} must hold tensors only (e.g. model.state_dict(), not the whole module)."
        ) from None
    except Exception as error:  # zip/format errors: not a torch file at all
        reason = str(error).splitlines()[0].split(". ")[0] if str(error) else type(error).__name__
        raise ValueError(f"{path} is not a {what} ({reason}).") from None


def read_tensor(path: str | Path, what: str = "saved tensor") -> Any:
    """A tensor saved by torch (`read_torch`) or numpy (``.npy``, read without pickle).

    Both are data only: ``np.load(allow_pickle=False)`` refuses object arrays as
    ``torch.load(weights_only=True)`` refuses pickled objects (docs/security.md).

    Raises:
        ValueError: missing, unreadable, or an object array.
    """
    path = Path(path)
    if path.suffix != ".npy":
        return read_torch(path, what)
    if not path.is_file():
        raise ValueError(f"The {what} {path} does not exist.")
    try:
        return torch.from_numpy(np.load(path, allow_pickle=False))
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise ValueError(
                f"{path} holds Python objects, which boundaryscope never unpickles: a {what} "
                "must be a numeric array."
            ) from None
        raise ValueError(f"{path} is not a {what} ({error}).") from None


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
    state = read_torch(path, "PyTorch checkpoint")
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
