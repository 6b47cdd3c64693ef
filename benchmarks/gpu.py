"""One short device benchmark: images/s and peak memory per method at CIFAR and ImageNet shapes.

Meant for a lent GPU (issues 25 and 29), and runs on the CPU too (`--device cpu`, smaller
sizes) so that it is tested before a device is available. Two models with random weights
(cost and memory do not depend on training): the zoo's CIFAR ResNet-18 (3×32×32, 10
classes) and its ImageNet-layout ResNet-50 (3×224×224, bottlenecks [3, 4, 6, 3], 1,000
classes), both with BatchNorm in eval mode. Per model, method and precision:

- images/s of one timed call after one warm-up call (the same images);
- peak device memory of that call (`torch.cuda.max_memory_allocated`; on CPU the process's
  peak resident memory, which only grows);
- for ``bf16`` (autocast, channels-last): agreement with fp32 — share of identical
  predictions, and for DeepFool the median per-image ratio of the l2 norms.

Methods: ``predict`` (forward only), ``deepfool`` (l2, the default: projected step, landing,
polish; at 1,000 classes the top 10 candidates as in the seed), ``pgd`` (l∞ ε = 8/255 or
4/255, 10 steps), ``apgd`` (APGD-CE, 20 steps). The whole run is kept under `--budget`
seconds: a model's remaining rows are skipped, and said so, once the budget is spent.

    python benchmarks/gpu.py [--device cuda] [--budget 540] [--cifar-n 256] [--imagenet-n 32]

Writes benchmarks/results/gpu_<device type>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from _common import table, write
from boundaryscope import Classifier
from boundaryscope.attacks import APGD, PGD, DeepFool
from boundaryscope.zoo import build


def models(device: torch.device, cifar_n: int, imagenet_n: int) -> dict[str, dict[str, Any]]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    return {
        "resnet18-cifar": {
            "module": build("resnet18", num_classes=10, in_channels=3, image_size=32),
            "x": torch.rand(cifar_n, 3, 32, 32, generator=g),
            "eps": 8 / 255,
            "candidates": 10,
        },
        "resnet50-imagenet": {
            "module": build("resnet50", num_classes=1000, in_channels=3, image_size=224),
            "x": torch.rand(imagenet_n, 3, 224, 224, generator=g),
            "eps": 4 / 255,
            "candidates": 10,
        },
    }


@contextlib.contextmanager
def precision(mode: str, device: torch.device) -> Iterator[None]:
    if mode == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        yield


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def methods(spec: dict[str, Any], batch: int) -> dict[str, Callable[[Classifier, Tensor], Any]]:
    eps, candidates = spec["eps"], spec["candidates"]
    return {
        "predict": lambda clf, x: clf.predict(x, batch),
        "deepfool": lambda clf, x: DeepFool(p=2, candidates=candidates, batch_size=batch)(clf, x),
        "pgd": lambda clf, x: PGD(eps=eps, steps=10, batch_size=batch)(clf, x),
        "apgd": lambda clf, x: APGD(eps=eps, steps=20, batch_size=batch)(clf, x),
    }


def outputs(result: Any) -> tuple[Tensor, Tensor | None]:
    """Labels (and DeepFool's norms) of a method's result, for the bf16 agreement check."""
    if isinstance(result, Tensor):
        return result.cpu(), None
    return result.adversarial_label.cpu(), result.norms.cpu()


def timed(device: torch.device, run: Callable[[], Any]) -> tuple[Any, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default_device)
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for the whole run")
    parser.add_argument("--cifar-n", type=int, default=256)
    parser.add_argument("--imagenet-n", type=int, default=32)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--methods", default="predict,deepfool,pgd,apgd")
    args = parser.parse_args()
    device = torch.device(args.device)
    start, rows, skipped = time.perf_counter(), [], []
    for name, spec in models(device, args.cifar_n, args.imagenet_n).items():
        x = spec["x"].to(device)
        reference: dict[str, tuple[Tensor, Tensor | None]] = {}
        for mode in args.precisions.split(","):
            module = spec["module"].to(device).eval()
            if mode != "fp32":
                module = module.to(memory_format=torch.channels_last)
            clf = Classifier(module, bounds=(0.0, 1.0), device=device)
            for method, run in methods(spec, args.batch).items():
                if method not in args.methods.split(","):
                    continue
                if time.perf_counter() - start > args.budget:
                    skipped.append(f"{name}/{mode}/{method}")
                    continue
                with precision(mode, device):
                    run(clf, x[: min(4, len(x))])  # warm-up: kernels, allocator
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    result, seconds = timed(device, lambda r=run, c=clf, a=x: r(c, a))
                labels, norms = outputs(result)
                row: dict[str, Any] = {
                    "model": name,
                    "precision": mode,
                    "method": method,
                    "n": len(x),
                    "images_per_s": len(x) / seconds,
                    "peak_memory_mb": peak_memory_mb(device),
                }
                if mode == "fp32":
                    reference[method] = (labels, norms)
                elif method in reference:
                    ref_labels, ref_norms = reference[method]
                    row["same_labels_as_fp32"] = float((labels == ref_labels).float().mean())
                    if norms is not None and ref_norms is not None:
                        ok = torch.isfinite(norms) & torch.isfinite(ref_norms) & (ref_norms > 0)
                        if bool(ok.any()):
                            row["norm_ratio_to_fp32"] = float((norms[ok] / ref_norms[ok]).median())
                rows.append(row)
                print(f"{name:18s} {mode:5s} {method:9s} {row['images_per_s']:9.1f} img/s "
                      f"{row['peak_memory_mb']:9.0f} MB", flush=True)  # fmt: skip
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    settings = {**vars(args), "device_name": device_name, "skipped": skipped}
    path = write(f"gpu_{device.type}", {"settings": settings, "rows": rows})
    columns = ["model", "precision", "method", "n", "images_per_s", "peak_memory_mb",
               "same_labels_as_fp32", "norm_ratio_to_fp32"]  # fmt: skip
    print(table(rows, columns))
    if skipped:
        print(f"skipped (over the {args.budget:g} s budget): {', '.join(skipped)}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
