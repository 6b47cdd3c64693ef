"""Report section: fixed-budget attacks (Balda et al. 2018: Fig. 2 curves, Table I measures).

The section owns its settings: `SETTINGS` maps each report profile to a `FixedBudgetSettings`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from boundaryscope.curves import balda_robustness, fooling_curves, parse_epsilons
from boundaryscope.report import figures
from boundaryscope.report.registry import (
    COUNT,
    REAL,
    Analysis,
    ReportContext,
    Section,
    register_analysis,
)

__all__ = ["SETTINGS", "FixedBudgetAnalysis", "FixedBudgetSettings"]


@dataclass(frozen=True)
class FixedBudgetSettings:
    """Sizes of the fixed-budget section.

    Attributes:
        n: Test images of the curves (Balda's measures use every test image).
        eps: l∞ budgets of the curves, ``start:stop:count`` (`parse_epsilons`).
        steps: Iterations of PGD/BIM/SPSA in the curves.
        attacks: Attacks of the curves (names of `boundaryscope.curves.CURVE_ATTACKS`).
    """

    n: int = 300
    eps: str = "0:0.3:11"
    steps: int = 20
    attacks: tuple[str, ...] = ("deepfool", "alg1", "alg1-10", "alg2", "fgsm", "pgd", "random")


SETTINGS: dict[str, FixedBudgetSettings] = {
    "default": FixedBudgetSettings(),
    "full": FixedBudgetSettings(n=1_000_000, eps="0:0.3:31", steps=40),
    "quick": FixedBudgetSettings(
        n=32, eps="0:0.3:4", steps=5, attacks=("deepfool", "alg1", "fgsm", "random")
    ),
}


# Model rows per image on the shipped LeNet (2026-12-02, forward + backward): the curves of
# the quick settings 64, of the default ones 739; Balda's measures 33 in both. Their
# ratio weighs Balda's images against the curves' in the cost estimate.
_BALDA_SHARE = {"quick": 33 / 64, "default": 33 / 739}


@register_analysis
class FixedBudgetAnalysis(Analysis):
    """Fooling ratio vs l∞ budget for the first-order family, and ρ̂1 / ρ̂2 / ε99."""

    name = "fixed_budget"
    schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["curves", "measures", "n_curves", "n"],
        "properties": {
            "curves": {
                "type": "object",
                "required": ["epsilons", "ratios", "n_correct"],
                "properties": {
                    "epsilons": {"type": "array", "items": {"type": "number", "minimum": 0}},
                    "ratios": {
                        "type": "object",
                        "additionalProperties": {"type": "array", "items": REAL},
                    },
                    "n_correct": COUNT,
                },
            },
            "measures": {
                "type": "object",
                "properties": {"rho1": REAL, "rho2": REAL, "eps99": REAL, "n_correct": COUNT},
            },
            "n_curves": COUNT,
            "n": COUNT,
        },
    }
    title = "Fixed-budget attacks"
    order = 30
    per_image = True
    settings = SETTINGS
    scalable = ("n",)

    def work(self, profile: str, n: int, scale: float = 1.0) -> float:
        """The curves' images (at most the settings' ``n`` at `scale`) plus Balda's (all `n`).

        In curve-image units: one of Balda's images costs `_BALDA_SHARE` of a curves image.
        """
        cfg: FixedBudgetSettings = self.settings_for(profile, scale)
        share = _BALDA_SHARE.get(profile, _BALDA_SHARE["default"])
        return float(min(n, cfg.n) + share * n)

    def run(self, ctx: ReportContext) -> dict[str, Any]:
        """Curves on the settings' ``n`` test images; Balda's measures on all of them."""
        cfg: FixedBudgetSettings = self.settings_in(ctx)
        subset = ctx.data.subset(cfg.n)
        curves = fooling_curves(
            ctx.clf,
            subset.x,
            subset.y,
            list(cfg.attacks),
            parse_epsilons(cfg.eps),
            steps=cfg.steps,
            seed=ctx.seed,
        )
        measures = balda_robustness(ctx.clf, ctx.data.x, ctx.data.y)
        return {
            "curves": asdict(curves),
            "measures": asdict(measures),
            "n_curves": len(subset),
            "n": len(ctx.data),
        }

    def render(self, result: dict[str, Any], out_dir: Path) -> Section:
        """The curves figure and the measures table."""
        curves, measures = result["curves"], result["measures"]
        fig, _ = figures.fooling_curves(curves["epsilons"], curves["ratios"])
        file = figures.save(fig, out_dir / "fixed_budget_curves.png")
        rows = [
            ["ρ̂1 = mean ‖r‖∞/‖x‖∞ (DeepFool)", f"{measures['rho1']:.4g}"],
            ["ρ̂2 = mean L(x)/‖∇L(x)‖₁ (Prop. 1, logits)", f"{measures['rho2']:.4g}"],
            ["ε99: DeepFool fools > 99%", f"{measures['eps99']:.4g}"],
        ]
        timing = [[name, f"{seconds:.2f}"] for name, seconds in curves["seconds"].items()]
        return Section(
            title=self.title,
            intro=(
                "How often each attack fools the model when its perturbation may not exceed "
                "ε in l∞ (fooling ratio = share of correctly classified images whose label "
                f"changes; {curves['n_correct']} images). Algorithm 1/1-n/2 are the convex "
                "programs of [[balda]]; DeepFool-l∞ is limited to the budget; random ±ε "
                "noise is the floor. A curve far above random at small ε means the boundary "
                "is close along a few adversarial directions only."
            ),
            tables=[
                ("Robustness measures ([[balda, Table I]])", ["measure", "value"], rows),
                ("Time per attack over the whole ε grid", ["attack", "seconds"], timing),
            ],
            figures=[(file, "Fooling ratio against the l∞ budget ε (cf. [[balda, Fig. 2]]).")],
            notes=_coinciding_curves(curves["ratios"]),
        )


def _coinciding_curves(ratios: dict[str, list[float]]) -> list[str]:
    """Notes naming curves drawn on top of each other (same values at every ε)."""
    groups: dict[tuple[float, ...], list[str]] = {}
    for name, values in ratios.items():
        groups.setdefault(tuple(round(v, 12) for v in values), []).append(name)
    notes = []
    for names in groups.values():
        if len(names) > 1:
            notes.append(
                f"{' and '.join(names)} have the same fooling ratio at every ε, so only the "
                "last one drawn is visible in the figure"
                + (
                    ": with l∞ budgets, Algorithm 2's single linearised step is the sign of "
                    "the gradient, which is FGSM's step ([[balda]])."
                    if {"alg2", "fgsm"} <= set(names)
                    else "."
                )
            )
    return notes
