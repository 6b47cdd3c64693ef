"""The analysis registry: adding a report section = one module + one `register_analysis`.

An analysis computes a JSON-ready result from a `ReportContext` (`run`), and turns a
result — freshly computed or read back from ``results.json`` on ``--resume`` — into a
`Section` for display (`render`), drawing its figures from the result alone.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import jsonschema
import numpy as np
from torch import Tensor

from boundaryscope._io import from_jsonable, to_jsonable
from boundaryscope.classifier import Classifier
from boundaryscope.data import Dataset
from boundaryscope.zoo import LoadedModel

__all__ = [
    "ANALYSES",
    "COUNT",
    "FRACTION",
    "PROFILES",
    "REAL",
    "Analysis",
    "ReportConfig",
    "ReportContext",
    "Section",
    "finite_median",
    "format_number",
    "register_analysis",
]


# JSON Schema pieces for `Analysis.schema`: results are checked as written in results.json,
# where a non-finite float is the string "inf", "-inf" or "nan" (`boundaryscope._io`).
REAL: dict[str, Any] = {"anyOf": [{"type": "number"}, {"enum": ["inf", "-inf", "nan"]}]}
FRACTION: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 1}
COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}
_RESULT_BASE: dict[str, Any] = {
    "type": "object",
    "required": ["seconds_total", "settings"],
    "properties": {
        "seconds_total": {"type": "number", "minimum": 0},
        "settings": {"type": "object"},
        "passes": {
            "type": "object",
            "properties": {
                "forward_rows": {"type": "integer", "minimum": 0},
                "backward_rows": {"type": "integer", "minimum": 0},
            },
        },
    },
}


@dataclass(frozen=True)
class ReportConfig:
    """What every section of a report shares (a profile); the rest belongs to the sections.

    Each analysis owns its own sizes (attack steps, images, budgets) as a frozen
    dataclass per profile in its class attribute `Analysis.settings`, so adding a section
    never touches this class.

    Attributes:
        n: Test images of the report (``--n``); sections take subsets of them.
    """

    n: int = 1000


PROFILES: dict[str, ReportConfig] = {
    "default": ReportConfig(),
    "full": ReportConfig(n=1_000_000),
    "quick": ReportConfig(n=64),
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
    profile: str = "default"  # each section picks its own settings by this name
    # Other models given with ``report --other`` (spec → classifier), for the measures that
    # compare models (the universal section's cross-model table, Table 4.2).
    others: dict[str, Classifier] = field(default_factory=dict)


@dataclass
class Section:
    """Display form of one analysis, rendered by the generic HTML template.

    Attributes:
        title: Section heading.
        intro: One paragraph (plain text) saying what is measured and how to read it.
        tables: ``(caption, header, rows)`` triples.
        figures: ``(file name relative to the report, caption)`` pairs.
        notes: Warnings or caveats shown under the section.
        anchor: HTML id of the section (set by the runner: ``s-`` + the analysis name).

    Every text is plain text, escaped when the page is rendered (never markup, so nothing
    read back from ``results.json`` can inject any). All may cite the literature with
    markers such as ``[[thesis, §3.2]]`` (`boundaryscope.report.references`).
    """

    title: str
    intro: str
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    anchor: str = ""


class Analysis(ABC):
    """One report section.

    Attributes:
        name: Key in ``results.json`` and ``--sections``.
        title: Heading of the section.
        order: Position in the report, smaller first.
        settings: The section's own sizes, one frozen dataclass per profile name (every
            name of `PROFILES`); empty for a section with nothing to set.
        per_image: Its work is attacks on the test images, every image on its own, so
            under ``torchrun`` it runs in every process with its attack calls sharded;
            otherwise it runs whole in one process (`boundaryscope.report.runner`).
        weight: Rough cost (seconds of the default profile on a 2-core CPU), used to
            deal whole sections out to processes evenly.
        schema: JSON Schema of the result as stored in ``results.json`` (types and ranges
            of what the page and the verdict read); a result read back by ``--resume``
            that does not satisfy it is recomputed, never shown (docs/security.md).
    """

    name: str = "analysis"
    title: str = "Analysis"
    order: int = 100
    settings: ClassVar[Mapping[str, Any]] = {}
    per_image: bool = False
    weight: float = 10.0
    schema: ClassVar[dict[str, Any]] = {"type": "object"}

    def problem(self, stored: Any) -> str | None:
        """Why `stored` (a result as read from ``results.json``) is unusable; ``None`` if usable.

        Checked against the common fields (``seconds_total``, ``settings``) and `schema`;
        the first error is named with its path in the result.
        """
        for schema in (_RESULT_BASE, self.schema):
            error = jsonschema.exceptions.best_match(
                jsonschema.Draft202012Validator(schema).iter_errors(stored)
            )
            if error is not None:
                where = "/".join(map(str, error.absolute_path)) or "(the section)"
                return f"{where}: {error.message[:200]}"
        return None

    def settings_for(self, profile: str) -> Any:
        """The settings of `profile` (``default``'s for a profile the section lacks)."""
        return self.settings.get(profile, self.settings.get("default"))

    def settings_record(self, profile: str) -> dict[str, Any]:
        """The settings of `profile` as JSON values; ``{}`` for a section without any.

        They are stored with the section's result, so that ``--resume`` recomputes a
        section whose settings changed since.
        """
        chosen = self.settings_for(profile)
        if not is_dataclass(chosen) or isinstance(chosen, type):
            return {}
        return dict(from_jsonable(to_jsonable(asdict(chosen))))

    def images_used(self, profile: str, n: int) -> float:
        """Test images whose own work this section does in a report of `n` images.

        The cost estimate (`boundaryscope.report.cost`) scales the section's reference
        passes by this number at `n` over the same at the reference's ``n``. Default: `n`
        for a `per_image` section, 0 (a fixed cost, whatever `n`) for the others; a
        section that caps its images in its settings says so here.
        """
        del profile
        return float(n) if self.per_image else 0.0

    def calibrate(self, ctx: ReportContext, x: Tensor, y: Tensor) -> float | None:
        """A cheap measurement on a few test images that sharpens this section's estimate.

        Where the reference table holds a ``cost_model`` for the section (see
        `boundaryscope.report.cost.estimate_sections`), the estimate scales its variable
        part by this value over the reference's. Default: ``None`` (nothing to measure).
        """
        del ctx, x, y
        return None

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
