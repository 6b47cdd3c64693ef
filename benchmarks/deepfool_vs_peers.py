"""DeepFool: boundaryscope against Foolbox, ART and torchattacks, side by side in one process.

Same model, images, steps (50), candidates (10), overshoot (0.02) and bounds (0, 1) for
all. Speeds are images/s on this machine; compare ratios, not absolute times. Quality is
measured on the correctly classified images each tool processed.

    python benchmarks/deepfool_vs_peers.py [--n 1000] [--peer-n 1000] [--slow-n 200]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from _common import art_classifier, table, write
from boundaryscope import Classifier
from boundaryscope.attacks import DeepFool
from boundaryscope.data import load_mnist5k
from boundaryscope.zoo import load_model

warnings.filterwarnings("ignore")
STEPS, CANDIDATES, OVERSHOOT = 50, 10, 0.02


class PassCount:
    """Counts forward rows and input-gradient backward passes with hooks on the first layer.

    The first layer, not the model: ART's wrapper calls the children of a Sequential one
    by one, so hooks on the top module never fire there.
    """

    def __init__(self, model: nn.Module) -> None:
        self.forward_rows = 0
        self.backward_calls = 0
        first = next(iter(model.children()), model)
        first.register_forward_hook(self._forward)
        first.register_full_backward_hook(self._backward)

    def _forward(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self.forward_rows += int(output.shape[0])

    def _backward(self, module: nn.Module, grad_in: Any, grad_out: Any) -> None:
        self.backward_calls += 1

    def counts(self) -> dict[str, int]:
        return {"forward_rows": self.forward_rows, "backward_calls": self.backward_calls}


def quality(x: torch.Tensor, adv: torch.Tensor, y: torch.Tensor, model: nn.Module) -> dict:
    with torch.no_grad():
        clean = model(x).argmax(1)
        fooled = model(adv).argmax(1) != y
    correct = clean == y
    norms = (adv - x).flatten(1).norm(dim=1)
    keep = correct & fooled
    return {
        "success": float(fooled[correct].float().mean()),
        "median_l2": float(norms[correct].median())
        if bool(fooled[correct].all())
        else float(norms[correct].masked_fill(~fooled[correct], float("inf")).median()),
        "mean_l2": float(norms[keep].mean()),
        "rho_adv": float((norms[keep] / x.flatten(1).norm(dim=1)[keep]).mean()),
    }


def timed(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run_boundaryscope(model, x, y, paper_exact=False) -> tuple[torch.Tensor, float, dict]:
    clf = Classifier(model)
    make_attack = DeepFool.as_published if paper_exact else DeepFool
    attack = make_attack(p=2, steps=STEPS, candidates=CANDIDATES, overshoot=OVERSHOOT)
    clf.predict(x[:2])
    clf.counter.reset()
    result, seconds = timed(lambda: attack(clf, x, y).adversarial)
    counts = {"forward_rows": clf.counter.forward_rows, "backward_rows": clf.counter.backward_rows}
    counts["limit_ratio"] = seconds / hardware_limit(clf, x, counts)
    return result, seconds, counts


def hardware_limit(clf: Classifier, x: torch.Tensor, counts: dict) -> float:
    """Seconds that the counted passes take alone, at full batches of 256 rows."""
    batch = x[:256]
    ref = clf.predict(batch)
    others = torch.stack([torch.arange(10)[torch.arange(10) != r][: CANDIDATES - 1] for r in ref])
    clf.forward_scores(batch)
    start = time.perf_counter()
    for _ in range(5):
        clf.forward_scores(batch)
    forward_row = (time.perf_counter() - start) / (5 * batch.shape[0])
    clf.score_gradients(batch, ref, others)
    start = time.perf_counter()
    for _ in range(3):
        clf.score_gradients(batch, ref, others)
    gradient_row = (time.perf_counter() - start) / (3 * batch.shape[0] * others.shape[1])
    # score_gradients also does one forward per K cotangents: charged to gradient_row.
    forward_rows = counts["forward_rows"] - counts["backward_rows"] / others.shape[1]
    return forward_row * forward_rows + gradient_row * counts["backward_rows"]


def run_foolbox(model, x, y):
    import foolbox as fb

    counter = PassCount(model)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    attack = fb.attacks.L2DeepFoolAttack(steps=STEPS, candidates=CANDIDATES, overshoot=OVERSHOOT)
    (_, clipped, _), seconds = timed(lambda: attack(fmodel, x, y, epsilons=None))
    return clipped, seconds, counter.counts()


def run_art(model, x, y):
    from art.attacks.evasion import DeepFool as ArtDeepFool

    counter = PassCount(model)
    classifier = art_classifier(model, x.shape[1:])
    # ART's `epsilon` is its overshoot, applied once at the end (peers.md §2.3).
    attack = ArtDeepFool(
        classifier,
        max_iter=STEPS,
        epsilon=OVERSHOOT,
        nb_grads=CANDIDATES,
        batch_size=128,
        verbose=False,
    )
    adv, seconds = timed(lambda: torch.from_numpy(attack.generate(x.numpy())))
    return adv, seconds, counter.counts()


def run_torchattacks(model, x, y):
    import torchattacks

    counter = PassCount(model)
    attack = torchattacks.DeepFool(model, steps=STEPS, overshoot=OVERSHOOT)
    adv, seconds = timed(lambda: attack(x, y))
    return adv, seconds, counter.counts()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument(
        "--slow-n", type=int, default=200, help="images for ART and torchattacks (slow peers)"
    )
    args = parser.parse_args()
    data = load_mnist5k("test")
    rows, payload = (
        [],
        {
            "settings": {
                "steps": STEPS,
                "candidates": CANDIDATES,
                "overshoot": OVERSHOOT,
                "bounds": [0, 1],
                "n": args.n,
                "slow_n": args.slow_n,
            },
            "models": {},
        },
    )
    runners = [
        ("boundaryscope", lambda m, x, y: run_boundaryscope(m, x, y), args.n),
        (
            "boundaryscope (paper-exact)",
            lambda m, x, y: run_boundaryscope(m, x, y, paper_exact=True),
            args.n,
        ),
        ("foolbox", run_foolbox, args.n),
        ("art", run_art, args.slow_n),
        ("torchattacks", run_torchattacks, args.slow_n),
    ]
    for name in ("lenet-mnist", "fc500-150-10-mnist"):
        model_rows = []
        for tool, runner, n in runners:
            model = load_model(f"zoo:{name}").module.eval()  # fresh copy: no leftover hooks
            x, y = data.x[:n], data.y[:n]
            adv, seconds, counts = runner(model, x, y)
            adv = adv.detach().float()
            m = args.slow_n  # every tool processed these: quality compared on the same images
            common = quality(x[:m], adv[:m], y[:m], model)
            row = {
                "model": name,
                "tool": tool,
                "n": n,
                "images_per_s": n / seconds,
                **quality(x, adv, y, model),
                **{f"{key}_first{m}": value for key, value in common.items()},
                **counts,
            }
            model_rows.append(row)
            print(
                f"{name:20s} {tool:28s} {row['images_per_s']:8.1f} img/s  "
                f"median l2 {row['median_l2']:.4f}  success {row['success']:.3f}",
                flush=True,
            )
        base = model_rows[0]["images_per_s"]
        for row in model_rows:
            row["speedup_of_boundaryscope"] = base / row["images_per_s"]
        rows += model_rows
        payload["models"][name] = model_rows
    path = write("deepfool_vs_peers", payload)
    print()
    print(
        table(
            rows,
            [
                "model",
                "tool",
                "n",
                "images_per_s",
                "speedup_of_boundaryscope",
                "median_l2",
                "rho_adv",
                "success",
                f"median_l2_first{args.slow_n}",
                f"success_first{args.slow_n}",
                "forward_rows",
                "backward_calls",
                "backward_rows",
                "limit_ratio",
            ],
        )
    )
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
