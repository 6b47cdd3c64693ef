"""Universal perturbations (thesis ch. 4) on MNIST and Fashion-MNIST, the seed's numbers beside.

For each data set, three shipped models; X = the first 1,000 training images (the seed: 10,000
ImageNet images, 10 per class; here 100 per class), fooling rates on 1,000 held-out test
images:

- Table 4.1 at the seed's regime — l∞ ξ = 4% of the input range (the seed's 10/255) and l2
  ξ = 4% of the mean image norm (the seed's 2,000 on ImageNet images of mean norm ≈ 50,000)
  — and at 5× those radii (20%), where MNIST-size nets start to be fooled;
- Table 4.2: cross-model fooling matrix at each regime (rows: the model v was computed on);
- Fig. 4.5: diversity (largest |cos| between perturbations from 5 seeds; seed: < 0.1);
- Fig. 4.6: held-out fooling rate against |X|;
- per-image transferability of minimal (DeepFool l2) perturbations between the models
  (`boundaryscope.transfer`: share fooled as they are, median t* multiplier);
- §4.5's defence: the first model of each data set fine-tuned 5 epochs on its first 4,000
  training images, each perturbed with probability 0.5 by one of a pool of 10 universal
  perturbations (l∞ ξ = 0.2), judged by a fresh universal perturbation of the tuned
  network (seed, CaffeNet: 93.7% → 76.2%);
- the review's random-image test (§3): DeepFool's minimal l2 norm on uniform random images
  against natural ones, and the share of random images in the most frequent label (the
  dominant labels of §4.3.4).

JSON in benchmarks/results/universal_two_datasets.json.

    python benchmarks/reproduce_universal.py [--n-x 1000] [--n-test 1000] [--passes 5]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time

import torch

from _common import RESULTS, table, write
from boundaryscope import Classifier
from boundaryscope.attacks import DeepFool
from boundaryscope.data import load_dataset
from boundaryscope.defenses import TrainConfig, universal_finetune
from boundaryscope.transfer import transferability
from boundaryscope.universal import (
    diversity,
    fooling_rate,
    fooling_vs_size,
    transfer_matrix,
    universal_perturbation,
)
from boundaryscope.zoo import load_model

DATASETS = {
    "mnist5k": ("lenet-mnist", "fc500-150-10-mnist", "lenet-smooth-mnist"),
    "fashion-mnist": ("lenet-fashion", "resnet8-fashion", "lenet-smooth-fashion"),
}
# Regimes: (p, ξ as a fraction of the range (l∞) or of the mean image norm (l2)).
REGIMES = (("inf", 0.04), ("2", 0.04), ("inf", 0.2), ("2", 0.2))
SIZES = (50, 100, 250, 500, 1000)
SEED = {
    "table_4_1_val": {"l2 (ξ=2000)": [85.6, 87.0, 90.3, 84.5, 82.0, 88.5],
                      "l∞ (ξ=10)": [93.3, 93.7, 78.3, 77.8, 78.9, 84.0]},
    "table_4_2_off_diagonal": {"min": 39.2, "max": 74.0},
    "fig_4_5_diversity": "< 0.1",
    "fig_4_6": "|X| = 500 fools > 30% of the validation set (GoogLeNet, 1,000 classes)",
    "section_4_5": {"fooling_before": 93.7, "fooling_after": 76.2},
}  # fmt: skip


def radius(p: str, fraction: float, x: torch.Tensor) -> float:
    """ξ in input units: a fraction of the [0, 1] range (l∞) or of the mean l2 image norm."""
    return fraction if p == "inf" else fraction * float(x.flatten(1).norm(dim=1).mean())


def universal_rows(models, x, test, passes):
    rows, matrices, vs = [], {}, {}
    for p, fraction in REGIMES:
        xi = radius(p, fraction, x)
        key = f"l{'∞' if p == 'inf' else '2'} {fraction:.0%}"
        vs[key] = {}
        for name, clf in models.items():
            start = time.perf_counter()
            result = universal_perturbation(
                clf, x, xi, p=math.inf if p == "inf" else 2.0, max_passes=passes,
                variant="minibatch", seed=0,
            )  # fmt: skip
            vs[key][name] = result.v
            rows.append({
                "regime": key, "xi": xi, "model": name,
                "fooling X": fooling_rate(clf, x, result.v),
                "fooling test": fooling_rate(clf, test, result.v),
                "passes": result.passes, "seconds": time.perf_counter() - start,
            })  # fmt: skip
        matrices[key] = transfer_matrix(models, vs[key], test)
    return rows, matrices, vs


def off_diagonal(matrix):
    values = [v for s, row in matrix.items() for t, v in row.items() if s != t]
    return {"min": min(values), "max": max(values), "mean": sum(values) / len(values)}


def diversity_row(name, clf, x, xi, p):
    perturbations = torch.stack([
        universal_perturbation(clf, x, xi, p=p, max_passes=2, variant="minibatch", seed=s).v
        for s in range(5)
    ])  # fmt: skip
    cos = diversity(perturbations)
    off = cos[~torch.eye(5, dtype=torch.bool)].abs()
    return {"model": name, "max |cos|": float(off.max()), "mean |cos|": float(off.mean())}


def transfer_rows(models, x):
    rows = []
    for (a, source), (b, target) in itertools.permutations(models.items(), 2):
        summary = transferability(source, target, x, t_max=16.0).to_dict()
        rows.append({"source": a, "target": b, **summary})
    return rows


def defence_row(name, clf, data, test, xi, train_n):
    """§4.5 on `name`: pool of 10 universal perturbations, 5 epochs (the seed's schedule)."""
    train = load_dataset(data, "train").subset(train_n)
    start = time.perf_counter()
    card_lr = load_model(f"zoo:{name}").card.get("config", {}).get("lr", 0.05)
    tuned = universal_finetune(
        clf, train.x, train.y, test.x, test.y, xi=xi, pool_size=10, pool_images=500,
        config=TrainConfig(epochs=5, lr=card_lr / 2, seed=0),
    )  # fmt: skip
    return {
        "model": name, "xi (l∞)": xi,
        "fooling before": tuned.fooling_before, "fooling after": tuned.fooling_after,
        "accuracy before": tuned.accuracy_before, "accuracy after": tuned.accuracy_after,
        "seconds": time.perf_counter() - start,
    }  # fmt: skip


def random_image_row(name, clf, natural, seed):
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(natural.shape, generator=generator)
    attack = DeepFool(p=2)
    norms = {}
    for kind, images in (("natural", natural), ("random", noise)):
        result = attack(clf, images)
        norms[kind] = float(result.norms[result.success].median())
    labels = clf.predict(noise)
    top = torch.bincount(labels, minlength=clf.num_classes).max()
    return {
        "model": name,
        "median ‖r‖ natural": norms["natural"],
        "median ‖r‖ random": norms["random"],
        "random / natural": norms["random"] / norms["natural"],
        "random images in the top label": float(top) / len(labels),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-x", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--n-transfer", type=int, default=300)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--defense-xi", type=float, default=0.2)
    parser.add_argument("--defense-train", type=int, default=4000)
    args = parser.parse_args()
    torch.manual_seed(0)
    payload = {"args": vars(args), "seed": SEED, "datasets": {}}
    for data in args.datasets.split(","):
        names = DATASETS[data]
        start = time.perf_counter()
        x = load_dataset(data, "train").balanced(args.n_x).x
        held_out = load_dataset(data, "test").balanced(args.n_test)
        test = held_out.x
        models = {name: Classifier(load_model(f"zoo:{name}").module) for name in names}
        rows, matrices, _ = universal_rows(models, x, test, args.passes)
        print(table(rows, list(rows[0])))
        for key, matrix in matrices.items():
            print(f"{data} {key} cross-model: {off_diagonal(matrix)}")
        first = names[0]
        xi_l2 = radius("2", 0.2, x)
        sizes = fooling_vs_size(
            models[first], x, test, [s for s in SIZES if s <= len(x)], xi_l2, p=2.0,
            max_passes=args.passes, variant="minibatch",
        )  # fmt: skip
        diversity_rows = [diversity_row(n, c, x, xi_l2, 2.0) for n, c in models.items()]
        transfers = transfer_rows(models, test[: args.n_transfer])
        randoms = [random_image_row(n, c, test[:200], 0) for n, c in models.items()]
        defence = [defence_row(first, models[first], data, held_out, args.defense_xi,
                               args.defense_train)]  # fmt: skip
        for part in (diversity_rows, transfers, randoms, defence):
            print(table(part, list(part[0])))
        payload["datasets"][data] = {
            "models": list(names),
            "mean_image_l2_norm": float(x.flatten(1).norm(dim=1).mean()),
            "table_4_1": rows,
            "table_4_2": matrices,
            "table_4_2_off_diagonal": {k: off_diagonal(m) for k, m in matrices.items()},
            "fig_4_6": {"model": first, "xi_l2": xi_l2, "fooling_test": sizes},
            "fig_4_5_diversity": diversity_rows,
            "transfer_minimal": transfers,
            "random_images": randoms,
            "section_4_5": defence,
            "seconds": time.perf_counter() - start,
        }
        print(f"{data}: {payload['datasets'][data]['seconds']:.0f} s", flush=True)
    previous = RESULTS / "universal_two_datasets.json"
    if set(args.datasets.split(",")) != set(DATASETS) and previous.exists():
        # A rerun of some data sets keeps the others' results.
        kept = json.loads(previous.read_text()).get("datasets", {})
        payload["datasets"] = {**kept, **payload["datasets"]}
    write("universal_two_datasets", payload)


if __name__ == "__main__":
    main()
