"""The README's library snippets run as pasted on the bundled model."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest


def test_first_readme_snippet_runs_as_pasted():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert snippet is not None
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(snippet.group(1), "README.md", "exec"), {})
    rho = float(re.search(r"rho_adv = ([0-9.]+)", printed.getvalue()).group(1))
    assert 0.05 < rho < 0.5  # LeNet on MNIST: thesis Table 3.1 reports 0.20


@pytest.mark.slow
def test_second_readme_snippet_runs_as_pasted_after_the_first(tmp_path, monkeypatch):
    # Issue 25: the second snippet used names it never defined.
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    first, second = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)[:2]
    monkeypatch.chdir(tmp_path)  # it writes a run directory under runs/
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(first, "README.md", "exec"), namespace)
        exec(compile(second, "README.md", "exec"), namespace)
    assert (tmp_path / "runs" / "readme-cure").is_dir()
    assert namespace["exact"].exact.all()
