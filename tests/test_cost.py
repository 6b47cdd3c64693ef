"""Cost up front: pass times, per-section estimates, and the forecast of the time left."""

from __future__ import annotations

import json
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

    def work(name: str, n: int, scale: float) -> float:
        return float(n) if per_image[name] else scale

    got = cost.estimate_sections("default", ["accuracy", "curvature"], 300, times, work)
    assert got == pytest.approx({"accuracy": 3 * 100 * 0.01, "curvature": 1000 * 0.01 + 500 * 0.02})
    # A section of fixed size follows the share of its samples kept, never the images.
    half = cost.estimate_sections("default", ["accuracy", "curvature"], 300, times, work, None, 0.5)
    assert half == pytest.approx({"accuracy": 3.0, "curvature": (1000 * 0.01 + 500 * 0.02) / 2})
    assert cost.estimate_sections("full", ["accuracy"], 300, times, work) == {}
    text = cost.summary({"a": 4000.0, "b": 100.0}, quick=60.0, profile="default")
    assert "about 68 min estimated" in text and "--profile quick takes about 60 s" in text
    assert "--time-budget 1h fits it into an hour (the sections' own samples shrink" in text


def test_a_section_capping_its_images_is_estimated_at_its_cap(monkeypatch):
    # The noise section attacks at most its settings' n + spectral_n images (8 + 6 in
    # quick): a quick report of 16 images costs what the reference's 64 did, not a quarter.
    from boundaryscope.report import ANALYSES
    from boundaryscope.report import sections as sections_module

    sections_module.load_all()
    noise = ANALYSES["noise"]
    assert noise.work("quick", 64) == noise.work("quick", 16) == 14
    assert noise.work("quick", 4) == 8
    table = {"quick": {"n": 64, "sections": {"noise": {"forward_rows": 10, "backward_rows": 0}}}}
    monkeypatch.setattr(cost, "reference_passes", lambda: table)
    times = cost.PassTimes(forward=1.0, backward=1.0, rows=32)
    estimate = cost.estimate_sections(
        "quick", ["noise"], 16, times, lambda _, n, scale: noise.work("quick", n, scale)
    )
    assert estimate == {"noise": 10.0}
    assert ANALYSES["robustness"].work("quick", 16) == 16  # per image: all of them
    assert ANALYSES["regions"].work("quick", 16) == ANALYSES["regions"].work("quick", 0) == 1
    universal = ANALYSES["universal"]  # Alg. 4 fixed, the evaluation on every test image
    assert 0 < universal.work("quick", 0) < universal.work("quick", 16) - 15


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
            "default", ["robustness"], 20, times, lambda _, n, scale: float(n), survivors
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
    ctx = SimpleNamespace(clf=clf, profile="quick", scale=1.0)  # what the calibration reads
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
    ctx = SimpleNamespace(clf=clf, profile="quick", scale=1.0, seed=3)  # what the calibration reads
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


def test_images_within_is_the_largest_n_that_fits_brute_force():
    generator = torch.Generator().manual_seed(0)
    for trial in range(200):
        most = int(torch.randint(1, 60, (1,), generator=generator))
        fewest = int(torch.randint(1, most + 1, (1,), generator=generator))
        # A non-decreasing estimate: a fixed part plus steps (sections capping their images).
        steps = torch.rand(most + 1, generator=generator) * (torch.rand(most + 1) < 0.7)
        table = (5 * torch.rand(1, generator=generator) + steps.cumsum(0)).tolist()
        calls: list[int] = []

        def seconds_at(n: int, table: list[float] = table, calls: list[int] = calls) -> float:
            calls.append(n)
            return table[n]

        budget = float(torch.rand(1, generator=generator)) * (table[-1] + 2)
        fitting = [n for n in range(fewest, most + 1) if table[n] <= budget]
        expected = max(fitting) if fitting else fewest
        assert cost.images_within(budget, seconds_at, most, fewest) == expected, trial
        assert len(calls) <= 3 + math.ceil(math.log2(most + 1))  # bisection, not a scan


def test_plan_within_shrinks_the_samples_first_then_the_images_brute_force():
    generator = torch.Generator().manual_seed(0)
    hundredths = range(25, 101)
    for trial in range(200):
        most = int(torch.randint(1, 60, (1,), generator=generator))
        fewest = int(torch.randint(1, most + 1, (1,), generator=generator))
        # Non-decreasing in both: per-image steps plus a fixed part that follows the scale
        # in steps (sizes are rounded), flat for a profile with nothing left to shrink.
        steps = torch.rand(most + 1, generator=generator).cumsum(0).tolist()
        fixed = 5 * float(torch.rand(1, generator=generator))
        flat = bool(torch.rand(1, generator=generator) < 0.2)
        calls: list[tuple[int, float]] = []

        def seconds_at(n: int, scale: float, steps=steps, fixed=fixed, flat=flat, calls=calls):
            calls.append((n, scale))
            return steps[n] + fixed * (1.0 if flat else math.ceil(scale * 8) / 8)

        budget = float(torch.rand(1, generator=generator)) * (steps[-1] + fixed + 1)
        if steps[most] + fixed <= budget:
            expected = (most, 1.0)
        elif any(seconds_at(most, h / 100) <= budget for h in hundredths):
            fits = [h for h in hundredths if seconds_at(most, h / 100) <= budget]
            expected = (most, max(fits) / 100)
        else:
            fitting = [n for n in range(fewest, most + 1) if seconds_at(n, 0.25) <= budget]
            n = max(fitting) if fitting else fewest
            expected = (n, 1.0 if flat else 0.25)
        calls.clear()
        assert cost.plan_within(budget, seconds_at, most, fewest) == expected, trial
        assert len(calls) <= 12 + math.ceil(math.log2(most + 1))  # bisections, not scans


def test_budget_line_says_what_fits_and_what_cannot():
    fits = cost.budget_summary(3 * 3600, 212, 1000, 0.25, 2.9 * 3600, 2.4 * 3600)
    assert "212 of the 1000 test images, the sections' own samples" in fits
    assert "at 25% of the profile's sizes" in fits and "about 2.9 h" in fits
    assert "all 64 test images" in cost.budget_summary(600, 64, 64, 1.0, 30, 10)
    shrunk = cost.budget_summary(3 * 3600, 1000, 1000, 0.31, 2.9 * 3600, 2 * 3600)
    assert "all 1000 test images, the sections' own samples" in shrunk and "31%" in shrunk
    nothing_to_shrink = cost.budget_summary(600, 30, 40, 1.0, 500, 100)
    assert "30 of the 40 test images (about" in nothing_to_shrink
    over = cost.budget_summary(600, 16, 1000, 0.25, 1500, 1400)
    assert "cannot be met" in over and "23 min alone" in over and "16 test images" in over


def test_scaled_settings_shrink_only_the_samples_never_below_quick():
    from dataclasses import asdict

    from boundaryscope.report import ANALYSES
    from boundaryscope.report import sections as sections_module

    sections_module.load_all()
    scalable = {name for name, analysis in ANALYSES.items() if analysis.scalable}
    # Every section whose size does not follow the test images can give way.
    assert {"boundary", "regions", "curvature", "detection"} <= scalable
    assert not ANALYSES["robustness"].scalable  # the headline: every test image, as set
    for name in scalable:
        analysis = ANALYSES[name]
        full = asdict(analysis.settings_for("default"))
        quick = asdict(analysis.settings_for("quick"))
        assert asdict(analysis.settings_for("quick", 0.1)) == quick  # nothing below quick
        previous_work = 0.0
        for scale in (0.1, 0.25, 0.5, 0.77, 1.0):
            got = asdict(analysis.settings_for("default", scale))
            for field, value in full.items():
                if field in analysis.scalable:
                    assert got[field] == min(value, max(quick[field], round(scale * value)))
                else:
                    assert got[field] == value, (name, field)
            stored = analysis.settings_record("default", scale)  # stored as run (JSON)
            assert stored == json.loads(json.dumps(got))
            work = analysis.work("default", 1000, scale)
            assert work >= previous_work, (name, scale)  # the planner bisects on it
            previous_work = work
        assert analysis.work("default", 1000, 1.0) == analysis.work("default", 1000)


def test_time_budget_picks_the_images_whose_estimate_fits(tmp_path, capsys, monkeypatch):
    from boundaryscope.cli import main

    # Fixed pass times: the estimates (reference rows × times, calibrations on the same
    # images) are then the same in every run, so the cut can be checked across runs.
    fixed = cost.PassTimes(forward=1e-3, backward=1e-3, rows=32)
    monkeypatch.setattr(cost, "measure_pass_times", lambda *args, **kwargs: fixed)

    def planned(budget: str, profile: str = "quick") -> str:
        argv = ["report", "--profile", profile, "--n", "40", "--estimate-only"]
        assert main([*argv, "--time-budget", budget, "--out", str(tmp_path / profile)]) == 0
        return capsys.readouterr().err

    def total(err: str) -> float:  # the estimate printed for the images the run will use
        found = re.search(r"report: about ([0-9.]+) (s|min|h) estimated", err)
        assert found is not None, err
        return float(found.group(1)) * {"s": 1, "min": 60, "h": 3600}[found.group(2)]

    everything = planned("100h")
    assert "fits --time-budget 100.0 h: all 40 test images" in everything
    fewest = planned("1s")
    assert "cannot be met" in fewest and "fewest, 16 test images" in fewest
    at_40, at_16 = total(everything), total(fewest)
    assert at_16 < at_40
    budget = int(at_16 + at_40) // 2
    between = planned(f"{budget}s")
    chosen = re.search(r": (\d+) of the 40 test images", between)
    assert chosen is not None, between
    assert 16 < int(chosen.group(1)) < 40 and total(between) <= budget
    # The default profile's sections have samples to give: a budget just under its
    # estimate keeps every test image and shrinks those (quick's sizes are the floor).
    # Faster rows, so the estimates print in seconds (less than a minute and a half).
    faster = cost.PassTimes(forward=5e-5, backward=5e-5, rows=32)
    monkeypatch.setattr(cost, "measure_pass_times", lambda *args, **kwargs: faster)
    whole = total(planned("100h", "default"))
    shrunk = planned(f"{int(0.8 * whole)}s", "default")
    scale = re.search(r"all 40 test images, the sections' own samples .* at (\d+)% of", shrunk)
    assert scale is not None, shrunk
    assert 25 <= int(scale.group(1)) < 100 and total(shrunk) <= int(0.8 * whole) + 0.5
    assert main(["report", "--time-budget", "soon", "--estimate-only"]) == 2
    assert "must be a duration such as 3h" in capsys.readouterr().err
    # A profile without reference passes has no estimate to fit: said, nothing cut.
    full = ["report", "--profile", "full", "--n", "8", "--estimate-only", "--time-budget", "1s"]
    assert main([*full, "--out", str(tmp_path / "y")]) == 0
    assert "--time-budget needs an estimate, which --profile full has not" in (
        capsys.readouterr().err
    )


def test_time_budget_cut_is_on_the_page_and_kept_on_resume(tmp_path, capsys, monkeypatch):
    from boundaryscope.cli import main
    from boundaryscope.report import ANALYSES, runner

    # A second per row: nothing fits one second, so the samples shrink to a quarter and
    # the fewest test images (16) are used.
    slow = cost.PassTimes(forward=1.0, backward=1.0, rows=32)
    monkeypatch.setattr(cost, "measure_pass_times", lambda *args, **kwargs: slow)
    out = tmp_path / "run"
    common = ["report", "--profile", "default", "--n", "40", "--sections", "accuracy,noise"]

    assert main([*common, "--time-budget", "1s", "--out", str(out)]) == 0
    planned = capsys.readouterr().err
    assert "cannot be met" in planned and "fewest, 16 test images" in planned
    assert "the sections' own samples (training images, boundary points, paths" in planned
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["n"] == 16
    assert results["meta"]["time_budget"] == {"seconds": 1.0, "requested_n": 40, "scale": 0.25}
    assert results["sections"]["accuracy"]["n"] == 16
    noise = results["sections"]["noise"]
    # The noise section ran with its own sizes at a quarter (100 → 25 regime images, at
    # most the 16 test images; 50 → 12 spectral ones) and stored them so.
    assert noise["settings"] == ANALYSES["noise"].settings_record("default", 0.25)
    assert noise["settings"]["n"] == 25 and noise["settings"]["spectral_n"] == 12
    assert noise["spectral"]["n"] == 12 and noise["regimes"][0]["n"] == 16
    page = (out / "report.html").read_text()
    assert "n = 16 of 40: what fits --time-budget 1 s" in page
    assert "the sections' own samples at 25% of its sizes (--time-budget 1 s)" in page
    first = results["sections"]["noise"]["seconds_total"]

    def no_new_plan(*args: object) -> None:
        raise AssertionError("a resumed run re-planned its images")

    monkeypatch.setattr(runner, "_cost_inputs", no_new_plan)
    assert main([*common, "--time-budget", "1s", "--out", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "keeps what --time-budget chose: 16 test images, the sections' own samples at 25%" in (
        err
    )
    again = json.loads((out / "results.json").read_text())
    assert again["sections"]["noise"]["seconds_total"] == first  # reused, not recomputed
