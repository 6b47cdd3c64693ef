"""``boundaryscope compare``: models side by side on the same test images, one HTML page."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from boundaryscope.cli.common import (
    add_input_args,
    add_memory_arg,
    add_out_arg,
    input_spec,
    output_dir,
)
from boundaryscope.cli.registry import Command, register_command
from boundaryscope.cli.types import positive_int

__all__ = ["CompareCommand"]


@register_command
class CompareCommand(Command):
    """Measures every model (`boundaryscope.report.comparison.compare_report`)."""

    name = "compare"
    help = "measure models side by side (accuracy, ρ_adv, robust accuracy, curvature)"
    description = (
        "Measures every model on the same test images and writes one HTML page: clean "
        "accuracy, ρ_adv, robust accuracy under FGSM / l∞ DeepFool / PGD / SPSA, accuracy vs "
        "ε, loss curvature and Theorem 5, loss surfaces, training history. A single run "
        "directory is compared with the model it was trained from."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Models, data, profile, images, device, seed, output directory."""
        parser.add_argument(
            "models", nargs="+", help="model specs or `train --defense` run directories"
        )
        parser.add_argument(
            "--data",
            default=None,
            help="data spec, test split (default: the data the first model was trained on, "
            "from its card; else mnist5k)",
        )
        parser.add_argument(
            "--arch", default=None, help="architecture of bare weights files (default: none)"
        )
        parser.add_argument(
            "--profile",
            choices=["default", "full", "quick"],
            default="default",
            help="sizes of the measurements (default: %(default)s)",
        )
        parser.add_argument(
            "--n",
            type=positive_int,
            default=None,
            help="test images (default: the profile's, 500)",
        )
        parser.add_argument(
            "--device", default=None, help="cpu, cuda, ... (default: cuda if available)"
        )
        parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
        add_input_args(parser)
        add_memory_arg(parser)
        add_out_arg(parser, "compare", "report.html, comparison.json and the figures")

    def run(self, args: argparse.Namespace, world: Any) -> int:
        """Writes the comparison page and prints its path."""
        from boundaryscope.report.comparison import compare_report

        start = time.perf_counter()

        def model_line(label: str, seconds: float) -> None:
            # Piped output has no progress bar: a line per model instead of silence.
            print(f"compare: {label} measured in {seconds:.1f} s", file=sys.stderr, flush=True)

        path = compare_report(
            args.models, output_dir(args), data=args.data, arch=args.arch,
            inputs=input_spec(args),
            profile=args.profile, n=args.n, device=args.device, seed=args.seed,
            on_model_end=None if sys.stderr.isatty() else model_line,
        )  # fmt: skip
        print(f"comparison written in {time.perf_counter() - start:.1f} s: {path.resolve()}")
        return 0
