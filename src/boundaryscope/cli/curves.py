"""``boundaryscope curves``: fooling ratio against the budget for several attacks."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from boundaryscope.cli.common import (
    add_model_args,
    add_n_arg,
    add_out_arg,
    classifier_and_data,
    output_dir,
)
from boundaryscope.cli.registry import Command, register_command
from boundaryscope.cli.types import positive_int

__all__ = ["CurvesCommand"]


@register_command
class CurvesCommand(Command):
    """Writes ``curves.json`` and ``curves.png`` (Balda et al. 2018, Fig. 2)."""

    name = "curves"
    sharded = True
    help = "fooling ratio against the budget ε for several attacks (JSON + figure)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Attacks, budgets, norm, iterations."""
        add_model_args(parser)
        parser.add_argument(
            "--attacks",
            default="deepfool,alg1,alg1-10,alg2,fgsm,pgd,random",
            help="comma-separated attack names as in `boundaryscope attack`: deepfool, fmn, "
            "alg1, alg1-N, alg2, fgsm, pgd, bim, spsa, random, random-direction "
            "(default: %(default)s)",
        )
        parser.add_argument(
            "--eps",
            default="0:0.3:31",
            help="budgets: start:stop:count or a,b,c; fractions allowed (0:8/255:9) "
            "(default: %(default)s)",
        )
        parser.add_argument(
            "--p",
            choices=["inf", "2"],
            default="inf",
            help="norm of the budgets (default: %(default)s)",
        )
        add_n_arg(parser, 1000)
        parser.add_argument(
            "--steps",
            type=positive_int,
            default=20,
            help="iterations of pgd, bim and spsa (default: %(default)s)",
        )
        add_out_arg(parser, "curves", "curves.json, curves.png")

    def run(self, args: argparse.Namespace, world: Any) -> int:
        """Computes the curves, writes them, prints one line per attack."""
        from boundaryscope import distributed
        from boundaryscope._io import dump_json
        from boundaryscope.curves import fooling_curves, parse_epsilons
        from boundaryscope.report import figures

        epsilons = parse_epsilons(args.eps)
        names = [name.strip() for name in args.attacks.split(",") if name.strip()]
        out = output_dir(args)
        clf, data = classifier_and_data(args)
        with distributed.sharding(world):  # every attack call split over the processes
            curves = fooling_curves(
                clf, data.x, data.y, names, epsilons, p=args.p, steps=args.steps, seed=args.seed
            )
        if not world.is_main:
            return 0
        payload = {"model": args.model, "data": args.data, "n": len(data), "p": args.p}
        dump_json(out / "curves.json", {**payload, **asdict(curves)})
        norm = "l∞" if args.p == "inf" else "l2"
        fig, _ = figures.fooling_curves(curves.epsilons, curves.ratios, xlabel=f"ε ({norm})")
        figures.save(fig, out / "curves.png")
        for name, values in curves.ratios.items():
            print(f"{name:16s} " + " ".join(f"{v:.2f}" for v in values))
        print(
            f"curves over {norm} ε {epsilons[0]:g}..{epsilons[-1]:g} -> "
            f"{(out / 'curves.json').resolve()} (+ curves.png)"
        )
        return 0
