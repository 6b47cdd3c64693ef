"""Making the shipped MNIST models robust: thesis §3.3 (Table 3.3, Fig. 3.6–3.7) and §8.2–8.5.

(a) Adversarial fine-tuning (§3.3): 5 extra epochs at half the shipped learning rate
(0.025, constant, SGD + momentum) on a training set perturbed once before fine-tuning —
DeepFool examples (α = 1), DeepFool perturbations magnified by α = 2, 3, FGSM examples at
FGSM's own 90% fooling ε — and 5 extra epochs on clean data (the baseline). ρ_adv (DeepFool
l2, mean ‖r‖/‖x‖ over correctly classified images) and test error on all 1,000 test
images after every extra epoch. Seed: ρ_adv +50% after one DeepFool epoch on MNIST, FGSM
fine-tuning lowers it and raises the error (Table 3.3: LeNet 0.8% DeepFool, 4.4% FGSM, 1%
baseline).

(b) The shipped LeNet fine-tuned by each robust-training method users compare, ranked by
the trusted evaluator (`boundaryscope.evaluation`, `fast` profile: l∞ DeepFool minimal
norms, then APGD-CE → APGD-T → FAB-T → Square on the survivors) at ε = 0.1, 0.2, 0.3:
PGD-AT (10 steps, ε = 0.2; Madry et al.'s 0.3 collapses the LeNet to a constant classifier
when fine-tuned, measured), TRADES (β = 1, 10 steps, ε = 0.2) and FGSM-RS (ε = 0.2, step
1.25 ε, catastrophic-overfitting check) with their recipe's defaults (SGD at 1/5 of the
shipped rate, cosine, 5 epochs), CURE as it was (λ = 4, h = 1, ramp 2 epochs, SGD 0.01, 5
epochs) and at the seed's recipe (Adam, 20 epochs, h ramped over 5; at 10× its rate,
1e-3 → 1e-5). Then
`compare_models` on the first ``--n`` test images: clean accuracy, the trusted robust
accuracy, the weaker FGSM / l∞ DeepFool / PGD(20) numbers kept as upper bounds, SPSA on
100 images as the gradient-masking check, loss curvature (50 images) with alignment and
Theorem 5, and the training cost (backward passes per image per epoch, the overfitting
check included, and seconds per epoch, measured in this run).

Madry et al.'s ε = 0.3 (session 15–18): PGD-AT, TRADES and FGSM-RS with the radius ramped
over 3 of 5 epochs (`*-0.3-ramp`) and over 10 of 30 (`*-0.3-long`, N-FGSM beside them),
PGD-AT over 20 of 60 (`pgd-0.3-60`); their trusted columns come from `--trusted-only`, and
`--table` prints every part-(b) row in one ranking (same images, evaluator and seed).

Run directories are kept in benchmarks/results/robust_training/ (model.pt and train.json
are committed, so `boundaryscope compare zoo:lenet-mnist
benchmarks/results/robust_training/lenet-cure` works without retraining; a run whose
model.pt exists is not retrained unless --retrain). JSON: benchmarks/results/
robust_training.json.

Part (a) also runs on Fashion-MNIST (`--models lenet-fashion`, issue 27: its whole 60,000-
image training split unless --train-n) and records FGSM's robustness estimate beside ρ_adv
every epoch, drawn as Fig. 3.9 (robust_training_fig3_9_<model>.png).

(fashion) Table 8.2's pattern on Fashion-MNIST: the Fashion LeNet, CURE at the seed's recipe
and PGD-AT at ε = 0.1, trained on all 60,000 training images, assessed as in (b) at ε = 0.05,
0.1, 0.2 (loss curvature and alignment before and after included). JSON key robust_fashion.

(fig8_10) Fig. 8.10: the LeNet fine-tuned with CURE (seed recipe), the loss curvature, ρ_adv
and the trusted robust accuracy recorded after every epoch (robust_training_fig8_10_lenet.png,
JSON key fig_8_10).

Usage: python benchmarks/robust_training.py [--part a|b|both|fashion|fig8_10] [--retrain]
       [--models lenet,lenet-fashion] [--train-n N] [--trusted-only gradalign,fgsm-rs]
       [--table]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from _common import RESULTS, table, write
from boundaryscope import Classifier
from boundaryscope.data import load_dataset, load_mnist5k
from boundaryscope.defenses import FGSMFinetune
from boundaryscope.defenses.assessment import TRUSTED, AssessmentConfig, compare_models
from boundaryscope.defenses.recipes import train_defense
from boundaryscope.defenses.training import TrainConfig
from boundaryscope.report import figures
from boundaryscope.zoo import default_data, load_model

RUNS = RESULTS / "robust_training"
MODELS = {
    "lenet": "zoo:lenet-mnist",
    "fc": "zoo:fc500-150-10-mnist",
    "lenet-fashion": "zoo:lenet-fashion",  # issue 27: the same protocol on Fashion-MNIST
}
FINETUNE = {  # name → (defence, options); §3.3's protocol
    "standard": ("standard", {}),
    "deepfool": ("deepfool", {}),
    "deepfool-alpha2": ("deepfool-alpha", {"alpha": 2.0}),
    "deepfool-alpha3": ("deepfool-alpha", {"alpha": 3.0}),
    "fgsm": (FGSMFinetune(eps_rule="fooling-90"), {}),  # the seed's protocol (Table 3.1's ε)
    "fgsm-minimal": ("fgsm", {}),  # today's default ε: the median l∞ minimal perturbation
}
SGD_5_EPOCHS = TrainConfig(epochs=5, lr=0.01, schedule="cosine")
# Issue 28's ε = 0.3 target: the same recipe run six times longer (ramp over 10 of 30
# epochs), to see how much of the gap to the literature's small-CNN numbers is training
# length rather than the 4,000-image training set.
SGD_30_EPOCHS = TrainConfig(epochs=30, lr=0.01, schedule="cosine")
SGD_60_EPOCHS = TrainConfig(epochs=60, lr=0.01, schedule="cosine")
ROBUST: dict[str, tuple[str, dict[str, Any], TrainConfig | None]] = {
    # name → (defence, options, config; None: the recipe's default for the shipped LeNet)
    "pgd": ("pgd", {"eps": 0.2, "steps": 10}, SGD_5_EPOCHS),
    # Madry et al.'s ε = 0.3, reached by a linear ramp over 3 of the 5 epochs (issue 28:
    # straight at 0.3 the fine-tuned LeNet collapses to a constant classifier).
    "pgd-0.3-ramp": ("pgd", {"eps": 0.3, "steps": 10, "ramp_epochs": 3.0}, SGD_5_EPOCHS),
    "trades": ("trades", {"eps": 0.2}, None),
    # TRADES at 0.3 with the same ramp as PGD-AT's (session 17).
    "trades-0.3-ramp": ("trades", {"eps": 0.3, "ramp_epochs": 3.0}, SGD_5_EPOCHS),
    # FGSM-RS with the same ramp and schedule: its cost against PGD-AT's at ε = 0.3.
    "fgsm-rs-0.3-ramp": ("fgsm-rs", {"eps": 0.3, "ramp_epochs": 3.0}, SGD_5_EPOCHS),
    "pgd-0.3-long": ("pgd", {"eps": 0.3, "steps": 10, "ramp_epochs": 10.0}, SGD_30_EPOCHS),
    "trades-0.3-long": ("trades", {"eps": 0.3, "ramp_epochs": 10.0}, SGD_30_EPOCHS),
    "fgsm-rs-0.3-long": ("fgsm-rs", {"eps": 0.3, "ramp_epochs": 10.0}, SGD_30_EPOCHS),
    # N-FGSM (session 18): FGSM-RS's cost, noise 2ε and no projection, same schedule.
    "n-fgsm-0.3-long": ("n-fgsm", {"eps": 0.3, "ramp_epochs": 10.0}, SGD_30_EPOCHS),
    # Twice as long again: does robustness at 0.3 keep growing with training on 4,000 images?
    "pgd-0.3-60": ("pgd", {"eps": 0.3, "steps": 10, "ramp_epochs": 20.0}, SGD_60_EPOCHS),
    "fgsm-rs": ("fgsm-rs", {"eps": 0.2}, None),
    "gradalign": ("gradalign", {"eps": 0.2}, None),
    "cure": ("cure", {"lam": 4.0, "h": 1.0, "ramp_epochs": 2.0}, SGD_5_EPOCHS),
    "cure-seed": ("cure", {}, None),
}
# Table 8.2's three rows on Fashion-MNIST: CURE at the seed's recipe, PGD-AT at Fashion's ε.
FASHION_ROBUST: dict[str, tuple[str, dict[str, Any], TrainConfig | None]] = {
    "pgd": ("pgd", {"eps": 0.1, "steps": 10}, SGD_5_EPOCHS),
    "cure-seed": ("cure", {}, None),
}


def run(
    model: str,
    tag: str,
    defense: str | Any,
    options: dict[str, Any],
    config: TrainConfig | None,
    retrain: bool,
    **settings: Any,
) -> dict[str, Any]:
    """Trains (or reads back) one run directory; returns its card.

    `settings` go to `train_defense` (data, train_n, monitor_fgsm, …).
    """
    directory = RUNS / tag
    if (directory / "model.pt").exists() and (directory / "train.json").exists() and not retrain:
        card: dict[str, Any] = json.loads((directory / "train.json").read_text())
        print(f"{tag}: cached ({directory})")
        return card
    if retrain and directory.exists():
        for name in ("checkpoint.pt", "prepared.pt", "model.pt", "train.json"):
            (directory / name).unlink(missing_ok=True)
    start = time.perf_counter()
    card = train_defense(
        model,
        defense,
        directory,
        config=config,
        progress=False,
        **{"monitor_n": 1000, **settings},
        **options,
    )
    print(f"{tag}: trained in {time.perf_counter() - start:.1f} s")
    return card


def part_a(models: list[str], retrain: bool, train_n: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in models:
        model = MODELS[key]
        base_lr = float(load_model(model).card["config"]["lr"])
        config = TrainConfig(epochs=5, lr=base_lr / 2, schedule="constant")
        data = default_data(model)
        rows, series_rho, series_err, series_fgsm = [], {}, {}, {}
        for name, (defense, options) in FINETUNE.items():
            card = run(
                model, f"{key}-{name}", defense, options, config, retrain,
                data=data, train_n=train_n, monitor_fgsm=True,
            )  # fmt: skip
            history = card["history"]
            rho = [r["rho_adv"] for r in history]
            error = [1 - r["test_accuracy"] for r in history]
            series_rho[name] = [v / rho[0] for v in rho]
            series_err[name] = error
            fgsm = [r.get("rho_fgsm") for r in history]
            if None not in fgsm:  # runs cached from before the Monitor recorded it lack it
                series_fgsm[name] = [v / fgsm[0] for v in fgsm]
            rows.append(
                {
                    "model": key,
                    "fine-tuning": name,
                    "rho_adv before": rho[0],
                    "rho_adv +1 epoch": rho[1],
                    "gain +1 epoch (%)": 100 * (rho[1] / rho[0] - 1),
                    "rho_adv +5 epochs": rho[-1],
                    "gain +5 (%)": 100 * (rho[-1] / rho[0] - 1),
                    "test error before (%)": 100 * error[0],
                    "test error +5 (%)": 100 * error[-1],
                    "perturbed share": card["preparation"].get("perturbed_share", 0.0),
                    "median l2 of examples": card["preparation"].get("median_l2", 0.0),
                    "preparation s": card["preparation"].get("seconds", 0.0),
                    "s/epoch": sum(r["seconds"] for r in history[1:]) / (len(history) - 1),
                    "rho_fgsm gain +1 (%)": (
                        100 * (fgsm[1] / fgsm[0] - 1) if None not in fgsm else None
                    ),
                    "rho_fgsm gain +5 (%)": (
                        100 * (fgsm[-1] / fgsm[0] - 1) if None not in fgsm else None
                    ),
                    "data": data,
                    "train images": card["train_size"],
                }
            )
        fig, _ = figures.lines(range(6), series_rho, "extra epoch", "ρ_adv / ρ_adv before")
        figures.save(fig, RESULTS / f"robust_training_fig3_6_{key}.png")
        fig, _ = figures.lines(range(6), {k: [100 * e for e in v] for k, v in series_err.items()},
                               "extra epoch", "test error (%)")  # fmt: skip
        figures.save(fig, RESULTS / f"robust_training_error_{key}.png")
        if series_fgsm:  # Fig. 3.9: the same nets judged by DeepFool (solid) and FGSM (dashed)
            fig, ax = figures.lines(range(6), series_rho, "extra epoch", "robustness / before")
            for (name, values), line in zip(series_fgsm.items(), ax.get_lines(), strict=False):
                ax.plot(range(6), values, ls="--", color=line.get_color(), label=f"{name} (FGSM)")
            ax.legend(fontsize=6)
            ax.set_title(f"Fig. 3.9, {key}: ρ_adv by DeepFool (solid) and by FGSM (dashed)")
            figures.save(fig, RESULTS / f"robust_training_fig3_9_{key}.png")
        print(table(rows, list(rows[0])))
        out[key] = {
            "rows": rows,
            "rho_ratio": series_rho,
            "rho_fgsm_ratio": series_fgsm,
            "test_error": series_err,
        }
    return out


def part_b(retrain: bool, n: int) -> dict[str, Any]:
    """The shipped MNIST LeNet under every method, at ε = 0.1, 0.2, 0.3."""
    return robust_comparison("lenet", ROBUST, (0.1, 0.2, 0.3), retrain, n)


def part_fashion(retrain: bool, n: int) -> dict[str, Any]:
    """Table 8.2's pattern on Fashion-MNIST (issue 27): normal, CURE and PGD-AT LeNets.

    Trained on the whole 60,000-image training split; ε = 0.1 is Fashion-MNIST's usual
    l∞ budget (its classifiers are far less robust than MNIST's), so PGD-AT trains at it.
    """
    return robust_comparison("lenet-fashion", FASHION_ROBUST, (0.05, 0.1, 0.2), retrain, n)


def part_fig_8_10(retrain: bool) -> dict[str, Any]:
    """Fig. 8.10: CURE (the seed's recipe) lowers the loss curvature while robustness rises.

    The shipped LeNet fine-tuned with CURE as `cure-seed` is, the Monitor recording after
    every epoch, on 500 test images: the loss curvature on the first 50 (median top
    eigenvalue ν of the input Hessian, ν/‖∇ℓ‖ and the gradient alignment), ρ_adv, and the
    robust accuracy at l∞ 0.1 and 0.2 by the trusted evaluator (`quick` profile) beside
    PGD-20.
    """
    defense, options, config = ROBUST["cure-seed"]
    card = run(
        MODELS["lenet"], "lenet-cure-seed-fig8_10", defense, options, config, retrain,
        monitor_n=500, monitor_curvature_n=50, monitor_eps=(0.1, 0.2),
    )  # fmt: skip
    history = card["history"]
    epochs = [r["epoch"] for r in history]
    curves = {
        key: [r.get(key) for r in history]
        for key in ("loss_curvature_top", "loss_curvature_relative", "loss_alignment",
                    "rho_adv", "robust_accuracy@0.1", "robust_accuracy@0.2", "test_accuracy")
    }  # fmt: skip
    fig, ax = figures.lines(
        epochs,
        {"ν/‖∇ℓ‖ (median)": curves["loss_curvature_relative"]},
        "epoch of CURE",
        "loss curvature ν/‖∇ℓ‖",
        log_y=True,
    )
    right = ax.twinx()
    for key, style in (("robust_accuracy@0.1", "--"), ("robust_accuracy@0.2", ":")):
        right.plot(epochs, curves[key], ls=style, color="#c0392b", label=f"trusted {key[-3:]}")
    right.set_ylabel("robust accuracy (l∞)")
    right.legend(fontsize=7, loc="lower right")
    ax.set_title("Fig. 8.10: curvature falls while robustness rises (CURE, LeNet)")
    figures.save(fig, RESULTS / "robust_training_fig8_10_lenet.png")
    rows = [{"epoch": e, **{k: v[i] for k, v in curves.items()}} for i, e in enumerate(epochs)]
    print(table(rows, ["epoch", *curves]))
    return {"run": "lenet-cure-seed-fig8_10", "epochs": epochs, "curves": curves}


def robust_comparison(
    key: str,
    methods: dict[str, tuple[str, dict[str, Any], TrainConfig | None]],
    epsilons: tuple[float, ...],
    retrain: bool,
    n: int,
) -> dict[str, Any]:
    """Trains `methods` from the model `key` and ranks them by the trusted evaluator."""
    model = MODELS[key]
    data = default_data(model)
    cards = {
        name: run(model, f"{key}-{name}", defense, options, config, retrain, data=data)
        for name, (defense, options, config) in methods.items()
    }
    loaded = load_model(model)
    classifiers = {"normal": Classifier(loaded.module)}
    for name in methods:
        classifiers[name] = Classifier(load_model(str(RUNS / f"{key}-{name}")).module)
    test = load_dataset(data, "test")
    assessment = AssessmentConfig(
        n=n, epsilons=epsilons, spsa_n=100, spsa_steps=30, spsa_samples=64, curvature_n=50,
    )  # fmt: skip
    start = time.perf_counter()
    results = compare_models(classifiers, test.x, test.y, assessment, seed=0, progress=False)
    print(f"assessment of {len(classifiers)} models in {time.perf_counter() - start:.1f} s")
    rows = []
    for name, result in results.items():
        card = cards.get(name, {})
        history = card.get("history", [])[1:]
        row: dict[str, Any] = {
            "model": name,
            "clean (%)": 100 * result["clean_accuracy"],
            "rho_adv l2": result["rho_adv_l2"],
        }
        labels = [f"{eps:g}" for eps in epsilons]
        for eps in labels:
            row[f"trusted @{eps}"] = 100 * result["robust"][eps][TRUSTED]
        for eps in labels:
            robust = result["robust"][eps]
            row[f"PGD20 @{eps}"] = 100 * robust["pgd20"]
            row[f"FGSM @{eps}"] = 100 * robust["fgsm"]
            row[f"DF∞ @{eps}"] = 100 * robust["deepfool-linf"]
        for i, eps in enumerate(labels):
            row[f"SPSA @{eps} (100)"] = 100 * result["spsa"]["spsa"][i]
            row[f"PGD20 @{eps} (same 100)"] = 100 * result["spsa"]["pgd"][i]
        lc = result["loss_curvature"]
        row["loss (median)"] = float(torch.tensor(lc["loss"]).median())
        row["top eigenvalue (median)"] = float(torch.tensor(lc["top_eigenvalue"]).median())
        row["top eigenvalue / |g| (median)"] = float(torch.tensor(lc["relative_top"]).median())
        row["alignment (median)"] = float(torch.tensor(lc["alignment"]).median())
        train_size = card.get("train_size", 1)
        row["backward/img/epoch"] = (
            sum(r["backward_per_image"] + r.get("check_backward_rows", 0) / train_size
                for r in history) / len(history) if history else 1.0
        )  # fmt: skip
        row["epochs"] = len(history)
        row["s/epoch"] = sum(r["seconds"] for r in history) / len(history) if history else 0.0
        rows.append(row)
    middle = f"trusted @{epsilons[len(epsilons) // 2]:g}"
    rows.sort(key=lambda r: -r[middle])  # ranked by the trusted evaluator
    print(table(rows, list(rows[0])))
    return {
        "model": model,
        "data": data,
        "epsilons": list(epsilons),
        "evaluation": next(iter(results.values()))["evaluation"]["description"],
        "n": n,
        "rows": rows,
        "assessment": results,
        "cards": {k: {kk: v for kk, v in c.items() if kk != "history"} | {"history": c["history"]}
                  for k, c in cards.items()},
    }  # fmt: skip


def trusted_only(names: list[str], n: int, retrain: bool) -> dict[str, Any]:
    """Part (b)'s trusted column alone for the named runs: same images, evaluator and seed.

    `compare_models` runs the trusted evaluator with l∞ DeepFool's norms as the minimal
    stage; this repeats exactly that (without FGSM, PGD-20, SPSA and the curvature), for a
    row added between full part-(b) runs. A run already in the part-(b) table reproduces its
    numbers (checked on FGSM-RS).
    """
    import math

    from boundaryscope.attacks import DeepFool
    from boundaryscope.evaluation import describe, evaluate

    test = load_mnist5k("test")
    x, y = test.x[:n], test.y[:n]
    config = AssessmentConfig(n=n, epsilons=(0.1, 0.2, 0.3))
    out: dict[str, Any] = {}
    description = ""
    for name in names:
        defense, options, train_config = ROBUST[name]
        card = run(MODELS["lenet"], f"lenet-{name}", defense, options, train_config, retrain)
        clf = Classifier(load_model(str(RUNS / f"lenet-{name}")).module)
        start = time.perf_counter()
        correct = (clf.predict(x) == y).cpu()
        norms = DeepFool(p=math.inf, batch_size=config.batch_size)(clf, x, y).norms
        evaluation = evaluate(
            clf, x, y, config.epsilons, math.inf, config.evaluation,
            minimal=torch.where(correct, norms, 0.0), minimal_label="l∞ DeepFool", seed=0,
            progress=False,
        )  # fmt: skip
        history = card["history"][1:]
        out[name] = {
            "clean (%)": 100 * float(correct.float().mean()),
            **{f"trusted @{e:g}": 100 * evaluation.robust_accuracy(e) for e in config.epsilons},
            "checks_fired": len(evaluation.fired),
            "backward/img/epoch": sum(
                r["backward_per_image"] + r.get("check_backward_rows", 0) / card["train_size"]
                for r in history
            )
            / len(history),
            "epochs": len(history),
            "train seconds": card.get("seconds"),
            "seconds": time.perf_counter() - start,
        }
        print(name, out[name], flush=True)
        description = describe(evaluation.config, evaluation.minimal_label)
    return {"n": n, "evaluation": description, "rows": out}


def ranking(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Every part-(b) row ranked by the trusted evaluator, in one table (issue 28).

    Part (b)'s full table and the `--trusted-only` rows share the images, evaluator and
    seed (checked here: the same ``n`` and evaluator description), so their trusted
    columns are one comparison. The recipe and training seconds come from each run's
    train.json; rows are sorted by trusted accuracy at 0.3, then 0.2.
    """
    full, extra = payload.get("robust", {}), payload.get("trusted_only", {})
    if full and extra and (full["n"], full["evaluation"]) != (extra["n"], extra["evaluation"]):
        raise ValueError(
            "robust and trusted_only rows were assessed differently: "
            f"{full['n']} vs {extra['n']} images, {full['evaluation']!r} vs {extra['evaluation']!r}"
        )
    rows = {r["model"]: r for r in full.get("rows", [])} | extra.get("rows", {})
    out = []
    for name, row in rows.items():
        card_path = RUNS / f"lenet-{name}" / "train.json"
        card = json.loads(card_path.read_text()) if card_path.exists() else {}
        objective = card.get("objective", {})
        config = card.get("config", {})
        out.append({
            "run": name,
            "ε (ramp epochs)": (
                f"{objective['eps']:g} ({objective.get('eps_ramp_epochs') or 0:g})"
                if "eps" in objective else "—"
            ),
            "optimiser, epochs": f"{config['optimizer']} {config['lr']:g}, {config['epochs']}"
            if config else "—",
            "clean": row["clean (%)"],
            **{f"trusted @{e}": row[f"trusted @{e}"] for e in ("0.1", "0.2", "0.3")},
            "backward/img/epoch": row.get("backward/img/epoch", "—") if card else "—",
            "train s": card.get("seconds", "—"),
        })  # fmt: skip
    return sorted(out, key=lambda r: (-r["trusted @0.3"], -r["trusted @0.2"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["a", "b", "both", "fashion", "fig8_10"], default="both")
    parser.add_argument(
        "--trusted-only",
        default=None,
        metavar="NAMES",
        help="only part (b)'s trusted column for these runs (e.g. gradalign,fgsm-rs), kept "
        "under 'trusted_only' in the JSON",
    )
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument(
        "--table",
        action="store_true",
        help="print every part-(b) row ranked by the trusted evaluator (from the JSON) and exit",
    )
    parser.add_argument("--models", default="lenet", help="part (a): lenet,fc,lenet-fashion")
    parser.add_argument(
        "--train-n",
        type=int,
        default=None,
        help="part (a): training images fine-tuned on (default: the whole train split)",
    )
    parser.add_argument("--n", type=int, default=1000, help="part (b): test images assessed")
    args = parser.parse_args()
    RUNS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "robust_training.json"
    payload: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    payload.pop("machine", None)
    if args.table:
        rows = ranking(payload)
        print(table(rows, list(rows[0])))
        return
    if args.trusted_only:
        result = trusted_only(args.trusted_only.split(","), args.n, args.retrain)
        # Re-read before writing: another run may have added rows while this one ran.
        payload = json.loads(path.read_text()) if path.exists() else {}
        payload.pop("machine", None)
        kept = payload.get("trusted_only", {})
        if kept.get("n") == result["n"] and kept.get("evaluation") == result["evaluation"]:
            result["rows"] = {**kept.get("rows", {}), **result["rows"]}  # same images, evaluator
        payload["trusted_only"] = result
        write("robust_training", payload)
        return
    measured: dict[str, Any] = {}
    if args.part in ("a", "both"):
        finetuning = part_a(args.models.split(","), args.retrain, args.train_n)
    if args.part in ("b", "both"):
        measured["robust"] = part_b(args.retrain, args.n)
    if args.part == "fashion":
        measured["robust_fashion"] = part_fashion(args.retrain, args.n)
    if args.part == "fig8_10":
        measured["fig_8_10"] = part_fig_8_10(args.retrain)
    # Re-read before writing: another part may have finished while this one ran.
    payload = json.loads(path.read_text()) if path.exists() else {}
    payload.pop("machine", None)
    if args.part in ("a", "both"):
        # A run of some models keeps the others' rows.
        payload["finetuning"] = {**payload.get("finetuning", {}), **finetuning}
    payload.update(measured)
    write("robust_training", payload)
    print(f"-> {Path(RESULTS / 'robust_training.json').resolve()}")


if __name__ == "__main__":
    main()
