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

from boundaryscope.cli.types import positive_int

__all__ = [
    "add_model_args",
    "add_n_arg",
    "add_out_arg",
    "classifier",
    "classifier_and_data",
    "load_sample",
    "output_dir",
    "resolve_data",
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
        "directory, or module:factory / ./file.py:factory (default: %(default)s)",
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
        help="mnist5k, digits, fashion-mnist[:DIR], npz:PATH, folder:DIR, cifar10:DIR or "
        "idx:IMAGES,LABELS; the test split is used (default: the data the model was trained "
        "on, from its card; else mnist5k)",
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")


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
    loaded = load_model(args.model, arch=args.arch)
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
    """The `Classifier` and the ``--n`` test images that the arguments name."""
    return classifier(args), load_sample(args.data, getattr(args, "n", None))
