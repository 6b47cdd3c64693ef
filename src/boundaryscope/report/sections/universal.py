"""Report section: a universal perturbation and the geometry behind it (thesis ch. 4, §6.3).

The section owns its settings: `SETTINGS` maps each report profile to a `UniversalSettings`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import Tensor

from boundaryscope.attacks import DeepFool
from boundaryscope.data import load_dataset
from boundaryscope.norms import lp_norm
from boundaryscope.report import figures
from boundaryscope.report.registry import (
    COUNT,
    FRACTION,
    REAL,
    Analysis,
    ReportContext,
    Section,
    register_analysis,
)
from boundaryscope.universal import (
    dominant_label_graph,
    flat_model,
    fooling_rate,
    phase_transition,
    transfer_matrix,
    universal_perturbation,
)

__all__ = ["SETTINGS", "UniversalAnalysis", "UniversalSettings"]


@dataclass(frozen=True)
class UniversalSettings:
    """Sizes of the universal-perturbation section.

    Attributes:
        n_train: Training images ``X`` of Alg. 4 (from the data's train split).
        xi: l∞ radius ξ of the perturbation, in input units.
        passes: Passes of Alg. 4 over ``X`` (the paper's variant).
    """

    n_train: int = 500
    xi: float = 0.5
    passes: int = 5


SETTINGS: dict[str, UniversalSettings] = {
    "default": UniversalSettings(),
    "full": UniversalSettings(),
    "quick": UniversalSettings(n_train=24, passes=1),
}


# Alg. 4's model rows over the evaluation's rows per test image, on the shipped LeNet
# (2026-12-02, one DeepFool run for the phase transition and the flat model): 498 / 115
# with the quick settings, 25,172 / 115 with the default ones.
_ALG4_IMAGES = {"quick": 4.3, "default": 219.0}


@register_analysis
class UniversalAnalysis(Analysis):
    """Alg. 4 on training images, held-out fooling, Fig. 4.9 curves, Fig. 4.7, Fig. 6.3."""

    name = "universal"
    schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["xi", "n_train", "n_test", "fooling_train", "fooling_test", "bounds"],
        "properties": {
            "xi": {"type": "number", "minimum": 0},
            "n_train": COUNT,
            "n_test": COUNT,
            "fooling_train": FRACTION,
            "fooling_test": FRACTION,
            "l2_norm": REAL,
            "linf_norm": REAL,
            "bounds": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
            "num_classes": {"type": "integer", "minimum": 1},
            "cross_model": {
                "type": "object",
                "required": ["models", "matrix"],
                "properties": {
                    "models": {"type": "array", "items": {"type": "string"}},
                    "matrix": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "additionalProperties": FRACTION,
                        },
                    },
                },
            },
        },
    }
    title = "Universal perturbations"
    order = 50
    weight = 57.0
    settings = SETTINGS
    scalable = ("n_train",)

    def work(self, profile: str, n: int, scale: float = 1.0) -> float:
        """Alg. 4 (in test-image units, its ``n_train`` at `scale`) plus the `n` test images.

        Most of the section is the evaluation of ``v`` on every test image (phase
        transition, flat model, fooling rate: 115 model rows per image on the shipped
        LeNet); Alg. 4 on the profile's training images is worth `_ALG4_IMAGES` of them.
        """
        alg4 = _ALG4_IMAGES.get(profile, _ALG4_IMAGES["default"])
        return alg4 * self.sample_share(profile, scale) + float(n)

    def run(self, ctx: ReportContext) -> dict[str, Any]:
        """Computes v on the settings' ``n_train`` training images (l∞) and evaluates it."""
        cfg: UniversalSettings = self.settings_in(ctx)
        train = load_dataset(ctx.data_spec, "train").subset(cfg.n_train)
        test = ctx.data
        result = universal_perturbation(
            ctx.clf,
            train.x,
            cfg.xi,
            p=math.inf,
            max_passes=cfg.passes,
            seed=ctx.seed,
        )
        v = result.v
        l2 = float(lp_norm(v[None].double(), 2)[0])
        norms = np.linspace(0, 2 * l2, 9).tolist()
        deepfool = DeepFool(p=2)(ctx.clf, test.x)  # one run serves both measures
        curves = phase_transition(ctx.clf, test.x, v, norms, p=2, seed=ctx.seed, deepfool=deepfool)
        flat = flat_model(ctx.clf, test.x, l2, [5, 20, 100], seed=ctx.seed, deepfool=deepfool)
        examples = test.x[:4]
        cross = _cross_model(ctx, train.x, cfg, v) if ctx.others else None
        return {
            "xi": cfg.xi,
            "n_train": len(train),
            "n_test": len(test),
            "fooling_train": result.fooling_rate,
            "fooling_test": fooling_rate(ctx.clf, test.x, v),
            "history": result.history,
            "l2_norm": l2,
            "linf_norm": float(v.abs().max()),
            "bounds": list(ctx.clf.bounds),
            "v": v.cpu().numpy().round(5).tolist(),
            "examples": (examples + v).clamp(*ctx.clf.bounds).cpu().numpy().round(4).tolist(),
            "example_labels": ctx.clf.predict(examples).tolist(),
            "example_adversarial_labels": ctx.clf.predict(
                (examples + v).clamp(*ctx.clf.bounds)
            ).tolist(),
            "phase_transition": {"norms": norms, "curves": curves},
            "dominant_labels": dominant_label_graph(ctx.clf, test.x, v)["edges"],
            "num_classes": ctx.clf.num_classes,
            "flat_model": asdict(flat),
            **({"cross_model": cross} if cross else {}),
        }

    def render(self, result: dict[str, Any], out_dir: Path) -> Section:
        """Perturbation, examples, phase transition, singular values, dominant labels."""
        v = np.asarray(result["v"])
        scale = float(np.abs(v).max()) or 1.0
        images = [0.5 + 0.5 * v / scale, *map(np.asarray, result["examples"])]
        titles = [f"v (×{0.5 / scale:.1f})"] + [
            f"{a} → {b}"
            for a, b in zip(
                result["example_labels"], result["example_adversarial_labels"], strict=True
            )
        ]
        figs = []
        fig, _ = figures.image_row(images, titles)
        figs.append(
            (
                figures.save(fig, out_dir / "universal_examples.png"),
                "The universal perturbation (contrast-stretched) and perturbed test images "
                "with clean → perturbed labels.",
            )
        )
        phase = result["phase_transition"]
        fig, _ = figures.lines(phase["norms"], phase["curves"], "‖perturbation‖₂", "fooling rate")
        figs.append(
            (
                figures.save(fig, out_dir / "universal_phase.png"),
                "Fooling rate against the l2 norm of each kind of perturbation (cf. [[thesis, "
                "Fig. 4.9]]).",
            )
        )
        flat = result["flat_model"]
        k = len(flat["singular_values"])
        fig, _ = figures.lines(
            range(1, k + 1),
            {
                "normals r(x)/‖r(x)‖": flat["singular_values"],
                "random unit vectors": flat["random_singular_values"],
            },
            "index",
            "singular value",
            log_y=True,
        )
        figs.append(
            (
                figures.save(fig, out_dir / "universal_singular_values.png"),
                "Singular values of the matrix of boundary normals against random vectors "
                "(cf. [[thesis, Fig. 6.3]]): a fast decay means normals share a low-dimensional "
                "subspace S_f.",
            )
        )
        edges = result["dominant_labels"]
        # Results written before `num_classes` was recorded: infer it from the edges.
        count = result.get("num_classes") or 1 + max((max(e[0], e[1]) for e in edges), default=0)
        classes = [str(c) for c in range(int(count))]
        if edges:
            fig, _ = figures.label_graph(edges, classes)
            figs.append(
                (
                    figures.save(fig, out_dir / "universal_dominant_labels.png"),
                    "Dominant labels (cf. [[thesis, Fig. 4.7]]): each class points to the "
                    "label v sends "
                    "most of its images to; wider arrows for larger shares.",
                )
            )
        rows = [
            ["fooling rate on X (training images)", f"{result['fooling_train']:.3f}"],
            ["fooling rate on held-out test images", f"{result['fooling_test']:.3f}"],
            [
                "measured ‖v‖∞ / ‖v‖₂ (input units)",
                f"{result.get('linf_norm', math.nan):.3g} / {result['l2_norm']:.3g}",
            ],
            ["radius ξ of Alg. 4 (l∞)", f"{result['xi']:.3g}"],
            *[
                [
                    f"random v ∈ S_f, m = {m} (same ‖·‖₂); flat model's prediction "
                    "(cf. [[thesis, §6.3]])",
                    f"{rate:.3f}; {flat.get('predicted_rates', {}).get(m, math.nan):.3f}",
                ]
                for m, rate in flat["fooling_rates"].items()
            ],
            ["random direction (same ‖·‖₂)", f"{flat['random_fooling_rate']:.3f}"],
        ]
        edge_rows = [[str(i), str(j), f"{share:.2f}"] for i, j, share in edges]
        tables = [
            ("Universal perturbation", ["quantity", "value"], rows),
            (
                "Dominant labels (cf. [[thesis, Fig. 4.7]]): class → where v sends most of it",
                ["class", "dominant label", "share of the class"],
                edge_rows,
            ),
        ]
        cross = result.get("cross_model")
        if cross:
            models, matrix = cross["models"], cross["matrix"]
            tables.append(
                (
                    "Cross-model fooling (cf. [[thesis, Table 4.2]]): each row's v, computed "
                    "on that model, applied to every column's model on the held-out images",
                    ["v computed on", *models],
                    [[source] + [f"{matrix[source][t]:.3f}" for t in models] for source in models],
                )
            )
        return Section(
            title=self.title,
            intro=(
                "One perturbation v, computed once on training images with Alg. 4 "
                f"(‖v‖∞ ≤ {result['xi']:.3g}), applied to every test image: the share whose "
                "label changes is its fooling rate. It generalises because the decision "
                "boundary's normals near the data share a few directions ([[thesis, §6.3]])."
            ),
            tables=tables,
            figures=figs,
            notes=_radius_notes(result),
        )


def _cross_model(
    ctx: ReportContext, x_train: Tensor, cfg: UniversalSettings, v: Tensor
) -> dict[str, Any]:
    """Table 4.2: every ``--other`` model's own v (same X, ξ, passes, seed), on every model.

    The report's model is named ``this model (SPEC)``; the diagonal holds each v's fooling
    rate on its own model, off-diagonal entries how far it transfers.
    """
    this = f"this model ({ctx.model.spec})"
    classifiers = {this: ctx.clf, **ctx.others}
    perturbations = {this: v}
    for spec, clf in ctx.others.items():
        perturbations[spec] = universal_perturbation(
            clf, x_train, cfg.xi, p=math.inf, max_passes=cfg.passes, seed=ctx.seed
        ).v
    matrix = transfer_matrix(classifiers, perturbations, ctx.data.x)
    return {"models": list(classifiers), "matrix": matrix}


def _radius_notes(result: dict[str, Any]) -> list[str]:
    """A warning when ξ is a large share of the pixel range (the perturbation is visible)."""
    bounds = result.get("bounds")
    if not bounds or not math.isfinite(bounds[1] - bounds[0]):
        return []
    share = result["xi"] / (bounds[1] - bounds[0])
    if share < 0.1:
        return []
    return [
        f"ξ = {result['xi']:.3g} in l∞ is {share:.0%} of the pixel range "
        f"[{bounds[0]:g}, {bounds[1]:g}]: every pixel may move that far, so v is plainly "
        "visible — not a small perturbation. The universal perturbations of "
        "[[universal]] use ξ = 10/255 ≈ 4% on ImageNet; pass a smaller radius (report "
        "profile or `boundaryscope universal --xi`) to measure that regime."
    ]
