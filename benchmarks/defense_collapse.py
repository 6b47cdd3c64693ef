"""Why defences destroyed models, and whether they still do (robust-training issue, part 1).

Reproduces the reported collapses with the settings that produced them ("before") and runs
the same fine-tunings with today's defaults ("after"), on three models:

- ``shapes-bn``: a CIFAR-shaped BatchNorm CNN (3×32×32, 10 classes: five shapes on dark or
  light backgrounds, seeded synthetic images), trained on 2,000 images, fine-tuned on 300
  (the reported case: CURE took such a model to chance);
- ``mnist-bn``: the same CNN layout on MNIST (1×28×28), trained on the 4,000 training images
  of mnist5k;
- ``lenet``: the shipped LeNet (fine-tuned on 300 images, as reported, and on all 4,000).

The BatchNorm models stand for a user's model: no card, so no known training rate.
"Before" is what the code did until this change: SGD at 0.05 × the recipe's factor for
a model without a card (the card's rate otherwise), BatchNorm moving averages as training
left them, FGSM fine-tuning at FGSM's 90%-fooling ε, CURE with h = 1 (l2, [0, 1] units),
λ = 4, ramp over 2 epochs, SGD at 0.2 × the base rate for 5 epochs. "After" is
`recipe_config` + `defense_objective` with defaults. Each row: clean test accuracy
before fine-tuning and after, the drop, and seconds. One thread per process.

JSON: benchmarks/results/defense_collapse.json.

Usage: python benchmarks/defense_collapse.py [--models shapes-bn,mnist-bn,lenet]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from _common import RESULTS, machine, table, write
from boundaryscope import Classifier
from boundaryscope.data import load_mnist5k
from boundaryscope.defenses import CURE, FGSMFinetune, Monitor, TrainConfig, fit
from boundaryscope.defenses.catalogue import DEFENSES
from boundaryscope.defenses.recipes import defense_objective, recipe_config
from boundaryscope.zoo import load_model, model_card

DEFENCES = ("standard", "deepfool", "fgsm", "pgd", "trades", "fgsm-rs", "cure")


def shapes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` coloured shapes (3×32×32 in [0, 1]); class = shape (5) × background (2)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:32, :32]
    images = np.zeros((n, 3, 32, 32), np.float32)
    labels = rng.integers(0, 10, n)
    for i, label in enumerate(labels):
        cx, cy = rng.uniform(10, 22, 2)
        r = rng.uniform(6, 9)
        dx, dy = np.abs(cols - cx), np.abs(rows - cy)
        mask = [
            dx**2 + dy**2 < r * r,
            (dx < r) & (dy < r),
            dx + dy < r,
            (dx < r) & (dy < r / 3),
            (dx < r / 3) & (dy < r),
        ][label % 5]
        background = rng.uniform(0, 0.3, 3) if label < 5 else rng.uniform(0.5, 0.8, 3)
        images[i] = background[:, None, None]
        images[i][:, mask] = rng.uniform(0.2, 1, 3)[:, None]
        images[i] += rng.normal(0, 0.03, (3, 32, 32))
    return torch.tensor(images.clip(0, 1)), torch.tensor(labels, dtype=torch.int64)


def bn_cnn(channels: int) -> nn.Module:
    """Three conv-BatchNorm-ReLU blocks, global average pooling, a linear layer."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    ).eval()  # fmt: skip


def models(names: list[str]) -> dict[str, dict[str, Any]]:
    """Each model with its train/test data and card (``{}`` for the user-style BN CNNs)."""
    out: dict[str, dict[str, Any]] = {}
    if "shapes-bn" in names:
        x, y = shapes(2000, 0)
        test_x, test_y = shapes(500, 1)
        base = fit(bn_cnn(3), x, y, TrainConfig(epochs=15), progress=False).model
        out["shapes-bn"] = {"model": base, "x": x, "y": y, "test": (test_x, test_y), "card": {}}
    mnist_train, mnist_test = load_mnist5k("train"), load_mnist5k("test")
    if "mnist-bn" in names:
        base = fit(bn_cnn(1), mnist_train.x, mnist_train.y, TrainConfig(epochs=5), progress=False)
        out["mnist-bn"] = {
            "model": base.model, "x": mnist_train.x, "y": mnist_train.y,
            "test": (mnist_test.x, mnist_test.y), "card": {},
        }  # fmt: skip
    if "lenet" in names:
        out["lenet"] = {
            "model": load_model("zoo:lenet-mnist").module, "x": mnist_train.x,
            "y": mnist_train.y, "test": (mnist_test.x, mnist_test.y),
            "card": model_card("lenet-mnist"),
        }  # fmt: skip
    return out


def before(defence: str, card: dict[str, Any]) -> tuple[TrainConfig, Any]:
    """The settings the code used before this change."""
    recipe = DEFENSES[defence]
    base_lr = float(card.get("config", {}).get("lr", 0.05))
    config = TrainConfig(
        epochs=5, lr=base_lr * recipe.lr_factor, schedule=recipe.schedule, batchnorm="running"
    )
    objective = defense_objective(defence)
    if defence == "fgsm":
        objective = FGSMFinetune(eps_rule="fooling-90")
    if defence == "cure":
        objective = CURE(lam=4.0, h=1.0, ramp_epochs=2.0)
        config = dataclasses.replace(config, lr=base_lr * 0.2, schedule="cosine")
    return config, objective


def run_one(entry: dict[str, Any], n: int, config: TrainConfig, objective: Any) -> dict[str, Any]:
    """Fine-tunes on the first `n` training images; clean test accuracy before and after."""
    test_x, test_y = entry["test"]
    clf = Classifier(entry["model"])
    start = time.perf_counter()
    try:
        result = fit(
            clf, entry["x"][:n], entry["y"][:n], config, objective=objective,
            monitor=Monitor(test_x, test_y, rho_p=None), progress=False,
        )  # fmt: skip
    except (ValueError, FloatingPointError) as error:  # no 90%-fooling ε; a NaN loss
        return {"error": str(error).split(";")[0], "seconds": time.perf_counter() - start}
    records = result.history.records
    kept = [r for r in records if not r.get("rolled_back")]  # a stopped run undoes its last
    return {
        "clean before (%)": 100 * records[0]["test_accuracy"],
        "clean after (%)": 100 * kept[-1]["test_accuracy"],
        "drop (points)": 100 * (records[0]["test_accuracy"] - kept[-1]["test_accuracy"]),
        "epochs": len(kept) - 1,
        "stopped": "budget"
        if records[-1].get("over_budget")
        else ("overfitting" if records[-1].get("overfitting") else ""),
        "optimizer": f"{config.optimizer} {config.lr:g}",
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="shapes-bn,mnist-bn,lenet")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name, entry in models(args.models.split(",")).items():
        sizes = [300] if name == "shapes-bn" else [300, len(entry["y"])]
        for n in sizes:
            for defence in DEFENCES:
                runs = {"before": before(defence, entry["card"])}
                runs["after"] = (
                    recipe_config(DEFENSES[defence], entry["card"]),
                    defense_objective(defence),
                )
                for label, (config, objective) in runs.items():
                    row = {"model": name, "train images": n, "defence": defence, "settings": label}
                    row.update(run_one(entry, n, config, objective))
                    rows.append(row)
                    print(row, flush=True)
    columns = ["model", "train images", "defence", "settings", "optimizer", "clean before (%)",
               "clean after (%)", "drop (points)", "epochs", "stopped", "seconds",
               "error"]  # fmt: skip
    print(table(rows, columns))
    # A run on some models replaces only their rows.
    path = RESULTS / "defense_collapse.json"
    kept = json.loads(path.read_text())["rows"] if path.exists() else []
    rows = [r for r in kept if r["model"] not in {row["model"] for row in rows}] + rows
    write("defense_collapse", {"machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
