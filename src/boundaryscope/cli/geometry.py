"""``boundaryscope geometry …``: boundary geometry from the command line (thesis Part II).

- ``geometry curvature``: `boundaryscope.geometry.curvature.curvature_study` (§7.4, §6.4);
- ``geometry sections``: normal cross-sections and a loss surface
  (`boundaryscope.geometry.sections.sections_study`, Fig. 5.5, 6.7, 8.3);
- ``geometry paths``: Alg. 5 paths, D(p), convexity probe
  (`boundaryscope.geometry.topology.regions_study`, §7.3);
- ``geometry angles``: principal angles between two models' S_c and S_f (Fig. 6.12);
- ``geometry theorems``: Theorems 3–4 predicted vs measured for S_f, S_c and a random
  subspace (`boundaryscope.geometry.universality.universality_study`, §6.3–6.4).

Each writes ``<name>.json`` plus the figures of its report section into ``--out DIR``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from boundaryscope.cli.common import add_model_args, add_out_arg, classifier_and_data, output_dir
from boundaryscope.cli.registry import Command, register_command
from boundaryscope.cli.types import nonnegative_float, positive_int

__all__ = ["GeometryCommand"]


@register_command
class GeometryCommand(Command):
    """``geometry curvature|sections|paths|angles|theorems``."""

    name = "geometry"
    help = "geometry of the decision boundary (curvature, sections, paths, angles, theorems)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The four studies, each with its own flags."""
        _add_arguments(parser)

    def run(self, args: argparse.Namespace, world: Any) -> int:
        """Runs the chosen study."""
        return run(args, classifier_and_data)


def _add_arguments(geometry: argparse.ArgumentParser) -> None:
    kinds = geometry.add_subparsers(dest="geometry_command", required=True)
    curvature = kinds.add_parser(
        "curvature",
        help="principal curvatures, shared curved directions, S_c, loss curvature (JSON + PNG)",
    )
    add_model_args(curvature)
    curvature.add_argument(
        "--n", type=positive_int, default=100, help="held-out test images (default: %(default)s)"
    )
    curvature.add_argument(
        "--n-train",
        type=positive_int,
        default=100,
        help="training images that define the shared directions and S_c (default: %(default)s)",
    )
    curvature.add_argument(
        "--k",
        type=positive_int,
        default=10,
        help="principal curvatures per end (default: %(default)s)",
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
        type=nonnegative_float,
        default=None,
        help="finite-difference scale in input units (default: 0.1 x box width)",
    )
    curvature.add_argument(
        "--samples",
        type=positive_int,
        default=32,
        help="random directions per estimate (default: 32)",
    )
    curvature.add_argument(
        "--max-steps", type=positive_int, default=120, help="Lanczos steps per point (default: 120)"
    )
    add_out_arg(curvature, "curvature", "curvature.json and figures")
    _add_sections_parser(kinds)
    _add_paths_parser(kinds)
    _add_angles_parser(kinds)
    _add_theorems_parser(kinds)


def _add_theorems_parser(kinds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    theorems = kinds.add_parser(
        "theorems",
        help="Theorems 3-4: universal directions and vectors from S_f, S_c, random (JSON + PNG)",
    )
    add_model_args(theorems)
    theorems.add_argument(
        "--n", type=positive_int, default=200, help="held-out test images (default: %(default)s)"
    )
    theorems.add_argument(
        "--n-train",
        type=positive_int,
        default=100,
        help="training images whose boundary points define S_f and S_c (default: %(default)s)",
    )
    theorems.add_argument(
        "--subspaces", default="S_f,S_c,random", help="subspaces compared (default: %(default)s)"
    )
    theorems.add_argument(
        "--m", default="1,5,20", help="subspace dimensions (default: %(default)s)"
    )
    theorems.add_argument(
        "--radii",
        default="1,2,4,8,16",
        help="l2 radii as multiples of the median ||r(x)|| (default: %(default)s)",
    )
    theorems.add_argument("--delta", type=float, default=0.2, help="δ (default: %(default)s)")
    theorems.add_argument(
        "--beta", type=float, default=0.2, help="Theorem 4's β (default: %(default)s)"
    )
    theorems.add_argument(
        "--draws", type=positive_int, default=10, help="random vectors per radius (default: 10)"
    )
    theorems.add_argument(
        "--method",
        choices=["fd", "exact", "auto"],
        default="fd",
        help="Hessian-vector products (default: %(default)s)",
    )
    theorems.add_argument(
        "--h",
        type=nonnegative_float,
        default=None,
        help="finite-difference scale in input units (default: 0.1 x box width)",
    )
    add_out_arg(theorems, "theorems", "theorems.json and one figure per subspace")


def _add_sections_parser(kinds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sections = kinds.add_parser(
        "sections", help="normal cross-sections of the boundary and a loss surface (JSON + PNG)"
    )
    add_model_args(sections)
    sections.add_argument(
        "--n", type=positive_int, default=4, help="images in the gallery (default: %(default)s)"
    )
    sections.add_argument(
        "--directions",
        default="random,universal,curved",
        help="comma-separated tangent directions among random, universal, curved "
        "(default: %(default)s)",
    )
    sections.add_argument(
        "--resolution",
        type=positive_int,
        default=200,
        help="grid points per axis (default: %(default)s)",
    )
    sections.add_argument(
        "--normal-range",
        default="-2:4",
        help="LOW:HIGH along the normal, units of ||r(x)|| (default: %(default)s)",
    )
    sections.add_argument(
        "--tangent-range",
        default="-4:4",
        help="LOW:HIGH along the tangent, units of ||r(x)|| (default: %(default)s)",
    )
    sections.add_argument(
        "--n-train",
        type=positive_int,
        default=50,
        help="training images defining the universal and curved directions (default: 50)",
    )
    sections.add_argument(
        "--dense",
        action="store_true",
        help="evaluate every grid point (default: every 8th per axis, refined where the label "
        "changes: the same label maps at a fraction of the model passes)",
    )
    add_out_arg(sections, "sections", "sections.json and figures")


def _add_paths_parser(kinds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    paths = kinds.add_parser(
        "paths", help="Alg. 5 paths inside classification regions, D(p), convexity (JSON + PNG)"
    )
    add_model_args(paths)
    paths.add_argument(
        "--n",
        type=positive_int,
        default=1000,
        help="test images the pairs come from (default: 1000)",
    )
    paths.add_argument(
        "--pairs", type=positive_int, default=1000, help="pairs per scenario (default: %(default)s)"
    )
    paths.add_argument(
        "--scenarios",
        default="natural,adversarial,noise",
        help="comma-separated scenarios of thesis 7.3 (default: %(default)s)",
    )
    paths.add_argument(
        "--spacing",
        type=nonnegative_float,
        default=1e-4,
        help="sample spacing of the validity check, fraction of ||x1 - x2|| (default: 1e-4)",
    )
    paths.add_argument(
        "--max-depth",
        type=positive_int,
        default=16,
        help="bisection depth limit (default: %(default)s)",
    )
    paths.add_argument(
        "--max-anchors",
        type=positive_int,
        default=None,
        help="anchors per path before it is left undecided; bounds the cost on models with "
        "fragmented regions (default: no limit, as the thesis)",
    )
    paths.add_argument(
        "--trials",
        type=positive_int,
        default=1000,
        help="convex combinations per k (default: 1000)",
    )
    paths.add_argument(
        "--dense",
        action="store_true",
        help="check every sample of a segment (default: bisection where the margin comes "
        "near zero, the same verdicts at a fraction of the model passes)",
    )
    add_out_arg(paths, "paths", "paths.json and figures")


def _add_angles_parser(kinds: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    angles = kinds.add_parser(
        "angles", help="principal angles between the S_c and S_f of two models (JSON + PNG)"
    )
    add_model_args(angles)
    angles.add_argument(
        "--other",
        default="zoo:fc500-150-10-mnist",
        help="the second model, same forms as --model (default: %(default)s)",
    )
    angles.add_argument(
        "--other-arch", default=None, help="architecture of --other's weights (default: none)"
    )
    angles.add_argument(
        "--m", type=positive_int, default=20, help="subspace dimension (default: %(default)s)"
    )
    angles.add_argument(
        "--n-train", type=positive_int, default=100, help="training images (default: %(default)s)"
    )
    add_out_arg(angles, "angles", "angles.json and figures")


def run(args: argparse.Namespace, classifier_and_data: Callable[..., tuple]) -> int:  # type: ignore[type-arg]
    """Runs the chosen ``geometry`` subcommand; returns the exit code."""
    commands = {"sections": _sections, "paths": _paths, "angles": _angles, "theorems": _theorems}
    if args.geometry_command in commands:
        return commands[args.geometry_command](args, classifier_and_data)
    return _curvature(args, classifier_and_data)


def _curvature(args: argparse.Namespace, classifier_and_data: Callable[..., tuple]) -> int:  # type: ignore[type-arg]
    from boundaryscope._io import dump_json
    from boundaryscope.data import load_dataset
    from boundaryscope.geometry.curvature import CurvatureConfig, curvature_study
    from boundaryscope.report.sections.curvature import CurvatureAnalysis

    out = output_dir(args)  # a file name is refused before any work
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


def _range(text: str, flag: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(":"))
    except ValueError:
        raise ValueError(f"{flag} must be LOW:HIGH, e.g. -2:4; got {text!r}.") from None
    if not low < high:
        raise ValueError(f"{flag} must have LOW < HIGH; got {text!r}.")
    return low, high


def _sections(args: argparse.Namespace, classifier_and_data: Callable[..., tuple]) -> int:  # type: ignore[type-arg]
    from boundaryscope._io import dump_json
    from boundaryscope.data import load_dataset
    from boundaryscope.geometry.sections import SectionsConfig, sections_study
    from boundaryscope.report.sections.boundary import BoundaryAnalysis

    out = output_dir(args)  # a file name is refused before any work
    if args.resolution < 2:
        raise ValueError(f"--resolution must be >= 2; got {args.resolution}.")
    config = SectionsConfig(
        n_images=args.n,
        directions=tuple(d.strip() for d in args.directions.split(",") if d.strip()),
        resolution=args.resolution,
        normal_range=_range(args.normal_range, "--normal-range"),
        tangent_range=_range(args.tangent_range, "--tangent-range"),
        n_train=args.n_train,
        coarse=1 if args.dense else SectionsConfig.coarse,
    )
    clf, test = classifier_and_data(args)
    train = load_dataset(args.data, "train").subset(args.n_train)
    result = sections_study(clf, train.x, test.x, config, seed=args.seed, classes=test.classes)
    dump_json(out / "sections.json", result)
    section = BoundaryAnalysis().render(result, out)
    summary = result["summary"]
    print(
        f"{summary['sections']:.0f} sections ({args.resolution}x{args.resolution}): boundary "
        f"along n at {summary['crossing_median']:.4f} ||r(x)|| (median), "
        f"{summary['crossing_within_5pct']:.0%} within 5%; {summary['rows']:,} model rows for "
        f"{summary['points']:,} grid points"
    )
    print(f"wrote {out.resolve() / 'sections.json'} and {len(section.figures)} figures")
    return 0


def _paths(args: argparse.Namespace, classifier_and_data: Callable[..., tuple]) -> int:  # type: ignore[type-arg]
    from boundaryscope._io import dump_json
    from boundaryscope.geometry.topology import SCENARIOS, RegionsConfig, regions_study
    from boundaryscope.report.sections.regions import RegionsAnalysis

    out = output_dir(args)  # a file name is refused before any work
    scenarios = tuple(s.strip() for s in args.scenarios.split(",") if s.strip())
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown or not scenarios:
        raise ValueError(f"--scenarios must be among {', '.join(SCENARIOS)}; got {args.scenarios}.")
    config = RegionsConfig(
        pairs=args.pairs,
        scenarios=scenarios,  # type: ignore[arg-type]
        spacing=args.spacing,
        max_depth=args.max_depth,
        max_anchors=args.max_anchors,
        trials=args.trials,
        refine=not args.dense,
    )
    clf, test = classifier_and_data(args)
    result = regions_study(clf, test.x, config, seed=args.seed, classes=test.classes)
    dump_json(out / "paths.json", result)
    section = RegionsAnalysis().render(result, out)
    stats = result["scenarios"]
    for name, s in stats.items():
        print(
            f"{name}: {s['connected']:.0%} of {s['pairs']} pairs connected "
            f"({s['undecided']} undecided), "
            f"{s['mean_anchors']:.1f} anchors, D(p) - 1 = {s['mean_deviation_minus_one']:.2e}"
        )
    print(f"wrote {out.resolve() / 'paths.json'} and {len(section.figures)} figures")
    return 0


def _angles(args: argparse.Namespace, classifier_and_data: Callable[..., tuple]) -> int:  # type: ignore[type-arg]
    from boundaryscope._io import dump_json
    from boundaryscope.data import load_dataset
    from boundaryscope.geometry.topology import model_subspace_angles
    from boundaryscope.report import figures

    out = output_dir(args)  # a file name is refused before any work
    clf_a, _ = classifier_and_data(argparse.Namespace(**{**vars(args), "n": 1}))
    other = argparse.Namespace(
        **{**vars(args), "model": args.other, "arch": args.other_arch, "n": 1}
    )
    clf_b, _ = classifier_and_data(other)
    train = load_dataset(args.data, "train").subset(args.n_train)
    result = model_subspace_angles(clf_a, clf_b, train.x, args.m, seed=args.seed)
    result["models"] = [args.model, args.other]
    dump_json(out / "angles.json", result)
    series = {name: result[name]["cosines"] for name in ("S_c", "S_f", "random")}
    fig, _ = figures.lines(range(1, args.m + 1), series, "principal angle i", "cos θ_i")
    figures.save(fig, out / "angles.png")
    print(
        f"cos of the first principal angle between {args.model} and {args.other}: "
        + ", ".join(f"{name} {values[0]:.3f}" for name, values in series.items())
    )
    print(f"wrote {out.resolve() / 'angles.json'} and angles.png")
    return 0


def _numbers(text: str, flag: str, kind: type) -> tuple[Any, ...]:
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(
            f"{flag} must be comma-separated numbers, e.g. 1,5,20; got {text!r}."
        ) from None
    if not values or min(values) <= 0:
        raise ValueError(f"{flag} must be positive numbers; got {text!r}.")
    return values


def _theorems(args: argparse.Namespace, classifier_and_data: Callable[..., tuple]) -> int:  # type: ignore[type-arg]
    from boundaryscope._io import dump_json
    from boundaryscope.data import load_dataset
    from boundaryscope.geometry.universality import TheoremsConfig, universality_study
    from boundaryscope.report import figures

    out = output_dir(args)  # a file name is refused before any work
    config = TheoremsConfig(
        subspaces=tuple(s.strip() for s in args.subspaces.split(",") if s.strip()),
        ms=_numbers(args.m, "--m", int),
        radius_factors=_numbers(args.radii, "--radii", float),
        delta=args.delta,
        beta=args.beta,
        draws=args.draws,
        method=args.method,
        h=args.h,
    )
    clf, test = classifier_and_data(args)
    train = load_dataset(args.data, "train").subset(args.n_train)
    result = universality_study(clf, train.x, test.x, config, seed=args.seed)
    result["model"] = args.model
    dump_json(out / "theorems.json", result)
    for name in config.subspaces:
        rows = [row for row in result["rows"] if row["subspace"] == name]
        series = {}
        for row in rows:
            series[f"m={row['m']} ±v measured"] = row["direction_fooling"]
            series[f"m={row['m']} flat model"] = row["flat_predicted"]
        fig, ax = figures.lines(
            config.radius_factors, series, "radius / median ‖r(x)‖", "fooling rate"
        )
        ax.set_xscale("log")
        ax.set_title(f"{name}: universal directions, measured vs Theorem 3's flat model")
        figures.save(fig, out / f"theorems_{name}.png")
    for row in result["rows"]:
        print(
            f"{row['subspace']} m={row['m']}: ||P_S r|| {row['projection_median']:.2f}, "
            f"kappa>0 {row['kappa_positive']:.0%}; ±v fooling "
            + " ".join(f"{v:.2f}" for v in row["direction_fooling"])
            + " (flat model "
            + " ".join(f"{v:.2f}" for v in row["flat_predicted"])
            + ")"
        )
    print(f"wrote {out.resolve() / 'theorems.json'} and {len(config.subspaces)} figures")
    return 0
