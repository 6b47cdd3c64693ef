"""Report section "The boundary up close": normal cross-sections and a loss surface.

Thesis §5.6 (Fig. 5.5), §6.4.1 (Fig. 6.7), §8.3 (Fig. 8.3). The section owns its settings:
`SETTINGS` maps each report profile to a `SectionsConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from boundaryscope.data import load_dataset
from boundaryscope.geometry.sections import SectionsConfig, sections_study
from boundaryscope.report import figures
from boundaryscope.report.registry import (
    Analysis,
    ReportContext,
    Section,
    format_number,
    register_analysis,
)

__all__ = ["SETTINGS", "BoundaryAnalysis"]

SETTINGS: dict[str, SectionsConfig] = {
    "default": SectionsConfig(),
    "full": SectionsConfig(n_images=6, resolution=200, n_train=100, loss_resolution=81),
    "quick": SectionsConfig(
        n_images=2, resolution=41, n_train=10, curvature_k=2, max_steps=10, loss_resolution=21
    ),
}


@register_analysis
class BoundaryAnalysis(Analysis):
    """Label maps on planes through an image along its normal and a second direction."""

    name = "boundary"
    title = "The boundary up close"
    order = 55
    weight = 9.0
    settings = SETTINGS
    scalable = ("n_images", "n_train")

    def run(self, ctx: ReportContext) -> dict[str, Any]:
        """`sections_study` on the test images (directions from training images)."""
        config = self.settings_in(ctx)
        train = load_dataset(ctx.data_spec, "train").subset(config.n_train)
        return sections_study(
            ctx.clf, train.x, ctx.data.x, config, seed=ctx.seed, classes=ctx.data.classes
        )

    def render(self, result: dict[str, Any], out_dir: Path) -> Section:
        """The gallery, the loss surface and where the boundary crosses the normal."""
        classes = figures.class_names(
            result["classes"],
            (s["labels"] for image in result["images"] for s in image["sections"]),
        )
        summary = result["summary"]
        figs = []
        if result["images"]:
            fig, _ = figures.section_gallery(
                result["images"], result["directions"], result["a"], result["b"], classes
            )
            figs.append(
                (
                    figures.save(fig, out_dir / "boundary_sections.png"),
                    "Normal cross-sections: each panel is the plane x + ‖r(x)‖(a·n + b·v) "
                    "through an image (○) along the normal n = r(x)/‖r(x)‖ (vertical) and a "
                    "direction v (columns: a random tangent, the universal perturbation of "
                    "Alg. 4, the first shared curved direction), coloured by predicted "
                    "class; ★ is the DeepFool point, the black line the boundary of the "
                    "image's region (cf. [[thesis, Figs. 5.5 and 6.7]]).",
                )
            )
        if result["loss"]:
            loss = result["loss"]
            fig, _ = figures.loss_surface(loss["a"], loss["b"], loss["negative_loss"])
            figs.append(
                (
                    figures.save(fig, out_dir / "boundary_loss.png"),
                    "−loss on the plane spanned by the normal and a random direction through "
                    "one image (the dot) (cf. [[thesis, Fig. 8.3]]): a steep, curved wall "
                    "along the "
                    "normal and a flat landscape along v is the picture robust training "
                    "tries to change.",
                )
            )
        rows = [
            ["sections (images × directions)", f"{summary['sections']:.0f}"],
            [
                "boundary along n: median crossing (units of ‖r(x)‖)",
                format_number(summary["crossing_median"], ".4f"),
            ],
            [
                "crossings within 5% of ‖r(x)‖ (min … max)",
                f"{summary['crossing_within_5pct']:.0%} "
                f"({format_number(summary['crossing_min'], '.3f')} … "
                f"{format_number(summary['crossing_max'], '.3f')})",
            ],
            *[
                [
                    f"curvature of the boundary in the plane with v = {name} (median, "
                    "1 / input units, > 0 bends towards x)",
                    format_number(summary[f"plane_curvature_{name}"], ".4f"),
                ]
                for name in result["directions"]
            ],
        ]
        return Section(
            title=self.title,
            intro=(
                "What the decision boundary looks like next to an image. The plane through "
                "the image along its DeepFool normal n and a second direction v is "
                "classified on a grid (one batched sweep) with both axes in units of "
                "‖r(x)‖, so the boundary along n sits at 1 when DeepFool's point is the "
                "closest one on that line. A flat boundary along v is the locally linear "
                "picture of [[thesis, §5.6]]; bending along the universal or curved direction is "
                "the geometry behind universal perturbations ([[thesis, §6.4]])."
            ),
            tables=[("Normal cross-sections", ["quantity", "value"], rows)],
            figures=figs,
            notes=[
                "Grid points are not clipped to the input box: the model is evaluated on "
                "the whole plane, as in the thesis; only points near the image are valid "
                "inputs. The crossing is measured on a separate sweep along n (512 "
                "points); the plane curvature is a parabola fitted to the boundary line on "
                "|v| ≤ ‖r(x)‖. " + _refinement_note(result),
            ],
        )


def _refinement_note(result: dict[str, Any]) -> str:
    """How many model rows the grids cost, and why fewer than their points."""
    summary, coarse = result["summary"], result["config"].get("coarse", 1)
    if coarse == 1 or "rows" not in summary:
        return "Every grid point was evaluated."
    return (
        f"Grids were refined where the label changes (every {coarse}th point per axis, then "
        "each cell whose corners disagree and its neighbours, halving the step): "
        f"{summary['rows']:,} model rows for {summary['points']:,} grid points; labels "
        "elsewhere are their cell's common label (the same maps as a dense sweep on the "
        "shipped LeNets)."
    )
