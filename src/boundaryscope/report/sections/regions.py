"""Report section "Classification regions": Alg. 5 paths, D(p), the convexity probe.

Thesis §7.3 (Alg. 5, Fig. 7.2, 7.3). The section owns its settings: `SETTINGS` maps each
report profile to a `RegionsConfig`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from boundaryscope.geometry.topology import RegionsConfig, regions_study, scenario_paths
from boundaryscope.report import figures
from boundaryscope.report.registry import (
    Analysis,
    ReportContext,
    Section,
    format_number,
    register_analysis,
)

__all__ = ["SETTINGS", "RegionsAnalysis"]

# Anchor budgets: the shipped LeNet's paths need 0 anchors for most pairs and at most 117
# (benchmarks/results/regions.json, 300 pairs; 78 in the default report's 60), so the
# default budget leaves its numbers as they were; a random-weight CIFAR ResNet-18 needs
# 15–200 per pair, at ≈ 0.4 s each on one CPU thread. A path over budget is undecided.
SETTINGS: dict[str, RegionsConfig] = {
    "default": RegionsConfig(pairs=20, trials=500, max_anchors=128),
    "full": RegionsConfig(),
    "quick": RegionsConfig(
        pairs=3, spacing=1e-3, ks=(2, 5, 10), trials=100, max_depth=10, max_anchors=32
    ),
}

_SCENARIO_NAMES = {
    "natural": "two test images",
    "adversarial": "image and perturbed image",
    "noise": "image and perturbed noise",
}


@register_analysis
class RegionsAnalysis(Analysis):
    """Are classification regions connected, by near-straight paths? Are they convex?"""

    name = "regions"
    title = "Classification regions"
    order = 58
    weight = 28.0
    settings = SETTINGS
    scalable = ("pairs",)

    def run(self, ctx: ReportContext) -> dict[str, Any]:
        """`regions_study` on the test images, with its cost model (rows per path)."""
        config = self.settings_in(ctx)
        result = regions_study(ctx.clf, ctx.data.x, config, seed=ctx.seed, classes=ctx.data.classes)
        pairs = sum(int(s["pairs"]) for s in result["scenarios"].values())
        result["cost_model"] = {
            "variable": result["path_passes"],
            "unit": sum(result["path_passes"].values()) / pairs if pairs else 0.0,
        }
        return result

    def calibrate(self, ctx: ReportContext, x: Tensor, y: Tensor) -> float | None:
        """Model rows per path on one pair per scenario drawn from `x`, as the run finds them.

        How many anchors a path needs follows how fragmented this model's regions are (0
        for most pairs on the shipped LeNet, 15–200 on a random-weight CIFAR ResNet-18), so
        the paths' share of the estimate scales by this over the reference's rows per path
        (`report.cost`). One pair per scenario is a small sample: the estimate is a guide.
        """
        del y
        config = replace(self.settings_in(ctx), pairs=1)
        counter = ctx.clf.counter
        before = counter.forward_rows + counter.backward_rows
        found = scenario_paths(ctx.clf, x, config, seed=ctx.seed, progress=False)
        paths = sum(len(some) for _, some, _ in found)
        rows = counter.forward_rows + counter.backward_rows - before
        return rows / paths if paths else None

    def render(self, result: dict[str, Any], out_dir: Path) -> Section:
        """Path statistics per scenario, D(p) histogram, convexity curve, stitched path."""
        panels = result["stitched"]["panels"] if result["stitched"] else []
        classes = figures.class_names(result["classes"], (p["labels"] for p in panels))
        cfg = result["config"]
        rows = []
        for name, s in result["scenarios"].items():
            anchors = np.asarray(s["anchors"], dtype=float)
            valid = np.asarray(s["valid"], dtype=bool)
            rows.append(
                [
                    _SCENARIO_NAMES.get(name, name),
                    f"{s['pairs']}",
                    f"{s['connected']:.0%}" if s["pairs"] else "—",
                    f"{s.get('undecided', 0)}",
                    format_number(s["straight"], ".0%"),
                    format_number(s["mean_anchors"], ".1f"),
                    f"{np.max(anchors[valid]):.0f}" if valid.any() else "—",
                    format_number(s["mean_deviation_minus_one"], ".2e"),
                    "; ".join(s["failures"]) or "—",
                ]
            )
        figs = [_deviation_figure(result, out_dir), _convexity_figure(result, out_dir)]
        if result["stitched"]:
            figs.append(_stitched_figure(result, classes, out_dir))
        return Section(
            title=self.title,
            intro=(
                "Is each class one connected region, or many islands? Alg. 5 ([[thesis, §7.3]]) "
                "joins two points with the same predicted label by a path that stays in "
                "their region: when the straight segment leaves it, the midpoint is pushed "
                "back by targeted DeepFool and both halves are treated the same way. A "
                "segment counts as inside when every point sampled on it at spacing "
                f"{cfg['spacing']:g} × ‖x1 − x2‖ keeps the label. D(p) = path length / "
                "distance measures how far from straight the path is (1 = the segment). "
                "The convexity probe asks whether convex combinations of k same-label images "
                "keep the label (Fig. 7.3)."
            ),
            tables=[
                (
                    "Alg. 5 paths per scenario (the thesis, on ImageNet: every pair "
                    "connected, ≈ 10 anchors, D(p) ≈ 1 + 1e-4)",
                    [
                        "scenario",
                        "pairs",
                        "connected",
                        "undecided (anchor budget)",
                        "straight segment valid",
                        "anchors (mean, connected)",
                        "anchors (max)",
                        "D(p) − 1 (mean)",
                        "failures",
                    ],
                    rows,
                ),
                (
                    "Convexity probe: probability that a random convex combination of k "
                    "images with one predicted label keeps it",
                    ["k", "probability", "± s.e."],
                    [
                        [f"{k}", format_number(p, ".3f"), format_number(e, ".3f")]
                        for k, p, e in zip(
                            result["convexity"]["ks"],
                            result["convexity"]["probability"],
                            result["convexity"]["stderr"],
                            strict=True,
                        )
                    ],
                ),
            ],
            figures=figs,
            notes=[
                "The validity check is empirical (no certificate): a region could meander "
                "between two samples. Samples are taken every "
                f"{format_number(cfg['spacing'], 'g')} of the endpoints' distance; "
                + (
                    "with refinement on, every 64th first (at least 32 per segment), then "
                    "bisection wherever the label "
                    "margin could reach zero under four times the largest slope seen (the same "
                    "verdicts as checking every sample on the shipped LeNets). "
                    if cfg.get("refine", False)
                    else "every sample is checked. "
                )
                + "Anchors are pushed until their label margin is at least 1e-4 of the largest "
                "score so that no anchor's label depends on float rounding. "
                + (
                    f"A path that needs more than {cfg['max_anchors']} anchors is left "
                    "undecided (counted as not connected): it bounds the section's cost on "
                    "models with fragmented regions."
                    if cfg.get("max_anchors") is not None
                    else ""
                ),
            ],
        )


def _deviation_figure(result: dict[str, Any], out_dir: Path) -> tuple[str, str]:
    values = {
        _SCENARIO_NAMES.get(name, name): [
            d - 1 for d, ok in zip(s["deviation"], s["valid"], strict=True) if ok
        ]
        for name, s in result["scenarios"].items()
    }
    fig, _ = figures.histogram(values, "D(p) − 1 (0: the straight segment)")
    return (
        figures.save(fig, out_dir / "regions_deviation.png"),
        "Deviation of the Alg. 5 paths from the straight segment, connected pairs only.",
    )


def _convexity_figure(result: dict[str, Any], out_dir: Path) -> tuple[str, str]:
    probe = result["convexity"]
    fig, ax = figures.lines(
        probe["ks"], {"this model": probe["probability"]}, "k (images combined)", "P(label kept)"
    )
    ax.set_ylim(0, 1.05)
    return (
        figures.save(fig, out_dir / "regions_convexity.png"),
        f"Probability that a random convex combination of k same-label images keeps the "
        f"label ({probe['trials']} combinations per k; cf. [[thesis, Fig. 7.3]]).",
    )


def _stitched_figure(result: dict[str, Any], classes: list[str], out_dir: Path) -> tuple[str, str]:
    stitched = result["stitched"]
    fig, _ = figures.stitched_path(stitched["panels"], classes, stitched["label"])
    return (
        figures.save(fig, out_dir / "regions_path.png"),
        f"One Alg. 5 path ({stitched['anchors']} anchors, D(p) − 1 = "
        f"{stitched['deviation'] - 1:.2e}): each panel is the plane through an anchor spanned "
        "by r(x1) (vertical, units of ‖r(x1)‖) and the next path segment (horizontal); "
        "panels are stitched side by side (cf. [[thesis, Fig. 7.2]], right).",
    )
