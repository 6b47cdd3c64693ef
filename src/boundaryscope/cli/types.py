"""Argument types of the command line: values out of range are refused by argparse itself.

Each type raises ``argparse.ArgumentTypeError``, so a bad value gives argparse's one-line
usage error (exit status 2) naming the flag, the expected form and the value received.
"""

from __future__ import annotations

import argparse
import math

from boundaryscope._numbers import parse_number

__all__ = ["nonnegative_float", "positive_int"]


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


def nonnegative_float(text: str) -> float:
    """A finite number >= 0 (budgets, overshoot); fractions such as ``8/255`` allowed."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0; got {text!r}")
    return value
