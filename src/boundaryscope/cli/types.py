"""Argument types of the command line: values out of range are refused by argparse itself.

Each type raises ``argparse.ArgumentTypeError``, so a bad value gives argparse's one-line
usage error (exit status 2) naming the flag, the expected form and the value received.
"""

from __future__ import annotations

import argparse
import math
import re

from boundaryscope._numbers import parse_number

__all__ = [
    "bounds_pair",
    "duration",
    "memory_size",
    "nonnegative_float",
    "number_list",
    "positive_int",
]

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer; got {text!r}") from None


def _number(text: str) -> float:
    try:
        value = parse_number(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number or a fraction like 8/255; got {text!r}"
        ) from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number; got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (counts of images, steps, batch sizes)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}")
    return value


def number_list(text: str) -> tuple[float, ...]:
    """Comma-separated finite numbers (one per channel): ``0.485,0.456,0.406``."""
    values = []
    for part in text.split(","):
        try:
            value = float(parse_number(part.strip()))
        except (ValueError, ZeroDivisionError):
            raise argparse.ArgumentTypeError(
                f"must be comma-separated numbers such as 0.485,0.456,0.406; got {text!r}"
            ) from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must hold finite numbers; got {text!r}")
        values.append(value)
    return tuple(values)


def bounds_pair(text: str) -> tuple[float, float]:
    """Two numbers ``LO,HI`` with ``LO < HI``: the input box (``0,1``, ``0,255``)."""
    values = number_list(text)
    if len(values) != 2 or not values[0] < values[1]:
        raise argparse.ArgumentTypeError(f"must be two numbers LO,HI with LO < HI; got {text!r}")
    return values[0], values[1]


def memory_size(text: str) -> int:
    """A memory size in bytes, with a binary unit: ``512M``, ``4G``, ``4GiB``."""
    from boundaryscope.memory import parse_size

    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def nonnegative_float(text: str) -> float:
    """A finite number >= 0 (budgets, overshoot); fractions such as ``8/255`` allowed."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0; got {text!r}")
    return value


def duration(text: str) -> float:
    """A positive time in seconds: ``3h``, ``90m``, ``1h30m``, ``600s`` or ``600``."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not text.strip() or match is None or not any(match.groups()):
        raise argparse.ArgumentTypeError(
            f"must be a duration such as 3h, 90m, 1h30m or 600 (seconds); got {text!r}"
        )
    hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
    total = 3600 * hours + 60 * minutes + seconds
    if total <= 0:
        raise argparse.ArgumentTypeError(f"must be a duration above zero; got {text!r}")
    return total
