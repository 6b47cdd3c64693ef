"""The one mapping from a ``progress`` argument to tqdm's ``disable``."""

from __future__ import annotations

__all__ = ["tqdm_disable"]


def tqdm_disable(progress: bool | None) -> bool | None:
    """Tqdm's ``disable`` for `progress`: ``None`` shows the bar only on a terminal."""
    return None if progress is None else not progress
