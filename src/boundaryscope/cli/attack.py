"""``boundaryscope attack NAME``: one attack of the registry on test images, per-image results.

Sharded over torchrun processes (`boundaryscope.distributed`): each process attacks its
slice of the images and the per-image results are gathered in order, so the JSON equals
one process's.
"""

from __future__ import annotations

import argparse
import math
import re
import time
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

__all__ = ["ATTACK_NAMES", "AttackCommand", "attack_name"]

# The attack registry's names (`boundaryscope.attacks.ATTACKS`, checked by a test), plus
# alg1-N. Minimal-perturbation attacks need no budget; the others take --eps.
MINIMAL = ("deepfool", "fmn", "lbfgs", "random-line", "geometric")
BUDGETED = (
    "fgsm",
    "alg1",
    "alg1-N",
    "alg2",
    "pgd",
    "bim",
    "spsa",
    "random",
    "random-direction",
    "single-pixel",
    "apgd-ce",
    "apgd-t",
    "fab-t",
    "square",
)
ATTACK_NAMES = (*MINIMAL, *BUDGETED)


def attack_name(text: str) -> str:
    """An attack of `ATTACK_NAMES` (``alg1-N`` with any N ≥ 1); typos get the choices."""
    if (text in ATTACK_NAMES and text != "alg1-N") or re.fullmatch(r"alg1-[1-9]\d*", text):
        return text
    from boundaryscope.attacks.base import unknown_name

    raise argparse.ArgumentTypeError(str(unknown_name("attack", text, ATTACK_NAMES)))


@register_command
class AttackCommand(Command):
    """Runs one attack; writes ``attack.json`` (summary and per-image norms, labels)."""

    name = "attack"
    help = "run one attack and save per-image results"
    sharded = True

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The attack, its norm, budget and iterations, and where to write."""
        parser.add_argument(
            "name",
            type=attack_name,
            metavar="NAME",
            help=f"minimal perturbation: {', '.join(MINIMAL)}; with a budget --eps: "
            f"{', '.join(BUDGETED)} (fgsm without --eps searches the ε fooling 90%%)",
        )
        add_model_args(parser)
        parser.add_argument(
            "--p",
            default=None,
            help="norm: 1, 2, inf or any real p > 1 (default: 2 for deepfool, fmn, lbfgs "
            "and random-line; inf for the budgeted attacks)",
        )
        add_n_arg(parser, 1000)
        parser.add_argument(
            "--eps",
            type=nonnegative_float,
            default=None,
            help="budget of a budgeted attack in input units; fractions allowed (8/255) "
            "(default: none — required, except by fgsm)",
        )
        parser.add_argument(
            "--steps",
            type=positive_int,
            default=None,
            help="iterations of the named attack (default: its own — deepfool 50, fmn 30, "
            "pgd 40, bim 10, spsa 50; alg1-N takes N from its name)",
        )
        parser.add_argument(
            "--init-steps",
            type=positive_int,
            default=50,
            help="fmn: iterations of the DeepFool run it starts from (default: %(default)s)",
        )
        parser.add_argument(
            "--candidates",
            type=positive_int,
            default=10,
            help="deepfool/fmn: candidate classes (default: %(default)s)",
        )
        parser.add_argument(
            "--overshoot",
            type=nonnegative_float,
            default=0.02,
            help="deepfool/fmn: overshoot (default: %(default)s)",
        )
        parser.add_argument(
            "--transform",
            choices=["rotation", "translation", "similarity"],
            default="rotation",
            help="geometric: the transformation family searched (default: %(default)s)",
        )
        parser.add_argument(
            "--paper-exact",
            action="store_true",
            help="deepfool exactly as published (no projected step, landing or polish)",
        )
        parser.add_argument(
            "--batch-size",
            type=positive_int,
            default=256,
            help="images per batch (default: %(default)s)",
        )
        add_out_arg(parser, "attack", "attack.json")

    def run(self, args: argparse.Namespace, world: Any) -> int:
        """Attacks this process's share of the images; the main process writes the JSON."""
        from boundaryscope import distributed
        from boundaryscope._io import dump_json
        from boundaryscope.metrics import RobustnessAccumulator

        out = output_dir(args) if world.is_main else None
        clf, data = classifier_and_data(args)
        extra: dict[str, Any] = {}
        with distributed.sharding(world):  # each process attacks its share of the images
            attack = _make_attack(args, clf, data, extra)
            start = time.perf_counter()
            result = attack(clf, data.x, data.y)
            elapsed = distributed.max_over_processes(time.perf_counter() - start, world)
        if out is None:
            return 0
        correct = clf.predict(data.x) == data.y.to(result.norms.device)
        accumulator = RobustnessAccumulator(p=result.p)
        accumulator.update(result, data.x.to(result.norms.device), correct)
        summary = {
            **asdict(accumulator.compute()),
            "seconds": elapsed,
            "images_per_second": len(data) / elapsed if elapsed else math.nan,
            "processes": world.size,
        }
        payload = {
            "attack": repr(attack),
            "model": args.model,
            "data": args.data,
            "summary": summary,
            **extra,
            "correct": correct,
            **result.to_dict(include_tensors=False),
        }
        dump_json(out / "attack.json", payload)
        print(
            f"{attack!r} on {len(data)} images in {elapsed:.2f} s: rho_adv "
            f"{summary['rho_adv']:.4f}, median norm {summary['median_norm']:.4f}, success "
            f"{summary['success_rate']:.2%}, failures {summary['n_failures']} -> "
            f"{(out / 'attack.json').resolve()}"
        )
        return 0


def _make_attack(args: argparse.Namespace, clf: Any, data: Any, extra: dict[str, Any]) -> Any:
    """The attack the arguments describe (`extra` receives the FGSM ε search, if any)."""
    from boundaryscope.attacks import (
        FGSM,
        FMN,
        LBFGS,
        DeepFool,
        RandomLineSearch,
        smallest_fooling_epsilon,
    )
    from boundaryscope.curves import budget_attack
    from boundaryscope.norms import parse_p

    p = args.p or ("2" if args.name in MINIMAL else "1" if args.name == "single-pixel" else "inf")
    if args.name == "geometric":
        from boundaryscope.attacks import GeometricAttack

        # Measured by the transformation (details: params, path_length, invariance).
        return GeometricAttack(
            transform=args.transform,
            steps=args.steps or 50,
            candidates=args.candidates,
            overshoot=args.overshoot,
        )
    if args.name in ("lbfgs", "random-line"):
        if parse_p(p) != 2:
            raise ValueError(f"attack {args.name} minimises the l2 norm only; got --p {p}.")
        if args.name == "lbfgs":
            return LBFGS(progress=None)
        return RandomLineSearch(seed=args.seed)
    if args.name in ("deepfool", "fmn"):
        make = DeepFool.as_published if args.paper_exact else DeepFool
        deepfool = make(
            p=p,
            # --steps belongs to the named attack; FMN's starting DeepFool has --init-steps.
            steps=(args.steps or 50) if args.name == "deepfool" else args.init_steps,
            candidates=args.candidates,
            overshoot=args.overshoot,
            batch_size=args.batch_size,
            progress=None,
        )
        if args.name == "deepfool":
            return deepfool
        return FMN(
            p=p, steps=args.steps or 30, init=deepfool, batch_size=args.batch_size, progress=None
        )
    eps = args.eps
    if args.name == "fgsm" and eps is None:
        search = smallest_fooling_epsilon(clf, data.x, data.y, p=p)
        eps, extra["eps_search"] = search.epsilon, asdict(search)
        if not math.isfinite(eps):
            raise ValueError("FGSM cannot fool 90% of the images within the box; pass --eps.")
    if eps is None:
        raise ValueError(f"{args.name} is a budgeted attack: pass --eps (e.g. --eps 8/255).")
    if args.name == "fgsm":
        return FGSM(eps=eps, p=p, batch_size=args.batch_size)
    return budget_attack(args.name, eps, p=p, steps=args.steps, seed=args.seed)
