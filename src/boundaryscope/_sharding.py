"""The process group an attack call shares its batch with, if any (`distributed.sharding`).

A context variable rather than an argument: analyses call attacks deep inside library
functions (`fooling_curves`, `semi_random_robustness`, …), and every one of those calls
is sharded alike when a command runs under ``torchrun``. It holds the sharded call itself
(`boundaryscope.distributed.sharding` sets it), so `Attack.__call__` hands its batch over
without importing `boundaryscope.distributed`: the attacks know nothing of processes.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

__all__ = ["ACTIVE", "ShardedCall"]

#: ``(attack, clf, x, y, target) -> AttackResult`` running the call as this process's share.
ShardedCall = Callable[[Any, Any, Any, Any, Any], Any]

#: The sharded call every attack call goes through (``None``: attacks run whole).
ACTIVE: ContextVar[ShardedCall | None] = ContextVar("boundaryscope_sharding", default=None)
