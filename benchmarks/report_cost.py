"""How close the report's cost estimate comes to the time it takes (target: within 2×).

For each case, ``boundaryscope report`` runs with one thread and its printed estimate
(`boundaryscope.report.cost`: one calibration batch × the passes each section made on the
shipped LeNet, in ``results.json["estimate"]``) is set against each section's measured
``seconds_total``. Cases: the shipped LeNet (quick and default profiles, and the default
under ``--time-budget 8m``, which shrinks the sections' own samples) and a CIFAR-shaped
ResNet-18 (3×32×32, BatchNorm, random weights with statistics from smooth random images,
model-labelled smooth random images, given as the user's own code; quick profile). For the
ResNet-18 the default profile on 1,000 images is estimated only (``--estimate-only``: hours
on this CPU), with and without ``--time-budget 3h``, and its geometry sections (boundary,
regions: refined grids and bisection path checks) are run at the default profile and
measured. The same estimates for a *trained* CIFAR-variant ResNet-18 (`_common.trained_resnet18`:
Fashion-MNIST padded to 3×32×32, 86% test accuracy; weights read with ``weights_only``).

Run: ``python benchmarks/report_cost.py [--cases NAME,...]`` (≈ 60 min for all); writes
``benchmarks/results/report_cost.json`` (with ``--cases``, merged into the existing file).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    RESULTS,
    TRAINED_RESNET18,
    as_cifar_shape,
    trained_resnet18,
    user_model_folder,
    write,
)

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def run(argv: list[str], cwd: Path) -> tuple[str, float]:
    """`boundaryscope` with `argv` in `cwd`: its stderr and wall time."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "boundaryscope", *argv], cwd=cwd, env=ENV, capture_output=True,
        text=True,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return done.stderr + done.stdout, time.perf_counter() - start


def measured_case(name: str, argv: list[str], cwd: Path) -> dict[str, Any]:
    """One report: estimate and measured seconds per section, and their ratio."""
    out = cwd / f"run-{name}"
    text, wall = run([*argv, "--out", str(out)], cwd)
    results = json.loads((out / "results.json").read_text())
    estimate = results["estimate"]["sections"]
    measured = {k: v["seconds_total"] for k, v in results["sections"].items()}
    ratio = {k: measured[k] / estimate[k] for k in measured if estimate.get(k)}
    total_ratio = sum(measured.values()) / sum(estimate.values())
    print(f"{name}: estimated {sum(estimate.values()):.0f} s, measured "
          f"{sum(measured.values()):.0f} s (ratio {total_ratio:.2f})")  # fmt: skip
    for section, r in ratio.items():
        print(f"  {section:13s} est {estimate[section]:8.1f} s  measured "
              f"{measured[section]:8.1f} s  ratio {r:.2f}")  # fmt: skip
    return {
        "command": "boundaryscope " + " ".join(argv),
        "estimate_line": next(line for line in text.splitlines() if "estimated on" in line),
        **(
            {"time_budget": results["meta"]["time_budget"]}
            if "time_budget" in results["meta"]
            else {}
        ),
        "pass_times": results["estimate"]["pass_times"],
        "estimated_seconds": estimate,
        "measured_seconds": measured,
        "ratio_measured_to_estimate": ratio,
        "total_ratio": total_ratio,
        "command_seconds": wall,
    }


def estimate_only(argv: list[str], cwd: Path) -> dict[str, Any]:
    """The printed estimate of a report that is not run."""
    text, _ = run([*argv, "--estimate-only"], cwd)
    line = next(line for line in text.splitlines() if "estimated on this model" in line)
    budget = [line for line in text.splitlines() if line.startswith("report: --time-budget")]
    print(line)
    match = re.search(r"about ([0-9.]+) (s|min|h) estimated", line)
    assert match is not None, line
    seconds = float(match.group(1)) * UNIT_SECONDS[match.group(2)]
    # --estimate-only then lists every section: "  name  12 min".
    sections = {
        name: float(value) * UNIT_SECONDS[unit]
        for name, value, unit in re.findall(r"^  (\w+) +([0-9.]+) (s|min|h)$", text, re.M)
    }
    return {
        "command": "boundaryscope " + " ".join(argv),
        "line": line,
        **({"time_budget_line": budget[0]} if budget else {}),
        "seconds": seconds,
        "sections_seconds": sections,
    }


UNIT_SECONDS = {"s": 1.0, "min": 60.0, "h": 3600.0}


RESNET = ["report", "--model", "./model.py:factory", "--data", "npz:data.npz"]
TRAINED = ["report", "--model", "./trained.py:factory", "--data", "npz:fashion32.npz"]
# The trained CIFAR-variant ResNet-18 of `_common.trained_resnet18`, as a user brings it.
TRAINED_MODEL = r"""
import torch
from boundaryscope.zoo import build


def factory():
    model = build("resnet18", num_classes=10, in_channels=3, image_size=32)
    model.load_state_dict(torch.load({path!r}, weights_only=True))
    return model.eval()
"""
DEFAULT_1000 = ["--profile", "default", "--n", "1000"]
CASES: dict[str, tuple[str, list[str]]] = {  # name: (kind, argv)
    **{
        f"{name} default{f' time-budget {budget}' if budget else ''} (estimate only)": (
            "estimate",
            [*argv, *DEFAULT_1000, *(["--time-budget", budget] if budget else [])],
        )
        for name, argv in (("resnet18-cifar", RESNET), ("resnet18-fashion32 trained", TRAINED))
        for budget in ("", "3h")
    },
    "resnet18-fashion32 trained default robustness (48 images)": (
        "measure",
        [*TRAINED, "--profile", "default", "--n", "48", "--sections", "accuracy,robustness"],
    ),
    "lenet quick": ("measure", ["report", "--profile", "quick"]),
    "lenet default": ("measure", ["report", "--profile", "default"]),
    "lenet default time-budget 8m": (
        "measure",
        ["report", "--profile", "default", "--time-budget", "8m"],
    ),
    "resnet18-cifar quick": ("measure", [*RESNET, "--profile", "quick", "--n", "16"]),
    "resnet18-cifar default geometry": (
        "measure",
        [*RESNET, "--profile", "default", "--n", "1000", "--sections", "boundary,regions"],
    ),
}


def trained_folder(folder: Path) -> None:
    """``trained.py`` and ``fashion32.npz`` (padded Fashion-MNIST: 2,000 train, 2,000 test)."""
    import numpy as np

    from boundaryscope.data import load_fashion_mnist

    trained_resnet18()  # trains and caches the weights on the first run (≈ 6 min)
    (folder / "trained.py").write_text(TRAINED_MODEL.format(path=str(TRAINED_RESNET18)))
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    splits = {
        f"{key}_{name}": array
        for name, data in (("train", train), ("test", test))
        for key, array in (("x", as_cifar_shape(data.x[:2000])), ("y", data.y[:2000]))
    }
    np.savez(folder / "fashion32.npz", **{k: v.numpy() for k, v in splits.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", help=f"comma-separated among: {'; '.join(CASES)}")
    args = parser.parse_args()
    names = [c.strip() for c in args.cases.split(",")] if args.cases else list(CASES)
    unknown = [name for name in names if name not in CASES]
    if unknown:
        parser.error(f"--cases must be among {list(CASES)}; got {unknown}")
    cases: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        used = {arg for name in names for arg in CASES[name][1]}  # what the cases read
        if RESNET[2] in used:
            user_model_folder(
                folder, "resnet18", size=32, classes=10, coarse=8, batches=4, batch=64, images=5000
            )
        if TRAINED[2] in used:
            trained_folder(folder)
        for name in names:
            kind, argv = CASES[name]
            if kind == "estimate":
                cases[name] = estimate_only(argv, folder)
            else:
                cases[name] = measured_case(name.replace(" ", "-"), argv, folder)
    if args.cases and (RESULTS / "report_cost.json").is_file():
        previous = json.loads((RESULTS / "report_cost.json").read_text())
        cases = {**previous.get("cases", {}), **cases}
    print(f"-> {write('report_cost', {'threads': 1, 'cases': cases})}")


if __name__ == "__main__":
    main()
