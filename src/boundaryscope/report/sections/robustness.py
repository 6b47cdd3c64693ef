"""The report's first analyses: clean accuracy and minimal-perturbation robustness.

Robustness owns its settings: `SETTINGS` maps each report profile to a
`RobustnessSettings` (accuracy has none: it predicts every test image of the report).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from boundaryscope.attacks import (
    FGSM,
    FMN,
    Attack,
    AttackResult,
    DeepFool,
    fgsm_fooling_curve,
    smallest_fooling_epsilon,
)
from boundaryscope.evaluation import evaluate
from boundaryscope.metrics import (
    RobustnessAccumulator,
    chance_check,
    mismatch_warning,
    usual_budgets,
)
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

__all__ = ["SETTINGS", "AccuracyAnalysis", "RobustnessAnalysis", "RobustnessSettings"]


@dataclass(frozen=True)
class RobustnessSettings:
    """Sizes of the robustness section (every correctly classified test image is attacked).

    Attributes:
        deepfool_steps: DeepFool's maximum iterations.
        candidates: DeepFool's candidate classes.
        overshoot: DeepFool's overshoot.
        paper_exact: Run DeepFool as published, without its projected step, landing and polish.
        tightest_steps: FMN steps refining each DeepFool point into the "tightest
            estimate" of the minimal perturbation (0 = off).
        evaluation: Profile of `boundaryscope.evaluation` (AutoAttack's cascade on the
            images the minimal perturbations leave robust) for the robust accuracy at the
            usual budgets: ``"standard"`` (AutoAttack's sizes), ``"fast"``, ``"quick"``.
        examples: Images shown in the example grid.
    """

    deepfool_steps: int = 50
    candidates: int = 10
    overshoot: float = 0.02
    paper_exact: bool = False
    tightest_steps: int = 30
    evaluation: str = "fast"
    examples: int = 6


SETTINGS: dict[str, RobustnessSettings] = {
    "default": RobustnessSettings(),
    "full": RobustnessSettings(paper_exact=True, tightest_steps=100, evaluation="standard"),
    "quick": RobustnessSettings(tightest_steps=10, evaluation="quick", examples=4),
}


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _timed_summary(
    attack: Attack, ctx: ReportContext, x: torch.Tensor, y: torch.Tensor, correct: torch.Tensor
) -> tuple[AttackResult, dict[str, Any]]:
    """Runs `attack`; its result and the `RobustnessAccumulator` summary plus ``seconds``."""
    start = time.perf_counter()
    result = attack(ctx.clf, x, y)
    elapsed = time.perf_counter() - start
    accumulator = RobustnessAccumulator(p=result.p)
    accumulator.update(result, x, correct)
    return result, {**asdict(accumulator.compute()), "seconds": elapsed}


_NORM_SUMMARY: dict[str, Any] = {
    "type": "object",
    "required": ["p", "n", "n_correct", "rho_adv", "median_norm", "mean_norm", "success_rate"],
    "properties": {
        "p": REAL,
        "n": COUNT,
        "n_correct": COUNT,
        "rho_adv": REAL,
        "median_norm": REAL,
        "mean_norm": REAL,
        "success_rate": {"anyOf": [FRACTION, {"const": "nan"}]},
        "iteration_histogram": {"type": "array", "items": COUNT},
    },
}
_PER_NORM: dict[str, Any] = {
    "type": "object",
    "propertyNames": {"enum": ["l2", "linf"]},
    "additionalProperties": _NORM_SUMMARY,
}


@register_analysis
class AccuracyAnalysis(Analysis):
    """Clean top-1 accuracy, per class, and the confusion matrix."""

    name = "accuracy"
    title = "Clean accuracy"
    order = 10
    per_image = True
    schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["n", "accuracy", "classes", "per_class_accuracy", "confusion", "warnings"],
        "properties": {
            "n": {"type": "integer", "minimum": 1},
            "accuracy": FRACTION,
            "classes": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "per_class_accuracy": {
                "type": "array",
                "items": {"anyOf": [FRACTION, {"const": "nan"}]},
            },
            "confusion": {"type": "array", "items": {"type": "array", "items": COUNT}},
            "warnings": {"type": "array", "items": {"type": "string"}},
            "chance_accuracy": FRACTION,
            "at_chance": {"type": "boolean"},
        },
    }

    def run(self, ctx: ReportContext) -> dict[str, Any]:
        """Predicts the test samples and tabulates true vs predicted classes.

        Clean accuracy at chance is flagged (`metrics.mismatch_warning`): the verdict then
        says to check the data before reading anything else.
        """
        predictions = ctx.clf.predict(ctx.data.x, batch_size=500).cpu()
        labels = ctx.data.y.cpu()
        num_classes = max(len(ctx.data.classes), int(predictions.max()) + 1)
        confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        confusion.index_put_((labels, predictions), torch.ones_like(labels), accumulate=True)
        per_class = (confusion.diag() / confusion.sum(1).clamp_min(1)).tolist()
        accuracy = float((predictions == labels).double().mean())
        mismatch = mismatch_warning(accuracy, labels, ctx.data_spec)
        return {
            "n": len(ctx.data),
            "accuracy": accuracy,
            "classes": list(ctx.data.classes),
            "per_class_accuracy": per_class,
            "confusion": confusion.tolist(),
            "warnings": list(ctx.clf.warnings_issued) + ([mismatch] if mismatch else []),
            "chance_accuracy": chance_check(accuracy, labels)["chance_accuracy"],
            "at_chance": mismatch is not None,  # what the verdict flags first
        }

    def render(self, result: dict[str, Any], out_dir: Path) -> Section:
        """Table of accuracies and the confusion-matrix figure."""
        fig, _ = figures.confusion_matrix(result["confusion"], result["classes"])
        rows = [
            [c, _fmt(a)]
            for c, a in zip(result["classes"], result["per_class_accuracy"], strict=False)
        ]
        return Section(
            title=self.title,
            intro=(
                f"Top-1 accuracy on {result['n']} held-out images: "
                f"{result['accuracy']:.2%}. Robustness below is measured on the "
                "correctly classified ones."
            ),
            tables=[("Accuracy per class", ["class", "accuracy"], rows)],
            figures=[(figures.save(fig, out_dir / "confusion.png"), "Confusion matrix.")],
            notes=result.get("warnings", []),
        )


def _deepfool(cfg: RobustnessSettings, p: float) -> DeepFool:
    """The section's DeepFool in the l_p norm, as its settings ask."""
    make_attack = DeepFool.as_published if cfg.paper_exact else DeepFool
    return make_attack(
        p=p,
        steps=cfg.deepfool_steps,
        candidates=cfg.candidates,
        overshoot=cfg.overshoot,
        progress=None,
    )


def survivors_per_image(
    norms: dict[float, torch.Tensor],
    shape: tuple[int, ...],
    bounds: tuple[float, float],
    n: int,
) -> float:
    """Budgets per image at which an image outlives its minimal-perturbation estimate.

    ``Σ_b #{i : ‖r_i‖_{p_b} > ε_b} / n`` over the data's usual budgets `usual_budgets`
    (for each budget, `norms` holds the correctly classified images' norms in its ``p``;
    failures are ``inf``): the images the evaluator's cascade attacks, per test image.
    """
    budgets = usual_budgets(tuple(shape), bounds)
    total = sum(int((norms[b.p] > b.eps).sum()) for b in budgets)
    return total / max(n, 1)


@register_analysis
class RobustnessAnalysis(Analysis):
    """Minimal perturbations by DeepFool (l2, l∞) against FGSM at 90% fooling (Table 3.1)."""

    name = "robustness"
    title = "Robustness to minimal adversarial perturbations"
    order = 20
    per_image = True
    settings = SETTINGS
    schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["deepfool", "norms", "bounds", "d", "fgsm", "robust_accuracy"],
        "properties": {
            "deepfool": _PER_NORM,
            "tightest": _PER_NORM,
            "norms": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": REAL},
            },
            "adversarial_labels": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "integer"}},
            },
            "labels": {"type": "array", "items": COUNT},
            "bounds": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
            "d": {"type": "integer", "minimum": 1},
            "fgsm": {
                "type": "object",
                "required": ["eps90", "fooling_rate"],
                "properties": {"eps90": REAL, "fooling_rate": FRACTION},
            },
            "robust_accuracy": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["p", "eps", "n", "robust_accuracy"],
                    "properties": {
                        "p": REAL,
                        "eps": {"type": "number", "minimum": 0},
                        "n": COUNT,
                        "robust_accuracy": FRACTION,
                        "robust_accuracy_minimal_only": FRACTION,
                        "robust": {"type": "array", "items": {"type": "boolean"}},
                    },
                },
            },
        },
    }

    def run(self, ctx: ReportContext) -> dict[str, Any]:
        """DeepFool in l2 and l∞ on every test sample, FGSM's 90% protocol, examples."""
        cfg: RobustnessSettings = self.settings_in(ctx)
        x, y = ctx.data.x, ctx.data.y
        result: dict[str, Any] = {
            "deepfool": {},
            "norms": {},
            "tightest": {},
            "adversarial_labels": {},
            "bounds": list(ctx.clf.bounds),
            "d": int(x[0].numel()),
        }
        correct = ctx.clf.predict(x) == y.to(ctx.clf.device)
        result["labels"] = y.to(ctx.clf.device)[correct].tolist()
        l2_result = None
        smallest: dict[float, torch.Tensor] = {}  # per image, the smallest ‖r‖ found
        deepfool_norms: dict[float, torch.Tensor] = {}  # correct images only
        for key, p in (("l2", 2.0), ("linf", math.inf)):
            attack = _deepfool(cfg, p)
            attack_result, summary = _timed_summary(attack, ctx, x, y, correct)
            summary["attack"] = repr(attack)
            result["deepfool"][key] = summary
            result["norms"][key] = attack_result.norms[correct].tolist()
            result["adversarial_labels"][key] = attack_result.adversarial_label[correct].tolist()
            smallest[p] = attack_result.norms
            deepfool_norms[p] = attack_result.norms[correct]
            if cfg.tightest_steps:
                result["tightest"][key], refined = self._tightest(
                    ctx, x, y, correct, p, attack_result, cfg.tightest_steps
                )
                smallest[p] = torch.minimum(smallest[p], refined)
            if key == "l2":
                l2_result = attack_result
        result["fgsm"] = self._fgsm(ctx, correct)
        result["robust_accuracy"], cascade = self._robust_accuracy(
            ctx, correct, smallest, cfg.evaluation, f"DeepFool + FMN-{cfg.tightest_steps}"
        )
        result["cost_model"] = {
            "variable": cascade,
            "unit": survivors_per_image(deepfool_norms, ctx.data.x.shape[1:], ctx.clf.bounds,
                                        len(x)),
        }  # fmt: skip
        assert l2_result is not None
        result["examples"] = self._examples(l2_result, x, correct, cfg.examples)
        return result

    @staticmethod
    def _tightest(
        ctx: ReportContext,
        x: torch.Tensor,
        y: torch.Tensor,
        correct: torch.Tensor,
        p: float,
        deepfool: AttackResult,
        steps: int,
    ) -> tuple[dict[str, Any], torch.Tensor]:
        """FMN refinement of DeepFool's points, and its norms for every image (inf: failed).

        The summary holds the per-image DeepFool/tightest ratio over correctly classified
        images where both succeeded; it is never below 1 because the refinement never grows
        a perturbation.
        """
        attack = FMN(p=p, steps=steps, init=deepfool, progress=None)
        refined, summary = _timed_summary(attack, ctx, x, y, correct)
        both = correct & deepfool.success & refined.success
        ratio = (deepfool.norms[both] / refined.norms[both].clamp_min(1e-12)).double()
        summary.update(
            attack=f"FMN(p={p}, steps={steps}) from DeepFool",
            ratio=ratio.tolist(),
            ratio_median=float(ratio.median()) if ratio.numel() else math.nan,
            ratio_mean=float(ratio.mean()) if ratio.numel() else math.nan,
            ratio_p90=float(ratio.quantile(0.9)) if ratio.numel() else math.nan,
            ratio_max=float(ratio.max()) if ratio.numel() else math.nan,
            norms=refined.norms[correct].tolist(),
        )
        return summary, refined.norms

    def calibrate(self, ctx: ReportContext, x: torch.Tensor, y: torch.Tensor) -> float:
        """`survivors_per_image` of DeepFool's norms on `x`: the cost estimate's calibration.

        The evaluator's cascade runs only on the images the minimal perturbations leave
        robust at a usual budget, so its cost follows this number (`report.cost`).
        DeepFool's norms are upper bounds of the minimal ones, so this errs high.
        """
        cfg: RobustnessSettings = self.settings_in(ctx)
        correct = ctx.clf.predict(x) == y.to(ctx.clf.device)
        norms = {}
        for p in {budget.p for budget in usual_budgets(tuple(x.shape[1:]), ctx.clf.bounds)}:
            attack = _deepfool(cfg, p)  # the section's own, so both counts compare
            norms[p] = attack(ctx.clf, x[correct.cpu()], y[correct.cpu()]).norms.cpu()
        return survivors_per_image(norms, tuple(x.shape[1:]), ctx.clf.bounds, len(x))

    @staticmethod
    def _robust_accuracy(
        ctx: ReportContext,
        correct: torch.Tensor,
        smallest: dict[float, torch.Tensor],
        profile: str,
        minimal_label: str,
    ) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """Robust accuracy at the data's usual budgets (`usual_budgets`), per image.

        `boundaryscope.evaluation.evaluate` starts from the minimal perturbations this
        section found (DeepFool, its FMN refinement) and runs AutoAttack's cascade —
        APGD-CE, APGD-T, FAB-T, Square — on the images they leave robust. Every attack only
        adds fooled images, so this stays an upper bound, now at the strength RobustBench
        asks for; each image records which attack broke it, and the failure checks run.
        """
        x, y = ctx.data.x, ctx.data.y
        budgets = usual_budgets(tuple(x.shape[1:]), ctx.clf.bounds)
        rows = []
        cascade = {"forward_rows": 0.0, "backward_rows": 0.0}
        for p in sorted({budget.p for budget in budgets}):
            chosen = [budget for budget in budgets if budget.p == p]
            minimal = torch.where(correct, smallest[p].to(correct.device), 0.0)
            evaluation = evaluate(
                ctx.clf, x, y, [b.eps for b in chosen], p, profile,
                minimal=minimal, minimal_label=minimal_label, seed=ctx.seed, progress=False,
            )  # fmt: skip
            report = evaluation.to_dict()
            for stage in evaluation.config.attacks:  # the cascade: every stage after the first
                for key in cascade:
                    cascade[key] += evaluation.cost.get(stage, {}).get(key, 0.0)
            by_eps = {entry["eps"]: entry for entry in report["budgets"]}
            for budget in chosen:
                entry = by_eps[budget.eps]
                rows.append(
                    {
                        "p": budget.p,
                        "eps": budget.eps,
                        "label": budget.label,
                        "convention": budget.convention,
                        "evaluation": report["evaluation"],
                        "n": len(x),
                        "robust_accuracy": entry["robust_accuracy"],
                        "robust_accuracy_minimal_only": entry["robust_accuracy_minimal_only"],
                        "robust": entry["robust"],
                        "broken_by": entry["broken_by_count"],
                        "checks": [c for c in report["checks"] if c["fired"]],
                    }
                )
        return rows, cascade

    @staticmethod
    def _fgsm(ctx: ReportContext, correct: torch.Tensor) -> dict[str, Any]:
        x, y = ctx.data.x, ctx.data.y
        search = smallest_fooling_epsilon(ctx.clf, x, y, fraction=0.9)
        eps_grid = np.linspace(0, 0.5, 26).tolist()
        curve = fgsm_fooling_curve(ctx.clf, x, y, eps_grid)
        out: dict[str, Any] = {
            "eps90": search.epsilon,
            "fooling_rate": search.fooling_rate,
            "curve": {"eps": eps_grid, "rate": curve},
        }
        if math.isfinite(search.epsilon):
            fgsm = FGSM(eps=search.epsilon)(ctx.clf, x, y)
            keep = correct & fgsm.success
            for key, p in (("l2", 2.0), ("linf", math.inf)):
                ratio = lp_norm(fgsm.perturbation, p) / lp_norm(x.to(ctx.clf.device), p)
                out[f"rho_{key}"] = float(ratio[keep].mean()) if bool(keep.any()) else math.nan
        return out

    @staticmethod
    def _examples(
        result: Any, x: torch.Tensor, correct: torch.Tensor, count: int
    ) -> dict[str, Any]:
        index = torch.nonzero(correct & result.success).flatten()[:count]
        return {
            "original": x[index].cpu().numpy().round(4).tolist(),
            "perturbation": result.perturbation[index].cpu().numpy().round(5).tolist(),
            "adversarial": result.adversarial[index].cpu().numpy().round(4).tolist(),
            "label": result.original_label[index].tolist(),
            "adversarial_label": result.adversarial_label[index].tolist(),
        }

    def render(self, result: dict[str, Any], out_dir: Path) -> Section:
        """Summary table, norm histograms, FGSM curve and an example grid."""
        df, fgsm = result["deepfool"], result["fgsm"]
        tight = result.get("tightest", {})
        keys = [k for k in ("l2", "linf") if k in tight]

        def cells(field: str, digits: int = 4, key: str | None = None) -> list[str]:
            """DeepFool and (if run) tightest values of `field` for l2 then l∞."""
            out = []
            for k in ("l2", "linf"):
                value = _fmt(df[k][field], digits)
                out += [value if key in (None, k) else ""]
                if k in keys:
                    out += [_fmt(tight[k][field], digits) if key in (None, k) else ""]
            return out

        header = ["", "DeepFool l2"]
        header += ["tightest l2 (FMN)"] if "l2" in keys else []
        header += ["DeepFool l∞"] + (["tightest l∞ (FMN)"] if "linf" in keys else [])
        header += ["FGSM (90%)"]
        rows = [
            ["ρ_adv l2 (eq. 3.10)", *cells("rho_adv", key="l2"), _fmt(fgsm.get("rho_l2"))],
            [
                "ρ_adv l∞ ([[thesis, Table 3.2]])",
                *cells("rho_adv", key="linf"),
                _fmt(fgsm.get("rho_linf")),
            ],
            ["median ‖r‖ (input units; failures count as ∞)", *cells("median_norm"), ""],
            ["ε (l∞) fooling 90% of the images", *["" for _ in cells("n")], _fmt(fgsm["eps90"])],
            ["success rate", *cells("success_rate"), _fmt(fgsm["fooling_rate"])],
            ["failures", *cells("n_failures"), ""],
            ["mean iterations", *cells("mean_iterations", 3), "1"],
            ["time (s)", *cells("seconds", 3), ""],
        ]
        if keys:
            gap = ["DeepFool ÷ tightest, per image: median / mean / max"]
            for k in ("l2", "linf"):
                gap += [""]
                if k in keys:
                    t = tight[k]
                    gap += [
                        f"{_fmt(t['ratio_median'])} / {_fmt(t['ratio_mean'])} / "
                        f"{_fmt(t['ratio_max'])}"
                    ]
            rows.append([*gap, ""])
        figs = []
        units = _units(result.get("bounds"))
        panels = {
            f"DeepFool ‖r‖₂ ({units})": result["norms"]["l2"],
            f"DeepFool ‖r‖∞ ({units})": result["norms"]["linf"],
        }
        for k, label in (("l2", "DeepFool ÷ tightest, l2"), ("linf", "DeepFool ÷ tightest, l∞")):
            if k in keys:
                panels[label] = tight[k]["ratio"]
        fig, _ = figures.norm_histograms(panels)
        figs.append(
            (
                figures.save(fig, out_dir / "deepfool_norms.png"),
                "Minimal perturbation norms found by DeepFool, one count per correctly "
                f"classified image, in {units}; the red line is the median"
                + (
                    "; right: per image, how many times larger DeepFool's perturbation is "
                    "than the tightest estimate (1 = DeepFool was already minimal)."
                    if keys
                    else "."
                ),
            )
        )
        fig, _ = figures.fooling_curves(
            fgsm["curve"]["eps"], {"FGSM": fgsm["curve"]["rate"]}, marker=fgsm["eps90"]
        )
        figs.append(
            (
                figures.save(fig, out_dir / "fgsm_curve.png"),
                "FGSM fooling rate against ε; the dashed line is the 90% protocol's ε.",
            )
        )
        ex = result["examples"]
        if ex["label"]:
            fig, _ = figures.example_grid(
                np.asarray(ex["original"]),
                np.asarray(ex["perturbation"]),
                np.asarray(ex["adversarial"]),
                list(zip(map(str, ex["label"]), map(str, ex["adversarial_label"]), strict=True)),
            )
            figs.append(
                (
                    figures.save(fig, out_dir / "deepfool_examples.png"),
                    "DeepFool (l2) examples: original, perturbation (contrast-stretched), "
                    "adversarial with its new label.",
                )
            )
        notes = []
        for key in ("l2", "linf"):
            if df[key]["n_failures"]:
                notes.append(
                    f"DeepFool {key} failed on {df[key]['n_failures']} correctly "
                    "classified samples; ρ_adv excludes them, the median counts them "
                    "as infinite."
                )
        tables = [("Minimal perturbations", header, rows)]
        if result.get("robust_accuracy"):
            tables.append(_robust_table(result["robust_accuracy"]))
            notes += _check_notes(result["robust_accuracy"])
        return Section(
            title=self.title,
            intro=(
                "DeepFool ([[deepfool]]; [[thesis, §3.2]]) estimates, for every correctly "
                "classified image, the smallest perturbation r that changes the label. "
                "ρ_adv is the mean of ‖r‖/‖x‖: the smaller, the closer the decision boundary "
                "sits to the data. FGSM ([[fgsm]]) needs the ε that fools 90% of the images; "
                "its ρ is typically several times larger ([[thesis, Table 3.1]]), showing "
                "how much a one-step attack overestimates robustness. Norms are in input "
                "units (the pixel range of the model's inputs)."
                + (
                    " The tightest estimate refines each DeepFool point with FMN ([[fmn]]), "
                    "which shrinks it while keeping it adversarial: DeepFool's ρ_adv is the "
                    "thesis's number, the tightest is closer to the true minimum (DeepFool's "
                    "linearisation is greedy, [[thesis, §3.2.2]])."
                    if keys
                    else ""
                )
            ),
            tables=tables,
            figures=figs,
            notes=notes,
        )


def _units(bounds: list[float] | None) -> str:
    """Axis units of a norm: input units, with the box when it is known."""
    if not bounds:
        return "input units"
    return f"input units, pixels in [{bounds[0]:g}, {bounds[1]:g}]"


def _check_notes(rows: list[dict[str, Any]]) -> list[str]:
    """One note per failure check that fired during the robust-accuracy evaluation."""
    seen: dict[str, str] = {}
    for row in rows:
        for check in row.get("checks") or []:
            seen.setdefault(str(check["name"]), str(check["message"]))
    return [
        f"Failure check '{name}' fired ([[pintor]]): {message}." for name, message in seen.items()
    ]


def _robust_table(rows: list[dict[str, Any]]) -> tuple[str, list[str], list[list[str]]]:
    """The robust-accuracy table: one row per usual budget, with who broke the images."""
    header = [
        "budget",
        "convention",
        "robust accuracy (≤)",
        "from minimal perturbations only",
        "images broken by",
    ]
    body = [
        [
            f"{'l∞' if math.isinf(row['p']) else 'l2'} ε = {row['label']}",
            row["convention"],
            f"{row['robust_accuracy']:.1%}",
            f"{row['robust_accuracy_minimal_only']:.1%}",
            ", ".join(f"{k} {v}" for k, v in row.get("broken_by", {}).items() if v) or "—",
        ]
        for row in rows
    ]
    caption = (
        f"Robust accuracy at the usual budgets ({rows[0]['n']} test images): correct and "
        f"not fooled within ε by {rows[0].get('evaluation', 'the attacks')} "
        "(AutoAttack's attacks on the images the minimal perturbations leave robust, "
        "[[autoattack]]) — an upper bound, as any stronger attack can only lower it"
    )
    return caption, header, body
