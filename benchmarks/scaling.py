"""Scaling: images/s with 1 and 2 torchrun processes, and peak memory against N.

Part 1 runs ``boundaryscope attack deepfool`` on the same MNIST test images with one
process and with ``torchrun --nproc-per-node 2`` (gloo), one thread per process, and reports
the attack's own wall time (slowest process) and the command's total wall time (startup,
model and data loading included).

Part 2 measures, in a fresh process per N (1k, 5k, 20k images: the 5k MNIST subset tiled),
the peak resident memory *above* the memory held once the images are loaded, while
`Classifier.predict`, `fooling_rate` with `dominant_label_graph`, then FGSM run over all N
images: bounded by the batch size, the extra memory of the first two must stay flat in N;
FGSM returns two N-image tensors (adversarial, perturbation), so its extra memory is a
small multiple of the data, not of the model's activations.

Part 3 runs the whole ``boundaryscope report`` (default profile, 1,000 test images) with
one process and with two: the per-image sections (accuracy, robustness, fixed budget,
noise) shard their attack calls, the others run whole, dealt out to the processes; it
reports the wall time of each section and of the command, and which sections' numbers
are bit-identical between the two runs (the others differ by float rounding only, at most
the largest relative difference shown).

Part 4 (``--imagenet``, or alone with ``--imagenet-only``, which keeps the other parts'
numbers in the JSON) runs ``boundaryscope report --profile quick --n 2`` on an
ImageNet-shaped ResNet-50 (3×224×224, 1,000 classes, random weights, BatchNorm statistics
from smooth random images) given as the user's own code, one thread, and records every
section's time and the command's peak resident memory (target: every section finishes,
≤ 8 GB on a 24 GB machine; before the memory budget the noise section asked for 45 GB).

Run: ``python benchmarks/scaling.py`` (≈ 15 min; ``--no-report``: ≈ 2 min;
``--imagenet-only``: ≈ 20 min); writes ``benchmarks/results/scaling.json``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import user_model_folder, write

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
N_ATTACK = 1000

MEMORY_PROBE = r"""
import resource, sys, torch
torch.set_num_threads(1)
from boundaryscope import Classifier
from boundaryscope.attacks import FGSM
from boundaryscope.data import load_dataset
from boundaryscope.universal import dominant_label_graph, fooling_rate
from boundaryscope.zoo import load_model
n = int(sys.argv[1])
clf = Classifier(load_model("zoo:lenet-mnist").module)
data = load_dataset("mnist5k", "all")
reps = -(-n // len(data))
x, y = data.x.repeat(reps, 1, 1, 1)[:n].clone(), data.y.repeat(reps)[:n].clone()
clf.predict(x[:8])
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
base = peak()
labels = clf.predict(x)
after_predict = peak()
v = torch.full((1, 28, 28), 0.1)
fooling_rate(clf, x, v)
dominant_label_graph(clf, x, v)
after_universal = peak()
result = FGSM(eps=0.1)(clf, x, y)  # last: it returns two N-image tensors
after_fgsm = peak()
print(base, after_predict, after_fgsm, after_universal)
"""


def launcher(processes: int) -> list[str]:
    """The command line prefix of `processes` torchrun processes (one: plain python)."""
    return (
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(processes),
            "-m",
            "boundaryscope",
            "--",
        ]
        if processes > 1
        else [sys.executable, "-m", "boundaryscope"]
    )


def attack_run(processes: int, out: Path) -> dict[str, float]:
    argv = ["attack", "deepfool", "--n", str(N_ATTACK), "--out", str(out)]
    start = time.perf_counter()
    done = subprocess.run([*launcher(processes), *argv], env=ENV, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    summary = json.loads((out / "attack.json").read_text())["summary"]
    return {
        "processes": processes,
        "attack_seconds": summary["seconds"],
        "images_per_second": summary["images_per_second"],
        "command_seconds": wall,
        "rho_adv": summary["rho_adv"],
    }


def memory_run(n: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(n)], env=ENV, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    base, predict, fgsm, universal = map(float, done.stdout.split()[-4:])
    return {
        "n": n,
        "data_mb": n * 28 * 28 * 4 / 2**20,
        "peak_after_loading_mb": base,
        "extra_predict_mb": predict - base,
        "extra_fgsm_mb": fgsm - base,
        "extra_fgsm_per_data": (fgsm - base) / (n * 28 * 28 * 4 / 2**20),
        "extra_universal_eval_mb": universal - base,
    }


def report_run(processes: int, out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Wall times of a default-profile report with `processes` processes, and its sections."""
    start = time.perf_counter()
    done = subprocess.run(
        [*launcher(processes), "report", "--out", str(out)], env=ENV, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    sections = json.loads((out / "results.json").read_text())["sections"]
    timing = {
        "processes": processes,
        "command_seconds": wall,
        "section_seconds": {name: r["seconds_total"] for name, r in sections.items()},
    }
    return timing, sections


def largest_difference(one: Any, two: Any) -> float:
    """The largest relative difference between the numbers of two results (timings aside);
    ``inf`` where anything other than a float differs.
    """
    if isinstance(one, dict) and isinstance(two, dict):
        if one.keys() != two.keys():
            return math.inf
        keys = [k for k in one if not k.startswith("seconds")]
        return max((largest_difference(one[k], two[k]) for k in keys), default=0.0)
    if isinstance(one, list) and isinstance(two, list):
        if len(one) != len(two):
            return math.inf
        return max((largest_difference(a, b) for a, b in zip(one, two, strict=True)), default=0.0)
    if isinstance(one, float) and isinstance(two, float) and one != two:
        return abs(one - two) / max(abs(one), abs(two))
    return 0.0 if one == two else math.inf


def compare_reports(include: bool) -> dict[str, Any]:
    """Part 3 (skipped with ``--no-report``)."""
    if not include:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        (one, first), (two, second) = (report_run(p, Path(tmp) / f"r{p}") for p in (1, 2))
    differences = {name: largest_difference(first[name], second[name]) for name in first}
    for name in first:
        print(
            f"{name:13s} 1 process {one['section_seconds'][name]:6.1f} s, 2 processes "
            f"{two['section_seconds'][name]:6.1f} s, largest relative difference "
            f"{differences[name]:.1e}"
        )
    speedup = one["command_seconds"] / two["command_seconds"]
    print(
        f"report: 1 process {one['command_seconds']:.0f} s, 2 processes "
        f"{two['command_seconds']:.0f} s (speed-up {speedup:.2f}x)"
    )
    return {"runs": [one, two], "speedup": speedup, "largest_difference": differences}


def imagenet_report() -> dict[str, Any]:
    """Part 4: the quick report on an ImageNet-shaped ResNet-50, its sections and peak RSS."""
    import resource

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        user_model_folder(
            folder, "resnet50", size=224, classes=1000, coarse=14, batches=2, batch=8, images=4
        )
        argv = ["report", "--model", "./model.py:factory", "--data", "npz:data.npz",
                "--profile", "quick", "--n", "2", "--out", "run"]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "boundaryscope", *argv],
            cwd=folder, env=ENV, capture_output=True, text=True,
        )  # fmt: skip
        wall = time.perf_counter() - start
        if done.returncode:
            raise RuntimeError(done.stderr[-2000:])
        results = json.loads((folder / "run" / "results.json").read_text())
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    sections = {name: r["seconds_total"] for name, r in results["sections"].items()}
    for name, seconds in sections.items():
        print(f"ImageNet ResNet-50 quick report: {name:13s} {seconds:7.1f} s")
    print(f"ImageNet ResNet-50 quick report: {wall:.0f} s, peak RSS {peak_gb:.2f} GB")
    return {
        "command": "boundaryscope " + " ".join(argv),
        "model": "resnet50 ImageNet layout, 1,000 classes, random weights (_common.USER_MODEL)",
        "threads": 1,
        "command_seconds": wall,
        "section_seconds": sections,
        "peak_rss_gb": peak_gb,
        "note": "peak RSS of the report process (RUSAGE_CHILDREN, first child)",
    }


def main() -> None:
    if "--imagenet-only" in sys.argv[1:]:
        # First child of this process, so RUSAGE_CHILDREN is the report's own peak.
        imagenet = imagenet_report()
        path = Path(__file__).parent / "results" / "scaling.json"
        previous = json.loads(path.read_text()) if path.is_file() else {}
        previous.pop("machine", None)
        print(f"-> {write('scaling', {**previous, 'imagenet_quick_report': imagenet})}")
        return
    imagenet = imagenet_report() if "--imagenet" in sys.argv[1:] else None
    report = compare_reports("--no-report" not in sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        runs = [attack_run(p, Path(tmp) / f"a{p}") for p in (1, 2)]
    speedup = runs[1]["images_per_second"] / runs[0]["images_per_second"]
    for r in runs:
        print(
            f"{r['processes']} process(es): DeepFool on {N_ATTACK} images "
            f"{r['attack_seconds']:.2f} s ({r['images_per_second']:.0f} img/s), command "
            f"{r['command_seconds']:.1f} s, rho_adv {r['rho_adv']:.6f}"
        )
    print(f"speed-up of 2 processes: {speedup:.2f}x")
    memory = [memory_run(n) for n in (1000, 5000, 20000)]
    for m in memory:
        print(
            f"N={m['n']:6d}: data {m['data_mb']:.0f} MB, extra peak: predict "
            f"{m['extra_predict_mb']:.0f} MB, FGSM {m['extra_fgsm_mb']:.0f} MB, universal eval "
            f"{m['extra_universal_eval_mb']:.0f} MB"
        )
    path = write(
        "scaling",
        {
            "attack": runs,
            "speedup_2_processes": speedup,
            "memory": memory,
            "report": report,
            "threads": 1,
            **({"imagenet_quick_report": imagenet} if imagenet else {}),
        },
    )
    print(f"-> {path}")


if __name__ == "__main__":
    main()
