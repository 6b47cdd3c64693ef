"""The robustness report: a registry of analyses rendered into one offline HTML page."""

from boundaryscope.report.registry import (
    ANALYSES,
    PROFILES,
    Analysis,
    ReportConfig,
    ReportContext,
    Section,
    register_analysis,
)

__all__ = [
    "ANALYSES",
    "PROFILES",
    "Analysis",
    "ReportConfig",
    "ReportContext",
    "Section",
    "register_analysis",
    "run_report",
]


def __getattr__(name: str) -> object:
    # The runner imports the analyses (and through them matplotlib); load it on demand.
    if name == "run_report":
        from boundaryscope.report.runner import run_report

        return run_report
    raise AttributeError(name)
