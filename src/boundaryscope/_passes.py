"""How many rows one model pass may take, and passes run in blocks of that many.

One `PassPlanner` belongs to each `Classifier` (its ``passes`` attribute). The classifier
measures what one input row costs in its model (it is the only object that runs the
model); the planner keeps those measurements per input shape, turns them into rows per
pass within the memory budget (`boundaryscope.memory`), runs a pass in blocks of that many
rows and, when a block runs out of memory, retries it in halves and remembers the size that
worked. Results do not depend on the blocks beyond float rounding: rows are independent
(models in eval mode).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

from boundaryscope import memory

__all__ = ["PassPlanner"]

_Out = TypeVar("_Out", Tensor, tuple[Tensor, ...])


class PassPlanner:
    """Rows per pass within the memory budget, per input shape, with out-of-memory retries.

    Args:
        measure: Bytes of every tensor the model's leaf modules output for one input row
            (``(1, *shape)`` → sizes; an empty list where the pass fails, so that the pass
            that follows raises the error with its explanation).
        device: Where the passes run (a CUDA cache is emptied after an out-of-memory error).
        warn: ``warn(key, message)``, said once per key (the classifier's `warn_once`).
    """

    def __init__(
        self,
        measure: Callable[[Tensor], list[int]],
        device: torch.device,
        warn: Callable[[str, str], None],
    ) -> None:
        self._measure = measure
        self._device = device
        self._warn = warn
        self._row_bytes: dict[tuple[int, ...], tuple[int, int]] = {}
        self._caps: dict[tuple[bool, tuple[int, ...]], int] = {}

    def row_bytes(self, x: Tensor, *, grad: bool) -> int:
        """Memory one row of `x` needs in a pass of the model, measured once per input shape.

        With ``grad``: 3 × the sum of the leaf outputs and the input (autograd keeps about
        one activation per layer, and the backward adds their gradients); without: 4 × the
        largest (the input and output of the widest layer, and scratch). Rough on purpose:
        it sizes batches, it does not predict peaks to the byte.
        """
        shape = tuple(int(s) for s in x.shape[1:])
        if shape not in self._row_bytes:
            sizes = self._measure(x[:1])
            row = x[0].numel() * x.element_size()
            self._row_bytes[shape] = (3 * (sum(sizes) + row), 4 * max([*sizes, row]))
        with_grad, without = self._row_bytes[shape]
        return with_grad if grad else without

    def rows_per_pass(self, x: Tensor, *, grad: bool, per_row: int = 1, outputs: int = 0) -> int:
        """Rows of `x` one pass may take within the memory budget.

        Args:
            x: The inputs (their shape and dtype set the cost; at least one row).
            grad: A pass with a backward (``True``) or a forward only.
            per_row: Graphs per row (a batched backward over ``K`` cotangents: ``K``).
            outputs: Input-sized results returned per row (``K`` gradients).

        Returns:
            At least 1; after an out-of-memory error, at most the size that last worked;
            never above `boundaryscope.memory.pass_rows` when it is set.
        """
        if x.shape[0] == 0:
            return 1
        cost = per_row * self.row_bytes(x, grad=grad) + outputs * x[0].numel() * x.element_size()
        rows = memory.rows_within(cost, device=self._device)
        for cap in (self._caps.get((grad, tuple(x.shape[1:]))), memory.pass_rows()):
            rows = rows if cap is None else min(rows, cap)
        return rows

    def in_blocks(
        self,
        fn: Callable[..., _Out],
        tensors: tuple[Tensor, ...],
        rows: int,
        *,
        grad: bool,
    ) -> _Out:
        """``fn`` on blocks of at most `rows` rows of `tensors`, results concatenated.

        A block that runs out of memory is retried in halves, and the smaller size is kept
        for later passes on inputs of this shape (a warning says so once).
        """
        n = tensors[0].shape[0]
        parts: list[_Out] = []
        start = 0
        while start < n or not parts:
            size = min(rows, n - start)
            try:
                block = tensors if size == n else tuple(t[start : start + size] for t in tensors)
                parts.append(fn(*block))
            except RuntimeError as error:
                if not memory.is_out_of_memory(error) or size == 1:
                    raise
                rows = max(1, size // 2)
                self._keep_cap(grad, tensors[0], rows)
                continue
            start += size
        if len(parts) == 1:
            return parts[0]
        if isinstance(parts[0], Tensor):
            return torch.cat(parts)  # type: ignore[return-value]
        return tuple(torch.cat(column) for column in zip(*parts, strict=True))  # type: ignore[return-value]

    def _keep_cap(self, grad: bool, x: Tensor, rows: int) -> None:
        """Keeps `rows` as the most a pass on inputs like `x` may take, and says so once."""
        self._caps[(grad, tuple(x.shape[1:]))] = rows
        kind = "grad" if grad else "forward"
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
        self._warn(
            f"oom-{kind}",
            f"Out of memory in a {kind} pass; retrying with {rows} rows per pass (lower "
            "--memory-budget to start there).",
        )
