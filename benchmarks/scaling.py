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

Run: ``python benchmarks/scaling.py`` (≈ 2 min); writes ``benchmarks/results/scaling.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import write

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


def attack_run(processes: int, out: Path) -> dict[str, float]:
    launcher = (
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
    argv = ["attack", "deepfool", "--n", str(N_ATTACK), "--out", str(out)]
    start = time.perf_counter()
    done = subprocess.run([*launcher, *argv], env=ENV, capture_output=True, text=True)
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


def main() -> None:
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
        {"attack": runs, "speedup_2_processes": speedup, "memory": memory, "threads": 1},
    )
    print(f"-> {path}")


if __name__ == "__main__":
    main()
