"""``boundaryscope train`` and ``boundaryscope compare``: make a model robust, then show it.

``train --arch A`` trains a zoo architecture from scratch (how the shipped weights were
made); ``train --defense D --model M`` fine-tunes a copy of ``M`` with a defence of thesis
Part III into a run directory that every other command accepts as ``--model DIR``.
``compare A B …`` measures the models on the same test images and writes one HTML page.
"""

from __future__ import annotations

import argparse
import shlex
import time
from collections.abc import Sequence
from pathlib import Path

from boundaryscope.cli_types import nonnegative_float, positive_int

__all__ = ["add_parsers", "run"]


def _epsilons(text: str) -> tuple[float, ...]:
    from boundaryscope.curves import parse_epsilons

    try:
        values = tuple(parse_epsilons(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"budgets must be positive; got {text!r}")
    return values


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds ``train`` and ``compare`` (their model arguments differ from the others')."""
    from boundaryscope.defenses.training import DEFENSES

    train = commands.add_parser(
        "train",
        help="train a zoo architecture, or fine-tune a model with a defence (--defense)",
        description="Without --defense: train --arch from scratch (SGD + momentum) into a "
        ".pt file. With --defense: fine-tune a copy of --model into the run directory --out "
        "(checkpoint every epoch, --resume continues bit-identically). Defences: "
        + "; ".join(f"{k}: {v.summary}" for k, v in DEFENSES.items()),
    )
    train.add_argument("--defense", choices=sorted(DEFENSES), default=None)
    train.add_argument(
        "--model",
        default="zoo:lenet-mnist",
        help="model to defend: zoo:NAME, PATH.pt, run directory or module:factory "
        "(default: %(default)s)",
    )
    train.add_argument(
        "--arch",
        default=None,
        help="architecture to train from scratch (lenet, lenet-smooth, fc500-150-10, "
        "lenet-cifar, nin, resnet18), or of a bare --model weights file",
    )
    train.add_argument("--data", default="mnist5k", help="data spec (train split; default mnist5k)")
    train.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="epochs (default: 15 from scratch, 5 extra with --defense)",
    )
    train.add_argument(
        "--lr",
        type=nonnegative_float,
        default=None,
        help="learning rate (default: 0.05 from scratch; with --defense a "
        "fraction of the base model's: 1/2 for the §3.3 fine-tunings, 1/5 "
        "for pgd and cure)",
    )
    train.add_argument("--momentum", type=nonnegative_float, default=0.9)
    train.add_argument("--weight-decay", type=nonnegative_float, default=5e-4)
    train.add_argument("--batch-size", type=positive_int, default=64)
    train.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    train.add_argument(
        "--schedule",
        choices=["cosine", "constant"],
        default=None,
        help="learning-rate schedule (default: the defence's)",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--eps",
        type=nonnegative_float,
        default=None,
        help="fgsm: step (default: FGSM's 90%% fooling ε); pgd: radius "
        "(default: 0.2 of the box width)",
    )
    train.add_argument("--steps", type=positive_int, default=10, help="pgd: PGD iterations")
    train.add_argument(
        "--alpha",
        type=nonnegative_float,
        default=2.0,
        help="deepfool-alpha: magnification of the DeepFool perturbations",
    )
    train.add_argument("--lam", type=nonnegative_float, default=4.0, help="cure: λ (default 4)")
    train.add_argument(
        "--h",
        type=nonnegative_float,
        default=1.0,
        help="cure: final finite-difference scale, l2 input units (default 1)",
    )
    train.add_argument(
        "--ramp-epochs",
        type=nonnegative_float,
        default=2.0,
        help="cure: epochs over which h grows from 0 (default 2)",
    )
    train.add_argument(
        "--xi", type=nonnegative_float, default=0.3, help="universal: pool radius (l∞)"
    )
    train.add_argument(
        "--train-n",
        type=positive_int,
        default=None,
        help="with --defense: fine-tune on the first N training images only (default: all)",
    )
    train.add_argument(
        "--monitor-n",
        type=positive_int,
        default=500,
        help="test images monitored per epoch (accuracy, ρ_adv)",
    )
    train.add_argument(
        "--monitor-eps",
        type=_epsilons,
        default=(),
        help="l∞ budgets of a per-epoch PGD(20) robust accuracy, e.g. 0.1,0.3",
    )
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    train.add_argument(
        "--out", required=True, help="with --defense: run directory; else the checkpoint path (.pt)"
    )

    compare = commands.add_parser(
        "compare",
        help="measure models side by side (accuracy, ρ_adv, robust accuracy, curvature)",
        description="Measures every model on the same test images and writes one HTML page: "
        "clean accuracy, ρ_adv, robust accuracy under FGSM / l∞ DeepFool / PGD / SPSA, "
        "accuracy vs ε, loss curvature and Theorem 5, loss surfaces, training history. A "
        "single run directory is compared with the model it was trained from.",
    )
    compare.add_argument(
        "models", nargs="+", help="model specs or `train --defense` run directories"
    )
    compare.add_argument("--data", default="mnist5k", help="data spec (test split)")
    compare.add_argument("--arch", default=None, help="architecture of bare weights files")
    compare.add_argument("--profile", choices=["default", "full", "quick"], default="default")
    compare.add_argument(
        "--n", type=positive_int, default=None, help="test images (default: the profile's, 500)"
    )
    compare.add_argument("--device", default=None)
    compare.add_argument("--seed", type=int, default=0)
    compare.add_argument("--out", default="runs/compare", help="output directory")


def _cmd_train(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from boundaryscope.defenses.training import TrainConfig, train_and_save, train_defense

    command = "boundaryscope " + " ".join(shlex.quote(a) for a in argv)
    if args.defense is None:
        if args.arch is None:
            raise ValueError("pass --arch (train from scratch) or --defense (fine-tune --model)")
        config = TrainConfig(
            epochs=args.epochs or 15, lr=args.lr or 0.05, momentum=args.momentum,
            weight_decay=args.weight_decay, batch_size=args.batch_size, seed=args.seed,
            optimizer=args.optimizer, schedule=args.schedule or "cosine",
        )  # fmt: skip
        card = train_and_save(
            args.arch, args.data, config, args.out, command=command, progress=None
        )
        print(f"test accuracy {card['test_accuracy']:.4f}; checkpoint {Path(args.out).resolve()}")
        return 0
    chosen = {
        "epochs": args.epochs, "lr": args.lr, "momentum": args.momentum,
        "weight_decay": args.weight_decay, "batch_size": args.batch_size, "seed": args.seed,
        "optimizer": args.optimizer, "schedule": args.schedule,
    }  # fmt: skip
    start = time.perf_counter()
    run_card = train_defense(
        args.model, args.defense, args.out, data=args.data, arch=args.arch,
        overrides={k: v for k, v in chosen.items() if v is not None}, train_n=args.train_n,
        monitor_n=args.monitor_n, monitor_eps=args.monitor_eps,
        resume=args.resume, device=args.device, command=command, progress=None, eps=args.eps,
        alpha=args.alpha, steps=args.steps, lam=args.lam, h=args.h,
        ramp_epochs=args.ramp_epochs, xi=args.xi, seed=args.seed,
    )  # fmt: skip
    first, last = run_card["history"][0], run_card["history"][-1]
    epochs = run_card["config"]["epochs"]
    print(
        f"{args.defense}: {epochs} epochs in {time.perf_counter() - start:.1f} s; "
        f"monitored test accuracy {first['test_accuracy']:.4f} -> {last['test_accuracy']:.4f}, "
        f"rho_adv {first['rho_adv']:.4f} -> {last['rho_adv']:.4f}; full test accuracy "
        f"{run_card['test_accuracy']:.4f} -> {Path(args.out).resolve()}"
    )
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from boundaryscope.report.comparison import compare_report

    start = time.perf_counter()
    path = compare_report(
        args.models, args.out, data=args.data, arch=args.arch, profile=args.profile, n=args.n,
        device=args.device, seed=args.seed,
    )  # fmt: skip
    print(f"comparison written in {time.perf_counter() - start:.1f} s: {path.resolve()}")
    return 0


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Runs ``train`` or ``compare``."""
    if args.command == "train":
        return _cmd_train(args, argv)
    return _cmd_compare(args)
