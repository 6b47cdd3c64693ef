"""Reproduces Balda et al. (seed 001): Table I, Fig. 2 and the orderings the seed reports,
plus the L-BFGS column of thesis Table 3.1, on the shipped MNIST models.

    python benchmarks/reproduce_balda.py [--n 1000] [--lbfgs-n 100] [--eps 0:0.3:16]

Differences to expect: the seed's FCNN has hidden layers 150-100 (ours: FC500-150-10, the
thesis' model), both were trained on the full MNIST training set (ours: 4,000 images),
and our perturbations are clipped to [0, 1].
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import RESULTS, table, write
from boundaryscope import Classifier
from boundaryscope.attacks import LBFGS
from boundaryscope.curves import balda_robustness, fooling_curves, parse_epsilons
from boundaryscope.data import load_mnist5k
from boundaryscope.metrics import rho_adv
from boundaryscope.norms import lp_norm
from boundaryscope.report import figures
from boundaryscope.zoo import load_model

ATTACKS = ["deepfool-linf", "alg1-10", "alg1-5", "alg1", "alg2", "fgsm", "pgd", "random"]
SEED_TABLE_I = {
    "fc500-150-10-mnist": {
        "model": "FCNN (seed: 150-100)",
        "test_error": 0.017,
        "rho1": 0.036,
        "rho2": 0.034,
        "eps99": 0.076,
    },
    "lenet-mnist": {
        "model": "LeNet-5",
        "test_error": 0.009,
        "rho1": 0.077,
        "rho2": 0.061,
        "eps99": 0.164,
    },
}
SEED_LBFGS_RHO = {"lenet-mnist": 0.25, "fc500-150-10-mnist": 0.12}


def orderings(curves: dict[str, list[float]], eps: list[float]) -> dict[str, dict]:
    """The seed's claims, checked at every ε of the grid (0 excluded)."""
    r = {k: np.asarray(v) for k, v in curves.items()}
    keep = np.asarray(eps) > 0
    claims = {
        "iterative >= one-step (min of alg1-10, pgd vs max of alg1, alg2, fgsm)": np.minimum(
            r["alg1-10"], r["pgd"]
        )
        >= np.maximum.reduce([r["alg1"], r["alg2"], r["fgsm"]]) - 1e-9,
        "alg1-10 >= deepfool-linf limited to the budget": r["alg1-10"] >= r["deepfool-linf"] - 1e-9,
        "alg1 >= fgsm": r["alg1"] >= r["fgsm"] - 1e-9,
        "|alg2 - fgsm| <= 0.02": np.abs(r["alg2"] - r["fgsm"]) <= 0.02,
        "random <= 0.05": r["random"] <= 0.05,
    }
    return {
        name: {
            "holds_at_share_of_eps": float(ok[keep].mean()),
            "fails_at_eps": [e for e, o, k in zip(eps, ok, keep, strict=True) if k and not o],
        }
        for name, ok in claims.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument(
        "--lbfgs-n", type=int, default=20, help="images for L-BFGS (seconds per image on LeNet)"
    )
    parser.add_argument("--eps", default="0:0.3:16")
    args = parser.parse_args()
    data = load_mnist5k("test")
    epsilons = parse_epsilons(args.eps)
    table_rows, payload = [], {"n": args.n, "lbfgs_n": args.lbfgs_n, "models": {}}
    for name, seed_row in SEED_TABLE_I.items():
        clf = Classifier(load_model(f"zoo:{name}").module)
        x, y = data.x[: args.n], data.y[: args.n]
        correct = clf.predict(x) == y
        measures = balda_robustness(clf, x, y)
        rho2_prob = balda_robustness(clf, x, y, space="probabilities").rho2
        start = time.perf_counter()
        curves = fooling_curves(clf, x, y, ATTACKS, epsilons, steps=20)
        curve_seconds = time.perf_counter() - start
        fig, _ = figures.fooling_curves(curves.epsilons, curves.ratios)
        fig.axes[0].set_title(f"{name}: fooling ratio vs ε (cf. seed 001, Fig. 2)")
        figures.save(fig, RESULTS / f"balda_fig2_{name}.png")
        m = args.lbfgs_n
        start = time.perf_counter()
        lbfgs = LBFGS()(clf, x[:m], y[:m])
        lbfgs_seconds = time.perf_counter() - start
        lbfgs_rho = rho_adv(lbfgs.norms, lp_norm(x[:m], 2), correct[:m])
        ours = {
            "model": name,
            "test_error": 1 - float(correct.float().mean()),
            "rho1": measures.rho1,
            "rho2": measures.rho2,
            "rho2_probabilities": rho2_prob,
            "eps99": measures.eps99,
            "lbfgs_rho_l2": lbfgs_rho,
            "lbfgs_ms_per_image": 1000 * lbfgs_seconds / m,
        }
        table_rows += [
            {"source": "boundaryscope", **ours},
            {"source": "seed 001 / thesis", **seed_row, "lbfgs_rho_l2": SEED_LBFGS_RHO[name]},
        ]
        payload["models"][name] = {
            "table_I": ours,
            "seed": seed_row,
            "curves": curves.__dict__,
            "curve_seconds": curve_seconds,
            "orderings": orderings(curves.ratios, epsilons),
        }
        print(
            f"{name}: curves in {curve_seconds:.1f} s, L-BFGS {1000 * lbfgs_seconds / m:.0f} "
            "ms/image",
            flush=True,
        )
        for claim, outcome in payload["models"][name]["orderings"].items():
            print(f"  {claim}: holds at {outcome['holds_at_share_of_eps']:.0%} of ε")
    print()
    print(
        table(
            table_rows,
            [
                "source",
                "model",
                "test_error",
                "rho1",
                "rho2",
                "rho2_probabilities",
                "eps99",
                "lbfgs_rho_l2",
            ],
        )
    )
    path = write("balda", payload)
    print(f"\nwritten to {path} (+ balda_fig2_*.png)")


if __name__ == "__main__":
    main()
