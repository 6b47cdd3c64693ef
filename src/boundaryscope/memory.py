"""The memory budget: how many rows one model pass or one working buffer may hold.

Every computation whose memory grows with the input dimension ``d``, the number of classes
or the number of images asks this module how many rows fit, instead of using a fixed batch:
`Classifier` splits its passes so that a pass's activations stay inside the budget
(measured per model and input shape, see `Classifier.row_bytes`), and the analyses size
their ``(rows, d)`` buffers (Krylov bases, random directions, Hessian-vector products) the
same way. On an MNIST model nothing is split; on an ImageNet-shaped ResNet-50 a gradient
pass holds a handful of images.

The budget, in bytes, is, in order of precedence: the value given to `set_budget` (the CLI's
``--memory-budget``), the environment variable ``BOUNDARYSCOPE_MEMORY_BUDGET``, or a
default: a quarter of the memory available when first asked, at most 4 GiB, on the CPU;
half of the device memory free when first asked, on a GPU. A budget is a target for the
large buffers, not a hard limit on the process (the model, the data and Python's own
memory come on top).

A cap on the rows of one model pass (`set_pass_rows`, the CLI's ``--pass-rows``) comes on top
of the budget: a pass never takes more rows than either allows (useful to match a GPU's
sweet spot, or to reproduce a run's batch composition exactly).

Results do not depend on the budget beyond float rounding: rows are independent (models
in eval mode), so splitting them changes only how many rows share one pass.

Example:
    >>> from boundaryscope import memory
    >>> memory.parse_size("512M")
    536870912
    >>> with memory.budget_limit("64M"):
    ...     memory.rows_within(1_000_000)
    67
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported on use: `parse_size` serves the CLI's fast --help
    import torch

__all__ = [
    "ENV_VARIABLE",
    "budget",
    "budget_limit",
    "is_out_of_memory",
    "parse_size",
    "pass_rows",
    "row_blocks",
    "rows_within",
    "set_budget",
    "set_pass_rows",
]

ENV_VARIABLE = "BOUNDARYSCOPE_MEMORY_BUDGET"
_CPU_FRACTION = 0.25
_CPU_CAP = 4 << 30
_GPU_FRACTION = 0.5
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory")

_explicit: int | None = None
_pass_rows: int | None = None
_default_cpu: int | None = None
_default_gpu: dict[str, int] = {}


def parse_size(size: int | str) -> int:
    """Bytes of a size given as an int or as text with a binary unit (``"512M"``, ``"4GiB"``).

    Raises:
        ValueError: not a positive size.
    """
    if isinstance(size, bool):
        raise ValueError(f"A memory size must be bytes or text like '4G'; got {size!r}.")
    if isinstance(size, int):
        value = size
    else:
        match = _SIZE.match(str(size))
        if match is None:
            raise ValueError(
                "A memory size must be a number with an optional unit K, M, G or T "
                f"(binary, e.g. '512M', '4G', '4GiB'); got {size!r}."
            )
        value = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if value < 1:
        raise ValueError(f"A memory size must be positive; got {size!r}.")
    return value


def set_budget(size: int | str | None) -> None:
    """Sets the process-wide budget (bytes or text like ``"4G"``); ``None`` restores the default."""
    global _explicit
    _explicit = None if size is None else parse_size(size)


def set_pass_rows(rows: int | None) -> None:
    """Caps the rows of every model pass (``None``: only the budget decides).

    Raises:
        ValueError: `rows` is not a positive int.
    """
    global _pass_rows
    if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
        raise ValueError(f"pass rows must be a positive int or None; got {rows!r}.")
    _pass_rows = rows


def pass_rows() -> int | None:
    """The cap set by `set_pass_rows` (``None``: none)."""
    return _pass_rows


@contextlib.contextmanager
def budget_limit(size: int | str | None) -> Iterator[int]:
    """A budget for the duration of a ``with`` block; yields it in bytes."""
    global _explicit
    saved = _explicit
    set_budget(size)
    try:
        yield budget()
    finally:
        _explicit = saved


def budget(device: torch.device | str | None = None) -> int:
    """The budget in bytes for buffers on `device` (see the module docstring)."""
    if _explicit is not None:
        return _explicit
    from_env = os.environ.get(ENV_VARIABLE)
    if from_env:
        try:
            return parse_size(from_env)
        except ValueError as error:
            raise ValueError(f"{ENV_VARIABLE}: {error}") from None
    import torch

    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        # Asked once per device: inner loops must not synchronise with the GPU each call.
        key = str(device)
        if key not in _default_gpu:
            free, _ = torch.cuda.mem_get_info(device)
            _default_gpu[key] = max(1, int(_GPU_FRACTION * free))
        return _default_gpu[key]
    return _cpu_default()


def _cpu_default() -> int:
    """A quarter of the memory available at the first call, at most 4 GiB (then fixed)."""
    global _default_cpu
    if _default_cpu is None:
        _default_cpu = min(_CPU_CAP, int(_CPU_FRACTION * _available_ram()))
    return _default_cpu


def _available_ram() -> int:
    """``MemAvailable`` of ``/proc/meminfo`` (Linux), else free pages, else 8 GiB."""
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo", encoding="ascii") as info:
        for line in info:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    with contextlib.suppress(AttributeError, OSError, ValueError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return 8 << 30


def rows_within(
    bytes_per_row: float,
    *,
    at_most: int | None = None,
    device: torch.device | str | None = None,
) -> int:
    """How many rows of `bytes_per_row` fit in the budget: ``max(1, ⌊budget / bytes⌋)``.

    Args:
        bytes_per_row: Memory one row needs.
        at_most: An upper limit on the answer (e.g. the rows there are).
        device: Where the rows live (a GPU's budget follows its free memory).
    """
    rows = max(1, math.floor(budget(device) / max(float(bytes_per_row), 1.0)))
    return rows if at_most is None else max(1, min(rows, int(at_most)))


def row_blocks(
    n: int, bytes_per_row: float, *, device: torch.device | str | None = None
) -> list[slice]:
    """``n`` rows cut into consecutive slices of `rows_within` rows each (one when all fit)."""
    size = rows_within(bytes_per_row, at_most=max(n, 1), device=device)
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is an allocation failure (CUDA or host), which a smaller batch may avoid."""
    import torch

    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(
        text in str(error).lower() for text in _OOM_MESSAGES
    )
