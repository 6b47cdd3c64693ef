"""Cost up front: pass times, per-section estimates, and the forecast of the time left."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from boundaryscope import Classifier
from boundaryscope.report import cost
from boundaryscope.report.runner import _Progress


def test_pass_times_are_measured_per_row():
    torch.manual_seed(0)
    small = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(16, 4)).eval())
    big = Classifier(
        nn.Sequential(nn.Flatten(), nn.Linear(16, 2048), nn.ReLU(), nn.Linear(2048, 4)).eval()
    )
    x = torch.rand(32, 1, 4, 4)
    fast, slow = cost.measure_pass_times(small, x), cost.measure_pass_times(big, x)
    assert fast.rows == slow.rows == 32
    assert 0 < fast.forward < slow.forward  # a wider model costs more per row
    assert slow.backward > 0


def test_estimates_scale_per_image_sections_with_n(monkeypatch):
    table = {
        "default": {
            "n": 100,
            "sections": {
                "accuracy": {"forward_rows": 100, "backward_rows": 0},
                "curvature": {"forward_rows": 1000, "backward_rows": 500},
            },
        }
    }
    monkeypatch.setattr(cost, "reference_passes", lambda: table)
    times = cost.PassTimes(forward=0.01, backward=0.02, rows=32)
    per_image = {"accuracy": True, "curvature": False}

    def images_used(name: str, n: int) -> float:
        return float(n) if per_image[name] else 0.0

    got = cost.estimate_sections("default", ["accuracy", "curvature"], 300, times, images_used)
    assert got == pytest.approx({"accuracy": 3 * 100 * 0.01, "curvature": 1000 * 0.01 + 500 * 0.02})
    assert cost.estimate_sections("full", ["accuracy"], 300, times, images_used) == {}
    text = cost.summary({"a": 4000.0, "b": 100.0}, quick=60.0, profile="default")
    assert "about 68 min estimated" in text and "--profile quick takes about 60 s" in text


def test_a_section_capping_its_images_is_estimated_at_its_cap(monkeypatch):
    # The noise section attacks at most its settings' n + spectral_n images (8 + 6 in
    # quick): a quick report of 16 images costs what the reference's 64 did, not a quarter.
    from boundaryscope.report import ANALYSES
    from boundaryscope.report import sections as sections_module

    sections_module.load_all()
    noise = ANALYSES["noise"]
    assert noise.images_used("quick", 64) == noise.images_used("quick", 16) == 14
    assert noise.images_used("quick", 4) == 8
    table = {"quick": {"n": 64, "sections": {"noise": {"forward_rows": 10, "backward_rows": 0}}}}
    monkeypatch.setattr(cost, "reference_passes", lambda: table)
    times = cost.PassTimes(forward=1.0, backward=1.0, rows=32)
    estimate = cost.estimate_sections(
        "quick", ["noise"], 16, times, lambda _, n: noise.images_used("quick", n)
    )
    assert estimate == {"noise": 10.0}
    assert ANALYSES["robustness"].images_used("quick", 16) == 16  # per image: all of them
    assert ANALYSES["regions"].images_used("quick", 16) == 0  # fixed sizes
    universal = ANALYSES["universal"]  # Alg. 4 fixed, the evaluation on every test image
    assert 0 < universal.images_used("quick", 0) < universal.images_used("quick", 16) - 15


def test_time_left_follows_the_estimates_corrected_by_the_sections_done():
    progress = _Progress(
        ["a", "b", "c"], reused=set(), show=False, estimates={"a": 10, "b": 100, "c": 50}
    )
    progress.done("a", 20.0)  # twice as slow as estimated, on 10 of the 160 s estimated
    assert progress.seconds_left() == pytest.approx((1 + (2 - 1) * 10 / 160) * 150)
    progress.done("b", 100.0)  # now 120 s for an estimated 110 s of 160
    assert progress.seconds_left() == pytest.approx((1 + (120 / 110 - 1) * 110 / 160) * 50)
    progress.done("c", 1.0)
    assert progress.seconds_left() is None
    plain = _Progress(["a", "b"], reused=set(), show=False)
    plain.done("a", 30.0)
    assert plain.seconds_left() == 30.0  # without estimates: the average so far


def test_the_shipped_reference_covers_every_section_of_quick_and_default():
    from boundaryscope.report import ANALYSES
    from boundaryscope.report import sections as sections_module

    sections_module.load_all()
    table = cost.reference_passes()
    for profile in ("quick", "default"):
        assert set(table[profile]["sections"]) == set(ANALYSES), profile


def test_estimate_only_prints_the_estimate_and_writes_nothing(tmp_path, capsys):
    from boundaryscope.cli import main

    out = tmp_path / "run"
    assert (
        main(["report", "--profile", "quick", "--n", "8", "--estimate-only", "--out", str(out)])
        == 0
    )
    err = capsys.readouterr().err
    assert "estimated on this model and machine" in err
    # The four costliest sections are named, each with its time.
    named = re.findall(r"(\w+) \d+ (?:s|min|h)\b", err.split(";", 1)[1])
    assert len(named) == 4 and set(named) <= set(cost.reference_passes()["quick"]["sections"])
    # Then the whole breakdown, one line per section.
    listed = re.findall(r"^  (\w+) +\d+ (?:s|min|h)$", err, flags=re.MULTILINE)
    assert listed == list(cost.reference_passes()["quick"]["sections"])
    assert not out.exists()


def test_the_cascade_part_follows_the_survivors_per_image(monkeypatch):
    # Reference: 1,000 rows in all, 600 of them the evaluator's cascade on 1.5 survivors
    # per image. A model whose images all fall below the budgets pays the other 400 only.
    model = {"variable": {"forward_rows": 600.0, "backward_rows": 0.0}, "unit": 1.5}
    section = {"forward_rows": 1000, "backward_rows": 0, "cost_model": model}
    table = {"default": {"n": 10, "sections": {"robustness": section}}}
    monkeypatch.setattr(cost, "reference_passes", lambda: table)
    times = cost.PassTimes(forward=1.0, backward=1.0, rows=32)

    def estimate(survivors: dict[str, float] | None) -> float:
        got = cost.estimate_sections(
            "default", ["robustness"], 20, times, lambda _, n: float(n), survivors
        )
        return got["robustness"]

    assert estimate(None) == pytest.approx(2 * 1000)  # twice the images, as the reference
    assert estimate({"robustness": 0.0}) == pytest.approx(2 * 400)
    assert estimate({"robustness": 3.0}) == pytest.approx(2 * (400 + 2 * 600))


def test_survivors_count_the_budgets_each_image_outlives():
    from boundaryscope.report.sections.robustness import survivors_per_image

    # MNIST's usual budgets (metrics.usual_budgets): l∞ 0.1 and 0.3, l2 2.0.
    linf = torch.tensor([0.05, 0.15, 0.35, math.inf])
    norms = {math.inf: linf, 2.0: torch.tensor([0.5, 1.5, 2.5, 3.0])}
    # l∞: 0 + 1 + 2 + 2 budgets outlived; l2: 0 + 0 + 1 + 1; over 5 images (one misclassified).
    assert survivors_per_image(norms, (1, 28, 28), (0.0, 1.0), 5) == pytest.approx(7 / 5)


def test_calibration_runs_deepfool_on_the_calibration_images():
    from boundaryscope.attacks import DeepFool
    from boundaryscope.data import load_mnist5k
    from boundaryscope.metrics import usual_budgets
    from boundaryscope.report import ANALYSES
    from boundaryscope.report import sections as sections_module
    from boundaryscope.zoo import load_model

    sections_module.load_all()
    loaded = load_model("zoo:lenet-mnist")
    clf = Classifier(loaded.module, bounds=(0.0, 1.0))
    data = load_mnist5k("test").subset(12)
    ctx = SimpleNamespace(clf=clf, profile="quick")  # what the calibration reads
    got = ANALYSES["robustness"].calibrate(ctx, data.x, data.y)
    correct = clf.predict(data.x) == data.y
    outlived = 0
    for budget in usual_budgets((1, 28, 28), (0.0, 1.0)):
        norms = DeepFool(p=budget.p)(clf, data.x[correct], data.y[correct]).norms
        outlived += int((norms > budget.eps).sum())
    assert got == pytest.approx(outlived / 12)
    assert 0 < got < 3  # the shipped LeNet outlives some of MNIST's three budgets


def test_regions_calibration_counts_the_rows_of_one_path_per_scenario():
    from boundaryscope.data import load_mnist5k
    from boundaryscope.geometry.topology import config_path, scenario_pairs
    from boundaryscope.report import ANALYSES
    from boundaryscope.report import sections as sections_module
    from boundaryscope.zoo import load_model

    sections_module.load_all()
    clf = Classifier(load_model("zoo:lenet-mnist").module, bounds=(0.0, 1.0))
    data = load_mnist5k("test").subset(16)
    ctx = SimpleNamespace(clf=clf, profile="quick", seed=3)  # what the calibration reads
    got = ANALYSES["regions"].calibrate(ctx, data.x, data.y)
    # Recount: the same pairs (regions_study's seed per scenario) and their paths.
    config = ANALYSES["regions"].settings_for("quick")
    before = clf.counter.forward_rows + clf.counter.backward_rows
    for offset, scenario in enumerate(config.scenarios):
        x1, x2 = scenario_pairs(clf, data.x, scenario, 1, seed=3 + offset)
        assert x1.shape[0] == 1
        config_path(clf, x1[0], x2[0], config)
    rows = clf.counter.forward_rows + clf.counter.backward_rows - before
    assert got == pytest.approx(rows / 3)
    assert got > 30  # at least the sparse check of one segment per path
