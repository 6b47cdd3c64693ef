"""``boundaryscope verify``: exact minimal l∞/l1 perturbations of a small ReLU network.

Runs `boundaryscope.verify.minimal_perturbation` (MILP, HiGHS) on the correctly classified
test images and compares the exact minimum with DeepFool and its FMN refinement on the
same images: per image, how far each attack is from the truth. Writes JSON.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from typing import Any

from boundaryscope.cli.common import add_model_args, add_out_arg, classifier_and_data, output_dir
from boundaryscope.cli.registry import Command, register_command
from boundaryscope.cli.types import nonnegative_float, positive_int

__all__ = ["VerifyCommand"]


@register_command
class VerifyCommand(Command):
    """Exact minimal perturbations against DeepFool and FMN, per image."""

    name = "verify"
    help = "exact minimal l∞/l1 perturbations of a small ReLU network (MILP)"
    description = __doc__

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Norm, images, solver time limit, FMN steps."""
        _add_arguments(parser)

    def run(self, args: argparse.Namespace, world: Any) -> int:
        """Solves and writes ``verify.json``."""
        return run(args, classifier_and_data)


def _add_arguments(verify: argparse.ArgumentParser) -> None:
    add_model_args(verify)
    verify.set_defaults(model="zoo:mlp-digits", data="digits")
    verify.add_argument("--p", choices=["inf", "1"], default="inf", help="norm (default: inf)")
    verify.add_argument(
        "--n", type=positive_int, default=20, help="test images (default: %(default)s)"
    )
    verify.add_argument(
        "--time-limit",
        type=nonnegative_float,
        default=10.0,
        help="solver seconds per image; past it certified bounds are returned "
        "(default: %(default)s)",
    )
    verify.add_argument(
        "--fmn-steps",
        type=positive_int,
        default=100,
        help="FMN steps refining DeepFool, the initial upper bound (default: %(default)s)",
    )
    add_out_arg(verify, "verify", "verify.json")


def run(args: argparse.Namespace, classifier_and_data: Callable[..., Any]) -> int:
    """Solves every image, prints a summary line and writes the per-image JSON."""
    from boundaryscope._io import dump_json
    from boundaryscope.attacks import FMN, DeepFool
    from boundaryscope.verify import minimal_perturbation

    if args.n < 1 or not args.time_limit > 0 or args.fmn_steps < 0:
        raise ValueError(
            "verify needs --n >= 1, --time-limit > 0 and --fmn-steps >= 0; got "
            f"--n {args.n}, --time-limit {args.time_limit}, --fmn-steps {args.fmn_steps}."
        )
    out = output_dir(args) / "verify.json"  # a file name is refused before any work
    clf, data = classifier_and_data(args)
    p = math.inf if args.p == "inf" else 1.0
    correct = clf.predict(data.x) == data.y.to(clf.device)
    x, y = data.x[correct.cpu()], data.y[correct.cpu()]
    deepfool = DeepFool(p=p)(clf, x, y)
    refined = FMN(p=p, steps=args.fmn_steps, init=deepfool)(clf, x, y)
    start = time.perf_counter()
    exact = minimal_perturbation(
        clf, x, y, p=p, upper_bound=refined, time_limit=args.time_limit, progress=None
    )
    elapsed = time.perf_counter() - start
    certified = exact.exact
    ratios: dict[str, Any] = {}
    for name, result in (("deepfool", deepfool), ("fmn", refined)):
        ratio = (result.norms.double().cpu() / exact.lower)[certified]
        ratios[name] = {
            "median": float(ratio.median()) if ratio.numel() else math.nan,
            "mean": float(ratio.mean()) if ratio.numel() else math.nan,
            "max": float(ratio.max()) if ratio.numel() else math.nan,
            "per_image": ratio.tolist(),
        }
    payload = {
        "model": args.model,
        "data": args.data,
        "p": p,
        "images": int(x.shape[0]),
        "seconds": elapsed,
        "time_limit": args.time_limit,
        "exact_share": float(certified.float().mean()) if len(exact) else math.nan,
        "lower": exact.lower,
        "upper": exact.upper,
        "status": exact.status,
        "solver_seconds": exact.seconds,
        "deepfool_norms": deepfool.norms,
        "fmn_norms": refined.norms,
        "attack_over_exact": ratios,
    }
    dump_json(out, payload)
    median = float(exact.lower[certified].median()) if bool(certified.any()) else math.nan
    print(
        f"exact l{p:g} minimum on {int(certified.sum())}/{len(exact)} images in {elapsed:.1f} s "
        f"(median {median:.4g}); per image, DeepFool/exact median "
        f"{ratios['deepfool']['median']:.4f} max {ratios['deepfool']['max']:.4f}, "
        f"FMN-{args.fmn_steps}/exact median {ratios['fmn']['median']:.4f} max "
        f"{ratios['fmn']['max']:.4f} -> {out.resolve()}"
    )
    return 0
