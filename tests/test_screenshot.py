"""The report page in a real browser: the verdict block is on the first screen."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from boundaryscope.cli import main

_SPEC = importlib.util.spec_from_file_location(
    "screenshot", Path(__file__).parents[1] / "tools" / "screenshot.py"
)
assert _SPEC is not None and _SPEC.loader is not None
screenshot = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(screenshot)


@pytest.mark.slow
@pytest.mark.skipif(screenshot.chromium() is None, reason="no Chromium (apt-get install chromium)")
def test_verdict_is_visible_in_the_first_screen(tmp_path):
    out = tmp_path / "run"
    argv = ["report", "--profile", "quick", "--n", "16", "--out", str(out)]
    assert main([*argv, "--sections", "accuracy,robustness"]) == 0
    png = tmp_path / "first_screen.png"
    assert screenshot.main([str(out / "report.html"), str(png)]) == 0
    assert screenshot.verdict_share(png) > 0.05
    # The page without a verdict (an older report) fails the same check.
    page = (out / "report.html").read_text()
    (out / "bare.html").write_text(page.replace('class="verdict"', 'class="gone"'))
    assert screenshot.main([str(out / "bare.html"), str(png)]) == 1
