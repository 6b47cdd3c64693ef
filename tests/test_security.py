"""Security suite: nothing a file says is ever imported or run (docs/security.md).

Each test crafts what a user could receive from someone else — a run directory whose
``model.pt`` names a factory, a run card whose base model is code, pickles that execute on
load, a crafted ``results.json``, a crafted detector — and asserts that the command refuses
it (exit 2, one line naming the file) and that the payload's marker file never appears.
"""

from __future__ import annotations

import io
import json
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from boundaryscope.cli import main

PAYLOAD = textwrap.dedent(
    """
    import pathlib
    pathlib.Path({marker!r}).write_text("ran")

    def make():
        pathlib.Path({marker!r}).write_text("ran")
        import torch
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    """
)


def _flat_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).state_dict()


@pytest.fixture
def received(tmp_path, monkeypatch):
    """A folder as a user gets it: payload modules beside a run directory naming them."""
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "MARKER"
    (tmp_path / "payload.py").write_text(PAYLOAD.format(marker=str(marker)))
    (tmp_path / "pkgpayload").mkdir()
    (tmp_path / "pkgpayload" / "__init__.py").write_text(PAYLOAD.format(marker=str(marker)))
    run = tmp_path / "recv"
    run.mkdir()
    yield tmp_path, run, marker
    sys.modules.pop("payload", None)
    sys.modules.pop("pkgpayload", None)


FACTORIES = ["payload.py:make", "./payload.py:make", "pkgpayload:make", "ABSOLUTE"]


@pytest.mark.parametrize("factory", FACTORIES)
def test_a_run_directory_naming_a_factory_never_imports_it(received, factory, capsys):
    folder, run, marker = received
    if factory == "ABSOLUTE":
        factory = f"{folder / 'payload.py'}:make"
    torch.save(
        {"state_dict": _flat_state(), "factory": factory, "bounds": [0.0, 1.0]}, run / "model.pt"
    )
    (run / "train.json").write_text(
        json.dumps({"factory": factory, "base_model": "zoo:lenet-mnist"})
    )
    commands = [
        ["attack", "deepfool", "--model", "recv", "--n", "2", "--out", "a"],
        ["report", "--model", "recv", "--profile", "quick", "--n", "2", "--out", "r"],
        ["compare", "recv", "--profile", "quick", "--n", "2", "--out", "c"],
        ["train", "--defense", "standard", "--model", "recv", "--epochs", "1", "--out", "t"],
    ]
    for argv in commands:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "never imports code that a file names" in err and "--arch" in err, err
        assert not marker.exists(), argv
    # A weights file outside a run directory is treated the same way.
    assert main(["attack", "deepfool", "--model", "recv/model.pt", "--n", "2", "--out", "a"]) == 2
    assert not marker.exists()


def test_a_factory_the_user_names_is_used_and_must_fit_the_weights(received, capsys):
    folder, run, marker = received
    (folder / "mynet.py").write_text(
        "import torch\n\ndef make():\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))\n"
        "\ndef wrong():\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 3))\n"
    )
    torch.save(
        {"state_dict": _flat_state(), "factory": "./mynet.py:make", "bounds": [0.0, 1.0]},
        run / "model.pt",
    )
    argv = ["attack", "deepfool", "--model", "recv", "--n", "2", "--out", "a"]
    assert main([*argv, "--arch", "./mynet.py:make"]) == 0
    assert main([*argv, "--arch", "./mynet.py:wrong"]) == 2
    assert "do not fit" in capsys.readouterr().err
    assert not marker.exists()


def test_compare_never_imports_the_base_model_a_run_card_names(received, capsys):
    _folder, run, marker = received
    torch.save({"state_dict": _flat_state(), "arch": "mlp"}, run / "model.pt")
    (run / "train.json").write_text(json.dumps({"base_model": "payload.py:make"}))
    assert main(["compare", "recv", "--profile", "quick", "--n", "2", "--out", "c"]) == 2
    assert "never imports code" in capsys.readouterr().err
    assert not marker.exists()


def test_compare_checks_every_run_card_before_measuring_anything(received, capsys, monkeypatch):
    folder, _run, _ = received
    assert (
        main(["train", "--defense", "standard", "--data", "digits", "--model", "zoo:mlp-digits",
              "--epochs", "1", "--train-n", "64", "--monitor-n", "16", "--out", "good"])
        == 0
    )  # fmt: skip
    bad = folder / "bad"
    bad.mkdir()
    (bad / "model.pt").write_bytes((folder / "good" / "model.pt").read_bytes())
    (bad / "train.json").write_text(json.dumps({"history": [{"epoch": "x"}]}))
    measured = []
    import boundaryscope.report.comparison as comparison

    monkeypatch.setattr(comparison, "compare_models", lambda *a, **k: measured.append(1))
    argv = ["compare", "good", "bad", "--data", "digits", "--profile", "quick", "--out", "c"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "bad/train.json" in err and "history[0]" in err
    assert measured == []


class _Boom:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_pickle(path: Path, marker: Path, wrap: object = None) -> None:
    payload = {"state_dict": _flat_state(), "arch": "mlp", "x": _Boom(str(marker))}
    buffer = io.BytesIO()
    torch.save(payload if wrap is None else wrap, buffer)
    path.write_bytes(buffer.getvalue())


def test_pickles_that_run_code_are_refused_everywhere_without_advising_the_unsafe_path(
    received, capsys
):
    folder, _run, marker = received
    _evil_pickle(folder / "evil.pt", marker)
    refused = [
        ["attack", "deepfool", "--model", "evil.pt", "--arch", "lenet", "--n", "2", "--out", "a"],
        ["universal", "--eval", "evil.pt", "--out", "u"],
        ["detect", "score", "det.json", "--inputs", "evil.pt", "--out", "d"],
        ["universal", "--eval", "evil.npy", "--out", "u"],  # numpy's pickled object arrays
        ["detect", "score", "det.json", "--inputs", "evil.npy", "--out", "d"],
    ]
    np.save(folder / "evil.npy", np.array([_Boom(str(marker))], dtype=object), allow_pickle=True)
    (folder / "det.json").write_text(
        json.dumps({"kind": "confidence", "params": {}, "threshold": 0.5})
    )
    for argv in refused:
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert "weights_only" not in err and "allow_pickle" not in err, err
        assert "evil.pt" in err or "evil.npy" in err, err
        assert not marker.exists()
    # A training checkpoint or prepared set that runs code is refused the same way.
    run_dir = folder / "t"
    run_dir.mkdir()
    _evil_pickle(run_dir / "checkpoint.pt", marker)
    argv = ["train", "--defense", "standard", "--data", "digits", "--model", "zoo:mlp-digits",
            "--epochs", "1", "--train-n", "32", "--monitor-n", "8", "--resume",
            "--out", "t"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pickled Python objects" in err and "weights_only" not in err
    assert not marker.exists()


def test_a_crafted_results_file_is_recomputed_never_shown(tmp_path, caplog):
    out = tmp_path / "r"
    argv = [
        "report",
        "--profile",
        "quick",
        "--n",
        "12",
        "--sections",
        "accuracy",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    true_accuracy = results["sections"]["accuracy"]["accuracy"]
    results["sections"]["accuracy"]["n"] = "<script>alert(1)</script>"
    results["sections"]["accuracy"]["accuracy"] = 7.5
    (out / "results.json").write_text(json.dumps(results))
    assert main([*argv, "--resume"]) == 0
    html = (out / "report.html").read_text()
    assert "<script>alert" not in html and "750" not in html
    assert "section accuracy" in caplog.text and "not a valid result" in caplog.text
    again = json.loads((out / "results.json").read_text())["sections"]["accuracy"]
    assert again["n"] == 12 and again["accuracy"] == true_accuracy
    # Strings that pass the schema are shown escaped, never as markup.
    again["classes"] = ["<script>x()</script>"] * len(again["classes"])
    again["accuracy"] = "nan"
    results["sections"]["accuracy"] = again
    (out / "results.json").write_text(json.dumps(results))
    assert main([*argv, "--resume"]) == 0
    assert "<script>x()" not in (out / "report.html").read_text()


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ({"kind": "confidence", "threshold": 0.5}, "'params'"),
        ({"kind": "confidence", "params": {}, "threshold": "nan"}, "'threshold'"),
        ({"kind": "confidence", "params": {}, "threshold": float("nan")}, "'threshold'"),
        ({"kind": "os.system", "params": {}, "threshold": 0.5}, "not a saved"),
        ({"kind": "confidence", "params": {"__class__": 1}, "threshold": 0.5}, "'params'"),
        ("not json", "not a readable"),
    ],
)
def test_crafted_detector_files_are_refused_naming_the_file(tmp_path, payload, says, capsys):
    path = tmp_path / "det.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    assert main(["detect", "score", str(path), "--n", "2", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert says in err and "det.json" in err, err
