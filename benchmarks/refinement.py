"""Refined geometry against the dense sweeps it replaces: same answers, fewer model rows.

(1) Normal cross-sections (thesis Fig. 5.5, 6.7) of held-out images along three random
tangents each, at 121×121 (the report's default) and 200×200 (the CLI's): every grid point
evaluated (``coarse=1``) against every 8th per axis refined where the label changes
(``coarse=8``; 16 at 200). Per model: points whose labels differ (apart from points on the
boundary itself, |margin| ≤ 1e-4, whose label depends on float rounding in the batch),
the largest difference of the crossing along n and of the plane curvature, model rows and
seconds of each. (2) Alg. 5 paths (thesis §7.3; spacing 1e-4 × ‖x1 − x2‖, depth limit
16) for the three scenarios: every sample checked against bisection where the margin comes
near zero; pairs whose segment verdicts or anchors differ, samples and seconds. Models: the
shipped LeNet and FC500-150-10 (MNIST), and a CIFAR-shaped ResNet-18 (BatchNorm, random
weights; sections only, 121×121, and 20 natural pairs at spacing 1e-3) for the cost ratio
where a pass is expensive.

Usage: python benchmarks/refinement.py [--images 20] [--pairs 50] (≈ 25 min on this CPU);
JSON in benchmarks/results/refinement.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import table, user_model_folder, write
from boundaryscope import Classifier
from boundaryscope.data import load_dataset, load_mnist5k
from boundaryscope.geometry.curvature import boundary_points
from boundaryscope.geometry.sections import normal_section
from boundaryscope.geometry.topology import find_path, scenario_pairs
from boundaryscope.zoo import load_model


def classifier(spec: str) -> Classifier:
    loaded = load_model(spec)
    return Classifier(loaded.module, bounds=loaded.bounds, preprocessing=loaded.preprocessing)


def timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def sections(clf: Classifier, x: torch.Tensor, resolution: int, coarse: int) -> dict[str, Any]:
    """Dense against refined sections of every image along three random tangents."""
    points = boundary_points(clf, x)
    generator = torch.Generator().manual_seed(0)
    rows = {"dense": 0, "refined": 0}
    seconds = {"dense": 0.0, "refined": 0.0}
    differ = on_boundary = 0
    crossing_gap = curvature_gap = 0.0
    count = 0
    for i in range(len(points)):
        r = points.z[i] - points.x[i]
        for _ in range(3):
            direction = torch.randn(r.shape, generator=generator)

            def section(c: int, i: int = i, r: torch.Tensor = r, v: torch.Tensor = direction):
                return normal_section(clf, points.x[i], r, v, resolution=resolution, coarse=c)

            dense, t_dense = timed(lambda: section(1))
            refined, t_refined = timed(lambda: section(coarse))
            mismatch = refined.labels != dense.labels
            near = np.abs(dense.margin) <= 1e-4
            differ += int((mismatch & ~near).sum())
            on_boundary += int((mismatch & near).sum())
            crossing_gap = max(crossing_gap, abs(refined.crossing - dense.crossing))
            kappa = (dense.plane_curvature(), refined.plane_curvature())
            if np.isfinite(kappa).all():
                curvature_gap = max(curvature_gap, abs(kappa[0] - kappa[1]) / abs(kappa[0]))
            rows["dense"] += dense.rows
            rows["refined"] += refined.rows
            seconds["dense"] += t_dense
            seconds["refined"] += t_refined
            count += 1
    return {
        "sections": count,
        "resolution": resolution,
        "coarse": coarse,
        "labels_differ": differ,
        "labels_differ_on_boundary": on_boundary,
        "crossing_max_abs_diff": crossing_gap,
        "plane_curvature_max_rel_diff": curvature_gap,
        "rows": rows,
        "seconds": seconds,
        "row_ratio": rows["dense"] / rows["refined"],
        "time_ratio": seconds["dense"] / seconds["refined"],
    }


def paths(
    clf: Classifier, x: torch.Tensor, pairs: int, spacing: float, scenarios: tuple[str, ...]
) -> dict[str, Any]:
    """Alg. 5 with every sample checked against bisection, on the same pairs."""
    samples = {"dense": 0, "refined": 0}
    seconds = {"dense": 0.0, "refined": 0.0}
    differ, count, valid = 0, 0, 0
    for offset, scenario in enumerate(scenarios):
        x1, x2 = scenario_pairs(clf, x, scenario, pairs, seed=offset)  # type: ignore[arg-type]
        for a, b in zip(x1, x2, strict=True):
            dense, t_dense = timed(
                lambda a=a, b=b: find_path(clf, a, b, spacing=spacing, refine=False)
            )
            refined, t_refined = timed(lambda a=a, b=b: find_path(clf, a, b, spacing=spacing))
            same = (
                dense.segment_valid.tolist() == refined.segment_valid.tolist()
                and dense.anchors.shape == refined.anchors.shape
                and bool(torch.allclose(dense.anchors, refined.anchors))
            )
            differ += not same
            valid += dense.valid
            count += 1
            samples["dense"] += dense.samples
            samples["refined"] += refined.samples
            seconds["dense"] += t_dense
            seconds["refined"] += t_refined
    return {
        "paths": count,
        "valid_dense": valid,
        "spacing": spacing,
        "paths_differ": differ,
        "samples": samples,
        "seconds": seconds,
        "sample_ratio": samples["dense"] / max(samples["refined"], 1),
        "time_ratio": seconds["dense"] / seconds["refined"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20, help="images with sections")
    parser.add_argument("--pairs", type=int, default=50, help="pairs per scenario")
    args = parser.parse_args()
    torch.manual_seed(0)
    test = load_mnist5k("test")
    payload: dict[str, Any] = {"images": args.images, "pairs_per_scenario": args.pairs}
    section_rows, path_rows = [], []
    scenarios = ("natural", "adversarial", "noise")
    for name in ("lenet-mnist", "fc500-150-10-mnist"):
        clf = classifier(f"zoo:{name}")
        x = test.x[:: max(len(test) // args.images, 1)][: args.images]
        result: dict[str, Any] = {
            "sections_121": sections(clf, x, 121, 8),
            "sections_200": sections(clf, x, 200, 16),
            "paths": paths(clf, test.x[:1000], args.pairs, 1e-4, scenarios),
        }
        payload[name] = result
        for key in ("sections_121", "sections_200"):
            section_rows.append({"model": name, **result[key]})
        path_rows.append({"model": name, **result["paths"]})
        print(name, "done")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        user_model_folder(
            folder, "resnet18", size=32, classes=10, coarse=8, batches=4, batch=64, images=200
        )
        import os

        cwd = os.getcwd()
        os.chdir(folder)
        try:
            clf = classifier("./model.py:factory")
            data = load_dataset("npz:data.npz", "test")
        finally:
            os.chdir(cwd)
        result = {
            "sections_121": sections(clf, data.x[:2], 121, 8),
            "paths": paths(clf, data.x[:200], 10, 1e-3, ("natural",)),
        }
        payload["resnet18-cifar"] = result
        section_rows.append({"model": "resnet18-cifar", **result["sections_121"]})
        path_rows.append({"model": "resnet18-cifar", **result["paths"]})
    columns = [
        "model", "resolution", "coarse", "sections", "labels_differ",
        "labels_differ_on_boundary", "crossing_max_abs_diff", "plane_curvature_max_rel_diff",
        "row_ratio", "time_ratio",
    ]  # fmt: skip
    print(table(section_rows, columns))
    columns = ["model", "paths", "valid_dense", "spacing", "paths_differ", "sample_ratio",
               "time_ratio"]  # fmt: skip
    print(table(path_rows, columns))
    print("->", write("refinement", payload))


if __name__ == "__main__":
    main()
