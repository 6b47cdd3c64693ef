"""Curvature detection (thesis §7.5, Alg. 6, Table 7.2, Fig. 7.9) on the shipped MNIST and
Fashion-MNIST models (each fitted and evaluated on the data its card names).

For each model: the curvature detector as Alg. 6 prints it, the same with Table 7.2's
signs (``orientation="reversed"``), Alg. 6 with the curvature measured at the boundary
point z as Table 7.2 does (``snap_steps=3``) and the confidence baseline are fitted on clean
training images for a 5% false-positive rate, then evaluated on held-out test images
perturbed by DeepFool (l2 × α = 1, 2, 5; l∞), FGSM at its 90% ε and PGD(20) at the
smallest ε fooling 90%: AUC, detection at the threshold, label recovery, the sign table,
the adaptive attacker, and the cost of batched against one-image-at-a-time scoring.
JSON in benchmarks/results/detection.json.
"""

from __future__ import annotations

import time

import torch

from _common import table, write
from boundaryscope import Classifier
from boundaryscope.data import load_dataset
from boundaryscope.defenses.detection import ConfidenceDetector, CurvatureDetector, evaluate
from boundaryscope.zoo import default_data, load_model

N_FIT, N_EVAL, T = 200, 200, 10
MODELS = [
    ("lenet-mnist", "fd"),
    ("fc500-150-10-mnist", "fd"),
    ("lenet-smooth-mnist", "exact"),
    ("lenet-fashion", "fd"),
    ("lenet-smooth-fashion", "exact"),
    ("resnet8-fashion", "fd"),
]


def scoring_speed(clf, x, method):
    out = {}
    for batch_size in (1, 32):
        detector = CurvatureDetector(T, method=method, batch_size=batch_size)
        start = time.perf_counter()
        detector.score_samples(clf, x)
        out[batch_size] = x.shape[0] / (time.perf_counter() - start)
    return out


def main() -> None:
    torch.manual_seed(0)
    rows, signs, payload = [], [], {}
    for spec, method in MODELS:
        data = default_data(f"zoo:{spec}")
        train, test = load_dataset(data, "train"), load_dataset(data, "test")
        clf = Classifier(load_model(f"zoo:{spec}").module)
        start = time.perf_counter()
        detectors = {
            "Alg. 6": CurvatureDetector(T, method=method),
            "Alg. 6 reversed": CurvatureDetector(T, method=method, orientation="reversed"),
            # Issue 27's explanation test: curvature at the boundary point z (Table 7.2)
            # instead of Alg. 6's G(z) ≈ G(x).
            "Alg. 6 at z": CurvatureDetector(T, method=method, snap_steps=3),
            "confidence": ConfidenceDetector(),
        }
        for detector in detectors.values():
            detector.fit(clf, train.x[:N_FIT])
        result = evaluate(clf, test.x[:N_EVAL], test.y[:N_EVAL], detectors)
        seconds = time.perf_counter() - start
        speed = scoring_speed(clf, test.x[:32], method)
        for attack, entry in result.attacks.items():
            row = {"model": spec, "attack": attack, "fooled": entry["fooled"]}
            for name in detectors:
                row[f"AUC {name}"] = entry[name]["auc"]
                row[f"det. {name}"] = entry[name]["detected"]
                row[f"rec. {name}"] = entry[name]["recovered"]
            rows.append(row)
        signs.append(
            {
                "model": spec,
                "clean ρ < 0": result.clean["Alg. 6"]["negative"],
                "DeepFool ρ > 0": result.attacks["DeepFool l2 × 1"]["Alg. 6"]["positive"],
                "FPR Alg. 6": result.clean["Alg. 6"]["false_positive"],
                "FPR confidence": result.clean["confidence"]["false_positive"],
                "adaptive evading": result.adaptive["evading"],
                "HVPs/image": result.cost["hvps_per_image"],
                "img/s batched": speed[32],
                "img/s one at a time": speed[1],
                "batched speed-up": speed[32] / speed[1],
                "seconds": seconds,
            }
        )
        payload[spec] = {
            "clean": result.clean,
            "attacks": result.attacks,
            "adaptive": result.adaptive,
            "cost": result.cost,
            "speed": speed,
            "seconds": seconds,
        }
        print(f"{spec}: {seconds:.0f} s", flush=True)
    columns = ["model", "attack", "fooled"] + [
        f"{kind} {name}"
        for name in ("Alg. 6", "Alg. 6 reversed", "Alg. 6 at z", "confidence")
        for kind in ("AUC", "det.", "rec.")
    ]
    print(table(rows, columns))
    print(table(signs, list(signs[0])))
    write("detection", {"n_fit": N_FIT, "n_eval": N_EVAL, "T": T, "rows": rows, "signs": signs,
                        "models": payload})  # fmt: skip


if __name__ == "__main__":
    main()
