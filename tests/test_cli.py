from __future__ import annotations

import json

import pytest

from boundaryscope.cli import main


def test_train_writes_checkpoint_and_card(tmp_path):
    out = tmp_path / "fc"
    assert (
        main(
            [
                "train",
                "--arch",
                "fc500-150-10",
                "--data",
                "digits",
                "--epochs",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    card = json.loads((out / "model.json").read_text())
    assert card["arch"] == "fc500-150-10" and 0 <= card["test_accuracy"] <= 1
    assert card["command"].startswith("boundaryscope train")
    assert (
        main(
            [
                "attack",
                "deepfool",
                "--model",
                str(out / "model.pt"),
                "--data",
                "digits",
                "--n",
                "8",
                "--out",
                str(tmp_path / "a"),
            ]
        )
        == 0
    )


def test_report_and_resume(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = ["report", "--n", "24", "--profile", "quick", "--out", str(out)]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    # Cost up front: an estimate per section before the run, and the passes each made.
    stderr = capsys.readouterr().err
    assert stderr.index("estimated on this model and machine") < stderr.index("[1/9] accuracy")
    assert set(results["estimate"]["sections"]) == set(results["sections"])
    assert results["estimate"]["pass_times"]["forward"] > 0
    for section in results["sections"].values():
        assert section["passes"]["forward_rows"] > 0
    assert results["sections"]["accuracy"]["passes"]["backward_rows"] == 0
    assert results["sections"]["robustness"]["passes"]["backward_rows"] > 24
    assert list(results["sections"]) == [
        "accuracy",
        "robustness",
        "fixed_budget",
        "noise",
        "universal",
        "boundary",
        "regions",
        "curvature",
        "detection",
    ]
    assert results["meta"]["n"] == 24
    robustness = results["sections"]["robustness"]
    for key in ("l2", "linf"):  # the tightest estimate never exceeds DeepFool, per image
        tight, deepfool = robustness["tightest"][key], robustness["deepfool"][key]
        assert min(tight["ratio"]) >= 1 - 1e-6 and tight["ratio_median"] >= 1
        assert tight["median_norm"] <= deepfool["median_norm"]
    for entry in robustness["robust_accuracy"]:  # per image, never above the minimal norms
        key = "linf" if entry["p"] == "inf" else "l2"
        smallest = [
            min(a, b)
            for a, b in zip(
                robustness["norms"][key], robustness["tightest"][key]["norms"], strict=True
            )
        ]
        beyond = sum(norm > entry["eps"] for norm in smallest)
        assert sum(entry["robust"]) <= beyond and len(entry["robust"]) == 24
        assert entry["robust_accuracy"] == sum(entry["robust"]) / 24
    html = (out / "report.html").read_text()
    assert html.index('id="verdict"') < html.index('id="s-accuracy"')
    assert "robust accuracy, l∞ ε = 0.3" in html and 'id="ref-thesis"' in html
    assert "tightest l2 (FMN)" in html
    assert (
        "ρ_adv" in html and "deepfool_norms.png" in html and "http" not in html.split("</style>")[0]
    )
    for figure in (
        "confusion.png",
        "deepfool_norms.png",
        "fgsm_curve.png",
        "fixed_budget_curves.png",
        "noise_ratios.png",
        "spectral.png",
        "noise_example.png",
        "universal_examples.png",
        "universal_phase.png",
        "universal_singular_values.png",
        "universal_dominant_labels.png",
        "curvature_profile.png",
        "curvature_rho.png",
        "curvature_basis.png",
        "curvature_noise.png",
        "curvature_loss.png",
        "detection_roc.png",
        "detection_examples.png",
        "boundary_sections.png",
        "boundary_loss.png",
        "regions_deviation.png",
        "regions_convexity.png",
        "regions_path.png",
    ):
        assert (out / figure).stat().st_size > 1000

    from boundaryscope.report import ANALYSES

    def boom(ctx):
        raise AssertionError("resume must not recompute")

    noise_run = ANALYSES["noise"].run
    names = ("accuracy", "robustness", "fixed_budget", "noise", "universal", "curvature")
    for name in (*names, "detection", "boundary", "regions"):
        monkeypatch.setattr(ANALYSES[name], "run", boom)
    assert main([*args, "--resume"]) == 0

    # A section whose own settings changed is recomputed; the others are still reused.
    from boundaryscope.report.sections.noise import NoiseSettings

    calls = []
    monkeypatch.setattr(ANALYSES["noise"], "run", lambda ctx: calls.append(1) or noise_run(ctx))
    smaller = NoiseSettings(n=4, fractions=(4,), steps=5, spectral_n=2)
    monkeypatch.setattr(ANALYSES["noise"], "settings", {"quick": smaller})
    assert main([*args, "--resume"]) == 0
    noise = json.loads((out / "results.json").read_text())["sections"]["noise"]
    assert calls == [1] and noise["settings"]["n"] == 4 and len(noise["regimes"]) == 2
    assert len(results["sections"]["noise"]["regimes"]) == 3  # quick's fractions (4, 64)


def test_attack_cli(tmp_path):
    out = tmp_path / "df"
    assert main(["attack", "deepfool", "--n", "16", "--p", "inf", "--out", str(out)]) == 0
    payload = json.loads((out / "attack.json").read_text())
    assert payload["summary"]["success_rate"] == 1.0
    assert len(payload["norms"]) == 16
    assert main(["attack", "fgsm", "--n", "16", "--out", str(out)]) == 0


def test_data_defaults_to_the_models_own(tmp_path):
    """A zoo model is evaluated on the data its card names unless --data says otherwise."""
    out = tmp_path / "digits"
    assert (
        main(["attack", "deepfool", "--model", "zoo:mlp-digits", "--n", "8", "--out", str(out)])
        == 0
    )
    payload = json.loads((out / "attack.json").read_text())
    assert payload["data"] == "digits" and payload["summary"]["success_rate"] == 1.0
    # Named data wins: the 8×8 model cannot take mnist5k's 28×28 images.
    assert main(["attack", "deepfool", "--model", "zoo:mlp-digits", "--data", "mnist5k",
                 "--n", "8", "--out", str(tmp_path / "x")]) == 2  # fmt: skip


def test_geometric_attack_cli(tmp_path):
    out = tmp_path / "rot"
    assert main(["attack", "geometric", "--n", "4", "--steps", "10", "--out", str(out)]) == 0
    payload = json.loads((out / "attack.json").read_text())
    assert "GeometricAttack(transform='rotation'" in payload["attack"]
    details = payload["details"]
    assert len(details["params"]) == 4 and len(details["invariance"]) == 4


def test_fmn_and_verify_cli(tmp_path):
    df_out, fmn_out = tmp_path / "df", tmp_path / "fmn"
    assert main(["attack", "deepfool", "--n", "12", "--out", str(df_out)]) == 0
    assert main(["attack", "fmn", "--n", "12", "--steps", "10", "--out", str(fmn_out)]) == 0
    deepfool = json.loads((df_out / "attack.json").read_text())
    fmn = json.loads((fmn_out / "attack.json").read_text())
    assert fmn["summary"]["success_rate"] == 1.0
    assert fmn["summary"]["median_norm"] < deepfool["summary"]["median_norm"]
    out = tmp_path / "verify"
    args = ["verify", "--n", "3", "--fmn-steps", "20", "--out", str(out)]
    assert main(args) == 0
    payload = json.loads((out / "verify.json").read_text())
    assert payload["model"] == "zoo:mlp-digits" and payload["exact_share"] == 1.0
    assert payload["attack_over_exact"]["deepfool"]["median"] >= 1 - 1e-6
    assert main(["verify", "--model", "zoo:lenet-mnist", "--data", "mnist5k", "--n", "2"]) == 2


def test_errors_are_reported(capsys):
    assert main(["attack", "deepfool", "--model", "zoo:nope", "--n", "4"]) == 2
    assert "zoo model must be one of" in capsys.readouterr().err


def test_curves_cli(tmp_path):
    out = tmp_path / "curves"
    assert (
        main(
            [
                "curves",
                "--n",
                "20",
                "--eps",
                "0:0.3:3",
                "--attacks",
                "deepfool,alg1-3,fgsm,random",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    payload = json.loads((out / "curves.json").read_text())
    assert set(payload["ratios"]) == {"deepfool", "alg1-3", "fgsm", "random"}
    assert payload["ratios"]["fgsm"][0] == 0.0
    assert (out / "curves.png").stat().st_size > 1000


def test_budgeted_attack_cli_needs_eps(tmp_path, capsys):
    assert main(["attack", "pgd", "--n", "4", "--out", str(tmp_path / "a")]) == 2
    assert "--eps" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()  # a failed run leaves no empty output directory
    assert main(["attack", "alg1-5", "--eps", "0.1", "--n", "4", "--out", str(tmp_path / "a")]) == 0


def test_noise_cli(tmp_path):
    out = tmp_path / "noise"
    assert main(["noise", "--n", "6", "--m", "196,49", "--steps", "30", "--out", str(out)]) == 0
    payload = json.loads((out / "noise.json").read_text())
    assert [r["m"] for r in payload["regimes"]] == [196, 49]
    assert (
        main(
            [
                "noise",
                "--regime",
                "spectral",
                "--block",
                "14",
                "--n",
                "4",
                "--steps",
                "20",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert len(json.loads((out / "noise.json").read_text())["spectral"]["zeta"]) == 2


def test_universal_cli_and_eval(tmp_path):
    out = tmp_path / "u"
    assert (
        main(
            [
                "universal",
                "--n",
                "20",
                "--xi",
                "0.2",
                "--max-passes",
                "1",
                "--variant",
                "minibatch",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    payload = json.loads((out / "universal.json").read_text())
    assert payload["norm"] <= 0.2 + 1e-6 and payload["passes"] == 1
    assert (out / "v.npy").exists() and (out / "perturbation.png").exists()
    assert (
        main(["universal", "--eval", str(out / "v.pt"), "--n-test", "50", "--out", str(out)]) == 0
    )
    evaluation = json.loads((out / "eval.json").read_text())
    assert 0 <= evaluation["fooling_rate"] <= 1 and evaluation["n"] == 50
    # The same perturbation as numpy's file and as the run directory: the same rate.
    for source in (out / "v.npy", out):
        assert main(["universal", "--eval", str(source), "--n-test", "50", "--out", str(out)]) == 0
        again = json.loads((out / "eval.json").read_text())
        assert again["fooling_rate"] == evaluation["fooling_rate"]


def test_geometry_curvature_cli(tmp_path):
    out = tmp_path / "curv"
    args = ["geometry", "curvature", "--n", "6", "--n-train", "6", "--k", "2"]
    assert main([*args, "--samples", "4", "--max-steps", "10", "--out", str(out)]) == 0
    result = json.loads((out / "curvature.json").read_text())
    assert result["n_test_points"] == 6 and len(result["profile"]["mean"]) == 4
    assert result["config"]["method"] == "fd" and result["config"]["h"] == 0.1
    assert (out / "curvature_profile.png").stat().st_size > 1000
    assert main([*args, "--k", "0", "--out", str(out)]) == 2


def test_detect_fit_and_score_cli(tmp_path):
    import numpy as np
    import torch

    fitted = tmp_path / "det"
    detector = fitted / "detector.json"
    common = ["--n", "8", "--directions", "2", "--candidates", "2"]
    assert main(["detect", "fit", *common, "--out", str(fitted)]) == 0
    saved = json.loads(detector.read_text())
    assert saved["kind"] == "curvature" and saved["params"]["n_directions"] == 2
    scored = tmp_path / "scored"
    scores = scored / "scores.json"
    # The detector's file, or the directory holding it.
    assert main(["detect", "score", str(fitted), "--n", "5", "--out", str(scored)]) == 0
    result = json.loads(scores.read_text())
    assert len(result["scores"]) == 5
    assert result["perturbed"] == [s > saved["threshold"] for s in result["scores"]]
    images = tmp_path / "adv.npz"
    np.savez(images, x=np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32))
    args = ["detect", "score", str(detector), "--inputs", str(images), "--out", str(scored)]
    assert main(args) == 0
    from_npz = json.loads(scores.read_text())["scores"]
    assert len(from_npz) == 3
    np.save(tmp_path / "adv.npy", np.load(images)["x"])  # the same images as a .npy array
    args[args.index(str(images))] = str(tmp_path / "adv.npy")
    assert main(args) == 0
    assert json.loads(scores.read_text())["scores"] == from_npz
    torch.save({"not": "a tensor"}, tmp_path / "bad.pt")
    bad = ["detect", "score", str(detector), "--inputs", str(tmp_path / "bad.pt")]
    assert main(bad) == 2
    assert main(["detect", "fit", "--baseline", "--n", "8", "--out", str(fitted)]) == 0
    assert json.loads(detector.read_text())["kind"] == "confidence"


def test_geometry_sections_paths_angles_cli(tmp_path):
    out = tmp_path / "geo"
    args = ["geometry", "sections", "--n", "2", "--resolution", "30", "--n-train", "8"]
    assert main([*args, "--directions", "random,curved", "--out", str(out)]) == 0
    result = json.loads((out / "sections.json").read_text())
    assert result["directions"] == ["random", "curved"] and len(result["images"]) == 2
    assert len(result["images"][0]["sections"][0]["labels"]) == 30
    assert abs(result["summary"]["crossing_median"] - 1) < 0.05
    assert (out / "boundary_sections.png").stat().st_size > 1000
    assert main([*args, "--normal-range", "3:1", "--out", str(out)]) == 2
    assert main([*args, "--directions", "sideways", "--out", str(out)]) == 2

    paths = ["geometry", "paths", "--n", "60", "--pairs", "2", "--spacing", "1e-2"]
    assert main([*paths, "--trials", "20", "--out", str(out)]) == 0
    result = json.loads((out / "paths.json").read_text())
    assert set(result["scenarios"]) == {"natural", "adversarial", "noise"}
    assert all(s["pairs"] <= 2 for s in result["scenarios"].values())
    assert len(result["convexity"]["probability"]) == 9
    assert main([*paths, "--scenarios", "bogus", "--out", str(out)]) == 2

    angles = ["geometry", "angles", "--m", "3", "--n-train", "12", "--out", str(out)]
    assert main(angles) == 0
    result = json.loads((out / "angles.json").read_text())
    assert len(result["S_c"]["cosines"]) == 3 and len(result["S_f"]["cosines"]) == 3
    assert all(0 <= c <= 1 + 1e-9 for c in result["S_f"]["cosines"])


def test_geometry_theorems_cli(tmp_path):
    out = tmp_path / "thm"
    args = ["geometry", "theorems", "--n", "8", "--n-train", "8", "--m", "1,3", "--radii", "1,8"]
    assert main([*args, "--draws", "2", "--out", str(out)]) == 0
    result = json.loads((out / "theorems.json").read_text())
    assert [(r["subspace"], r["m"]) for r in result["rows"]] == [
        (s, m) for s in ("S_f", "S_c", "random") for m in (1, 3)
    ]
    assert len(result["radii"]) == 2 and result["radii"][1] == 8 * result["radii"][0]
    for row in result["rows"]:
        assert all(0 <= v <= 1 for v in row["direction_fooling"] + row["flat_predicted"])
    assert (out / "theorems_S_f.png").stat().st_size > 1000
    assert main([*args, "--subspaces", "S_x", "--out", str(out)]) == 2
    assert main([*args, "--radii", "0,1", "--out", str(out)]) == 2


def test_train_defense_resume_and_compare(tmp_path, capsys):
    run = tmp_path / "run"
    common = ["train", "--defense", "cure", "--model", "zoo:fc500-150-10-mnist", "--epochs",
              "2", "--train-n", "64", "--monitor-n", "16", "--max-accuracy-drop", "1",
              "--out", str(run)]  # fmt: skip
    assert main(common) == 0
    # Piped (not a terminal): a line per epoch instead of silence (issue 25).
    lines = [x for x in capsys.readouterr().err.splitlines() if ": epoch " in x]
    assert [x.split(" done")[0] for x in lines] == ["cure: epoch 1", "cure: epoch 2"]
    assert "test_accuracy" in lines[0]
    card = json.loads((run / "train.json").read_text())
    assert card["defense"] == "cure" and card["objective"]["lam"] == 4.0
    assert [r["epoch"] for r in card["history"]] == [0, 1, 2]
    assert main(common) == 2  # a finished run is not overwritten without --resume
    assert main([*common, "--resume"]) == 0  # nothing left to do: same model, same card
    again = json.loads((run / "train.json").read_text())
    assert again["history"] == card["history"] and again["resumed_from"] == 2
    out = tmp_path / "compare"
    assert main(["compare", str(run), "--profile", "quick", "--n", "24", "--out", str(out)]) == 0
    measured = [x for x in capsys.readouterr().err.splitlines() if x.startswith("compare: ")]
    assert len(measured) == 2 and "measured in" in measured[0]
    html = (out / "report.html").read_text()
    assert "zoo:fc500-150-10-mnist" in html and "run" in html  # the base model and the run
    for title in ("Robust accuracy", "Loss curvature", "Training history", "normal section"):
        assert title in html
    payload = json.loads((out / "comparison.json").read_text())
    assert set(payload["models"]) == {"zoo:fc500-150-10-mnist", "run"}
    assert all(0 <= m["clean_accuracy"] <= 1 for m in payload["models"].values())
    for model in payload["models"].values():  # the cascade starts from DeepFool's norms
        for row in model["robust"].values():
            assert row["evaluated"] <= row["deepfool-linf"] + 1e-6  # float32 shares
    assert "trusted: l∞ DeepFool" in html and "pgd5 (upper bound)" in html
    assert main(["attack", "deepfool", "--model", str(run), "--n", "4",
                 "--out", str(tmp_path / "a")]) == 0  # fmt: skip


def test_train_needs_arch_or_defense(capsys):
    assert main(["train", "--out", "x"]) == 2
    assert "--arch" in capsys.readouterr().err


def test_library_warnings_are_one_log_line_each(caplog):
    """A warning inside a command is one ``boundaryscope`` log record, not Python's form."""
    import warnings

    from boundaryscope.cli import _warnings_as_log_lines

    with caplog.at_level("WARNING", logger="boundaryscope"), _warnings_as_log_lines(False):
        warnings.simplefilter("always")
        warnings.warn("held-out accuracy fell", UserWarning, stacklevel=1)
        warnings.warn("overflow", RuntimeWarning, stacklevel=1)
    lines = [r.getMessage() for r in caplog.records if r.name == "boundaryscope"]
    assert lines == ["held-out accuracy fell", "RuntimeWarning: overflow"]
    assert warnings.showwarning.__module__ == "warnings"  # restored after the command
    with pytest.warns(UserWarning, match="kept"), _warnings_as_log_lines(True):
        warnings.warn("kept", UserWarning, stacklevel=1)  # --debug: Python's own warnings
