"""What the subcommands share: model/data flags, the output directory, the classifier.

Every subcommand writes into one output directory, ``--out DIR`` (default
``runs/<command>``), under fixed file names that its help lists — ``--out`` means the same
thing everywhere.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from boundaryscope.cli.types import bounds_pair, memory_size, number_list, positive_int

__all__ = [
    "add_input_args",
    "add_memory_arg",
    "add_model_args",
    "add_n_arg",
    "add_out_arg",
    "apply_memory_budget",
    "classifier",
    "classifier_and_data",
    "input_spec",
    "load_sample",
    "output_dir",
    "resolve_data",
    "resolve_weights",
]

_logger = logging.getLogger("boundaryscope")

# Suffixes of files, not directories: `--out attack.json` is refused with the new usage.
_FILE_SUFFIXES = frozenset({".json", ".pt", ".npz", ".npy", ".png", ".html", ".csv"})


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--arch``, ``--data``, ``--device``, ``--seed``."""
    parser.add_argument(
        "--model",
        default="zoo:lenet-mnist",
        help="zoo:NAME, a weights file PATH.pt (with --arch), a `train --defense` run "
        "directory, module:factory / ./file.py:factory, or an ONNX model PATH.onnx (extra "
        "boundaryscope[onnx]) (default: %(default)s)",
    )
    parser.add_argument(
        "--arch",
        default=None,
        help="architecture of a bare weights file or run directory, with optional "
        "constructor settings: lenet, fc500-150-10, 'lenet:num_classes=10,image_size=32,"
        "in_channels=3'; or your own code ./net.py:factory (a file never names code that "
        "runs: a run trained from your code needs it named here) (default: none)",
    )
    parser.add_argument(
        "--data",
        default=None,
        help="mnist5k, digits, fashion-mnist[:DIR], npz:PATH, folder:DIR[,size=H[xW]][,gray], "
        "cifar10:DIR or "
        "idx:IMAGES,LABELS; the test split is used (default: the data the model was trained "
        "on, from its card; else mnist5k)",
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    add_input_args(parser)
    add_memory_arg(parser)


def add_input_args(parser: argparse.ArgumentParser) -> None:
    """``--weights``, ``--bounds``, ``--mean``, ``--std``: your own model in one line."""
    parser.add_argument(
        "--weights",
        default=None,
        metavar="PATH",
        help="weights (.pt, .pth or .safetensors) for a --model given as your own code "
        "./net.py:factory (default: the factory's own)",
    )
    parser.add_argument(
        "--bounds",
        type=bounds_pair,
        default=None,
        metavar="LO,HI",
        help="input box of the images, e.g. 0,255 (default: the model's card or file, else 0,1)",
    )
    parser.add_argument(
        "--mean",
        type=number_list,
        default=None,
        metavar="M[,M...]",
        help="per-channel mean the model subtracts, in input units, e.g. 0.485,0.456,0.406; "
        "applied inside the wrapper, so norms stay in input units (default: the card's)",
    )
    parser.add_argument(
        "--std",
        type=number_list,
        default=None,
        metavar="S[,S...]",
        help="per-channel standard deviation the model divides by (default: the card's)",
    )


def input_spec(args: argparse.Namespace) -> Any:
    """The `InputSpec` of ``--bounds/--mean/--std``, or ``None`` when none was given."""
    values = {k: getattr(args, k, None) for k in ("bounds", "mean", "std")}
    if all(v is None for v in values.values()):
        return None
    from boundaryscope.zoo import InputSpec

    return InputSpec(**values)


def resolve_weights(args: argparse.Namespace) -> None:
    """``--model ./net.py:Net --weights w.pt`` becomes ``--model w.pt --arch ./net.py:Net``.

    Every command then loads the user's architecture with those weights the one way a
    weights file is loaded (no pickle; the code is the one the user named).

    Raises:
        ValueError: ``--weights`` without a model given as code, or with ``--arch``.
    """
    weights = getattr(args, "weights", None)
    if weights is None:
        return
    from boundaryscope.zoo import is_code_spec

    model = getattr(args, "model", None)
    if not isinstance(model, str) or not is_code_spec(model) or args.arch is not None:
        raise ValueError(
            "--weights goes with --model given as your own code (./net.py:factory or "
            f"package.module:factory) and no --arch; got --model {model!r}"
            f"{'' if args.arch is None else f' --arch {args.arch!r}'}. A weights file of a "
            "zoo architecture is itself the --model, with --arch NAME."
        )
    args.model, args.arch = str(weights), model


def add_memory_arg(parser: argparse.ArgumentParser) -> None:
    """``--memory-budget`` (bytes of large buffers and one pass) and ``--pass-rows``."""
    parser.add_argument(
        "--memory-budget",
        type=memory_size,
        default=None,
        metavar="SIZE",
        help="memory for one model pass and the large buffers, e.g. 2G or 512M; batches are "
        "split to fit it and halved on out-of-memory (default: a quarter of the available "
        "RAM, at most 4G; half the free memory of a GPU)",
    )
    parser.add_argument(
        "--pass-rows",
        type=positive_int,
        default=None,
        metavar="N",
        help="at most N rows (images, grid points, directions) in one model pass, on top of "
        "--memory-budget (default: as many as the budget allows)",
    )


def apply_memory_budget(args: argparse.Namespace) -> None:
    """Makes ``--memory-budget`` and ``--pass-rows`` process-wide (`boundaryscope.memory`)."""
    budget = getattr(args, "memory_budget", None)
    rows = getattr(args, "pass_rows", None)
    if budget is not None or rows is not None:
        from boundaryscope import memory

        if budget is not None:
            memory.set_budget(budget)
        memory.set_pass_rows(rows)


def resolve_data(args: argparse.Namespace) -> None:
    """Fills ``--data`` left unset with the data the (first) model was trained on.

    A Fashion-MNIST zoo model is evaluated on Fashion-MNIST without the user repeating it;
    models without a card (the user's own code, bare weights) keep mnist5k.
    """
    if getattr(args, "data", "") is not None:
        return
    from boundaryscope.zoo import default_data

    models = getattr(args, "models", None) or [getattr(args, "model", None)]
    if getattr(args, "defense", "") is None:  # `train` from scratch: no model to ask
        args.data = "mnist5k"
        return
    args.data = default_data(models[0]) if isinstance(models[0], str) else "mnist5k"


def add_n_arg(parser: argparse.ArgumentParser, default: int) -> None:
    """``--n``: how many test images (`Dataset.balanced`: spread evenly over the classes)."""
    parser.add_argument(
        "--n",
        type=positive_int,
        default=default,
        help="test images, spread evenly over the classes (default: %(default)s)",
    )


def add_out_arg(parser: argparse.ArgumentParser, command: str, files: str) -> None:
    """``--out DIR``: the directory the command writes `files` into."""
    parser.add_argument(
        "--out",
        default=f"runs/{command}",
        metavar="DIR",
        help=f"output directory; written there: {files} (default: %(default)s)",
    )


def output_dir(args: argparse.Namespace) -> Path:
    """``--out`` as a directory; a file name there is refused with the usage.

    The directory is not created here: each file is written atomically, creating its
    directory then, so a run that fails before writing leaves no empty directory.

    Raises:
        ValueError: ``--out`` names a file (``attack.json``): since 0.2 it is a directory.
    """
    out = Path(args.out)
    if out.suffix.lower() in _FILE_SUFFIXES and not out.is_dir():
        raise ValueError(
            f"--out is the output directory of every command; got the file name {args.out!r}. "
            f"Pass a directory, e.g. --out {out.with_suffix('')}."
        )
    return out


def classifier(args: argparse.Namespace) -> Any:
    """The `Classifier` of the ``--model``/``--arch``/``--device`` arguments."""
    import torch

    from boundaryscope.classifier import Classifier, resolve_device
    from boundaryscope.zoo import load_model

    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    loaded = load_model(args.model, arch=args.arch, inputs=input_spec(args))
    return Classifier(
        loaded.module, bounds=loaded.bounds, preprocessing=loaded.preprocessing, device=device
    )


def load_sample(spec: str, n: int | None, split: str = "test") -> Any:
    """`n` images of the split, spread evenly over the classes; warns of missing classes."""
    from boundaryscope.data import load_dataset

    data = load_dataset(spec, split)  # type: ignore[arg-type]
    missing = data.missing_classes()  # of the whole split: a sample of n < k must miss some
    if missing:
        _logger.warning(
            "%s (%s split, %d images) has no image of class %s: per-class numbers for it "
            "are missing and overall numbers do not cover it",
            spec,
            split,
            len(data),
            ", ".join(missing),
        )
    return data.balanced(n)


def classifier_and_data(args: argparse.Namespace) -> tuple[Any, Any]:
    """The `Classifier` and the ``--n`` test images that the arguments name.

    Warns when the model's clean accuracy on them is at chance (`metrics.mismatch_warning`):
    a folder's class order or a normalisation that is not the model's otherwise shows only
    as NaN rows and empty results.
    """
    from boundaryscope.data import told_on_refusal
    from boundaryscope.metrics import mismatch_warning

    clf, data = classifier(args), load_sample(args.data, getattr(args, "n", None))
    if len(data):
        with told_on_refusal(args.data, tuple(data.x.shape[1:])):  # the model's first sight
            correct = clf.predict(data.x) == data.y.to(clf.device)
        warning = mismatch_warning(float(correct.double().mean()), data.y, args.data)
        if warning:
            _logger.warning("%s", warning)
    return clf, data
