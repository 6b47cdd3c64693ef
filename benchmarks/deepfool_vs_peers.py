"""DeepFool: boundaryscope against adv_lib, Foolbox, ART and torchattacks, in one process.

Four models: the two issue 29 asks for, the same ResNet-18 trained on real data, and the
shipped BatchNorm ResNet-8:

- the shipped LeNet on the first `--n` correctly classified MNIST test images (ART and
  torchattacks, much slower, on the first `--slow-n` of them);
- a CIFAR-shaped ResNet-18 (3×32×32, BatchNorm in eval mode, 10 classes), random weights
  with BatchNorm statistics taken on smooth random images, attacked on `--cifar-n` such
  images labelled by the model itself (speed and norms only: nothing about CIFAR-10); with
  random weights it is nearly affine, so every DeepFool needs one or two steps and the
  first step's nine class gradients set the speed of all of them;
- that ResNet-18 trained (two epochs, 10,000 images) on Fashion-MNIST padded to 3×32×32,
  ≈ 86% test accuracy, on its first `--trained-n` correctly classified test images: a
  CIFAR-shaped model with a boundary a trained network has (trained once, then read from a
  cache: `trained_resnet18`);
- the shipped `resnet8-fashion` (BatchNorm ResNet-8 trained on Fashion-MNIST's 60,000
  images) on the first `--fashion-n` correctly classified Fashion-MNIST test images: half
  the pixels sit on the box's lower face, where the box-aware step's first jump lands far
  from the smallest perturbation (why the default clips its first step).

Every tool gets the same images, steps (50), overshoot (0.02), candidates (all classes) and
box [0, 1], l2; each is timed best of `--repeats` runs (ART and torchattacks: one run), with 1 and
then 2 threads.
Quality is judged *per image* against adv_lib's ``df`` (the issue's reference): for each
image both fooled, the ratio of the two l2 norms; median, mean, p90 and max of that ratio
(below 1: boundaryscope's perturbation is smaller). ``speed`` is adv_lib's wall time ÷ the
tool's. Targets (issue 29): boundaryscope's default ≥ 2.5× adv_lib with median and mean
ratio ≤ 1.000 on the LeNet and a CIFAR-shaped ResNet-18, ≥ 5× Foolbox on the LeNet
(Foolbox runs its batch until the slowest image converges: 0.1–0.3 images/s on the trained
ResNet-18, hence its small `--trained-n`).

    python benchmarks/deepfool_vs_peers.py [--n 300] [--slow-n 50] [--cifar-n 16]
        [--trained-n 24] [--repeats 3] [--threads 1,2] [--cases lenet,...]

Writes benchmarks/results/deepfool_vs_peers.json (with ``--cases``, the other models' rows
are kept from the file as it was).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from _common import (
    RESULTS,
    art_classifier,
    as_cifar_shape,
    import_adv_lib,
    machine,
    table,
    trained_resnet18,
    write,
)
from boundaryscope import Classifier
from boundaryscope.attacks import DeepFool
from boundaryscope.data import Dataset, load_fashion_mnist, load_mnist5k
from boundaryscope.zoo import build, load_model

warnings.filterwarnings("ignore")
STEPS, OVERSHOOT = 50, 0.02
SLOW = ("art", "torchattacks")  # timed once: seconds per image, on `--slow-n` images
Runner = Callable[[nn.Module, Tensor, Tensor], Tensor]


def zoo_case(spec: str, data: Dataset, n: int) -> tuple[nn.Module, Tensor, Tensor]:
    """A shipped model and its first `n` correctly classified images of `data`."""
    return first_correct(load_model(spec).module.eval(), data.x[: 2 * n], data.y[: 2 * n], n)


def first_correct(
    model: nn.Module, x: Tensor, y: Tensor, n: int
) -> tuple[nn.Module, Tensor, Tensor]:
    """`model` and the first `n` of ``(x, y)`` it classifies correctly."""
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    return model, x[correct][:n], y[correct][:n]


def lenet_case(n: int) -> tuple[nn.Module, Tensor, Tensor]:
    return zoo_case("zoo:lenet-mnist", load_mnist5k("test"), n)


def smooth_images(n: int, seed: int) -> Tensor:
    """Images in [0, 1] with CIFAR's shape and some spatial structure (upsampled noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=g)
    fine = 0.15 * torch.rand(n, 3, 32, 32, generator=g)
    up = nn.functional.interpolate(coarse, size=32, mode="bilinear", align_corners=False)
    return (0.85 * up + fine).clamp(0, 1)


def cifar_case(n: int) -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    model = build("resnet18", num_classes=10, in_channels=3, image_size=32)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for seed in range(4):
            model(smooth_images(64, 100 + seed))
    model.eval()
    x = smooth_images(n, 0)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def fashion_case(n: int) -> tuple[nn.Module, Tensor, Tensor]:
    return zoo_case("zoo:resnet8-fashion", load_fashion_mnist("test"), n)


def trained_cifar_case(n: int) -> tuple[nn.Module, Tensor, Tensor]:
    """The trained ResNet-18 and its first `n` correctly classified (padded) test images."""
    test = load_fashion_mnist("test")
    return first_correct(trained_resnet18(), as_cifar_shape(test.x[: 4 * n]), test.y[: 4 * n], n)


def ours(**kwargs: Any) -> Runner:
    def run(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        attack = DeepFool(p=2, steps=STEPS, overshoot=OVERSHOOT, **kwargs)
        return attack(Classifier(model, bounds=(0.0, 1.0)), x, y).adversarial

    return run


def ours_published(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    attack = DeepFool.as_published(p=2, steps=STEPS, overshoot=OVERSHOOT)
    return attack(Classifier(model, bounds=(0.0, 1.0)), x, y).adversarial


def adv_lib_df(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return import_adv_lib().df(model, x, y, steps=STEPS, overshoot=OVERSHOOT, norm=2)


def foolbox_df(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    import foolbox as fb

    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    attack = fb.attacks.L2DeepFoolAttack(steps=STEPS, candidates=10, overshoot=OVERSHOOT)
    return attack(fmodel, x, y, epsilons=None)[1]


def art_df(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    from art.attacks.evasion import DeepFool as ArtDeepFool

    # ART's `epsilon` is its overshoot, applied once at the end (peers.md §2.3).
    attack = ArtDeepFool(
        art_classifier(model, x.shape[1:]),
        max_iter=STEPS,
        epsilon=OVERSHOOT,
        nb_grads=10,
        batch_size=128,
        verbose=False,
    )
    return torch.from_numpy(attack.generate(x.numpy()))


def torchattacks_df(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    import torchattacks

    return torchattacks.DeepFool(model, steps=STEPS, overshoot=OVERSHOOT)(x, y)


def best_of(repeats: int, run: Callable[[], Tensor]) -> tuple[Tensor, float]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - start)
    assert out is not None
    return out.detach().float(), best


def judged(model: nn.Module, x: Tensor, y: Tensor, adv: Tensor) -> tuple[Tensor, Tensor]:
    """Per image: fooled (inside the box), and the l2 norm (inf where not fooled)."""
    with torch.no_grad():
        fooled = model(adv).argmax(1) != y
    inside = (adv >= 0).flatten(1).all(1) & (adv <= 1).flatten(1).all(1)
    fooled &= inside
    norms = (adv - x).flatten(1).norm(dim=1)
    return fooled, norms.masked_fill(~fooled, float("inf"))


def ratio_stats(norms: Tensor, reference: Tensor) -> dict[str, float]:
    both = torch.isfinite(norms) & torch.isfinite(reference) & (reference > 0)
    ratio = norms[both] / reference[both]
    return {
        "ratio_median": float(ratio.median()),
        "ratio_mean": float(ratio.mean()),
        "ratio_p90": float(ratio.quantile(0.9)),
        "ratio_max": float(ratio.max()),
        "images_compared": int(both.sum()),
    }


def counted_passes(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
    """Forward and backward sample-rows per image of our default (the classifier counts)."""
    clf = Classifier(model, bounds=(0.0, 1.0))
    DeepFool(p=2, steps=STEPS, overshoot=OVERSHOOT)(clf, x, y)
    n = x.shape[0]
    return {
        "forward_rows_per_image": clf.counter.forward_rows / n,
        "backward_rows_per_image": clf.counter.backward_rows / n,
    }


class RowCounter(nn.Module):
    """`model`, counting the sample-rows of its forward and backward passes (for peers).

    A backward row is one sample times one cotangent, as `Classifier.counter` counts ours:
    a hook on the output fires once per backward pass through it (adv_lib and Foolbox take
    one ``autograd.grad`` per class).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forward_rows = self.backward_rows = 0

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        self.forward_rows += x.shape[0]
        if out.requires_grad:
            out.register_hook(self._count)
        return out

    def _count(self, grad: Tensor) -> None:
        self.backward_rows += grad.shape[0]


def peer_passes(runner: Runner, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
    """Forward and backward sample-rows per image of a peer's DeepFool (one untimed run)."""
    counted = RowCounter(model).eval()
    runner(counted, x, y)
    return {
        "forward_rows_per_image": counted.forward_rows / x.shape[0],
        "backward_rows_per_image": counted.backward_rows / x.shape[0],
    }


def run_case(
    name: str,
    case: tuple[nn.Module, Tensor, Tensor],
    tools: list[tuple[str, Runner, int]],
    threads: int,
    repeats: int,
) -> list[dict[str, Any]]:
    torch.set_num_threads(threads)
    model, x, y = case
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    results: dict[str, tuple[Tensor, Tensor, float, int]] = {}
    for tool, runner, n in tools:
        xs, ys = x[:n], y[:n]
        times = 1 if tool in SLOW else repeats
        adv, seconds = best_of(times, lambda r=runner, a=xs, b=ys: r(model, a, b))
        fooled, norms = judged(model, xs, ys, adv)
        results[tool] = (fooled, norms, seconds, n)
        print(f"{name:10s} {threads}t {tool:34s} {n / seconds:8.1f} img/s", flush=True)
    _, ref_norms, ref_seconds, ref_n = results["adv_lib df"]
    measured_on = machine()["date"]  # rows of other models may be kept from earlier runs
    rows = []
    for tool, (fooled, norms, seconds, n) in results.items():
        per_image = seconds / n
        row: dict[str, Any] = {
            "model": name,
            "measured": measured_on,
            "threads": threads,
            "tool": tool,
            "n": n,
            "images_per_s": n / seconds,
            "speed_vs_adv_lib": (ref_seconds / ref_n) / per_image,
            "success": float(fooled.float().mean()),
            "median_l2": float(norms.median()),
            **ratio_stats(norms, ref_norms[:n]),
        }
        rows.append(row)
    ours_row = next(r for r in rows if r["tool"] == "boundaryscope default")
    for row in rows:  # per image: how many times faster boundaryscope's default is
        row["ours_speedup"] = ours_row["images_per_s"] / row["images_per_s"]
    ours_row.update(counted_passes(model, x, y))
    by_tool = {row["tool"]: row for row in rows}
    for tool, runner, n in tools:  # the peers whose passes explain their speed (untimed)
        if tool in ("adv_lib df", "foolbox"):
            by_tool[tool].update(peer_passes(runner, model, x[:n], y[:n]))
    return rows


def resized(tools: list[tuple[str, Runner, int]], n: int) -> list[tuple[str, Runner, int]]:
    """The fast tools (ART and torchattacks left out) on `n` images."""
    return [(tool, runner, n) for tool, runner, _ in tools if tool not in SLOW]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--slow-n", type=int, default=50, help="images for ART, torchattacks")
    parser.add_argument("--cifar-n", type=int, default=16)
    parser.add_argument("--fashion-n", type=int, default=100)
    parser.add_argument("--trained-n", type=int, default=24, help="images, trained ResNet-18")
    parser.add_argument("--cases", help="comma-separated subset of the models (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    lenet_tools: list[tuple[str, Runner, int]] = [
        ("adv_lib df", adv_lib_df, args.n),
        ("boundaryscope default", ours(), args.n),
        ("boundaryscope, no polish", ours(polish_steps=0), args.n),
        ("boundaryscope, box='project'", ours(box="project"), args.n),
        ("boundaryscope as published", ours_published, args.n),
        ("foolbox", foolbox_df, args.n),
        ("art", art_df, args.slow_n),
        ("torchattacks", torchattacks_df, args.slow_n),
    ]
    builders = {
        "lenet": lambda: (lenet_case(args.n), lenet_tools),
        "resnet18-cifar-shape": lambda: (
            cifar_case(args.cifar_n),
            resized(lenet_tools, args.cifar_n),
        ),
        "resnet18-fashion32": lambda: (
            trained_cifar_case(args.trained_n),
            resized(lenet_tools, args.trained_n),
        ),
        "resnet8-fashion": lambda: (
            fashion_case(args.fashion_n),
            resized(lenet_tools, args.fashion_n),
        ),
    }
    chosen = args.cases.split(",") if args.cases else list(builders)
    unknown = set(chosen) - set(builders)
    if unknown:
        parser.error(f"--cases: unknown {sorted(unknown)}; choose among {list(builders)}")
    cases = {name: builders[name]() for name in chosen}
    rows: list[dict[str, Any]] = []
    for threads in [int(t) for t in args.threads.split(",")]:
        for name, (case, tools) in cases.items():
            rows += run_case(name, case, tools, threads, args.repeats)
    settings = {
        "steps": STEPS,
        "overshoot": OVERSHOOT,
        "candidates": "all (10)",
        "p": 2,
        "bounds": [0, 1],
        **vars(args),
    }
    previous = RESULTS / "deepfool_vs_peers.json"
    if args.cases and previous.is_file():  # the other models' rows are kept as they were
        earlier = json.loads(previous.read_text())
        kept = [r for r in earlier["rows"] if r["model"] not in cases]
        for row in kept:  # with the run that measured them
            row.setdefault("measured", earlier["machine"]["date"])
            row.setdefault("settings", earlier["settings"])
        rows = kept + rows
    path = write("deepfool_vs_peers", {"settings": settings, "rows": rows})
    columns = ["model", "threads", "tool", "n", "images_per_s", "speed_vs_adv_lib",
               "ours_speedup", "success", "ratio_median", "ratio_mean", "ratio_p90",
               "ratio_max"]  # fmt: skip
    print()
    print(table(rows, columns))
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
