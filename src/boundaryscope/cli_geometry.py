"""``boundaryscope geometry …``: boundary geometry from the command line (thesis Part II).

``geometry curvature`` runs `boundaryscope.geometry.curvature.curvature_study` and writes
``curvature.json`` plus the figures of the report section into ``--out``. The parser and
the command live here, one module per subcommand; `boundaryscope.cli` registers them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    add_model_args: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Adds ``geometry`` and its subcommands to the top-level parser."""
    geometry = commands.add_parser("geometry", help="geometry of the decision boundary")
    kinds = geometry.add_subparsers(dest="geometry_command", required=True)
    curvature = kinds.add_parser(
        "curvature",
        help="principal curvatures, shared curved directions, S_c, loss curvature (JSON + PNG)",
    )
    add_model_args(curvature)
    curvature.add_argument(
        "--n", type=int, default=100, help="held-out test images (default: %(default)s)"
    )
    curvature.add_argument(
        "--n-train",
        type=int,
        default=100,
        help="training images that define the shared directions and S_c (default: %(default)s)",
    )
    curvature.add_argument(
        "--k", type=int, default=10, help="principal curvatures per end (default: %(default)s)"
    )
    curvature.add_argument(
        "--method",
        choices=["fd", "exact", "auto"],
        default="fd",
        help="Hessian-vector products: finite differences, exact, or exact unless it is "
        "identically zero (default: %(default)s)",
    )
    curvature.add_argument(
        "--h",
        type=float,
        default=None,
        help="finite-difference scale in input units (default: 0.1 x box width)",
    )
    curvature.add_argument(
        "--samples", type=int, default=32, help="random directions per estimate (default: 32)"
    )
    curvature.add_argument(
        "--max-steps", type=int, default=120, help="Lanczos steps per point (default: 120)"
    )
    curvature.add_argument("--out", default="runs/curvature", help="output directory")


def run(args: argparse.Namespace, classifier_and_data: Callable[..., tuple]) -> int:  # type: ignore[type-arg]
    """Runs the chosen ``geometry`` subcommand; returns the exit code."""
    from boundaryscope._io import dump_json
    from boundaryscope.data import load_dataset
    from boundaryscope.geometry.curvature import CurvatureConfig, curvature_study
    from boundaryscope.report.sections.curvature import CurvatureAnalysis

    for name in ("n", "n_train", "k", "samples", "max_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}.")
    clf, test = classifier_and_data(args)
    train = load_dataset(args.data, "train").subset(args.n_train)
    config = CurvatureConfig(
        n_train=args.n_train,
        n_test=args.n,
        k=args.k,
        method=args.method,
        h=args.h,
        samples=args.samples,
        max_steps=args.max_steps,
    )
    result = curvature_study(clf, train.x, test.x, test.y, config, seed=args.seed)
    out = Path(args.out)
    dump_json(out / "curvature.json", result)
    section = CurvatureAnalysis().render(result, out)
    profile = result["profile"]["mean"]
    print(
        f"{result['n_test_points']} boundary points: principal curvatures "
        f"{profile[0]:.3g} … {profile[-1]:.3g}; fooling at l2 {result['fooling']['xi']:.3g}: "
        f"S_c {max(result['fooling']['S_c'].values()):.3f}, "
        f"S_f {max(result['fooling']['S_f'].values()):.3f}, Alg. 4 {result['fooling']['alg4']:.3f}"
    )
    print(f"wrote {out.resolve() / 'curvature.json'} and {len(section.figures)} figures")
    return 0
