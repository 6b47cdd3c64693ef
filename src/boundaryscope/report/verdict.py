"""The report's verdict: the answers first, drawn from the sections' results alone.

"How robust is it, compared with what, and what should I do?" — `build_verdict` reads
the JSON results of the accuracy, robustness, fixed-budget and universal sections (any
of them may be missing: its lines are then left out) and returns a `Verdict` of rows
with units and links to the details, reference points for this kind of data, and
advice. It computes nothing new, so a resumed report gets the same verdict.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from boundaryscope.report.references import ReferencePoint, reference_points

__all__ = ["Verdict", "VerdictRow", "build_verdict"]


@dataclass(frozen=True)
class VerdictRow:
    """One answer: what, the value (with units), how to read it, where the details are."""

    quantity: str
    value: str
    reading: str
    link: str


@dataclass
class Verdict:
    """The verdict block (see the module docstring)."""

    rows: list[VerdictRow] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)
    reference_family: str = ""
    references: list[ReferencePoint] = field(default_factory=list)


def build_verdict(
    sections: dict[str, dict[str, Any]], shape: tuple[int, ...], data: str = ""
) -> Verdict:
    """The verdict of a report from its sections' results (``results.json["sections"]``).

    Args:
        sections: Section name → its JSON result (``accuracy``, ``robustness``, … used).
        shape: Shape of one input ``(C, H, W)``: picks the reference points.
        data: The data spec (Fashion-MNIST has MNIST's shape but not its references).
    """
    family, points = reference_points(shape, data)
    verdict = Verdict(reference_family=family, references=points)
    accuracy = sections.get("accuracy")
    if accuracy:
        reading = f"top-1, {accuracy['n']} held-out test images"
        if accuracy.get("at_chance"):
            reading += f"; at chance ({accuracy['chance_accuracy']:.1%}, the largest class)"
        verdict.rows.append(
            VerdictRow("clean accuracy", f"{accuracy['accuracy']:.1%}", reading, "s-accuracy")
        )
    robustness = sections.get("robustness")
    if robustness:
        verdict.rows += _minimal_rows(robustness)
        verdict.rows += _robust_rows(robustness)
        verdict.rows += _fgsm_rows(robustness)
        verdict.rows += _fragile_rows(robustness, accuracy)
    universal = sections.get("universal")
    if universal:
        verdict.rows.append(_universal_row(universal))
    verdict.advice = _advice(robustness)
    if accuracy and accuracy.get("at_chance"):  # first: nothing below means much then
        verdict.advice.insert(
            0,
            "Clean accuracy is at chance: the data is probably not what the model expects "
            "(class order, scale or normalisation, image size). Check it before reading "
            "the robustness numbers, which cover only the images classified correctly.",
        )
    return verdict


def _pixel_reading(bounds: list[float], value: float, d: int, p: str) -> str:
    """`value` (a norm in input units) in grey levels of an 8-bit image."""
    width = bounds[1] - bounds[0]
    if not math.isfinite(width) or width <= 0:
        return "input units (unbounded inputs)"
    if p == "linf":
        return f"every pixel changes by at most {255 * value / width:.0f} of 255 grey levels"
    rms = value / math.sqrt(d)
    return f"root-mean-square change {255 * rms / width:.1f} of 255 grey levels per pixel"


def _minimal_rows(robustness: dict[str, Any]) -> list[VerdictRow]:
    """Median minimal perturbation per norm: tightest estimate, DeepFool's ρ_adv."""
    rows = []
    bounds, d = robustness.get("bounds"), robustness.get("d")
    tightest = robustness.get("tightest", {})
    for key, name in (("l2", "l2"), ("linf", "l∞")):
        deepfool = robustness["deepfool"][key]
        best = tightest.get(key, deepfool)
        median = best["median_norm"]
        if not math.isfinite(median):
            continue
        how = "tightest estimate (DeepFool refined by FMN)" if key in tightest else "DeepFool"
        reading = f"median over correctly classified images, {how}; ρ_adv = "
        reading += f"{deepfool['rho_adv']:.3g} (mean ‖r‖/‖x‖, DeepFool as in the thesis)"
        if bounds and d:
            reading = _pixel_reading(bounds, median, d, key) + "; " + reading
        rows.append(
            VerdictRow(
                f"smallest change that flips the label, {name}",
                f"{median:.3g}",
                reading,
                "s-robustness",
            )
        )
    return rows


def _robust_rows(robustness: dict[str, Any]) -> list[VerdictRow]:
    rows = []
    for entry in robustness.get("robust_accuracy", []):
        norm = "l∞" if math.isinf(entry["p"]) else "l2"
        rows.append(
            VerdictRow(
                f"robust accuracy, {norm} ε = {entry['label']}",
                f"≤ {entry['robust_accuracy']:.1%}",
                f"{entry['convention']}; correct and not fooled within ε by "
                f"{entry.get('evaluation', 'the attacks')} (AutoAttack's attacks after the "
                "minimal perturbations, [[autoattack]]; an upper bound)" + _failure_note(entry),
                "s-robustness",
            )
        )
    return rows


def _failure_note(entry: dict[str, Any]) -> str:
    """The fired failure checks of an evaluation, as a warning after its reading."""
    fired = entry.get("checks") or []
    if not fired:
        return ""
    names = ", ".join(str(check["name"]).replace("_", " ") for check in fired)
    return f". WARNING — the evaluation may be unreliable: {names} (see the section)"


def _fgsm_rows(robustness: dict[str, Any]) -> list[VerdictRow]:
    fgsm, deepfool = robustness["fgsm"], robustness["deepfool"]
    ratios = []
    for key, name in (("l2", "l2"), ("linf", "l∞")):
        ours, theirs = deepfool[key]["rho_adv"], fgsm.get(f"rho_{key}", math.nan)
        if math.isfinite(ours) and math.isfinite(theirs) and ours > 0:
            ratios.append(f"{theirs / ours:.1f}× ({name})")
    if not ratios:
        return []
    return [
        VerdictRow(
            "how much FGSM over-estimates robustness",
            ", ".join(ratios),
            "ρ of FGSM at the ε fooling 90% ÷ DeepFool's ρ_adv: a one-step attack makes the "
            "model look this many times more robust than it is",
            "s-robustness",
        )
    ]


def _fragile_rows(robustness: dict[str, Any], accuracy: dict[str, Any] | None) -> list[VerdictRow]:
    """Classes with the smallest median l2 perturbation and the most frequent label flips."""
    labels = robustness.get("labels")
    norms = robustness["norms"]["l2"]
    flips = robustness.get("adversarial_labels", {}).get("l2")
    if not labels or flips is None:
        return []
    classes = list((accuracy or {}).get("classes") or [])

    def name(label: int) -> str:
        # Without the accuracy section (or for a label outside it) the number is the name.
        return str(classes[label]) if 0 <= label < len(classes) else str(label)

    by_class: dict[int, list[float]] = {}
    for label, norm in zip(labels, norms, strict=True):
        by_class.setdefault(label, []).append(norm)
    medians = {c: statistics.median(v) for c, v in by_class.items()}
    fragile = sorted(medians, key=lambda c: medians[c])[:3]
    pairs = Counter(
        (a, b) for a, b, n in zip(labels, flips, norms, strict=True) if math.isfinite(n) and a != b
    )
    total = sum(pairs.values())
    common = ", ".join(
        f"{name(a)} → {name(b)} ({count / total:.0%})" for (a, b), count in pairs.most_common(3)
    )
    rows = [
        VerdictRow(
            "most fragile classes (l2)",
            ", ".join(f"{name(c)} ({medians[c]:.3g})" for c in fragile),
            "classes with the smallest median minimal perturbation (DeepFool l2, input units)",
            "s-robustness",
        )
    ]
    if total:
        rows.append(
            VerdictRow(
                "most frequent label flips",
                common,
                f"share of the {total} DeepFool l2 adversarial examples",
                "s-robustness",
            )
        )
    return rows


def _universal_row(universal: dict[str, Any]) -> VerdictRow:
    linf = universal.get("linf_norm", universal["xi"])
    return VerdictRow(
        "one image-agnostic perturbation fools",
        f"{universal['fooling_test']:.1%}",
        f"of {universal['n_test']} held-out images, with ‖v‖∞ = {linf:.3g} "
        f"(‖v‖₂ = {universal['l2_norm']:.3g})",
        "s-universal",
    )


def _advice(robustness: dict[str, Any] | None) -> list[str]:
    """What to do next, from the robust accuracy at every budget measured (l∞ first).

    Each ε is read on its own: a model that holds at 0.1 and breaks at 0.3 is told both,
    never "not robust" under a table that shows it robust at the smaller budget.
    """
    if not robustness or not robustness.get("robust_accuracy"):
        return []
    budgets = robustness["robust_accuracy"]
    linf = [e for e in budgets if math.isinf(e["p"])]
    entries = sorted(linf or budgets[:1], key=lambda e: e["eps"])
    norm = "l∞" if math.isinf(entries[0]["p"]) else "l2"
    summary = ", ".join(f"{e['robust_accuracy']:.0%} at ε = {e['label']}" for e in entries)
    broken = [e for e in entries if e["robust_accuracy"] < 0.1]
    if broken:
        first = broken[0]
        if first is entries[0]:
            reading = f"Not robust at any {norm} budget measured ({summary}): almost every "
            reading += "image can be flipped."
        else:
            reading = (
                f"Robust accuracy ({norm}): {summary}. The model holds at the smaller "
                f"budgets and breaks from ε = {first['label']} on."
            )
        return [
            reading + " Adversarial training raises it most "
            "(`boundaryscope train --defense pgd`, [[madry]]); DeepFool fine-tuning "
            "(`--defense deepfool`, [[thesis, §3.3]]) and curvature regularisation "
            "(`--defense cure`, [[cure]]) are cheaper and enlarge the minimal perturbation. "
            "Compare the runs with `boundaryscope compare`.",
        ]
    return [
        f"Robust accuracy ({norm}): {summary} — the images that resist the minimal-"
        "perturbation attacks and AutoAttack's cascade ([[autoattack]]). Each is still an "
        "upper bound: quote it with the attacks that produced it, and with `boundaryscope "
        "evaluate --profile standard` (AutoAttack's full sizes) if the report used fewer.",
    ]
