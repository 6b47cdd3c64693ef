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
from typing import TYPE_CHECKING

from boundaryscope.cli_types import nonnegative_float, positive_int

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["add_parser", "run"]


def add_parser(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    add_model_args: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Adds ``detect fit`` and ``detect score`` to the top-level parser."""
    detect = commands.add_parser("detect", help="curvature-based detection of perturbed inputs")
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
        default=None,
        help="other classes averaged over (default: all, as Alg. 6)",
    )
    fit.add_argument("--method", choices=["fd", "exact", "auto"], default="fd")
    fit.add_argument("--h", type=nonnegative_float, default=None, help="finite-difference scale")
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
    fit.add_argument("--out", default="detector.json", help="where to save the detector")
    score = actions.add_parser("score", help="score images with a saved detector")
    add_model_args(score)
    score.add_argument("detector", help="JSON written by 'detect fit'")
    score.add_argument(
        "--inputs",
        default=None,
        help="images to score: .npz with array 'x' or a .pt tensor (default: --data's test split)",
    )
    score.add_argument("--n", type=positive_int, default=100, help="images to score (default: 100)")
    score.add_argument("--out", default="scores.json", help="output JSON")


def run(args: argparse.Namespace, classifier_and_data: Callable[..., tuple]) -> int:  # type: ignore[type-arg]
    """Runs ``detect fit`` or ``detect score``; returns the exit code."""
    from boundaryscope._io import dump_json
    from boundaryscope.data import load_dataset
    from boundaryscope.defenses.detection import (
        ConfidenceDetector,
        CurvatureDetector,
        load_detector,
    )

    if args.n < 1:
        raise ValueError(f"--n must be >= 1; got {args.n}.")
    clf, test = classifier_and_data(args)
    if args.detect_command == "fit":
        train = load_dataset(args.data, "train").subset(args.n)
        detector: CurvatureDetector | ConfidenceDetector = (
            ConfidenceDetector(fpr=args.fpr)
            if args.baseline
            else CurvatureDetector(
                args.directions, args.candidates, method=args.method, h=args.h, fpr=args.fpr
            )
        )
        detector.fit(clf, train.x)
        path = detector.save(args.out)
        print(
            f"{detector!r}: threshold {detector.threshold_:.4g} for a {args.fpr:.0%} "
            f"false-positive rate on {len(train)} clean images; saved {Path(path).resolve()}"
        )
        return 0
    detector = load_detector(args.detector)
    x = _inputs(args.inputs) if args.inputs else test.x
    x = x[: args.n]
    scores = detector.score_samples(clf, x)
    flagged = scores > detector.fitted_threshold()
    recovered = detector.recover(clf, x)
    dump_json(
        Path(args.out),
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
        f"wrote {Path(args.out).resolve()}"
    )
    return 0


def _inputs(path: str) -> Tensor:
    """Images from ``.npz`` (array ``x``) or a ``.pt`` tensor, read without unpickling code."""
    import numpy as np
    import torch

    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--inputs file {path!r} does not exist.")
    if file.suffix == ".npz":
        with np.load(file, allow_pickle=False) as arrays:
            if "x" not in arrays:
                raise ValueError(f"--inputs {path} must hold an array 'x'; got {list(arrays)}.")
            return torch.from_numpy(np.asarray(arrays["x"], dtype=np.float32))
    tensor = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"--inputs {path} must hold one tensor; got {type(tensor).__name__}.")
    return tensor.float()
