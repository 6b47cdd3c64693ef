"""The README's first library snippet runs as pasted on the bundled model."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path


def test_first_readme_snippet_runs_as_pasted():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert snippet is not None
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(snippet.group(1), "README.md", "exec"), {})
    rho = float(re.search(r"rho_adv = ([0-9.]+)", printed.getvalue()).group(1))
    assert 0.05 < rho < 0.5  # LeNet on MNIST: thesis Table 3.1 reports 0.20
