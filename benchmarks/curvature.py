"""Boundary curvature: solver accuracy and cost, h sensitivity, and the seed reproductions.

(1) Top-20 principal curvatures (largest magnitude) at boundary points of the shipped
LeNet (finite differences, h = 0.1) and of the smooth LeNet (exact HVPs) by (a) our batched
Lanczos, (b) ARPACK eigsh one point at a time, (c) deflated power iteration as PyHessian
does it (written here: power iteration on the operator deflated by the eigenvectors found,
tol 1e-3 on the eigenvalue, 100 iterations at most), against (d) dense eigvalsh of the
symmetrised d×d matrix built from d operator products per point. For each solver: the
eigenvalue estimates θ against (d), and the curvature κ = vᵀGv measured along the
directions it returns (for a finite-difference operator on a ReLU net, G is not linear
and θ overstates κ; the solver whose directions have the larger measured |κ| found the
more curved directions). (2) Sensitivity of the
curvatures to h. (3) `curvature_study` on both models (Figs. 7.5–7.7, Table 7.1, eq. 6.4,
Fig. 6.9b, Fig. 8.2). JSON in benchmarks/results/curvature.json.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from _common import RESULTS, table, write
from boundaryscope import Classifier
from boundaryscope.data import load_dataset, load_mnist5k
from boundaryscope.geometry.curvature import (
    CurvatureConfig,
    boundary_points,
    curvature_operator,
    curvature_study,
    principal_curvatures,
    quadratic_forms,
)
from boundaryscope.zoo import default_data, load_model

K, N_BATCHED, N_SERIAL = 20, 50, 10
MODELS = [("lenet-mnist", "fd", 0.1), ("lenet-smooth-mnist", "exact", None)]
# Part (3) also on Fashion-MNIST (issue 27): the same study on the data each card names, with
# X capped at the 4,000 training images MNIST has, so both datasets get the same sizes.
STUDY_MODELS = [
    *[(spec, method) for spec, method, _ in MODELS],
    ("lenet-fashion", "fd"),
    ("lenet-smooth-fashion", "exact"),
    ("resnet8-fashion", "fd"),
]
STUDY_TRAIN = 4000


def dense_reference(matvec, points, d):
    """Top-K eigenpairs (by magnitude) of the symmetrised matrix of d operator columns."""
    values, vectors = [], []
    eye = torch.eye(d, dtype=torch.float64)
    for n in range(len(points)):
        columns = matvec(eye, torch.full((d,), n)).double()
        eig, vec = torch.linalg.eigh(0.5 * (columns + columns.T))
        top = eig.abs().argsort(descending=True)[:K]
        values.append(eig[top])
        vectors.append(vec[:, top].T)
    return torch.stack(values), torch.stack(vectors)


def power_iteration(matvec, n_points, d, seed=0):
    """PyHessian-style: one eigenpair at a time, deflating the ones found."""
    values, vectors, products = [], [], []
    g = torch.Generator().manual_seed(seed)
    for n in range(n_points):
        row, found, count, eigen = torch.tensor([n]), [], 0, []
        for _ in range(K):
            v = torch.randn(1, d, generator=g, dtype=torch.float64)
            estimate = None
            for _ in range(100):
                for u in found:
                    v = v - (v @ u.T) * u
                v = v / v.norm()
                w = matvec(v, row).double()
                count += 1
                for u in found:
                    w = w - (w @ u.T) * u
                new = float((w * v).sum())
                converged = estimate is not None and abs(new - estimate) <= 1e-3 * abs(estimate)
                estimate, v = new, (v if converged else w)
                if converged:
                    break
            found.append(v / v.norm())
            eigen.append(estimate)
        values.append(torch.tensor(eigen))
        vectors.append(torch.cat(found))
        products.append(count)
    return torch.stack(values), torch.stack(vectors), torch.tensor(products)


def by_magnitude(values):
    return np.take_along_axis(values, np.argsort(-np.abs(values), axis=1), axis=1)


def solvers(spec, method, h, x):
    clf = Classifier(load_model(f"zoo:{spec}").module)
    points = boundary_points(clf, x[:N_BATCHED])
    d = x[0].numel()
    _, matvec = curvature_operator(clf, points, method=method, h=h)
    start = time.perf_counter()
    dense_values, dense_vectors = dense_reference(matvec, points, d)
    dense_s = time.perf_counter() - start
    dense_values = dense_values.numpy()
    dense_measured = by_magnitude(quadratic_forms(matvec, dense_vectors).numpy())
    rows = [
        {"model": spec, "solver": "dense eigvalsh (d products)", "points": N_BATCHED,
         "HVPs/point": d, "ms/point": 1000 * dense_s / N_BATCHED,
         "mean |κ| measured": float(np.abs(dense_measured).mean()),
         "mean |θ| / mean |κ|": float(np.abs(dense_values).mean() / np.abs(dense_measured).mean())}
    ]  # fmt: skip
    start = time.perf_counter()
    ours = principal_curvatures(clf, points, K, which="magnitude", method=method, h=h,
                                max_steps=160, tol=1e-4)  # fmt: skip
    ours_s = time.perf_counter() - start
    rows.append(_row(spec, "batched Lanczos (ours)", N_BATCHED, ours.products, ours_s,
                     ours.curvatures.double().numpy(), ours.ritz_values.double().numpy(),
                     dense_values))  # fmt: skip
    few = points.subset(torch.arange(N_SERIAL))
    start = time.perf_counter()
    arpack = principal_curvatures(clf, few, K, which="magnitude", method=method, h=h,
                                  solver="eigsh", tol=1e-4)  # fmt: skip
    arpack_s = time.perf_counter() - start
    rows.append(_row(spec, "ARPACK eigsh, per point", N_SERIAL, arpack.products, arpack_s,
                     arpack.curvatures.double().numpy(), arpack.ritz_values.double().numpy(),
                     dense_values[:N_SERIAL]))  # fmt: skip
    _, few_matvec = curvature_operator(clf, few, method=method, h=h)
    start = time.perf_counter()
    power, power_vectors, counts = power_iteration(few_matvec, N_SERIAL, d)
    power_s = time.perf_counter() - start
    measured = by_magnitude(quadratic_forms(few_matvec, power_vectors).numpy())
    rows.append(_row(spec, "deflated power iteration", N_SERIAL, counts, power_s, measured,
                     power.numpy(), dense_values[:N_SERIAL]))  # fmt: skip
    return rows


def _row(spec, name, n, products, seconds, measured, ritz, dense):
    err = np.abs(by_magnitude(ritz) - dense) / np.abs(dense)
    return {
        "model": spec,
        "solver": name,
        "points": n,
        "HVPs/point": float(products.double().mean()),
        "ms/point": 1000 * seconds / n,
        "median rel. err": float(np.median(err)),
        "max rel. err": float(np.max(err)),
        "share within 1%": float(np.mean(err <= 0.01)),
        "mean |κ| measured": float(np.abs(measured).mean()),
        "mean |θ| / mean |κ|": float(np.abs(ritz).mean() / np.abs(measured).mean()),
    }


def sensitivity(x):
    rows = []
    for spec in ("lenet-mnist", "lenet-smooth-mnist"):
        clf = Classifier(load_model(f"zoo:{spec}").module)
        points = boundary_points(clf, x[:20])
        cases = [("fd", h) for h in (0.003, 0.01, 0.03, 0.1, 0.3)]
        if spec == "lenet-smooth-mnist":
            cases.append(("exact", None))
        for method, h in cases:
            pc = principal_curvatures(clf, points, 5, which="both", method=method, h=h,
                                      max_steps=80)  # fmt: skip
            c = pc.curvatures.double()
            rows.append({"model": spec, "method": method, "h": h if h else "—",
                         "mean top κ": float(c[:, 0].mean()),
                         "mean bottom κ": float(c[:, -1].mean())})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--study-only",
        default=None,
        metavar="MODELS",
        help="rerun part (3) only for these comma-separated zoo models, keeping the other "
        "rows of curvature.json",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.study_only:
        previous = json.loads((RESULTS / "curvature.json").read_text())
        wanted = args.study_only.split(",")
        studies = previous["studies"]
        studies.update(run_studies([(s, m) for s, m in STUDY_MODELS if s in wanted]))
        write("curvature", {**previous, "studies": studies})
        return
    test = load_mnist5k("test")
    solver_rows = []
    for spec, method, h in MODELS:
        solver_rows += solvers(spec, method, h, test.x)
    columns = ["model", "solver", "points", "HVPs/point", "ms/point", "median rel. err",
               "max rel. err", "share within 1%", "mean |κ| measured",
               "mean |θ| / mean |κ|"]  # fmt: skip
    print(table(solver_rows, columns))
    sens = sensitivity(test.x)
    print(table(sens, ["model", "method", "h", "mean top κ", "mean bottom κ"]))
    write("curvature", {"solvers": solver_rows, "sensitivity": sens,
                        "studies": run_studies(STUDY_MODELS)})  # fmt: skip


def run_studies(models: list[tuple[str, str]]) -> dict:
    """Part (3): `curvature_study` per model, on the data its card names."""
    studies = {}
    for spec, method in models:
        clf = Classifier(load_model(f"zoo:{spec}").module)
        data = default_data(f"zoo:{spec}")
        train, test = load_dataset(data, "train").subset(STUDY_TRAIN), load_dataset(data, "test")
        start = time.perf_counter()
        studies[spec] = curvature_study(
            clf, train.x, test.x, test.y, CurvatureConfig(method=method), seed=0
        )
        studies[spec]["data"] = data
        studies[spec]["seconds"] = time.perf_counter() - start
        s = studies[spec]
        mean = np.asarray(s["mean_curvature"])
        print(
            f"{spec}: {s['seconds']:.0f} s; κ̄ < 0 on {np.mean(mean < 0):.0%}; profile ends "
            f"{s['profile']['mean'][0]:.3g} / {s['profile']['mean'][-1]:.3g}; ρ_1..5 "
            f"{np.round(s['rho']['mean'][:5], 1)}; projections "
            f"{ {k: round(v['mean'], 2) for k, v in s['projections'].items()} }; noise S "
            f"{s['noise']['rates']['S']} S⊥ {s['noise']['rates']['S_perp']}; fooling "
            f"{s['fooling']}; S_c curvature {s['sc_curvature']}; loss alignment median "
            f"{np.median(s['loss']['alignment']):.2f}"
        )
        for key in ("shared_basis", "sc_basis", "curvatures"):
            s.pop(key)
    return studies


if __name__ == "__main__":
    main()
