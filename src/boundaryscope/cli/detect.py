"""``boundaryscope detect fit|score``: the curvature detector of thesis §7.5 (Alg. 6).

``detect fit`` chooses the threshold on clean training images and saves the detector
(hyperparameters + threshold) as JSON; ``detect score`` reloads it and scores images —
clean test images, or adversarial ones from an ``.npz`` / ``.pt`` file — writing per-image
scores, flags and recovered labels.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boundaryscope.cli.common import (
    add_model_args,
    add_out_arg,
    classifier_and_data,
    load_sample,
    output_dir,
)
from boundaryscope.cli.registry import Command, register_command
from boundaryscope.cli.types import nonnegative_float, positive_int

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["DetectCommand"]


@register_command
class DetectCommand(Command):
    """``detect fit`` and ``detect score``."""

    name = "detect"
    help = "curvature-based detection of perturbed inputs (fit, score)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """``fit`` and ``score`` with their flags."""
        _add_arguments(parser)

    def run(self, args: argparse.Namespace, world: Any) -> int:
        """Fits or scores."""
        return run(args, classifier_and_data)


def _add_arguments(detect: argparse.ArgumentParser) -> None:
    actions = detect.add_subparsers(dest="detect_command", required=True)
    fit = actions.add_parser("fit", help="fit the threshold on clean training images")
    add_model_args(fit)
    fit.add_argument(
        "--n", type=positive_int, default=500, help="clean training images (default: %(default)s)"
    )
    fit.add_argument(
        "--directions",
        type=positive_int,
        default=20,
        help="random directions T (default: %(default)s)",
    )
    fit.add_argument(
        "--candidates",
        type=positive_int,
        default=9,
        help="top-scoring other classes averaged over (default: %(default)s, every other "
        "class on 10-class data as Alg. 6; the cost grows with it)",
    )
    fit.add_argument(
        "--method",
        choices=["fd", "exact", "auto"],
        default="fd",
        help="curvature by finite differences, exact Hessian products, or auto "
        "(default: %(default)s)",
    )
    fit.add_argument(
        "--h",
        type=nonnegative_float,
        default=None,
        help="finite-difference scale (default: 0.1 × the box width)",
    )
    fit.add_argument(
        "--fpr",
        type=nonnegative_float,
        default=0.05,
        help="target false-positive rate (default: 0.05)",
    )
    fit.add_argument(
        "--baseline",
        action="store_true",
        help="fit the confidence baseline (1 - max softmax) instead",
    )
    add_out_arg(fit, "detect", "detector.json")
    score = actions.add_parser("score", help="score images with a saved detector")
    add_model_args(score)
    score.add_argument(
        "detector", help="detector.json written by 'detect fit', or the directory holding it"
    )
    score.add_argument(
        "--inputs",
        default=None,
        help="images to score: .npz with array 'x', a .npy array or a .pt tensor (default: "
        "--data's test split)",
    )
    score.add_argument("--n", type=positive_int, default=100, help="images to score (default: 100)")
    add_out_arg(score, "detect", "scores.json")


def run(args: argparse.Namespace, classifier_and_data: Callable[..., tuple]) -> int:  # type: ignore[type-arg]
    """Runs ``detect fit`` or ``detect score``; returns the exit code."""
    from boundaryscope._io import dump_json
    from boundaryscope.defenses.detection import (
        ConfidenceDetector,
        CurvatureDetector,
        load_detector,
    )

    if args.n < 1:
        raise ValueError(f"--n must be >= 1; got {args.n}.")
    out = output_dir(args)  # a file name is refused before any work
    clf, test = classifier_and_data(args)
    if args.detect_command == "fit":
        train = load_sample(args.data, args.n, split="train")
        detector: CurvatureDetector | ConfidenceDetector = (
            ConfidenceDetector(fpr=args.fpr)
            if args.baseline
            else CurvatureDetector(
                args.directions, args.candidates, method=args.method, h=args.h, fpr=args.fpr
            )
        )
        detector.fit(clf, train.x)
        detector.fitted_on_["data"] = args.data
        detector.fitted_on_["model_spec"] = args.model
        path = detector.save(out / "detector.json")
        print(
            f"{detector!r}: threshold {detector.threshold_:.4g} for a {args.fpr:.0%} "
            f"false-positive rate on {len(train)} clean images; saved {Path(path).resolve()}"
        )
        return 0
    source = Path(args.detector)
    detector = load_detector(source / "detector.json" if source.is_dir() else source)
    x = _inputs(args.inputs) if args.inputs else test.x
    x = x[: args.n]
    detector.check_fitted_on(clf, x)
    scores = detector.score_samples(clf, x)
    flagged = scores > detector.fitted_threshold()
    recovered = detector.recover(clf, x)
    dump_json(
        out / "scores.json",
        {
            "detector": detector.get_params() | {"kind": detector.kind},
            "threshold": detector.threshold_,
            "scores": scores.tolist(),
            "perturbed": flagged.tolist(),
            "predicted": clf.predict(x).tolist(),
            "recovered": recovered.tolist(),
        },
    )
    print(
        f"{int(flagged.sum())} of {len(scores)} images flagged as perturbed; "
        f"wrote {(out / 'scores.json').resolve()}"
    )
    return 0


def _inputs(path: str) -> Tensor:
    """Images from ``.npz`` (array ``x``), ``.npy`` or a ``.pt`` tensor, never unpickled."""
    import zipfile

    import numpy as np
    import torch

    from boundaryscope._io import read_tensor

    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--inputs file {path!r} does not exist.")
    if file.suffix == ".npz":
        try:
            with np.load(file, allow_pickle=False) as arrays:
                if "x" not in arrays:
                    raise ValueError(f"--inputs {path} must hold an array 'x'; got {list(arrays)}.")
                tensor = torch.from_numpy(np.asarray(arrays["x"], dtype=np.float32))
        except (OSError, EOFError, zipfile.BadZipFile) as error:
            raise ValueError(f"--inputs {path} is not a readable .npz file ({error}).") from None
    else:
        tensor = read_tensor(file, "saved tensor (--inputs)")
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"--inputs {path} must hold one tensor; got {type(tensor).__name__}.")
    if tensor.ndim < 2 or tensor.shape[0] == 0:
        raise ValueError(
            f"--inputs {path} must hold a batch of images (N, *shape) with N >= 1; got shape "
            f"{tuple(tensor.shape)}."
        )
    return tensor.float()
