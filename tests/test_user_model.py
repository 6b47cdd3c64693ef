"""A new user's first hour: their own model file and a class-ordered data file."""

from __future__ import annotations

import json
import subprocess
import textwrap

import numpy as np
import pytest

from tests.subprocesses import BOUNDARYSCOPE, ENV

MODULE = textwrap.dedent(
    """
    import torch
    from torch import nn

    def factory():
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["mymodels:factory", "./mymodels.py:factory"])
def test_report_on_a_user_module_from_its_folder_and_class_ordered_data(tmp_path, spec):
    (tmp_path / "mymodels.py").write_text(MODULE)
    # Class-ordered: 40 images of class 0, then 40 of 1, then 40 of 2 (8×8 grey images).
    y = np.repeat(np.arange(3), 40)
    rng = np.random.default_rng(0)
    x = (rng.random((120, 1, 8, 8)) * 0.5 + y[:, None, None, None] / 4).astype(np.float32)
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    argv = ["report", "--model", spec, "--data", "npz:mine.npz", "--profile", "quick",
            "--sections", "accuracy,robustness,universal", "--out", "run"]  # fmt: skip
    # Run from the user's folder, as a user would: the module is found there.
    done = subprocess.run(
        [*BOUNDARYSCOPE, *argv], cwd=tmp_path, env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[3/3] universal done" in done.stderr  # progress lines although piped
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    accuracy = results["sections"]["accuracy"]
    # The stratified 80/20 split: 24 test images, 8 per class, never the first rows only.
    assert accuracy["n"] == 24
    assert [sum(row) for row in accuracy["confusion"]] == [8, 8, 8]
    universal = results["sections"]["universal"]
    assert universal["n_train"] <= 96 and universal["n_test"] == 24
    assert (tmp_path / "run" / "report.html").stat().st_size > 10_000
