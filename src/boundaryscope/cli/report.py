"""``boundaryscope report``: every registered analysis into one self-contained HTML page."""

from __future__ import annotations

import argparse
import time
from typing import Any

from boundaryscope.cli.common import add_model_args, add_out_arg, input_spec, output_dir
from boundaryscope.cli.registry import Command, register_command
from boundaryscope.cli.types import duration, positive_int

__all__ = ["ReportCommand"]


@register_command
class ReportCommand(Command):
    """Runs the report (`boundaryscope.report.run_report`) and prints where it is."""

    name = "report"
    sharded = True
    help = "run every analysis and write a self-contained HTML report with a verdict"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Model/data, ``--n``, ``--profile``, ``--sections``, ``--resume``, ``--out``."""
        add_model_args(parser)
        parser.add_argument(
            "--n",
            type=positive_int,
            default=None,
            help="test images, spread evenly over the classes (default: the profile's: "
            "1000 default, 64 quick, all for full)",
        )
        add_out_arg(
            parser,
            "report",
            "report.html (self-contained), results.json (every number, per image) and "
            "the figures as PNG",
        )
        parser.add_argument(
            "--profile",
            default="default",
            choices=["default", "full", "quick"],
            help="default: minutes on a CPU; full: paper-scale settings; quick: a smoke "
            "test (default: %(default)s)",
        )
        parser.add_argument(
            "--resume",
            action="store_true",
            help="reuse the finished sections of an interrupted run in --out (same model, "
            "data and settings; sections may be added)",
        )
        parser.add_argument(
            "--estimate-only",
            action="store_true",
            help="print what each section will cost on this model and machine (one "
            "calibration batch × the passes each section needs) and stop",
        )
        parser.add_argument(
            "--time-budget",
            type=duration,
            default=None,
            metavar="DURATION",
            help="fit the report into this time here (3h, 90m, 1h30m, 600): where the "
            "estimate at --n is longer, the sections' own samples (training images, "
            "boundary points, paths) shrink first, to no less than a quarter, then every "
            "section runs on the largest number of test images that fits; said before it "
            "starts and on the page (default: no budget)",
        )
        parser.add_argument(
            "--other",
            action="append",
            default=[],
            metavar="MODEL",
            help="another model of the same input shape (repeatable): the universal "
            "section adds the cross-model fooling table of Table 4.2 (default: none)",
        )
        parser.add_argument(
            "--sections",
            default=None,
            help="comma-separated analyses to run, e.g. accuracy,robustness (default: all)",
        )

    def run(self, args: argparse.Namespace, world: Any) -> int:
        """Writes the report; prints its path and the time taken."""
        from boundaryscope.report.runner import run_report

        start = time.perf_counter()
        path = run_report(
            args.model,
            args.data,
            output_dir(args),
            arch=args.arch,
            inputs=input_spec(args),
            n=args.n,
            device=args.device,
            seed=args.seed,
            profile=args.profile,
            resume=args.resume,
            sections=args.sections.split(",") if args.sections else None,
            world=world,
            estimate_only=args.estimate_only,
            others=args.other,
            time_budget=args.time_budget,
        )
        if not world.is_main or args.estimate_only:
            return 0
        print(f"report written in {time.perf_counter() - start:.1f} s: {path.resolve()}")
        return 0
