"""SIGKILL at random moments, then ``--resume``: identical results and no partial files.

Each command runs once uninterrupted (the reference), then is killed at seeded random
moments and resumed until it finishes. After every kill, each visible file in the output
directory must be complete (JSON parses, tensors load); after the resume, the results must
equal the reference (timings aside) and no temporary file may remain.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.subprocesses import BOUNDARYSCOPE, ENV, run_ok

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL"),
]


def kill_after(argv: list[str], seconds: float) -> bool:
    """Starts the command, SIGKILLs it after `seconds`; True if it was still running."""
    process = subprocess.Popen(
        [*BOUNDARYSCOPE, *argv],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(seconds)
    alive = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    return alive


def assert_complete(directory: Path) -> None:
    """Every visible file is whole: no half-written JSON or tensor file is ever seen."""
    if not directory.exists():
        return
    for path in directory.rglob("*"):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".pt":
            torch.load(path, map_location="cpu", weights_only=True)


def without_timings(value: object) -> object:
    if isinstance(value, dict):
        return {
            k: without_timings(v)
            for k, v in value.items()
            # The cost estimate times the machine before each (resumed) run, like timings.
            if k != "estimate"
            and not any(word in k for word in ("seconds", "per_second", "time", "created"))
        }
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def kill_and_resume(argv: list[str], out: Path, seed: int, kills: int = 2) -> None:
    rng = random.Random(seed)
    for _ in range(kills):
        kill_after([*argv, "--out", str(out), *(["--resume"] if out.exists() else [])],
                   rng.uniform(2.0, 7.0))  # fmt: skip
        assert_complete(out)
    run_ok([*argv, "--out", str(out), "--resume"])
    assert not list(out.glob(".*.partial")), "temporary files left behind"


def test_report_survives_sigkill(tmp_path, seed):
    argv = ["report", "--profile", "quick", "--n", "16", "--sections", "robustness,noise"]
    run_ok([*argv, "--out", str(tmp_path / "reference")])
    kill_and_resume(argv, tmp_path / "killed", seed)
    reference = json.loads((tmp_path / "reference" / "results.json").read_text())
    resumed = json.loads((tmp_path / "killed" / "results.json").read_text())
    assert without_timings(resumed) == without_timings(reference)
    assert (tmp_path / "killed" / "report.html").is_file()


def test_universal_survives_sigkill(tmp_path, seed):
    argv = ["universal", "--n", "60", "--max-passes", "4", "--variant", "minibatch",
            "--xi", "0.15", "--delta", "0.01", "--n-test", "50"]  # fmt: skip
    run_ok([*argv, "--out", str(tmp_path / "reference")])
    kill_and_resume(argv, tmp_path / "killed", seed)
    reference = torch.load(tmp_path / "reference" / "v.pt", weights_only=True)
    resumed = torch.load(tmp_path / "killed" / "v.pt", weights_only=True)
    assert torch.equal(resumed, reference)
    a = json.loads((tmp_path / "reference" / "universal.json").read_text())
    b = json.loads((tmp_path / "killed" / "universal.json").read_text())
    assert without_timings(a) == without_timings(b)


def test_train_survives_sigkill(tmp_path, seed):
    argv = ["train", "--defense", "deepfool", "--model", "zoo:fc500-150-10-mnist",
            "--epochs", "3", "--train-n", "64", "--monitor-n", "16"]  # fmt: skip
    run_ok([*argv, "--out", str(tmp_path / "reference")])
    kill_and_resume(argv, tmp_path / "killed", seed)
    a = json.loads((tmp_path / "reference" / "train.json").read_text())
    b = json.loads((tmp_path / "killed" / "train.json").read_text())
    assert without_timings(a["history"]) == without_timings(b["history"])
    reference = torch.load(tmp_path / "reference" / "model.pt", weights_only=True)
    resumed = torch.load(tmp_path / "killed" / "model.pt", weights_only=True)
    for key, tensor in reference["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], tensor), key


def test_universal_resume_refuses_other_settings(tmp_path):
    from boundaryscope import Classifier
    from boundaryscope.data import load_mnist5k
    from boundaryscope.universal import universal_perturbation
    from boundaryscope.zoo import load_model

    clf = Classifier(load_model("zoo:lenet-mnist").module)
    x = load_mnist5k("train").x[:30]
    path = tmp_path / "checkpoint.pt"
    universal_perturbation(clf, x, 0.2, max_passes=1, variant="minibatch", checkpoint=path)
    with pytest.raises(ValueError, match=r"xi: 0.2 in the checkpoint, 0.3 now"):
        universal_perturbation(clf, x, 0.3, max_passes=2, variant="minibatch", resume=path)
    with pytest.raises(ValueError, match="images"):
        universal_perturbation(clf, x[:20], 0.2, max_passes=2, variant="minibatch", resume=path)
    resumed = universal_perturbation(
        clf, x, 0.2, max_passes=2, variant="minibatch", resume=path
    )  # more passes is the same question, asked longer
    assert resumed.passes == 2
