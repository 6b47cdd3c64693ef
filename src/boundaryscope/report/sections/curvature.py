"""Report section: how the decision boundary bends near the data (thesis §7.4, §6.4, §8.2).

The section owns its settings: `SETTINGS` maps each report profile to a `CurvatureConfig`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from boundaryscope.data import load_dataset
from boundaryscope.geometry.curvature import CurvatureConfig, curvature_study
from boundaryscope.report import figures
from boundaryscope.report.registry import (
    Analysis,
    ReportContext,
    Section,
    finite_median,
    format_number,
    register_analysis,
)

__all__ = ["SETTINGS", "CurvatureAnalysis"]

SETTINGS: dict[str, CurvatureConfig] = {
    "default": CurvatureConfig(max_steps=80),
    "full": CurvatureConfig(n_test=1000, max_steps=200, samples=64),
    "quick": CurvatureConfig(
        n_train=10,
        n_test=10,
        k=3,
        samples=8,
        rho_m=8,
        sc_m=4,
        sc_ms=(1, 4),
        draws=2,
        loss_n=5,
        max_steps=20,
    ),
}


@register_analysis
class CurvatureAnalysis(Analysis):
    """Principal curvatures, shared curved directions, S_c, loss curvature."""

    name = "curvature"
    title = "Boundary curvature"
    order = 60
    weight = 37.0
    settings = SETTINGS
    scalable = ("n_train", "n_test", "loss_n")

    def run(self, ctx: ReportContext) -> dict[str, Any]:
        """Runs `curvature_study` on training images (directions) and test images."""
        config = self.settings_in(ctx)
        train = load_dataset(ctx.data_spec, "train").subset(config.n_train)
        test = ctx.data
        return curvature_study(ctx.clf, train.x, test.x, test.y, config, seed=ctx.seed)

    def render(self, result: dict[str, Any], out_dir: Path) -> Section:
        """Profile, ρ_i, basis images, S/S⊥ noise, Table 7.1, S_c vs S_f vs Alg. 4, loss."""
        cfg = result["config"]
        scale = f"finite differences at h = {cfg['h']:.3g}" if cfg["method"] == "fd" else "exact"
        figs = [
            _profile_figure(result, out_dir),
            _rho_figure(result, out_dir),
            _basis_figure(result, out_dir),
            _noise_figure(result, out_dir),
            _loss_figure(result, out_dir),
        ]
        mean = np.asarray(result["mean_curvature"])
        stderr = np.asarray(result["mean_curvature_stderr"])
        significant = np.abs(mean) > 2 * stderr
        summary = [
            ["boundary points (held-out images)", f"{result['n_test_points']}"],
            ["median distance ‖r(x)‖₂ to the boundary", f"{result['distance_median']:.3f}"],
            [
                "mean curvature κ̄ < 0 (all points / where |κ̄| > 2 s.e.)",
                f"{np.mean(mean < 0):.0%} / "
                f"{np.mean(mean[significant] < 0) if significant.any() else math.nan:.0%}",
            ],
            ["median κ̄ (1 / input units)", f"{np.median(mean):.4f}"],
            ["largest / most negative principal curvature (mean)", _ends(result)],
            ["Hessian-vector products per point (Lanczos)", f"{result['products_per_point']:.0f}"],
            ["median relative Lanczos residual", f"{result['residual_median']:.2g}"],
        ]
        projections = [
            [name, f"{v['mean']:.2f} ± {v['std']:.2f}"] for name, v in result["projections"].items()
        ]
        fool = result["fooling"]
        fooling_rows = [
            *[[f"random v ∈ S_c, m = {m}", f"{r:.3f}"] for m, r in fool["S_c"].items()],
            *[[f"random v ∈ S_f, m = {m}", f"{r:.3f}"] for m, r in fool["S_f"].items()],
            ["Alg. 4 universal perturbation (l2)", f"{fool['alg4']:.3f}"],
            ["random direction", f"{fool['random']:.3f}"],
        ]
        train_sc = result.get("sc_curvature_train", {})
        sc_rows = [
            [
                m,
                f"{mean_std[0]:.4f} ± {mean_std[1]:.4f}",
                _mean_std(train_sc.get(m)),
            ]
            for m, mean_std in result["sc_curvature"].items()
        ]
        loss = result["loss"]
        lower = np.asarray(loss["lower"], dtype=float)
        measured = np.asarray(loss["deepfool_norm"], dtype=float)
        both = np.isfinite(lower) & np.isfinite(measured)
        loss_rows = [
            ["gradient–top-eigenvector alignment |gᵀu|/‖g‖ (median)", _median(loss["alignment"])],
            ["Theorem 5 lower bound on ‖r*‖ (median)", _median(loss["lower"])],
            ["Theorem 5 upper bound (median)", _median(loss["upper"])],
            ["DeepFool ‖r(x)‖₂ on the same images (median)", _median(loss["deepfool_norm"])],
            [
                "images where the lower bound ≤ DeepFool's norm",
                f"{np.mean(lower[both] <= measured[both]):.0%}" if both.any() else "—",
            ],
        ]
        return Section(
            title=self.title,
            intro=(
                "How the decision boundary bends next to the data ([[thesis, §7.4]]). For each "
                "image x, DeepFool gives the closest boundary point z; the principal "
                "curvatures there are the eigenvalues of the boundary function's Hessian "
                "restricted to the tangent plane, divided by the gradient norm (eq. 7.2), "
                f"computed from Hessian-vector products ({scale}). Positive curvature means "
                "the boundary bends towards the image. A few curved directions, shared "
                "between images, explain where the model is sensitive."
            ),
            tables=[
                ("Curvature at the boundary", ["quantity", "value"], [*summary, *loss_rows]),
                (
                    f"‖P_S v‖/‖v‖ on S = the first {result['subspace_m']} shared curved "
                    f"directions of d = {result['d']} (cf. [[thesis, Table 7.1]]: larger = "
                    f"more inside S)",
                    ["perturbation v", "mean ± std"],
                    projections,
                ),
                (
                    f"Fooling rate of perturbations of l2 norm {fool['xi']:.3g} on held-out "
                    "images (cf. [[thesis, Fig. 6.9b]]): random vectors from the most "
                    "positively curved "
                    "subspace S_c, from the span of the normals S_f, Alg. 4, a random direction",
                    ["perturbation", "fooling rate"],
                    fooling_rows,
                ),
                (
                    "Average curvature of the boundary in the first m directions of S_c "
                    "(eq. 6.4; > 0: bends towards the image), at held-out points and at the "
                    "training points S_c was computed from",
                    ["m", "held-out: mean ± std", "training: mean ± std"],
                    sc_rows,
                ),
            ],
            figures=figs,
            notes=[
                "How to read: the profile shows that most principal curvatures are small and "
                "a few are large; an asymmetric profile (more negative mass) is what the "
                "curvature detector of §7.5 relies on. ρ_i ≫ 1 means the shared direction "
                "u_i is far more curved than a random one at images not used to find it.",
                "Theorem 5 bounds assume the loss is quadratic over the whole distance to the "
                "boundary; for confidently classified images the cross-entropy is saturated "
                "and the bounds can be far from DeepFool's norm — read them as the "
                "quadratic model's prediction, not as guarantees.",
            ],
        )


def _ends(result: dict[str, Any]) -> str:
    mean = result["profile"]["mean"]
    return f"{mean[0]:.3f} / {mean[-1]:.3f}"


def _mean_std(pair: list[float] | None) -> str:
    return "—" if not pair else f"{pair[0]:.4f} ± {pair[1]:.4f}"


def _median(values: list[float]) -> str:
    return format_number(finite_median(values), ".3g")


def _profile_figure(result: dict[str, Any], out_dir: Path) -> tuple[str, str]:
    profile = result["profile"]
    fig, _ = figures.spectrum_ends(
        {"mean over points": profile["mean"], "median": profile["median"]},
        "rank (most positive … most negative)",
        "principal curvature (1 / input units)",
    )
    return (
        figures.save(fig, out_dir / "curvature_profile.png"),
        "Extreme principal curvatures at boundary points near held-out images, averaged "
        "rank by rank (cf. [[thesis, Fig. 7.5b]]). The middle of the profile (not computed) is "
        "≈ 0.",
    )


def _rho_figure(result: dict[str, Any], out_dir: Path) -> tuple[str, str]:
    rho = result["rho"]["mean"]
    fig, ax = figures.lines(
        range(1, len(rho) + 1), {"mean ρ_i(z)": rho}, "shared direction i", "ρ_i", log_y=True
    )
    ax.axhline(1, color="black", lw=0.6)
    return (
        figures.save(fig, out_dir / "curvature_rho.png"),
        "ρ_i(z): curvature along the i-th shared direction relative to random directions, "
        "at held-out points (cf. [[thesis, Fig. 7.6a]]); above 1 = more curved than random.",
    )


def _basis_figure(result: dict[str, Any], out_dir: Path) -> tuple[str, str]:
    images = []
    for u in result["shared_basis"]:
        u = np.asarray(u)
        images.append(0.5 + 0.5 * u / (np.abs(u).max() or 1.0))
    fig, _ = figures.image_row(images, [f"u_{i + 1}" for i in range(len(images))])
    return (
        figures.save(fig, out_dir / "curvature_basis.png"),
        "The first shared curved directions u_i (grey = 0; cf. [[thesis, Fig. 7.6b]]).",
    )


def _noise_figure(result: dict[str, Any], out_dir: Path) -> tuple[str, str]:
    noise = result["noise"]
    relative = [level / noise["image_norm"] for level in noise["levels"]]
    fig, ax = figures.lines(
        relative,
        {
            f"noise in S (first {result['subspace_m']} u_i)": noise["rates"]["S"],
            "noise in S⊥": noise["rates"]["S_perp"],
            "noise in R^d": noise["rates"]["random"],
        },
        "‖noise‖₂ / median ‖x‖₂",
        "share of labels changed",
    )
    ax.set_ylim(-0.02, 1.02)
    return (
        figures.save(fig, out_dir / "curvature_noise.png"),
        "Label changes under Gaussian noise restricted to the shared curved subspace S or "
        "its complement (cf. [[thesis, Fig. 7.7]]; no clipping to the box).",
    )


def _loss_figure(result: dict[str, Any], out_dir: Path) -> tuple[str, str]:
    fig, _ = figures.spectrum_ends(
        {"mean eigenvalue": result["loss"]["eigenvalues_mean"]},
        "rank (largest … smallest)",
        "eigenvalue of ∇²ₓℓ",
    )
    return (
        figures.save(fig, out_dir / "curvature_loss.png"),
        "Extreme eigenvalues of the input Hessian of the loss at test images (cf. [[thesis, "
        "Fig. 8.2]]); "
        "robust training flattens this profile.",
    )
