"""``boundaryscope`` command line: parses arguments and calls the library, nothing more."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from boundaryscope.cli_types import nonnegative_float, positive_int

__all__ = ["main"]


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="zoo:lenet-mnist",
        help="zoo:NAME, a weights file PATH.pt (with --arch), or "
        "package.module:factory (default: %(default)s)",
    )
    parser.add_argument(
        "--arch",
        default=None,
        help="architecture of a bare weights file (lenet, fc500-150-10, ...)",
    )
    parser.add_argument(
        "--data",
        default="mnist5k",
        help="mnist5k, digits, npz:PATH, folder:DIR, cifar10:DIR or "
        "idx:IMAGES,LABELS (default: %(default)s; test split)",
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def _build_parser() -> argparse.ArgumentParser:
    from boundaryscope import __version__

    parser = argparse.ArgumentParser(
        prog="boundaryscope",
        description="Measure, explain and improve the robustness of image classifiers.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of an error instead of a one-line message",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    report = commands.add_parser("report", help="run every analysis and write an HTML report")
    _add_model_args(report)
    report.add_argument(
        "--n", type=positive_int, default=None, help="test samples to use (default: the profile's)"
    )
    report.add_argument("--out", default="runs/report", help="output directory")
    report.add_argument(
        "--profile",
        default="default",
        choices=["default", "full", "quick"],
        help="default: minutes on a CPU; full: paper-scale settings",
    )
    report.add_argument(
        "--resume",
        action="store_true",
        help="reuse finished sections of an interrupted run in --out",
    )
    report.add_argument(
        "--sections", default=None, help="comma-separated analyses to run (default: all)"
    )

    attack = commands.add_parser("attack", help="run one attack and save per-sample results")
    attack.add_argument(
        "name",
        help="deepfool, fmn (DeepFool refined to a smaller perturbation), fgsm, lbfgs "
        "(minimal perturbations) or a budgeted attack: alg1, alg1-N, alg2, pgd, bim, spsa, "
        "random (with --eps)",
    )
    _add_model_args(attack)
    attack.add_argument(
        "--p",
        default=None,
        help="norm: 1, 2, inf or any real p > 1 (default: 2 for DeepFool, inf for FGSM)",
    )
    attack.add_argument("--n", type=positive_int, default=1000, help="test samples (default: 1000)")
    attack.add_argument("--steps", type=positive_int, default=50, help="DeepFool max iterations")
    attack.add_argument(
        "--candidates", type=positive_int, default=10, help="DeepFool candidate classes"
    )
    attack.add_argument(
        "--overshoot", type=nonnegative_float, default=0.02, help="DeepFool overshoot"
    )
    attack.add_argument(
        "--fmn-steps", type=positive_int, default=30, help="fmn: refinement steps (default: 30)"
    )
    attack.add_argument(
        "--paper-exact",
        action="store_true",
        help="DeepFool exactly as in the paper (no box-aware steps/refinement)",
    )
    attack.add_argument(
        "--eps",
        type=nonnegative_float,
        default=None,
        help="budget of a budgeted attack; FGSM default: the smallest fooling 90%% of the data",
    )
    attack.add_argument("--batch-size", type=positive_int, default=256, help="samples per batch")
    attack.add_argument("--out", default="attack.json", help="output JSON file")

    curves = commands.add_parser(
        "curves", help="fooling ratio vs l_inf budget for several attacks (JSON + figure)"
    )
    _add_model_args(curves)
    curves.add_argument(
        "--attacks",
        default="deepfool-linf,alg1,alg1-10,alg2,fgsm,pgd,random",
        help="comma-separated: deepfool-linf, deepfool-l2, alg1, alg1-N, alg2, fgsm, pgd, "
        "bim, spsa, random (default: %(default)s)",
    )
    curves.add_argument("--eps", default="0:0.3:31", help="start:stop:count or a,b,c")
    curves.add_argument("--n", type=positive_int, default=1000, help="test samples (default: 1000)")
    curves.add_argument("--steps", type=positive_int, default=20, help="iterations of PGD/BIM/SPSA")
    curves.add_argument("--out", default="curves.json", help="output JSON; figure beside it")

    noise = commands.add_parser(
        "noise", help="robustness to random, semi-random or band-limited (DCT) noise"
    )
    _add_model_args(noise)
    noise.add_argument(
        "--regime", choices=["random", "semi-random", "spectral"], default="semi-random"
    )
    noise.add_argument(
        "--m",
        default=None,
        help="comma-separated subspace dimensions (semi-random; default: d/4, "
        "d/16, d/36, d/64, d/100)",
    )
    noise.add_argument("--block", type=positive_int, default=None, help="DCT band size (spectral)")
    noise.add_argument("--n", type=positive_int, default=200, help="test samples (default: 200)")
    noise.add_argument("--steps", type=positive_int, default=200, help="DeepFool iterations")
    noise.add_argument(
        "--delta", type=nonnegative_float, default=0.05, help="δ of Theorem 1's bounds"
    )
    noise.add_argument(
        "--with-box",
        action="store_true",
        help="keep the input box (the theory is stated without it)",
    )
    noise.add_argument("--out", default="noise.json", help="output JSON file")

    universal = commands.add_parser(
        "universal", help="compute (or --eval) a universal perturbation (thesis Alg. 4)"
    )
    _add_model_args(universal)
    universal.add_argument(
        "--xi",
        type=nonnegative_float,
        default=0.3,
        help="radius in input units (0-255 seeds' xi=10 is 10/255 here)",
    )
    universal.add_argument("--p", choices=["inf", "2"], default="inf", help="norm (default: inf)")
    universal.add_argument(
        "--n",
        type=positive_int,
        default=500,
        help="images of X, from the train split (default: 500)",
    )
    universal.add_argument("--variant", choices=["paper", "minibatch"], default="paper")
    universal.add_argument("--max-passes", type=positive_int, default=10)
    universal.add_argument(
        "--delta", type=nonnegative_float, default=0.2, help="stop at fooling rate 1 - delta on X"
    )
    universal.add_argument("--batch-size", type=positive_int, default=32, help="minibatch variant")
    universal.add_argument(
        "--eval",
        default=None,
        metavar="V.pt",
        help="only evaluate a saved perturbation on the test split",
    )
    universal.add_argument(
        "--n-test",
        type=positive_int,
        default=None,
        help="held-out test images for the fooling rate (default: the whole test split)",
    )
    universal.add_argument(
        "--resume",
        action="store_true",
        help="continue from --out/checkpoint.pt (written after every pass; the settings must "
        "match the interrupted run)",
    )
    universal.add_argument("--out", default="runs/universal", help="output directory")

    from boundaryscope import cli_detect, cli_geometry, cli_train, cli_verify

    cli_train.add_parsers(commands)
    cli_geometry.add_parser(commands, _add_model_args)
    cli_detect.add_parser(commands, _add_model_args)
    cli_verify.add_parser(commands, _add_model_args)
    commands.add_parser("models", help="list shipped models and architectures")
    return parser


def _cmd_report(args: argparse.Namespace) -> int:
    from boundaryscope.report.runner import run_report

    start = time.perf_counter()
    path = run_report(
        args.model,
        args.data,
        args.out,
        arch=args.arch,
        n=args.n,
        device=args.device,
        seed=args.seed,
        profile=args.profile,
        resume=args.resume,
        sections=args.sections.split(",") if args.sections else None,
    )
    print(f"report written in {time.perf_counter() - start:.1f} s: {path.resolve()}")
    return 0


def _classifier_and_data(args: argparse.Namespace) -> tuple[Any, Any]:
    """The `Classifier` and test data that the model/data arguments name."""
    from boundaryscope.data import load_dataset

    return _classifier(args), load_dataset(args.data, "test").subset(getattr(args, "n", None))


def _classifier(args: argparse.Namespace) -> Any:
    """The `Classifier` of the ``--model``/``--arch``/``--device`` arguments."""
    import torch

    from boundaryscope.classifier import Classifier, resolve_device
    from boundaryscope.zoo import load_model

    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    loaded = load_model(args.model, arch=args.arch)
    return Classifier(
        loaded.module, bounds=loaded.bounds, preprocessing=loaded.preprocessing, device=device
    )


def _make_attack(args: argparse.Namespace, clf: Any, data: Any, extra: dict[str, Any]) -> Any:
    """The attack the `attack` command names, or ``None`` with a message on stderr."""
    from boundaryscope.attacks import FGSM, FMN, LBFGS, DeepFool, smallest_fooling_epsilon
    from boundaryscope.curves import budget_attack
    from boundaryscope.norms import parse_p

    p = args.p or ("2" if args.name in ("deepfool", "fmn", "lbfgs") else "inf")
    if args.name in ("deepfool", "fmn"):
        make = DeepFool.as_published if args.paper_exact else DeepFool
        deepfool = make(
            p=p,
            steps=args.steps,
            candidates=args.candidates,
            overshoot=args.overshoot,
            batch_size=args.batch_size,
            progress=None,
        )
        if args.name == "deepfool":
            return deepfool
        return FMN(
            p=p, steps=args.fmn_steps, init=deepfool, batch_size=args.batch_size, progress=None
        )
    if args.name == "lbfgs":
        if parse_p(p) != 2:
            raise ValueError(f"attack lbfgs minimises the l2 norm only; got --p {p}.")
        return LBFGS()
    eps = args.eps
    if args.name == "fgsm" and eps is None:
        search = smallest_fooling_epsilon(clf, data.x, data.y, p=p)
        eps, extra["eps_search"] = search.epsilon, asdict(search)
        if not math.isfinite(eps):
            print("FGSM cannot fool 90% of the data within the box; pass --eps.", file=sys.stderr)
            return None
    if eps is None:
        print(f"{args.name} is a budgeted attack: pass --eps.", file=sys.stderr)
        return None
    if args.name == "fgsm":
        return FGSM(eps=eps, p=p, batch_size=args.batch_size)
    return budget_attack(args.name, eps, p=p, steps=args.steps, seed=args.seed)


def _world(args: argparse.Namespace) -> Any:
    """The torchrun world (one process without torchrun); GPUs are assigned per process."""
    from boundaryscope import distributed

    world = distributed.setup()
    gpu = distributed.device(world)
    if gpu is not None and args.device is None:
        args.device = str(gpu)
    return world


def _cmd_attack(args: argparse.Namespace, world: Any) -> int:
    from boundaryscope import distributed
    from boundaryscope._io import dump_json
    from boundaryscope.metrics import RobustnessAccumulator

    clf, data = _classifier_and_data(args)
    extra: dict[str, Any] = {}
    attack = _make_attack(args, clf, data, extra)
    if attack is None:
        return 1
    part = distributed.shard(len(data), world)  # all images for one process
    start = time.perf_counter()
    local = attack(clf, data.x[part], data.y[part])
    local_correct = clf.predict(data.x[part]).cpu() == data.y[part]
    elapsed = distributed.max_over_processes(time.perf_counter() - start, world)
    result = distributed.gather_attack_result(local, world)
    correct = distributed.gather_tensors({"correct": local_correct}, world)["correct"]
    if not world.is_main:
        return 0
    correct = correct.to(result.norms.device)
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
    dump_json(args.out, payload)
    print(
        f"{attack!r} on {len(data)} images in {elapsed:.2f} s: rho_adv {summary['rho_adv']:.4f},"
        f" median norm {summary['median_norm']:.4f}, success {summary['success_rate']:.2%}, "
        f"failures {summary['n_failures']} -> {Path(args.out).resolve()}"
    )
    return 0


def _cmd_curves(args: argparse.Namespace) -> int:
    from boundaryscope._io import dump_json
    from boundaryscope.curves import fooling_curves, parse_epsilons
    from boundaryscope.report import figures

    clf, data = _classifier_and_data(args)
    epsilons = parse_epsilons(args.eps)
    curves = fooling_curves(
        clf, data.x, data.y, args.attacks.split(","), epsilons, steps=args.steps, seed=args.seed
    )
    out = Path(args.out)
    dump_json(out, {"model": args.model, "data": args.data, "n": len(data), **asdict(curves)})
    fig, _ = figures.fooling_curves(curves.epsilons, curves.ratios)
    figures.save(fig, out.with_suffix(".png"))
    for name, values in curves.ratios.items():
        print(f"{name:14s} " + " ".join(f"{v:.2f}" for v in values))
    print(f"curves over eps {epsilons[0]:g}..{epsilons[-1]:g} -> {out.resolve()} (+ .png)")
    return 0


def _cmd_noise(args: argparse.Namespace) -> int:
    from boundaryscope._io import dump_json
    from boundaryscope.noise import semi_random_robustness, spectral_robustness

    clf, data = _classifier_and_data(args)
    d = data.x[0].numel()
    theory = not args.with_box
    payload: dict[str, Any] = {
        "model": args.model,
        "data": args.data,
        "regime": args.regime,
        "d": d,
        "theory_mode": theory,
    }
    if args.regime == "spectral":
        spectral = spectral_robustness(
            clf, data.x, data.y, block=args.block, steps=args.steps, theory_mode=theory
        )
        payload["spectral"] = asdict(spectral)
        for band, m, zeta in zip(spectral.bands, spectral.m, spectral.zeta, strict=True):
            print(f"band {band:3d}  m {m:5d}  zeta {zeta:.3f}")
    else:
        if args.regime == "random":
            ms = [1]
        elif args.m:
            ms = [int(v) for v in args.m.split(",")]
        else:
            ms = [max(2, round(d / f)) for f in (4, 16, 36, 64, 100)]
        regimes = semi_random_robustness(
            clf,
            data.x,
            data.y,
            ms,
            seed=args.seed,
            delta=args.delta,
            steps=args.steps,
            theory_mode=theory,
        )
        payload["regimes"] = [asdict(r) for r in regimes]
        for r in regimes:
            print(
                f"m {r.m:5d}  beta {r.beta_mean:.3f} ± {r.beta_std:.3f}  inside Theorem 1 "
                f"{r.inside_theorem1:.0%}  Corollary 1 {r.inside_corollary1:.0%}  "
                f"failures {r.n_failures}"
            )
    dump_json(args.out, payload)
    print(f"-> {Path(args.out).resolve()}")
    return 0


def _cmd_universal(args: argparse.Namespace, world: Any) -> int:
    import numpy as np
    import torch

    from boundaryscope import distributed
    from boundaryscope._io import atomic_write, dump_json, save_torch
    from boundaryscope.data import load_dataset
    from boundaryscope.report import figures
    from boundaryscope.universal import (
        check_perturbation,
        dominant_label_graph,
        fooling_rate,
        universal_perturbation,
    )

    if world.active and not args.eval:
        raise ValueError(
            "universal under torchrun: only --eval is sharded (computing v is sequential "
            "over the images); run it in one process."
        )
    clf = _classifier(args)
    test = load_dataset(args.data, "test").subset(args.n_test)
    out = Path(args.out)
    if args.eval:
        try:
            v = torch.load(args.eval, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(f"--eval {args.eval}: not a saved tensor ({error}).") from None
        v = check_perturbation(v, test.x, f"--eval {args.eval}")
        part = distributed.shard(len(test), world)
        size = part.stop - part.start
        # The shard's count of changed labels (exact: the rate times its size, rounded); the
        # counts are summed, so the rate equals one process's to the last bit.
        changed = round(fooling_rate(clf, test.x[part], v) * size) if size else 0
        rate = distributed.sum_over_processes(changed, world) / len(test)
        if not world.is_main:
            return 0
        print(f"fooling rate of {args.eval} on {len(test)} test images: {rate:.4f}")
        dump_json(
            out / "eval.json", {"perturbation": args.eval, "fooling_rate": rate, "n": len(test)}
        )
        return 0
    train = load_dataset(args.data, "train").subset(args.n)
    start = time.perf_counter()
    result = universal_perturbation(
        clf,
        train.x,
        args.xi,
        p=args.p,
        delta=args.delta,
        max_passes=args.max_passes,
        variant=args.variant,
        batch_size=args.batch_size,
        seed=args.seed,
        checkpoint=out / "checkpoint.pt",
        resume=_universal_checkpoint(out) if args.resume else None,
    )
    seconds = time.perf_counter() - start
    held_out = fooling_rate(clf, test.x, result.v)
    v = result.v.detach().cpu()
    save_torch(out / "v.pt", v)
    atomic_write(out / "v.npy", lambda handle: np.save(handle, v.numpy()))
    graph = dominant_label_graph(clf, test.x, result.v)
    dump_json(
        out / "universal.json",
        {
            "model": args.model,
            "data": args.data,
            "xi": args.xi,
            "p": result.p,
            "variant": result.variant,
            "n_train": len(train),
            "n_test": len(test),
            "seconds": seconds,
            "fooling_rate_train": result.fooling_rate,
            "fooling_rate_test": held_out,
            "norm": result.norm,
            "passes": result.passes,
            "history": result.history,
            "accepted": result.accepted,
            "rejected": result.rejected,
            "converged": result.converged,
            "dominant_labels": graph,
        },
    )
    scale = float(v.abs().max()) or 1.0
    fig, _ = figures.image_row([0.5 + 0.5 * v.numpy() / scale], [f"v (×{0.5 / scale:.1f})"])
    figures.save(fig, out / "perturbation.png")
    print(
        f"universal perturbation in {seconds:.1f} s ({result.passes} passes): fooling rate "
        f"{result.fooling_rate:.3f} on X, {held_out:.3f} on {len(test)} held-out images, "
        f"||v||_p = {result.norm:.4g} -> {out.resolve()}"
    )
    return 0


def _universal_checkpoint(out: Path) -> Path | None:
    """``out/checkpoint.pt`` to resume from, or ``None`` (with a note) when there is none."""
    path = out / "checkpoint.pt"
    if path.is_file():
        return path
    print(f"universal: no checkpoint in {out}; starting afresh.", file=sys.stderr)
    return None


def _cmd_models() -> int:
    from boundaryscope.zoo import ARCHITECTURES, model_card, shipped_models

    for name in shipped_models():
        card = model_card(name)
        print(f"zoo:{name:24s} {card['arch']:14s} test accuracy {card['test_accuracy']:.4f}")
    print("architectures:", ", ".join(sorted(ARCHITECTURES)))
    return 0


# Commands whose images are sharded over torchrun processes (boundaryscope.distributed).
_SHARDED = frozenset({"attack", "universal"})


def _run_sharded(args: argparse.Namespace) -> int:
    """Runs a sharded command; every process leaves the group together when it succeeds."""
    from boundaryscope import distributed

    world = _world(args)
    run = _cmd_attack if args.command == "attack" else _cmd_universal
    status = run(args, world)
    # Without this, a process that exits while another still talks to it can abort gloo.
    distributed.teardown(world)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``boundaryscope`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _build_parser().parse_args(argv)
    except SystemExit as done:  # --help, or argparse's one-line usage error (status 2)
        return int(done.code or 0)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command in _SHARDED:
            return _run_sharded(args)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError(
                f"{args.command} does not run under torchrun yet; the sharded commands are "
                f"{', '.join(sorted(_SHARDED))} (universal with --eval)."
            )
        if args.command == "report":
            return _cmd_report(args)
        if args.command == "curves":
            return _cmd_curves(args)
        if args.command == "noise":
            return _cmd_noise(args)
        if args.command in ("train", "compare"):
            from boundaryscope import cli_train

            return cli_train.run(args, argv)
        if args.command == "geometry":
            from boundaryscope import cli_geometry

            return cli_geometry.run(args, _classifier_and_data)
        if args.command == "detect":
            from boundaryscope import cli_detect

            return cli_detect.run(args, _classifier_and_data)
        if args.command == "verify":
            from boundaryscope import cli_verify

            return cli_verify.run(args, _classifier_and_data)
        return _cmd_models()
    except KeyboardInterrupt:
        print(f"boundaryscope {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            raise
        print(f"boundaryscope {args.command}: error: {_one_line(error)}", file=sys.stderr)
        if not isinstance(error, ValueError | TypeError | OSError):
            print(
                "(an unexpected error: run again with --debug for the traceback)", file=sys.stderr
            )
        return 2


def _one_line(error: BaseException) -> str:
    """The error's message and notes on one line; its type where the message is terse."""
    text = " ".join(str(error).split())
    notes = " ".join(" ".join(n.split()) for n in getattr(error, "__notes__", []))
    if not isinstance(error, ValueError | TypeError | OSError) or not text:
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return f"{text} {notes}".strip()


if __name__ == "__main__":
    sys.exit(main())
