"""``boundaryscope train``: train a zoo architecture, or make a model robust.

``train --arch A`` trains a zoo architecture from scratch (how the shipped weights were
made) into ``--out DIR`` (``model.pt`` and its card ``model.json``); ``train --defense D
--model M`` fine-tunes a copy of ``M`` with a defence of thesis Part III into the run
directory ``--out DIR``. Every other command accepts either directory as ``--model DIR``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from boundaryscope.cli.common import add_input_args, add_memory_arg, input_spec, output_dir
from boundaryscope.cli.registry import Command, register_command
from boundaryscope.cli.types import nonnegative_float, positive_int

__all__ = ["TrainCommand"]


def _epsilons(text: str) -> tuple[float, ...]:
    from boundaryscope.curves import parse_epsilons

    try:
        values = tuple(parse_epsilons(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"budgets must be positive; got {text!r}")
    return values


@register_command
class TrainCommand(Command):
    """Trains from scratch (``--arch``) or fine-tunes with a defence (``--defense``)."""

    name = "train"
    help = "train a zoo architecture, or fine-tune a model with a defence (--defense)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Model, data, optimiser and the defences' settings."""
        _add_arguments(parser)

    def run(self, args: argparse.Namespace, world: Any) -> int:
        """Trains and prints the accuracy (and ρ_adv with a defence)."""
        return _cmd_train(args, sys.argv[1:] if args.argv is None else args.argv)


def _add_arguments(train: argparse.ArgumentParser) -> None:
    from boundaryscope.defenses.catalogue import DEFENSES

    train.description = (
        "Without --defense: train --arch from scratch (SGD + momentum) into --out DIR "
        "(model.pt, model.json). With --defense: fine-tune a copy of --model into the run "
        "directory --out (checkpoint every epoch, --resume continues bit-identically). "
        "Defences: " + "; ".join(f"{k}: {v.summary}" for k, v in DEFENSES.items())
    )
    train.add_argument(
        "--defense",
        choices=sorted(DEFENSES),
        default=None,
        help="fine-tune --model with this defence (default: train --arch from scratch)",
    )
    train.add_argument(
        "--model",
        default="zoo:lenet-mnist",
        help="model to defend: zoo:NAME, PATH.pt, run directory or module:factory "
        "(default: %(default)s)",
    )
    train.add_argument(
        "--arch",
        default=None,
        help="architecture to train from scratch (lenet, lenet-smooth, fc500-150-10, mlp, "
        "lenet-cifar, nin, resnet8, resnet18, resnet50), or of a bare --model weights file or "
        "run directory (a zoo name, or your own code ./net.py:factory); constructor settings "
        "after a colon: 'lenet:num_classes=10' (default: none)",
    )
    train.add_argument(
        "--data",
        default=None,
        help="data spec, train split: mnist5k, digits, fashion-mnist[:DIR], npz:PATH, ... "
        "(default: with --defense the data --model was trained on, from its card; else "
        "mnist5k)",
    )
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
        "fraction of the base model's SGD rate from its card: 1/2 for the §3.3 "
        "fine-tunings, 1/5 for pgd, trades, fgsm-rs, n-fgsm and gradalign; Adam at 1e-4 for "
        "a model without a card; cure: Adam 1e-3 to 1e-5, the seed's recipe at 10x its rate)",
    )
    train.add_argument(
        "--momentum", type=nonnegative_float, default=0.9, help="SGD momentum (default: 0.9)"
    )
    train.add_argument(
        "--weight-decay", type=nonnegative_float, default=5e-4, help="weight decay (default: 5e-4)"
    )
    train.add_argument(
        "--batch-size", type=positive_int, default=64, help="images per step (default: 64)"
    )
    train.add_argument(
        "--optimizer",
        choices=["sgd", "adam"],
        default=None,
        help="optimiser (default: sgd from scratch; with --defense the recipe's, see --lr)",
    )
    train.add_argument(
        "--schedule",
        choices=["cosine", "constant"],
        default=None,
        help="learning-rate schedule (default: the defence's)",
    )
    train.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    train.add_argument(
        "--eps",
        type=nonnegative_float,
        default=None,
        help="fgsm: step (default: the median l∞ minimal perturbation of the training "
        "images); pgd, trades, fgsm-rs, n-fgsm, gradalign: l∞ radius (default: 0.2 of the "
        "box width)",
    )
    train.add_argument(
        "--steps",
        type=positive_int,
        default=10,
        help="pgd, trades: inner iterations (default: 10)",
    )
    train.add_argument(
        "--beta",
        type=nonnegative_float,
        default=None,
        help="trades: β (default: TRADES' own, 1, the authors' MNIST setting; 6 on CIFAR-10)",
    )
    train.add_argument(
        "--alpha",
        type=nonnegative_float,
        default=2.0,
        help="deepfool-alpha: magnification of the DeepFool perturbations (default: 2)",
    )
    train.add_argument(
        "--lam",
        type=nonnegative_float,
        default=None,
        help="cure: λ (default 4); gradalign: weight of the alignment term (default 0.2)",
    )
    train.add_argument(
        "--h",
        type=nonnegative_float,
        default=None,
        help="cure: final finite-difference scale, l2 input units (default: the box width)",
    )
    train.add_argument(
        "--ramp-epochs",
        type=nonnegative_float,
        default=None,
        help="cure: epochs over which h grows from 0 (default 5, the seed's); pgd, trades, "
        "fgsm-rs, n-fgsm: epochs over which ε grows from 0 (default 0: none)",
    )
    train.add_argument(
        "--xi",
        type=nonnegative_float,
        default=0.3,
        help="universal: pool radius (l∞, default: 0.3)",
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
        help="test images monitored per epoch (accuracy, ρ_adv) (default: 500)",
    )
    train.add_argument(
        "--monitor-eps",
        type=_epsilons,
        default=(),
        help="l∞ budgets of a per-epoch robust accuracy, e.g. 0.1,0.3: the trusted one "
        "(minimal norms + AutoAttack's cascade, quick sizes) and PGD(20)'s upper bound "
        "(default: none)",
    )
    train.add_argument(
        "--max-accuracy-drop",
        type=nonnegative_float,
        default=None,
        metavar="FRACTION",
        help="with --defense: stop when the monitored clean accuracy falls more than this "
        "below the model's own, keeping the epoch before (default: 0.03; 1 disables it)",
    )
    train.add_argument(
        "--monitor-curvature",
        type=positive_int,
        default=None,
        metavar="N",
        help="track the loss curvature (top Hessian eigenvalue, its ratio to the gradient "
        "norm, alignment; thesis Fig. 8.10) on N monitored images per epoch (default: off)",
    )
    train.add_argument(
        "--monitor-fgsm",
        action="store_true",
        help="track FGSM's robustness estimate beside DeepFool's ρ_adv (thesis Fig. 3.9)",
    )
    train.add_argument(
        "--resume", action="store_true", help="with --defense: continue the run in --out"
    )
    train.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    add_input_args(train)
    add_memory_arg(train)
    train.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output directory: model.pt and model.json from scratch; with --defense the run "
        "directory (model.pt, train.json, checkpoints)",
    )
    train.set_defaults(argv=None)


def _cmd_train(args: argparse.Namespace, argv: list[str]) -> int:
    from boundaryscope.defenses.recipes import train_and_save, train_defense
    from boundaryscope.defenses.training import TrainConfig

    command = "boundaryscope " + " ".join(shlex.quote(a) for a in argv)
    if args.defense is None:
        if args.arch is None:
            raise ValueError("pass --arch (train from scratch) or --defense (fine-tune --model)")
        config = TrainConfig(
            epochs=args.epochs or 15, lr=args.lr or 0.05, momentum=args.momentum,
            weight_decay=args.weight_decay, batch_size=args.batch_size, seed=args.seed,
            optimizer=args.optimizer or "sgd", schedule=args.schedule or "cosine",
        )  # fmt: skip
        weights = output_dir(args) / "model.pt"
        card = train_and_save(args.arch, args.data, config, weights, command=command, progress=None)
        print(f"test accuracy {card['test_accuracy']:.4f}; checkpoint {weights.resolve()}")
        return _chance_verdict(card)
    chosen = {
        "epochs": args.epochs, "lr": args.lr, "momentum": args.momentum,
        "weight_decay": args.weight_decay, "batch_size": args.batch_size, "seed": args.seed,
        "optimizer": args.optimizer, "schedule": args.schedule,
        "max_accuracy_drop": args.max_accuracy_drop,
    }  # fmt: skip
    start = time.perf_counter()
    run_card = train_defense(
        args.model, args.defense, output_dir(args), data=args.data, arch=args.arch,
        inputs=input_spec(args),
        overrides={k: v for k, v in chosen.items() if v is not None}, train_n=args.train_n,
        monitor_n=args.monitor_n, monitor_eps=args.monitor_eps,
        monitor_curvature_n=args.monitor_curvature or 0, monitor_fgsm=args.monitor_fgsm,
        resume=args.resume, device=args.device, command=command, progress=None, eps=args.eps,
        alpha=args.alpha, steps=args.steps, beta=args.beta, lam=args.lam, h=args.h,
        ramp_epochs=args.ramp_epochs, xi=args.xi, seed=args.seed,
        on_epoch_end=None if sys.stderr.isatty() else _epoch_line(args.defense),
    )  # fmt: skip
    first, last = run_card["history"][0], run_card["history"][-1]
    epochs = run_card["config"]["epochs"]
    print(
        f"{args.defense}: {epochs} epochs in {time.perf_counter() - start:.1f} s; "
        f"monitored test accuracy {first['test_accuracy']:.4f} -> {last['test_accuracy']:.4f}, "
        f"rho_adv {first['rho_adv']:.4f} -> {last['rho_adv']:.4f}; full test accuracy "
        f"{run_card['test_accuracy']:.4f} -> {Path(args.out).resolve()}"
    )
    watch = run_card["watch"]
    if watch.get("collapsed_epochs"):
        print(
            f"WARNING: the held-out accuracy collapsed at epoch(s) {watch['collapsed_epochs']}; "
            f"the best epoch ({watch['best_epoch']}, {watch['best_test_accuracy']:.4f}) is "
            f"kept in {(Path(args.out) / 'best.pt').resolve()} (usable as --model).",
            file=sys.stderr,
        )
    for record in run_card["history"]:
        if record.get("rolled_back"):
            reason = (
                "catastrophic overfitting (PGD accuracy on the check batch collapsed)"
                if record.get("overfitting")
                else f"held-out accuracy more than {run_card['config']['max_accuracy_drop']:.0%} "
                "below the model's own (--max-accuracy-drop)"
            )
            print(
                f"WARNING: {reason} at epoch {int(record['epoch'])}; training stopped there "
                "and kept the weights of the epoch before.",
                file=sys.stderr,
            )
    return _chance_verdict(run_card)


EXIT_AT_CHANCE = 3


def _epoch_line(defense: str) -> Callable[[int, dict[str, float]], None]:
    """A line per epoch on stderr, for runs whose output is piped (no progress bar there)."""
    start = time.perf_counter()

    def report(epoch: int, record: dict[str, float]) -> None:
        shown = ("loss", "test_accuracy", "rho_adv", "rho_fgsm", "loss_curvature_relative",
                 "check_pgd_accuracy")  # fmt: skip
        numbers = ", ".join(f"{k} {record[k]:.4g}" for k in shown if k in record)
        elapsed = time.perf_counter() - start
        print(f"{defense}: epoch {epoch} done ({numbers}; {elapsed:.0f} s)", file=sys.stderr,
              flush=True)  # fmt: skip

    return report


def _chance_verdict(card: dict[str, Any]) -> int:
    """Exit status of a training run: `EXIT_AT_CHANCE` when the final model is at chance."""
    watch = card["watch"]
    if not watch["at_chance"]:
        return 0
    print(
        f"error: the trained model is at chance level (test accuracy {card['test_accuracy']:.4f}"
        f", a constant classifier scores {watch['chance_accuracy']:.4f}); it was written, but "
        "it is not a usable model: lower --lr or the defence's strength.",
        file=sys.stderr,
    )
    return EXIT_AT_CHANCE
