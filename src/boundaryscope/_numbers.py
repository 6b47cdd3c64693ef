"""Numbers as users write them: ``0.03``, ``1e-2`` or a fraction such as ``8/255``."""

from __future__ import annotations

from fractions import Fraction

__all__ = ["parse_number"]


def parse_number(text: str) -> float:
    """`text` as a float; ``a/b`` fractions allowed (budgets are quoted as ``8/255``).

    Raises:
        ValueError: not a number or a fraction of two numbers, or a zero denominator.
    """
    cleaned = text.strip()
    try:
        if "/" in cleaned:
            numerator, denominator = cleaned.split("/")
            return float(Fraction(numerator.strip()) / Fraction(denominator.strip()))
        return float(cleaned)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"expected a number or a fraction like 8/255; got {text!r}") from None
