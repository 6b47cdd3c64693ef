"""``boundaryscope universal``: compute a universal perturbation, or evaluate a saved one.

Only ``--eval`` is sharded over torchrun processes: each counts the labels the
perturbation changes in its slice, and the integer counts are summed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from boundaryscope.cli.common import (
    add_model_args,
    add_out_arg,
    classifier,
    load_sample,
    output_dir,
)
from boundaryscope.cli.registry import Command, register_command
from boundaryscope.cli.types import nonnegative_float, positive_int

__all__ = ["UniversalCommand"]


@register_command
class UniversalCommand(Command):
    """Alg. 4 of the thesis (Moosavi-Dezfooli et al. 2017) on training images."""

    name = "universal"
    help = "compute (or --eval) a universal perturbation (thesis Alg. 4)"
    sharded = True

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Radius, norm, images, variant, stopping rule, evaluation and resume."""
        add_model_args(parser)
        parser.add_argument(
            "--xi",
            type=nonnegative_float,
            default=0.3,
            help="radius in input units; fractions allowed (10/255) (default: %(default)s)",
        )
        parser.add_argument(
            "--p", choices=["inf", "2"], default="inf", help="norm (default: %(default)s)"
        )
        parser.add_argument(
            "--n",
            type=positive_int,
            default=500,
            help="images of X, from the train split (default: %(default)s)",
        )
        parser.add_argument(
            "--variant",
            choices=["paper", "minibatch"],
            default="paper",
            help="paper: one image at a time (Alg. 4); minibatch: --batch-size images per "
            "DeepFool step (default: %(default)s)",
        )
        parser.add_argument(
            "--max-passes",
            type=positive_int,
            default=10,
            help="passes over X at most (default: %(default)s)",
        )
        parser.add_argument(
            "--delta",
            type=nonnegative_float,
            default=0.2,
            help="stop at fooling rate 1 - delta on X (default: %(default)s)",
        )
        parser.add_argument(
            "--batch-size",
            type=positive_int,
            default=32,
            help="minibatch variant: images per step (default: %(default)s)",
        )
        parser.add_argument(
            "--eval",
            default=None,
            metavar="V",
            help="only evaluate a saved perturbation on the test split: v.pt, v.npy (read "
            "without pickle) or the run directory holding v.pt (default: compute one)",
        )
        parser.add_argument(
            "--n-test",
            type=positive_int,
            default=None,
            help="held-out test images for the fooling rate (default: the whole test split)",
        )
        parser.add_argument(
            "--resume",
            action="store_true",
            help="continue from --out/checkpoint.pt (written after every pass; the settings "
            "must match the interrupted run)",
        )
        add_out_arg(
            parser,
            "universal",
            "v.pt, v.npy, universal.json, perturbation.png, checkpoint.pt (eval.json with --eval)",
        )

    def run(self, args: argparse.Namespace, world: Any) -> int:
        """Computes v (the minibatch variant sharded) or evaluates ``--eval`` (sharded)."""
        if world.active and not args.eval and args.variant == "paper":
            raise ValueError(
                "universal under torchrun needs --variant minibatch: the paper variant takes "
                "one image per DeepFool step, which leaves nothing to share; the minibatch "
                "variant's DeepFool step over --batch-size images is split over the processes."
            )
        if args.eval:
            return _evaluate(args, world)
        return _compute(args, world)


def _evaluate(args: argparse.Namespace, world: Any) -> int:

    from boundaryscope import distributed
    from boundaryscope._io import dump_json, read_tensor
    from boundaryscope.universal import check_perturbation, fooling_rate

    out = output_dir(args) if world.is_main else None
    clf = classifier(args)
    test = load_sample(args.data, args.n_test)
    source = Path(args.eval)
    if source.is_dir():  # a run directory of `universal`: its v.pt
        source = source / "v.pt"
    v = read_tensor(source, "saved tensor (--eval)")
    v = check_perturbation(v, test.x, f"--eval {args.eval}")
    part = distributed.shard(len(test), world)
    size = part.stop - part.start
    # The shard's count of changed labels (exact: the rate times its size, rounded); the
    # counts are summed, so the rate equals one process's to the last bit.
    changed = round(fooling_rate(clf, test.x[part], v) * size) if size else 0
    rate = distributed.sum_over_processes(changed, world) / len(test)
    if out is None:
        return 0
    print(f"fooling rate of {args.eval} on {len(test)} test images: {rate:.4f}")
    dump_json(out / "eval.json", {"perturbation": args.eval, "fooling_rate": rate, "n": len(test)})
    return 0


def _compute(args: argparse.Namespace, world: Any) -> int:
    import numpy as np

    from boundaryscope import distributed
    from boundaryscope._io import atomic_write, dump_json, save_torch
    from boundaryscope.report import figures
    from boundaryscope.universal import (
        dominant_label_graph,
        fooling_rate,
        universal_perturbation,
    )

    clf = classifier(args)
    test = load_sample(args.data, args.n_test)
    train = load_sample(args.data, args.n, split="train")
    out = output_dir(args)
    start = time.perf_counter()
    # Each minibatch's DeepFool call is split over the processes; every process holds the
    # same v after each step (its sum is taken over the gathered batch, in sample order).
    with distributed.sharding(world):
        result = universal_perturbation(
            clf,
            train.x,
            args.xi,
            p=args.p,
            delta=args.delta,
            max_passes=args.max_passes,
            variant=args.variant,
            batch_size=args.batch_size,
            seed=args.seed,
            checkpoint=out / "checkpoint.pt" if world.is_main else None,
            resume=_checkpoint(out) if args.resume else None,
        )
    seconds = distributed.max_over_processes(time.perf_counter() - start, world)
    if not world.is_main:
        return 0
    held_out = fooling_rate(clf, test.x, result.v)
    v = result.v.detach().cpu()
    save_torch(out / "v.pt", v)
    atomic_write(out / "v.npy", lambda handle: np.save(handle, v.numpy()))
    graph = dominant_label_graph(clf, test.x, result.v)
    dump_json(
        out / "universal.json",
        {
            "model": args.model,
            "data": args.data,
            "xi": args.xi,
            "p": result.p,
            "variant": result.variant,
            "n_train": len(train),
            "n_test": len(test),
            "seconds": seconds,
            "fooling_rate_train": result.fooling_rate,
            "fooling_rate_test": held_out,
            "norm": result.norm,
            "passes": result.passes,
            "history": result.history,
            "accepted": result.accepted,
            "rejected": result.rejected,
            "converged": result.converged,
            "dominant_labels": graph,
        },
    )
    scale = float(v.abs().max()) or 1.0
    fig, _ = figures.image_row([0.5 + 0.5 * v.numpy() / scale], [f"v (×{0.5 / scale:.1f})"])
    figures.save(fig, out / "perturbation.png")
    print(
        f"universal perturbation in {seconds:.1f} s ({result.passes} passes): fooling rate "
        f"{result.fooling_rate:.3f} on X, {held_out:.3f} on {len(test)} held-out images, "
        f"||v||_p = {result.norm:.4g} -> {out.resolve()}"
    )
    return 0


def _checkpoint(out: Path) -> Path | None:
    """``out/checkpoint.pt`` to resume from, or ``None`` (with a note) when there is none."""
    path = out / "checkpoint.pt"
    if path.is_file():
        return path
    print(f"universal: no checkpoint in {out}; starting afresh.", file=sys.stderr)
    return None
