"""The analysis registry: adding a report section = one module + one `register_analysis`.

An analysis computes a JSON-ready result from a `ReportContext` (`run`), and turns a
result — freshly computed or read back from ``results.json`` on ``--resume`` — into a
`Section` for display (`render`), drawing its figures from the result alone.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from boundaryscope.classifier import Classifier
from boundaryscope.data import Dataset
from boundaryscope.zoo import LoadedModel

__all__ = [
    "ANALYSES",
    "PROFILES",
    "Analysis",
    "ReportConfig",
    "ReportContext",
    "Section",
    "finite_median",
    "format_number",
    "register_analysis",
]


@dataclass(frozen=True)
class ReportConfig:
    """Sizes of the report's computations (a profile).

    Attributes:
        n: Test samples used by every analysis.
        deepfool_steps: DeepFool's maximum iterations.
        candidates: DeepFool's candidate classes.
        overshoot: DeepFool's overshoot.
        paper_exact: Run DeepFool without its box-aware/refinement extras.
        tightest_steps: FMN steps refining each DeepFool point into the "tightest
            estimate" of the minimal perturbation (0 = off).
        robust_steps: PGD iterations of the robust accuracy at the usual budgets.
        examples: Images shown in the example grid.
        curve_n: Images of the fixed-budget curves.
        curve_eps: Budgets of the curves (``start:stop:count``).
        curve_steps: Iterations of PGD/BIM/SPSA in the curves.
        curve_attacks: Attacks of the curves.
        noise_n: Images of the random/semi-random noise measurements.
        noise_fractions: ``d/m`` of the semi-random subspaces (Table 5.1).
        noise_steps: DeepFool iterations inside subspaces.
        spectral_n: Images of the spectral (DCT band) measurements.
        universal_n: Training images ``X`` of the universal perturbation.
        universal_xi: Its l∞ radius (input units).
        universal_passes: Passes of Alg. 4 (paper variant).
    """

    n: int = 1000
    deepfool_steps: int = 50
    candidates: int = 10
    overshoot: float = 0.02
    paper_exact: bool = False
    tightest_steps: int = 30
    robust_steps: int = 40
    examples: int = 6
    curve_n: int = 300
    curve_eps: str = "0:0.3:11"
    curve_steps: int = 20
    curve_attacks: tuple[str, ...] = (
        "deepfool",
        "alg1",
        "alg1-10",
        "alg2",
        "fgsm",
        "pgd",
        "random",
    )
    noise_n: int = 100
    noise_fractions: tuple[int, ...] = (4, 16, 36, 64, 100)  # m = d / fraction
    noise_steps: int = 100
    spectral_n: int = 50
    universal_n: int = 500
    universal_xi: float = 0.5
    universal_passes: int = 5


PROFILES: dict[str, ReportConfig] = {
    "default": ReportConfig(),
    "full": ReportConfig(
        noise_n=1000,
        spectral_n=1000,
        noise_steps=200,
        n=1_000_000,
        paper_exact=True,
        tightest_steps=100,
        robust_steps=100,
        curve_n=1_000_000,
        curve_eps="0:0.3:31",
        curve_steps=40,
    ),
    "quick": ReportConfig(
        noise_n=8,
        noise_fractions=(4, 64),
        noise_steps=30,
        spectral_n=6,
        universal_n=24,
        universal_passes=1,
        tightest_steps=10,
        robust_steps=10,
        n=64,
        examples=4,
        curve_n=32,
        curve_eps="0:0.3:4",
        curve_steps=5,
        curve_attacks=("deepfool", "alg1", "fgsm", "random"),
    ),
}


@dataclass
class ReportContext:
    """Everything an analysis may read."""

    clf: Classifier
    data: Dataset
    model: LoadedModel
    config: ReportConfig
    seed: int
    out_dir: Path
    data_spec: str = "mnist5k"  # the spec of `data` (its train split serves X)
    profile: str = "default"  # sections that own their settings pick them by profile


@dataclass
class Section:
    """Display form of one analysis, rendered by the generic HTML template.

    Attributes:
        title: Section heading.
        intro: One paragraph saying what is measured and how to read it.
        tables: ``(caption, header, rows)`` triples.
        figures: ``(file name relative to the report, caption)`` pairs.
        notes: Warnings or caveats shown under the section.
        anchor: HTML id of the section (set by the runner: ``s-`` + the analysis name).

    The intro is HTML; captions and notes are plain text. All may cite the literature with
    markers such as ``[[thesis, §3.2]]`` (`boundaryscope.report.references`).
    """

    title: str
    intro: str
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    anchor: str = ""


class Analysis(ABC):
    """One report section."""

    name: str = "analysis"
    title: str = "Analysis"
    order: int = 100  # position in the report, smaller first

    @abstractmethod
    def run(self, ctx: ReportContext) -> dict[str, Any]:
        """Computes the JSON-ready result."""

    @abstractmethod
    def render(self, result: dict[str, Any], out_dir: Path) -> Section:
        """Builds the display section (and writes its figures into `out_dir`)."""


ANALYSES: dict[str, Analysis] = {}
AnalysisT = TypeVar("AnalysisT", bound=type[Analysis])


def register_analysis(cls: AnalysisT) -> AnalysisT:
    """Class decorator: registers one instance under ``cls.name`` (report order = order)."""
    ANALYSES[cls.name] = cls()
    return cls


def finite_median(values: Sequence[Any]) -> float:
    """Median of the finite entries of `values` (``None``/``"nan"`` skipped); NaN if none."""
    array = np.asarray(values, dtype=float)
    array = array[np.isfinite(array)]
    return float(np.median(array)) if array.size else math.nan


def format_number(value: float | str | None, spec: str) -> str:
    """`value` (a number, or JSON's ``"nan"``/``"inf"`` strings) formatted, ``—`` if not finite."""
    if value is None:
        return "—"
    number = float(value)
    return format(number, spec) if math.isfinite(number) else "—"
