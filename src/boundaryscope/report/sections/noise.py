"""Report section: random, semi-random and spectral noise (thesis §3.4.2, §5.3–5.6).

The section owns its settings: `SETTINGS` maps each report profile to a `NoiseSettings`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from boundaryscope.attacks import DeepFool
from boundaryscope.noise_robustness import (
    RandomLineSearch,
    semi_random_robustness,
    spectral_robustness,
    unbounded,
)
from boundaryscope.report import figures
from boundaryscope.report.registry import (
    Analysis,
    ReportContext,
    Section,
    format_number,
    register_analysis,
)
from boundaryscope.subspaces import RandomSubspace

__all__ = ["SETTINGS", "NoiseAnalysis", "NoiseSettings"]


@dataclass(frozen=True)
class NoiseSettings:
    """Sizes of the noise section.

    Attributes:
        n: Test images of the random and semi-random regimes.
        fractions: ``d/m`` of the semi-random subspaces (thesis Table 5.1): ``m = d / f``.
        steps: DeepFool iterations inside the subspaces.
        spectral_n: Test images of the spectral (DCT band) measurements.
    """

    n: int = 100
    fractions: tuple[int, ...] = (4, 16, 36, 64, 100)
    steps: int = 100
    spectral_n: int = 50


SETTINGS: dict[str, NoiseSettings] = {
    "default": NoiseSettings(),
    "full": NoiseSettings(n=1000, steps=200, spectral_n=1000),
    "quick": NoiseSettings(n=8, fractions=(4, 64), steps=30, spectral_n=6),
}


@register_analysis
class NoiseAnalysis(Analysis):
    """β(f; m) against Theorem 1, spectral ζ per DCT band, and Fig. 5.4's example."""

    name = "noise"
    title = "Random, semi-random and band-limited noise"
    order = 40
    per_image = True
    settings = SETTINGS
    scalable = ("n", "spectral_n")

    def work(self, profile: str, n: int, scale: float = 1.0) -> float:
        """The regimes' ``n`` and the spectral ``spectral_n`` images (at `scale`), each ≤ `n`."""
        cfg: NoiseSettings = self.settings_for(profile, scale)
        return float(min(n, cfg.n) + min(n, cfg.spectral_n))

    def run(self, ctx: ReportContext) -> dict[str, Any]:
        """Noise regimes on the settings' ``n`` images, spectral bands on ``spectral_n``."""
        cfg: NoiseSettings = self.settings_in(ctx)
        data = ctx.data.subset(cfg.n)
        d = data.x[0].numel()
        ms = [1, *sorted({max(2, round(d / f)) for f in cfg.fractions}, reverse=True)]
        regimes = semi_random_robustness(
            ctx.clf, data.x, data.y, ms, seed=ctx.seed, steps=cfg.steps
        )
        spectral_data = ctx.data.subset(cfg.spectral_n)
        spectral = spectral_robustness(ctx.clf, spectral_data.x, spectral_data.y, steps=cfg.steps)
        return {
            "d": d,
            "regimes": [asdict(r) for r in regimes],
            "spectral": asdict(spectral),
            "example": self._example(ctx, data, cfg.steps),
        }

    @staticmethod
    def _example(ctx: ReportContext, data: Any, steps: int) -> dict[str, Any]:
        """One image fooled by random, semi-random (m = 10) and adversarial noise."""
        clf = unbounded(ctx.clf)
        correct = (ctx.clf.predict(data.x) == data.y.to(ctx.clf.device)).nonzero().flatten()
        if correct.numel() == 0:
            return {}
        x, y = data.x[correct[:1]], data.y[correct[:1]]
        attacks = {
            "random noise": RandomLineSearch(seed=ctx.seed),
            "semi-random, m = 10": DeepFool(steps=steps, subspace=RandomSubspace(10, ctx.seed)),
            "adversarial": DeepFool(steps=steps),
        }
        panels = {"original": (x[0], int(y[0]), 0.0)}
        for name, attack in attacks.items():
            result = attack(clf, x, y)
            panels[name] = (
                result.adversarial[0],
                int(result.adversarial_label[0]),
                float(result.norms[0]),
            )
        return {
            name: {"image": image.cpu().numpy().round(4).tolist(), "label": label, "norm": norm}
            for name, (image, label, norm) in panels.items()
        }

    def render(self, result: dict[str, Any], out_dir: Path) -> Section:
        """β table, ratio-vs-theory figure, spectral bars and the example row."""
        d, regimes, spectral = result["d"], result["regimes"], result["spectral"]
        rows = [
            [
                str(r["m"]),
                f"1/{d / r['m']:.0f}",
                # NaN (one image: no spread; none fooled: no β) reads as a dash.
                f"{format_number(r['beta_mean'], '.3f')} ± {format_number(r['beta_std'], '.3f')}",
                format_number(r["inside_theorem1"], ".0%"),
                format_number(r["inside_corollary1"], ".0%"),
                str(r["n_failures"]),
            ]
            for r in regimes
        ]
        figs = []
        fig, _ = figures.noise_ratios(
            [r["m"] for r in regimes],
            d,
            [r["ratios"] for r in regimes],
            [tuple(r["theorem1"]) for r in regimes],
            [tuple(r["corollary1"]) for r in regimes],
        )
        figs.append(
            (
                figures.save(fig, out_dir / "noise_ratios.png"),
                "Measured ‖r*_S‖/‖r*‖ per sample against √(d/m), with Theorem 1's and "
                "Corollary 1's intervals (δ = 0.05).",
            )
        )
        fig, _ = figures.spectral_bars(spectral["bands"], spectral["zeta"])
        figs.append(
            (
                figures.save(fig, out_dir / "spectral.png"),
                f"Spectral robustness ζ per DCT band (B = {spectral['block']}): ζ = "
                f"√(m/d)·ρ_S/ρ_adv "
                "compares ρ_S, the mean minimal perturbation inside the band (dimension m), "
                "with the √(d/m)·ρ_adv a random m-dimensional subspace needs (Theorem 1); "
                "below 1: "
                "more fragile than a random subspace of the same size (cf. [[thesis, Fig. 3.11]]).",
            )
        )
        example = result["example"]
        if example:
            titles = [_example_title(name, p) for name, p in example.items()]
            unfooled = [name for name, p in example.items() if not math.isfinite(p["norm"])]
            fig, _ = figures.image_row([np.asarray(p["image"]) for p in example.values()], titles)
            figs.append(
                (
                    figures.save(fig, out_dir / "noise_example.png"),
                    "One image under random, semi-random (m = 10) and adversarial noise "
                    "(cf. [[thesis, Fig. 5.4]]), each at the smallest norm that changes its "
                    "label"
                    + (
                        f"; {' and '.join(unfooled)} did not change it at any norm tried "
                        "(shown unperturbed, marked 'not fooled')"
                        if unfooled
                        else ""
                    )
                    + "; the images are clipped to the box for display only.",
                )
            )
        failures = sum(spectral["failures"])
        notes = (
            [
                f"{failures} (band, image) pairs could not be fooled inside the band; ρ_S of a "
                "band averages the images it fooled."
            ]
            if failures
            else []
        )
        rho = spectral["rho_adv"]
        return Section(
            title=self.title,
            intro=(
                "How much noise it takes when the perturbation is random (m = 1), confined to a "
                "random m-dimensional subspace (semi-random), or to a DCT frequency band. For "
                "flat boundaries the thesis predicts ‖r*_S‖ ≈ √(d/m)‖r*‖ (Theorem 1), i.e. "
                "β = √(m/d)‖r*_S‖/‖r*‖ ≈ 1: robust to random noise, yet fragile to noise that "
                "is only mildly adversarial. Measured without the box, as the theory is "
                f"stated on R^d (ρ_adv there: {rho:.3g})."
                if math.isfinite(rho)
                else "Noise regimes."
            ),
            tables=[
                (
                    "β(f; m) ([[thesis, Table 5.1]])",
                    ["m", "m/d", "β mean ± std", "inside Thm. 1", "inside Cor. 1", "failures"],
                    rows,
                )
            ],
            figures=figs,
            notes=notes,
        )


def _example_title(name: str, panel: dict[str, Any]) -> str:
    """Title of one example panel: its label and norm, or "not fooled"."""
    norm = panel["norm"]
    if not math.isfinite(norm):
        return f"{name}\nnot fooled"
    return f"{name}\nlabel {panel['label']}" + (f", ‖r‖={norm:.2g}" if norm else "")
