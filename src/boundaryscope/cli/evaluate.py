"""``boundaryscope evaluate``: robust accuracy from minimal norms and AutoAttack's cascade."""

from __future__ import annotations

import argparse
import math
from typing import Any

from boundaryscope.cli.common import (
    add_model_args,
    add_n_arg,
    add_out_arg,
    classifier_and_data,
    output_dir,
)
from boundaryscope.cli.registry import Command, register_command

__all__ = ["EvaluateCommand"]


@register_command
class EvaluateCommand(Command):
    """Writes ``evaluate.json`` (and RobustBench's ``model_info.json``)."""

    name = "evaluate"
    help = "robust accuracy at budgets ε: minimal norms, then APGD-CE → APGD-T → FAB-T → Square"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Norm, budgets, profile, images."""
        add_model_args(parser)
        parser.add_argument(
            "--p", choices=["inf", "2"], default="inf", help="norm (default: %(default)s)"
        )
        parser.add_argument(
            "--eps",
            default="0.1,0.2,0.3",
            help="budgets: a,b,c or start:stop:count; fractions allowed (8/255) "
            "(default: %(default)s)",
        )
        parser.add_argument(
            "--profile",
            choices=["standard", "fast", "quick"],
            default="standard",
            help="attack sizes: standard = AutoAttack's (100 steps, 9 targets, 5000 Square "
            "queries), fast = 3 targets and 1000 queries, quick = seconds (default: "
            "%(default)s)",
        )
        add_n_arg(parser, 1000)
        parser.add_argument(
            "--name",
            default=None,
            help="model name for model_info.json, RobustBench's record (default: --model)",
        )
        add_out_arg(parser, "evaluate", "evaluate.json, model_info.json")

    def run(self, args: argparse.Namespace, world: Any) -> int:
        """Evaluates, writes the JSON files, prints one line per budget and the checks."""
        from boundaryscope._io import dump_json
        from boundaryscope.curves import parse_epsilons
        from boundaryscope.evaluation import evaluate

        epsilons = [e for e in parse_epsilons(args.eps) if e > 0]
        if not epsilons:
            raise ValueError(f"--eps must hold positive budgets; got {args.eps!r}.")
        out = output_dir(args)
        clf, data = classifier_and_data(args)
        p = math.inf if args.p == "inf" else 2.0
        result = evaluate(
            clf, data.x, data.y, epsilons, p, args.profile, seed=args.seed, progress=None
        )
        payload = {"model": args.model, "data": args.data, **result.to_dict()}
        dump_json(out / "evaluate.json", payload)
        dataset = args.data.split(":")[0]
        dump_json(out / "model_info.json", result.model_info(args.name or args.model, dataset))
        norm = "l∞" if math.isinf(p) else "l2"
        print(f"clean accuracy {result.clean_accuracy:.2%} on {len(data)} images")
        for budget in payload["budgets"]:
            counts = ", ".join(f"{k} {v}" for k, v in budget["broken_by_count"].items() if v)
            print(
                f"{norm} ε = {budget['eps']:g}: robust accuracy {budget['robust_accuracy']:.2%} "
                f"(broken by: {counts})"
            )
        for check in result.fired:
            print(f"WARNING ({check.name}): {check.message}")
        print(f"{payload['evaluation']} -> {(out / 'evaluate.json').resolve()}")
        return 0
