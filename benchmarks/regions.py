"""Seeing the boundary: section cost, and the seed reproductions of thesis §5.6, §7.3, §6.5.

(1) Cost of one 200×200 normal cross-section of the shipped LeNet (40,000 grid rows plus the
512-point sweep along n), with `Classifier.sweep` (a checked channels-last copy of the
model) and with the plain forward pass, medians of 5 runs alternating the two after a warm-
up; target < 2 s on the project's 2-core CPU. (2) Where the boundary crosses the normal n:
`crossing` over sections of held-out images along random, universal and curved directions
(seed: at ||r(x)||, i.e. 1.0 in the axes' units). (3) Alg. 5 paths for the three scenarios
of §7.3 (spacing 1e-4 × ||x1 − x2||, depth limit 16): connected fraction, anchors, D(p)
(seed, CaffeNet on ImageNet: every pair connected, ≈ 10 anchors, D(p) ≈ 1 + 1e-4). (4) The
convexity probe, k = 2..10, 1,000 combinations per k (Fig. 7.3). (5) Principal angles
between the S_c and S_f of LeNet and FC500-150-10 (Fig. 6.12), with two random subspaces as
the baseline. Both shipped MNIST models; JSON in benchmarks/results/regions.json.

Usage: python benchmarks/regions.py [--pairs 100] [--cost-only] (1,000 pairs per scenario is
the seed's count: about 30 minutes for LeNet on this CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from _common import RESULTS, table, write
from boundaryscope import Classifier
from boundaryscope.data import load_mnist5k
from boundaryscope.geometry.curvature import boundary_points
from boundaryscope.geometry.sections import SectionsConfig, normal_section, sections_study
from boundaryscope.geometry.topology import RegionsConfig, model_subspace_angles, regions_study
from boundaryscope.zoo import load_model

MODELS = ("lenet-mnist", "fc500-150-10-mnist")


def classifier(name: str) -> Classifier:
    loaded = load_model(f"zoo:{name}")
    return Classifier(loaded.module, bounds=loaded.bounds, preprocessing=loaded.preprocessing)


def section_cost(clf: Classifier, x: torch.Tensor, repeats: int = 5) -> dict[str, float]:
    """Median seconds of one 200×200 section, sweep and plain forward alternating."""
    point = boundary_points(clf, x[:1])
    r, direction = point.z[0] - point.x[0], torch.randn_like(point.x[0])

    def once() -> float:
        start = time.perf_counter()
        normal_section(clf, point.x[0], r, direction, resolution=200)
        return time.perf_counter() - start

    once()
    original, fast, plain = Classifier.sweep, [], []
    try:
        for _ in range(repeats):  # alternate, so that machine noise hits both alike
            Classifier.sweep = original  # type: ignore[method-assign]
            fast.append(once())
            Classifier.sweep = _plain_sweep  # type: ignore[method-assign]
            plain.append(once())
    finally:
        Classifier.sweep = original  # type: ignore[method-assign]
    sweep_s, plain_s = statistics.median(fast), statistics.median(plain)
    return {"sweep_seconds": sweep_s, "plain_seconds": plain_s, "speedup": plain_s / sweep_s}


def _plain_sweep(self: Classifier):  # the same sweep through the user's model as it is
    import contextlib

    @contextlib.contextmanager
    def context():
        yield self.forward_scores

    return context()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100, help="pairs per scenario")
    parser.add_argument("--sections", type=int, default=20, help="images with sections")
    parser.add_argument(
        "--cost-only",
        action="store_true",
        help="re-measure only the section cost and update it in the existing JSON",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    test, train = load_mnist5k("test"), load_mnist5k("train")
    payload: dict[str, object] = {"pairs_per_scenario": args.pairs}
    clfs = {name: classifier(name) for name in MODELS}
    payload["section_cost_lenet_200x200"] = cost = section_cost(clfs["lenet-mnist"], test.x)
    print(
        f"200x200 LeNet section: {cost['sweep_seconds']:.2f} s (plain forward "
        f"{cost['plain_seconds']:.2f} s, {cost['speedup']:.2f}x), medians of 5"
    )
    if args.cost_only:
        previous = json.loads((RESULTS / "regions.json").read_text())
        previous["section_cost_lenet_200x200"] = cost
        previous.pop("machine", None)
        print("updated", write("regions", previous))
        return
    rows, path_rows = [], []
    for name, clf in clfs.items():
        sections = sections_study(
            clf, train.x, test.x, SectionsConfig(n_images=args.sections, resolution=100), seed=0
        )
        regions = regions_study(
            clf, test.x[:1000], RegionsConfig(pairs=args.pairs), seed=0, progress=False
        )
        summary = sections["summary"]
        rows.append({"model": name, **summary, "seconds": sections["seconds"]})
        for scenario, s in regions["scenarios"].items():
            valid = np.asarray(s["valid"], dtype=bool)
            anchors = np.asarray(s["anchors"], dtype=float)
            path_rows.append(
                {
                    "model": name,
                    "scenario": scenario,
                    "pairs": s["pairs"],
                    "connected": s["connected"],
                    "straight": s["straight"],
                    "anchors_mean": s["mean_anchors"],
                    "anchors_median": float(np.median(anchors[valid])) if valid.any() else None,
                    "anchors_max": float(anchors[valid].max()) if valid.any() else None,
                    "D_minus_1_mean": s["mean_deviation_minus_one"],
                    "seconds_per_pair": s["seconds"] / max(s["pairs"], 1),
                    "failures": "; ".join(s["failures"]),
                }
            )
        payload[name] = {
            "sections_summary": summary,
            "sections_per_image": [  # every section's numbers, not only the medians
                {
                    "index": image["index"],
                    "radius": image["radius"],
                    "direction": section["direction"],
                    "crossing": section["crossing"],
                    "plane_curvature": section["plane_curvature"],
                }
                for image in sections["images"]
                for section in image["sections"]
            ],
            "scenarios": regions["scenarios"],
            "convexity": regions["convexity"],
        }
        print(name, "convexity", [round(p, 3) for p in regions["convexity"]["probability"]])
    angles = model_subspace_angles(clfs["lenet-mnist"], clfs["fc500-150-10-mnist"], train.x[:100])
    payload["angles_lenet_vs_fc"] = angles
    print(table(rows, ["model", "sections", "crossing_median", "crossing_min", "crossing_max",
                       "crossing_within_5pct", "plane_curvature_random",
                       "plane_curvature_universal", "plane_curvature_curved"]))  # fmt: skip
    print(table(path_rows, list(path_rows[0])))
    for key in ("S_c", "S_f", "random"):
        cosines = angles[key]["cosines"]
        print(f"cos principal angles {key}: first {cosines[0]:.3f}, "
              f"median {statistics.median(cosines):.3f}")  # fmt: skip
    payload["sections_table"], payload["paths_table"] = rows, path_rows
    print("wrote", write("regions", payload))


if __name__ == "__main__":
    main()
