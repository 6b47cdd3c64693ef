"""The analysis registry: adding a report section = one module + one `register_analysis`.

An analysis computes a JSON-ready result from a `ReportContext` (`run`), and turns a
result — freshly computed or read back from ``results.json`` on ``--resume`` — into a
`Section` for display (`render`), drawing its figures from the result alone.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass, replace
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
    # Share of each section's own sample sizes kept (``--time-budget``; 1: the profile's).
    scale: float = 1.0


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
        scalable: Fields of the settings that count the section's own samples (training
            images, boundary points, paths, curve images), shrunk together by
            ``--time-budget`` (`settings_for` with a `scale` below 1).
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
    scalable: ClassVar[tuple[str, ...]] = ()
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

    def settings_for(self, profile: str, scale: float = 1.0) -> Any:
        """The settings of `profile` (``default``'s for a profile the section lacks).

        With `scale` below 1 (``--time-budget``), each `scalable` field is
        ``max(round(scale × value), quick)`` — never below the ``quick`` profile's value,
        never above the profile's own.
        """
        chosen = self.settings.get(profile, self.settings.get("default"))
        if scale >= 1.0 or not self.scalable:
            return chosen
        floor = self.settings.get("quick", chosen)
        return replace(
            chosen,
            **{name: _shrunk(getattr(chosen, name), getattr(floor, name), scale)
               for name in self.scalable},
        )  # fmt: skip

    def settings_in(self, ctx: ReportContext) -> Any:
        """The settings this section runs with in `ctx` (its profile, at its scale)."""
        return self.settings_for(ctx.profile, ctx.scale)

    def settings_record(self, profile: str, scale: float = 1.0) -> dict[str, Any]:
        """The settings of `profile` at `scale` as JSON values; ``{}`` for a section without any.

        They are stored with the section's result, so that ``--resume`` recomputes a
        section whose settings changed since.
        """
        chosen = self.settings_for(profile, scale)
        if not is_dataclass(chosen) or isinstance(chosen, type):
            return {}
        return dict(from_jsonable(to_jsonable(asdict(chosen))))

    def work(self, profile: str, n: int, scale: float = 1.0) -> float:
        """How much work this section does in a report of `n` test images at `scale`.

        The cost estimate (`boundaryscope.report.cost`) scales the section's reference
        passes by this number over the same at the reference's ``n`` and scale 1. Default:
        `n` (test images) for a `per_image` section; for the others, whose size does not
        follow the test images, the share of their `scalable` samples kept at `scale`
        (1 at scale 1: a fixed cost, whatever `n`). A section that caps its test images
        in its settings says so here.
        """
        if self.per_image:
            return float(n)
        return self.sample_share(profile, scale)

    def sample_share(self, profile: str, scale: float) -> float:
        """Sum of the `scalable` fields at `scale` over the same at scale 1 (1 if none)."""
        full = self.settings_for(profile)
        total = sum(getattr(full, name) for name in self.scalable)
        if not total:
            return 1.0
        kept = self.settings_for(profile, scale)
        return sum(getattr(kept, name) for name in self.scalable) / total

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


def _shrunk(value: int, floor: int, scale: float) -> int:
    """``round(scale × value)``, at least `floor`, at most `value`."""
    return min(value, max(round(scale * value), floor))


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
