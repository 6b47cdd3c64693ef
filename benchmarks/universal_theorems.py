"""Theorems 3–4 (thesis §6.3–6.4) and Fig. 6.13 measured on MNIST and Fashion-MNIST models.

For each shipped model, on the data its card names:

- S_f (the top singular vectors of the unit normals ``r(x)/||r(x)||``, Theorem 3) and S_c
  (the top eigenvectors of the average curvature matrix, Theorem 4) from the boundary points
  of the first ``--n-train`` training images (the seed: 100 points), and a random subspace
  as the baseline;
- on ``--n-test`` held-out images, for m = 1, 5, 20: each image's ``||P_S r̂||`` and
  normal-section curvature ``κ`` (the 0.2-quantile over 16 directions of S), the theorems'
  per-image radii (δ = β = 0.2), and at radii 1, 2, 4, 8, 16 × the median ``||r(x)||`` what
  the flat model predicts (exact probability), Theorem 4's guarantee, and what random vectors
  of S fool as directions (``±v``, eq. 6.2) and as vectors (``+v``), 10 draws each;
- Fig. 6.13 in numbers: each model's curvature and fooling along the *other* models' S_c
  (m = 1 and 20) of the same data set, beside its own S_c and a random subspace.

The measured rates use clipped points (the box [0, 1]); the theorems know no box.

JSON: benchmarks/results/universal_theorems.json.

    python benchmarks/universal_theorems.py [--n-train 100] [--n-test 200]
        [--datasets mnist5k,fashion-mnist]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from _common import RESULTS, table, write
from boundaryscope import Classifier
from boundaryscope.data import load_dataset
from boundaryscope.geometry.universality import (
    TheoremsConfig,
    subspace_bases,
    universality_study,
)
from boundaryscope.zoo import load_model

DATASETS = {
    "mnist5k": (
        ("lenet-mnist", "fd"),
        ("fc500-150-10-mnist", "fd"),
        ("lenet-smooth-mnist", "exact"),
    ),
    "fashion-mnist": (
        ("lenet-fashion", "fd"),
        ("resnet8-fashion", "fd"),
        ("lenet-smooth-fashion", "exact"),
    ),
}
MS = (1, 5, 20)
FACTORS = (1, 2, 4, 8, 16)
DELTA = BETA = 0.2
SEED_CLAIMS = {
    "theorem_3": "flat model: universal directions of norm ~ sqrt(m) ||r|| when normals lie in S",
    "theorem_4": "curved model: norm ~ κ^-1/sqrt(m) + κ^-1/2; S_c positively curved (Fig. 6.9a)",
    "fig_6_9b": "random vectors of S_c fool ~85% (CIFAR LeNet), of S_f ~65%",
    "fig_6_13": "S_c of CaffeNet is positively curved for VGG-16 too",
}


def config_for(method: str) -> TheoremsConfig:
    return TheoremsConfig(ms=MS, radius_factors=FACTORS, delta=DELTA, beta=BETA, method=method)


def rows_of(name: str, result: dict) -> list[dict]:
    return [{"model": name, **row} for row in result["rows"]]


def printable(rows):
    out = []
    for r in rows:
        out.append({
            "model": r["model"], "S": r["subspace"], "m": r["m"],
            "‖P_S r̂‖": f"{r['projection_median']:.2f}",
            "ρ₃/‖r‖": f"{r['theorem3_radius_median'] / r['distance_median']:.0f}",
            "κ>0": f"{r['kappa_positive']:.0%}",
            "κ med": f"{r['kappa_median']:.3f}",
            "ρ₄/‖r‖": f"{r['theorem4_radius_median'] / r['distance_median']:.1f}",
            "flat pred": " ".join(f"{v:.2f}" for v in r["flat_predicted"]),
            "±v": " ".join(f"{v:.2f}" for v in r["direction_fooling"]),
            "+v": " ".join(f"{v:.2f}" for v in r["vector_fooling"]),
            "Thm4 pred": " ".join(f"{v:.2f}" for v in r["curved_predicted"]),
            "L_s": f"{r['flat_agreement']:.2f}",
        })  # fmt: skip
    return out


def run_dataset(data, n_train, n_test):
    start = time.perf_counter()
    train = load_dataset(data, "train").balanced(n_train).x
    test = load_dataset(data, "test").balanced(n_test).x
    models = {name: Classifier(load_model(f"zoo:{name}").module) for name, _ in DATASETS[data]}
    methods = dict(DATASETS[data])
    bases = {
        name: subspace_bases(clf, train, config_for(methods[name]), seed=0)
        for name, clf in models.items()
    }
    rows, cross = [], []
    for name, clf in models.items():
        config = config_for(methods[name])
        # Fig. 6.13: this model along every other model's S_c, beside its own subspaces.
        others = {f"S_c of {other}": bases[other]["S_c"] for other in models if other != name}
        result = universality_study(
            clf, train, test, config, seed=0, bases={**bases[name], **others}
        )
        for row in rows_of(name, result):
            (cross if row["subspace"].startswith("S_c of ") else rows).append(row)
        print(f"{data} {name}: {time.perf_counter() - start:.0f} s", flush=True)
    return {
        "models": [n for n, _ in DATASETS[data]],
        "radius_factors": list(FACTORS),
        "theorems": rows,
        "fig_6_13": cross,
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-train", type=int, default=100)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    args = parser.parse_args()
    torch.manual_seed(0)
    payload = {"args": vars(args), "delta": DELTA, "beta": BETA, "seed": SEED_CLAIMS,
               "datasets": {}}  # fmt: skip
    for data in args.datasets.split(","):
        result = run_dataset(data, args.n_train, args.n_test)
        payload["datasets"][data] = result
        for part in ("theorems", "fig_6_13"):
            rows = printable(result[part])
            print(table(rows, list(rows[0])))
        print(f"{data}: {result['seconds']:.0f} s", flush=True)
    previous = RESULTS / "universal_theorems.json"
    if set(args.datasets.split(",")) != set(DATASETS) and previous.exists():
        kept = json.loads(previous.read_text()).get("datasets", {})
        payload["datasets"] = {**kept, **payload["datasets"]}
    write("universal_theorems", payload)


if __name__ == "__main__":
    main()
