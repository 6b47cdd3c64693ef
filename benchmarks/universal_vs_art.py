"""Universal perturbations: boundaryscope (paper and mini-batch variants) against ART's
`UniversalPerturbation(attacker="deepfool")`, side by side in one process.

Same model (shipped LeNet), same 500 training images as X, same ξ, p, δ = 0.2 and pass
limit, same 1,000 held-out test images. ART's inner DeepFool keeps its own defaults
(batch_size=1, 100 iterations, overshoot 1e-6) as a user calling it with
`attacker="deepfool"` gets them (research/peers.md §2.8); only its progress bars are off.
boundaryscope keeps the best v over the passes (default `keep_best=True`).

    python benchmarks/universal_vs_art.py [--n 500] [--passes 5]
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
import torch
from torch import nn

from _common import art_classifier, table, write
from boundaryscope import Classifier
from boundaryscope.data import load_mnist5k
from boundaryscope.universal import fooling_rate, universal_perturbation
from boundaryscope.zoo import load_model

warnings.filterwarnings("ignore")
# Radii that give a meaningful fooling rate on MNIST (about half the held-out images).
SETTINGS = [("linf", math.inf, 0.5), ("l2", 2.0, 8.0)]


def run_art(model: nn.Module, x: torch.Tensor, xi: float, p: float, passes: int):
    from art.attacks.evasion import UniversalPerturbation

    classifier = art_classifier(model, x.shape[1:])
    attack = UniversalPerturbation(
        classifier,
        attacker="deepfool",
        attacker_params={"verbose": False},  # only silences its per-image progress bars
        delta=0.2,
        max_iter=passes,
        eps=xi,
        norm=np.inf if math.isinf(p) else 2,
        batch_size=32,
        verbose=False,
    )
    start = time.perf_counter()
    attack.generate(x.numpy())
    seconds = time.perf_counter() - start
    return torch.from_numpy(attack.noise[0]).float(), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    model = load_model("zoo:lenet-mnist").module.eval()
    clf = Classifier(model)
    x = load_mnist5k("train").x[: args.n]
    held_out = load_mnist5k("test").x
    rows = []
    for name, p, xi in SETTINGS:
        for tool in ("boundaryscope (paper)", "boundaryscope (minibatch)", "art"):
            if tool == "art":
                v, seconds = run_art(model, x, xi, p, args.passes)
            else:
                variant = "paper" if "paper" in tool else "minibatch"
                start = time.perf_counter()
                result = universal_perturbation(
                    clf, x, xi, p=p, delta=0.2, max_passes=args.passes, variant=variant, seed=0
                )
                seconds = time.perf_counter() - start
                v = result.v
            norm = float(v.flatten().norm(p=p))
            row = {
                "setting": f"{name}, xi={xi}",
                "tool": tool,
                "seconds": seconds,
                "fooling_X": fooling_rate(clf, x, v),
                "fooling_held_out": fooling_rate(clf, held_out, v),
                "norm": norm,
            }
            rows.append(row)
            print(
                f"{row['setting']:14s} {tool:26s} {seconds:8.1f} s  X {row['fooling_X']:.3f}  "
                f"held-out {row['fooling_held_out']:.3f}  ||v|| {norm:.3f}",
                flush=True,
            )
        art = rows[-1]["seconds"]
        for row in rows[-3:]:
            row["art_time_over_ours"] = art / row["seconds"]
    print()
    print(
        table(
            rows,
            [
                "setting",
                "tool",
                "seconds",
                "art_time_over_ours",
                "fooling_X",
                "fooling_held_out",
                "norm",
            ],
        )
    )
    path = write("universal_vs_art", {"n": args.n, "passes": args.passes, "rows": rows})
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
