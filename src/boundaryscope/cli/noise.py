"""``boundaryscope noise``: robustness to random, semi-random and band-limited noise."""

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
from boundaryscope.cli.types import nonnegative_float, positive_int

__all__ = ["NoiseCommand"]


@register_command
class NoiseCommand(Command):
    """Writes ``noise.json``: β(f; m) per subspace dimension, or ζ per DCT band."""

    name = "noise"
    sharded = True
    help = "robustness to random, semi-random or band-limited (DCT) noise"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Regime, subspace dimensions or band size, DeepFool iterations, δ."""
        add_model_args(parser)
        parser.add_argument(
            "--regime",
            choices=["random", "semi-random", "spectral"],
            default="semi-random",
            help="random (m = 1), semi-random (random m-dimensional subspaces) or spectral "
            "(DCT bands) (default: %(default)s)",
        )
        parser.add_argument(
            "--m",
            default=None,
            help="semi-random: comma-separated subspace dimensions (default: d/4, d/16, "
            "d/36, d/64, d/100)",
        )
        parser.add_argument(
            "--block",
            type=positive_int,
            default=None,
            help="spectral: DCT band size (default: the image side / 4)",
        )
        add_n_arg(parser, 200)
        parser.add_argument(
            "--steps",
            type=positive_int,
            default=200,
            help="DeepFool iterations inside each subspace (default: %(default)s)",
        )
        parser.add_argument(
            "--delta",
            type=nonnegative_float,
            default=0.05,
            help="δ of Theorem 1's probability bounds (default: %(default)s)",
        )
        parser.add_argument(
            "--with-box",
            action="store_true",
            help="keep the input box (the theory is stated without it)",
        )
        add_out_arg(parser, "noise", "noise.json")

    def run(self, args: argparse.Namespace, world: Any) -> int:
        """Measures the regime and prints one line per subspace dimension or band."""
        from boundaryscope import distributed
        from boundaryscope._io import dump_json
        from boundaryscope.noise_robustness import semi_random_robustness, spectral_robustness

        out = output_dir(args)
        clf, data = classifier_and_data(args)
        d = data.x[0].numel()
        theory = not args.with_box
        payload: dict[str, Any] = {
            "model": args.model,
            "data": args.data,
            "regime": args.regime,
            "d": d,
            "theory_mode": theory,
        }
        with distributed.sharding(world):  # DeepFool's calls split over the processes
            if args.regime == "spectral":
                spectral = spectral_robustness(
                    clf,
                    data.x,
                    data.y,
                    block=args.block,
                    steps=args.steps,
                    theory_mode=theory,
                    progress=None,
                )
                payload["spectral"] = asdict(spectral)
                lines = [
                    f"band {band:3d}  m {m:5d}  zeta {zeta:.3f}"
                    for band, m, zeta in zip(spectral.bands, spectral.m, spectral.zeta, strict=True)
                ]
            else:
                regimes = semi_random_robustness(
                    clf,
                    data.x,
                    data.y,
                    _dimensions(args, d),
                    seed=args.seed,
                    delta=args.delta,
                    steps=args.steps,
                    theory_mode=theory,
                    progress=None,
                )
                payload["regimes"] = [asdict(r) for r in regimes]
                lines = [
                    f"m {r.m:5d}  beta {r.beta_mean:.3f} ± {r.beta_std:.3f}  inside Theorem 1 "
                    f"{r.inside_theorem1:.0%}  Corollary 1 {r.inside_corollary1:.0%}  "
                    f"failures {r.n_failures}"
                    for r in regimes
                ]
        if not world.is_main:
            return 0
        print("\n".join(lines))
        dump_json(out / "noise.json", payload)
        print(f"-> {(out / 'noise.json').resolve()}")
        return 0


def _dimensions(args: argparse.Namespace, d: int) -> list[int]:
    """The subspace dimensions m of the regime."""
    if args.regime == "random":
        return [1]
    if args.m:
        try:
            return [int(v) for v in args.m.split(",")]
        except ValueError:
            raise ValueError(f"--m: expected comma-separated integers; got {args.m!r}.") from None
    return [max(2, round(d / f)) for f in (4, 16, 36, 64, 100)]
