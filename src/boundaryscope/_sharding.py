"""The process group an attack call shares its batch with, if any (`distributed.sharding`).

A context variable rather than an argument: analyses call attacks deep inside library
functions (`fooling_curves`, `semi_random_robustness`, …), and every one of those calls
is sharded alike when a command runs under ``torchrun``. It lives apart from
`boundaryscope.distributed`, which imports the attacks, so that `Attack.__call__` can read
it without an import cycle.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

__all__ = ["ACTIVE"]

#: The `boundaryscope.distributed.World` attack calls are sharded over (``None``: none).
ACTIVE: ContextVar[Any] = ContextVar("boundaryscope_sharding", default=None)
