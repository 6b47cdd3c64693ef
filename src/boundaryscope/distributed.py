r"""Sharding the images of a command over ``torchrun`` processes, with one-process results.

``torchrun --nproc-per-node N -m boundaryscope attack …`` starts N copies of the command;
`setup` joins them into a process group (gloo on CPU, NCCL on GPUs, one GPU per process by
``LOCAL_RANK``). Each process takes one contiguous block of the images (`shard`), runs the
per-sample work on it, and the per-sample results are gathered back in sample order
(`gather_attack_result`), or reduced by their declared reduction (a count is summed:
`sum_over_processes`). Every process then holds the same result as one process would have
computed; only rank 0 writes files and prints.

Inside a library analysis, ``with sharding(world):`` does the same for every attack call
in the block, however deep (`sharded_call`): each process attacks its block of the batch
and all of them receive the whole `AttackResult`, so the code around the calls runs
unchanged in every process. The report shards its per-image sections this way and runs
its other sections whole, each in one process (`boundaryscope.report.runner`).

Why the output is identical to one process: every attack treats samples independently (a
sample's steps never depend on the other samples of its batch), random draws come from
per-image streams (`boundaryscope._random`), and the gathered tensors are concatenated in
the order of the shards. Not bit-for-bit guaranteed: a BLAS library may round one row of a
matrix product differently at another batch size; the tests check equality on this
machine's CPU.

Threads: with ``OMP_NUM_THREADS`` unset, each process takes ``cpu_count // local processes``
threads (torchrun itself sets ``OMP_NUM_THREADS=1`` unless told otherwise).

Multi-GPU, multi-node::

    torchrun --nproc-per-node 8 -m boundaryscope attack deepfool --n 10000
    torchrun --nnodes 2 --node-rank R --master-addr HOST --nproc-per-node 8 \
        -m boundaryscope universal --eval v.pt
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor

from boundaryscope import _sharding
from boundaryscope.attacks.base import AttackResult

if TYPE_CHECKING:
    from boundaryscope.attacks.base import Attack
    from boundaryscope.classifier import Classifier

__all__ = [
    "World",
    "all_gather_objects",
    "broadcast_object",
    "device",
    "gather_attack_result",
    "gather_tensors",
    "max_over_processes",
    "setup",
    "shard",
    "sharded_call",
    "sharding",
    "sum_over_processes",
    "teardown",
]


@dataclass(frozen=True)
class World:
    """Where this process stands among the ``torchrun`` processes.

    Attributes:
        rank: This process's index, ``0 ≤ rank < size``.
        size: Number of processes (1 without ``torchrun``).
        local_rank: Index among the processes of this machine (its GPU).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """True when the work is shared by more than one process."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and prints (rank 0)."""
        return self.rank == 0


def setup() -> World:
    """Joins the ``torchrun`` process group if there is one; a no-op for one process.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE`` as torchrun sets
    them, initialises the default group once (NCCL when CUDA is available, else gloo), pins
    the process to ``cuda:LOCAL_RANK`` on GPUs and shares the CPU threads.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    if "OMP_NUM_THREADS" not in os.environ:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", str(size)))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    return World(rank, size, local_rank)


def teardown(world: World) -> None:
    """Leaves the process group (after a barrier, so no process exits while others send)."""
    if world.active and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def device(world: World) -> torch.device | None:
    """This process's device under torchrun on GPUs (``cuda:LOCAL_RANK``), else ``None``."""
    if world.active and torch.cuda.is_available():
        return torch.device("cuda", world.local_rank)
    return None


def shard(n: int, world: World) -> slice:
    """This process's contiguous block of ``n`` samples (sizes differ by at most one)."""
    per, extra = divmod(n, world.size)
    start = world.rank * per + min(world.rank, extra)
    return slice(start, start + per + (1 if world.rank < extra else 0))


def gather_tensors(tensors: dict[str, Tensor], world: World) -> dict[str, Tensor]:
    """Per-sample tensors of every process, concatenated along dim 0 in rank order.

    A process with an empty share may lack keys the others have (an attack's details
    on an empty batch); a non-empty share lacking one is an error.
    """
    if not world.active:
        return tensors
    local = {k: v.detach().cpu() for k, v in tensors.items()}
    parts = all_gather_objects(local, world)
    merged = {}
    for key in dict.fromkeys(key for part in parts for key in part):  # in first-seen order
        lacking = [part for part in parts if key not in part]
        if any(len(next(iter(part.values()), ())) for part in lacking):
            raise RuntimeError(f"gather_tensors: {key!r} is missing from a non-empty share.")
        merged[key] = torch.cat([part[key] for part in parts if key in part])
    return merged


def gather_attack_result(result: AttackResult, world: World) -> AttackResult:
    """The `AttackResult` of the whole batch from each process's result on its shard."""
    if not world.active:
        return result
    fields = {
        "adversarial": result.adversarial,
        "perturbation": result.perturbation,
        "success": result.success,
        "norms": result.norms,
        "iterations": result.iterations,
        "original_label": result.original_label,
        "adversarial_label": result.adversarial_label,
    }
    fields.update({f"details.{k}": v for k, v in result.details.items()})
    merged = gather_tensors(fields, world)
    details = {k.removeprefix("details."): v for k, v in merged.items() if k.startswith("details.")}
    return AttackResult(
        adversarial=merged["adversarial"],
        perturbation=merged["perturbation"],
        success=merged["success"],
        norms=merged["norms"],
        iterations=merged["iterations"],
        original_label=merged["original_label"],
        adversarial_label=merged["adversarial_label"],
        p=result.p,
        details=details,
    )


def sum_over_processes(value: float, world: World) -> float:
    """The sum of a per-process count (float64, so integer counts stay exact)."""
    if not world.active:
        return value
    total = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        total = total.cuda()
    dist.all_reduce(total)
    return float(total.item())


def max_over_processes(value: float, world: World) -> float:
    """The largest per-process value (wall times: the slowest process sets the pace)."""
    if not world.active:
        return value
    return max(v for v in all_gather_objects(value, world) if not math.isnan(v))


@contextmanager
def sharding(world: World) -> Iterator[None]:
    """Within the block, every attack call shares its batch among the processes of `world`.

    Every process must run the block with the same inputs (the same calls in the same
    order); each gets every call's whole result. A no-op for one process. Calls made
    inside an attack (FMN's starting DeepFool) are not sharded again.
    """
    share = functools.partial(sharded_call, world=world) if world.active else None
    token = _sharding.ACTIVE.set(share)
    try:
        yield
    finally:
        _sharding.ACTIVE.reset(token)


def unsharded() -> AbstractContextManager[None]:
    """Within the block, attack calls run whole in this process (no collective calls)."""
    return sharding(World())


def sharded_call(
    attack: Attack,
    clf: Classifier,
    x: Tensor,
    y: Tensor | None,
    target: Tensor | None,
    world: World,
) -> AttackResult:
    """``attack(clf, x, y, target=target)`` with this process attacking its `shard` only.

    The labels' shape is checked whole first (a wrong length must not hide behind a slice); the
    process's block runs through `Attack.for_shard`, so attacks with per-sample state see
    the right samples; the blocks are gathered in sample order onto ``x``'s device.
    """
    from boundaryscope.attacks.base import check_label_shape

    for name, labels in (("y", y), ("target", target)):
        if labels is not None:
            check_label_shape(labels, x, name)
    part = shard(x.shape[0], world)
    local_attack = attack.for_shard(part.start, part.stop)
    with unsharded():
        local = local_attack(
            clf,
            x[part],
            None if y is None else y[part],
            target=None if target is None else target[part],
        )
    return gather_attack_result(local, world).to(x.device)


def all_gather_objects(value: Any, world: World) -> list[Any]:
    """Every process's `value` (picklable), in rank order; ``[value]`` for one process."""
    if not world.active:
        return [value]
    values: list[Any] = [None] * world.size
    dist.all_gather_object(values, value)
    return values


def broadcast_object(value: Any, world: World) -> Any:
    """Rank 0's `value` (picklable) in every process."""
    if not world.active:
        return value
    box = [value if world.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
