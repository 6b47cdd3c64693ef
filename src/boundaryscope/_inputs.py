"""Checks of what a user hands a `Classifier`: its box, and every batch of inputs.

Apart from the wrapper so that it reads as what it is — the argument checks that name the
argument, the expected form and the value received — while `classifier.py` keeps what
runs the model.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["BOUNDS_TOLERANCE", "add_note", "check_bounds", "check_inputs", "closest_hint"]

#: Inputs may overshoot the box by this fraction of its width (float rounding of the data).
BOUNDS_TOLERANCE = 1e-5


def check_inputs(
    x: object,
    name: str,
    *,
    bounds: tuple[float, float],
    shape: tuple[int, ...] | None,
    channels: int | None,
) -> None:
    """Checks a batch of inputs: a floating tensor ``(N, *shape)``, finite, inside `bounds`.

    Args:
        x: The batch.
        name: The argument's name, for the messages.
        bounds: The box ``(lo, hi)``.
        shape: The expected shape of one input, or ``None`` (any).
        channels: The channels (axis 1) a 4-d batch must have, or ``None`` (any).

    Raises:
        TypeError: `x` is not a floating-point tensor.
        ValueError: `x` has the wrong rank or shape, non-finite values, or values outside
            `bounds` (the message gives the min and max seen).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of inputs; got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor with values in {list(bounds)}; "
            f"got dtype {x.dtype}. Convert images with x.float() / 255 first."
        )
    if x.ndim < 2:
        raise ValueError(
            f"{name} must be a batch of shape (N, *input_shape); got shape {tuple(x.shape)}."
        )
    if shape is not None and tuple(x.shape[1:]) != shape:
        raise ValueError(
            f"{name} must have shape (N, {', '.join(map(str, shape))}) for this "
            f"classifier; got {tuple(x.shape)}."
        )
    if channels is not None and x.ndim == 4 and x.shape[1] != channels:
        raise ValueError(
            f"{name} must have {channels} channel(s) on axis 1 (NCHW) for this "
            f"model; got shape {tuple(x.shape)}."
        )
    if x.numel() and not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} must be finite; got {bad} NaN/inf values.")
    lo, hi = bounds
    if x.numel():
        x_min, x_max = float(x.min()), float(x.max())
        tol = BOUNDS_TOLERANCE * (hi - lo)
        if x_min < lo - tol or x_max > hi + tol:
            raise ValueError(
                f"{name} must lie in the classifier bounds [{lo}, {hi}]; got min {x_min:.4g}, "
                f"max {x_max:.4g} (batch of {x.shape[0]}). Pass bounds=(lo, hi) matching "
                "your data, or preprocessing={mean, std} instead of normalising the data."
            )


def check_bounds(bounds: object) -> tuple[float, float]:
    """`bounds` as ``(lo, hi)`` floats with ``lo < hi``; a ValueError naming it otherwise."""
    try:
        lo, hi = (float(b) for b in bounds)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise ValueError(
            "The 'bounds' parameter of Classifier must be a pair (lo, hi) of numbers. "
            f"Got {bounds!r} instead."
        ) from None
    if not lo < hi:
        raise ValueError(
            f"The 'bounds' parameter of Classifier must satisfy lo < hi. Got {bounds!r} instead."
        )
    return lo, hi


def add_note(error: BaseException, note: str) -> None:
    """``error.add_note(note)`` where Python has it (3.11+); the note is shown after it.

    How the inputs met the model (their shape, the data spec to change) is told this way,
    keeping the model's own error type and message.
    """
    method = getattr(error, "add_note", None)
    if method is not None:
        method(note)


def closest_hint(name: str, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` with the valid choice closest to a misspelt `name`, else ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
