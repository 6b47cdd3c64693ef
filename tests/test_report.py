"""The report's verdict, citations, self-contained page and the fixes of its known defects."""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

import pytest

from boundaryscope.metrics import data_family, usual_budgets
from boundaryscope.report.references import BIBLIOGRAPHY, Citations
from boundaryscope.report.registry import Section
from boundaryscope.report.runner import write_html
from boundaryscope.report.sections.fixed_budget import _coinciding_curves
from boundaryscope.report.sections.noise import _example_title
from boundaryscope.report.sections.universal import _radius_notes
from boundaryscope.report.verdict import build_verdict


def test_usual_budgets_follow_the_data_kind_and_scale_with_the_pixel_range():
    mnist = usual_budgets((1, 28, 28), (0.0, 1.0))
    assert [(b.p, b.eps) for b in mnist] == [(math.inf, 0.1), (math.inf, 0.3), (2.0, 2.0)]
    cifar = usual_budgets((3, 32, 32), (0.0, 1.0))
    assert [(b.p, b.label) for b in cifar] == [(math.inf, "8/255"), (2.0, "0.5")]
    assert cifar[0].eps == pytest.approx(8 / 255)
    # A [0, 255] box: the same budgets in its units (RobustBench states them for [0, 1]).
    scaled = usual_budgets((3, 32, 32), (0.0, 255.0))
    assert scaled[0].eps == pytest.approx(8.0) and scaled[1].eps == pytest.approx(127.5)
    assert usual_budgets((3, 224, 224), (0.0, 1.0))[0].label == "4/255"
    assert usual_budgets((3, 32, 32), (-math.inf, math.inf))[0].eps == pytest.approx(8 / 255)
    assert data_family((64,)) == "mnist" and data_family((3, 96, 96)) == "imagenet"


def _robustness_result() -> dict:
    """A hand-made robustness result with known answers."""
    labels = [0, 0, 1, 1, 2, 2]
    norms_l2 = [1.0, 3.0, 0.5, 0.7, 2.0, math.inf]  # class 1 is the most fragile
    flips = [1, 1, 0, 0, 1, 2]  # 0→1 twice, 1→0 twice, 2→1 once; the last one failed
    summary = {"median_norm": 1.5, "rho_adv": 0.2, "n_failures": 1}
    return {
        "deepfool": {"l2": summary, "linf": {**summary, "median_norm": 0.1, "rho_adv": 0.1}},
        "tightest": {"l2": {**summary, "median_norm": 1.2}},
        "fgsm": {"eps90": 0.3, "rho_l2": 1.0, "rho_linf": 0.26},
        "norms": {"l2": norms_l2, "linf": [0.1] * 6},
        "labels": labels,
        "adversarial_labels": {"l2": flips},
        "bounds": [0.0, 1.0],
        "d": 784,
        "robust_accuracy": [
            {
                "p": math.inf,
                "eps": 0.3,
                "label": "0.3",
                "convention": "MNIST",
                "evaluation": "DeepFool + FMN-30 → APGD-CE (100 steps)",
                "n": 10,
                "robust_accuracy": 0.05,
                "robust_accuracy_minimal_only": 0.1,
            },
        ],
    }


def test_verdict_reads_the_numbers_off_the_results():
    sections = {
        "accuracy": {"accuracy": 0.977, "n": 1000, "classes": ["zero", "one", "two"]},
        "robustness": _robustness_result(),
    }
    verdict = build_verdict(sections, (1, 28, 28))
    rows = {row.quantity: row for row in verdict.rows}
    assert rows["clean accuracy"].value == "97.7%"
    l2 = rows["smallest change that flips the label, l2"]
    assert l2.value == "1.2"  # the tightest estimate, not DeepFool's 1.5
    # 1.2 / sqrt(784) of the [0, 1] range = 0.0429 → 10.9 of 255 grey levels.
    assert "10.9 of 255 grey levels" in l2.reading and "ρ_adv = 0.2" in l2.reading
    linf = rows["smallest change that flips the label, l∞"]
    assert "26 of 255 grey levels" in linf.reading  # 0.1 × 255 = 25.5, DeepFool only
    assert rows["robust accuracy, l∞ ε = 0.3"].value == "≤ 5.0%"
    assert rows["how much FGSM over-estimates robustness"].value == "5.0× (l2), 2.6× (l∞)"
    assert rows["most fragile classes (l2)"].value.startswith("one (0.6)")
    flips = rows["most frequent label flips"].value
    assert flips.startswith(("zero → one (40%)", "one → zero (40%)")) and "two" in flips
    assert verdict.advice and "--defense pgd" in verdict.advice[0]  # 5% < 10%
    assert verdict.reference_family == "mnist"
    assert any(point.value == "0.20" for point in verdict.references)


def test_verdict_names_classes_by_number_without_the_accuracy_section():
    robustness = _robustness_result()
    robustness["adversarial_labels"]["l2"] = [9, 9, 0, 0, 1, 2]  # 9: no correct image of it
    rows = {
        row.quantity: row for row in build_verdict({"robustness": robustness}, (1, 28, 28)).rows
    }
    assert rows["most frequent label flips"].value.startswith("0 → 9 (40%)")
    assert rows["most fragile classes (l2)"].value.startswith("1 (0.6)")


def test_advice_reads_every_budget_on_its_own():
    # Issue 25: "Not robust at l∞ 0.3" right under "≤ 79.2% at l∞ 0.1".
    def advice(accuracies):
        budgets = [
            {
                "p": math.inf,
                "eps": eps,
                "label": f"{eps:g}",
                "robust_accuracy": a,
                "convention": "MNIST",
            }
            for eps, a in zip((0.1, 0.2, 0.3), accuracies, strict=True)
        ]
        robustness = {**_robustness_result(), "robust_accuracy": budgets}
        return build_verdict({"robustness": robustness}, (1, 28, 28)).advice

    mixed = advice([0.792, 0.113, 0.0])[0]
    assert "79% at ε = 0.1, 11% at ε = 0.2, 0% at ε = 0.3" in mixed
    assert "holds at the smaller budgets and breaks from ε = 0.3 on" in mixed
    assert "Not robust" not in mixed and "--defense pgd" in mixed
    assert advice([0.05, 0.0, 0.0])[0].startswith("Not robust at any l∞ budget measured")
    robust = advice([0.95, 0.9, 0.8])[0]
    assert "upper bound" in robust and "--defense" not in robust


def test_verdict_leaves_out_what_was_not_run():
    assert build_verdict({}, (3, 32, 32)).rows == []
    only_accuracy = build_verdict({"accuracy": {"accuracy": 0.5, "n": 2}}, (3, 32, 32))
    assert [row.quantity for row in only_accuracy.rows] == ["clean accuracy"]
    assert only_accuracy.reference_family == "cifar10" and only_accuracy.advice == []


def test_fashion_mnist_gets_no_mnist_reference_points():
    mnist = build_verdict({}, (1, 28, 28), "mnist5k")
    assert mnist.reference_family == "mnist" and any("LeNet" in r.model for r in mnist.references)
    for spec in ("fashion-mnist", "fashion-mnist:/data/fm"):
        fashion = build_verdict({}, (1, 28, 28), spec)
        assert fashion.reference_family == "fashion-mnist" and fashion.references == []


def test_citations_link_known_works_and_refuse_unknown_ones():
    citations = Citations()
    text = citations.link("see [[thesis, §3.2]] and [[balda]] & `make test`")
    assert '<a class="cite" href="#ref-thesis">Moosavi-Dezfooli 2019, §3.2</a>' in text
    assert "&amp;" in text and "<code>make test</code>" in text
    assert citations.cited == ["thesis", "balda"]
    assert [key for key, _ in citations.works()] == ["balda", "thesis"]  # by label
    with pytest.raises(KeyError, match="nosuch"):
        citations.link("[[nosuch]]")


def test_table_cells_link_citations_and_keep_unknown_markers_as_text(tmp_path):
    # Issue 25: a report table printed the raw markup [[thesis, Table 3.2]].
    rows = [["ρ_adv l∞ ([[thesis, Table 3.2]])", "0.1"], ["model [[mine]] <b>", "2"]]
    section = Section("Demo", "intro", tables=[("caption", ["[[balda]]", "value"], rows)])
    section.anchor = "s-demo"
    page = write_html(
        tmp_path, {"model": "m", "data": "d", "n": 1, "profile": "quick", "seed": 0}, {}, [section]
    ).read_text()
    assert "[[thesis" not in page and "[[balda]]" not in page
    assert 'href="#ref-thesis">Moosavi-Dezfooli 2019, Table 3.2</a>' in page
    assert "model [[mine]] &lt;b&gt;" in page  # data, not a citation: shown as text


def test_every_marker_in_the_sections_names_a_work():
    root = Path(__file__).parents[1] / "src" / "boundaryscope" / "report"
    keys = set()
    for path in [*root.glob("sections/*.py"), root / "comparison.py", root / "verdict.py"]:
        keys |= set(re.findall(r"\[\[(\w+)(?:, [^\]]+)?\]\]", path.read_text()))
    assert keys and keys <= set(BIBLIOGRAPHY)


def test_page_is_self_contained_with_verdict_first_and_a_bibliography(tmp_path):
    import matplotlib.pyplot as plt

    from boundaryscope.report import figures

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    name = figures.save(fig, tmp_path / "plot.png")
    section = Section(
        "Demo", "intro citing [[deepfool]]", figures=[(name, "caption [[thesis, Fig. 1]]")]
    )
    section.anchor = "s-demo"
    verdict = build_verdict({"accuracy": {"accuracy": 0.9, "n": 10}}, (1, 28, 28))
    page = write_html(
        tmp_path,
        {"model": "m", "data": "d", "n": 10, "profile": "quick", "seed": 0},
        {},
        [section],
        verdict=verdict,
    ).read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    embedded = base64.b64decode(sources[0].split(",", 1)[1])
    assert embedded == (tmp_path / "plot.png").read_bytes()
    assert page.index('id="verdict"') < page.index('id="s-demo"')
    assert 'id="ref-deepfool"' in page and 'id="ref-thesis"' in page
    assert "[[" not in page  # captions, alt texts and intros: no raw markers
    assert 'alt="caption Moosavi-Dezfooli 2019, Fig. 1"' in page
    assert 'id="ref-balda"' not in page  # only the works cited are listed


def test_coinciding_curves_are_named_and_alg2_fgsm_explained():
    notes = _coinciding_curves({"alg2": [0.1, 0.5], "fgsm": [0.1, 0.5], "pgd": [0.2, 0.9]})
    assert len(notes) == 1 and "alg2 and fgsm" in notes[0] and "sign" in notes[0]
    assert _coinciding_curves({"a": [0.1], "b": [0.2]}) == []


def test_unfooled_example_is_not_shown_as_fooled():
    assert "not fooled" in _example_title("random noise", {"label": 3, "norm": math.inf})
    assert "‖r‖=0.5" in _example_title("adversarial", {"label": 3, "norm": 0.5})


def test_large_universal_radius_is_flagged_against_the_pixel_range():
    notes = _radius_notes({"xi": 0.5, "bounds": [0.0, 1.0]})
    assert notes and "50% of the pixel range" in notes[0]
    assert _radius_notes({"xi": 10 / 255, "bounds": [0.0, 1.0]}) == []
    assert _radius_notes({"xi": 0.5}) == []  # results written before bounds were recorded


def test_each_section_owns_its_settings_for_every_profile():
    from dataclasses import fields, is_dataclass

    from boundaryscope.report import ANALYSES, PROFILES, ReportConfig
    from boundaryscope.report.sections import load_all

    load_all()
    assert [f.name for f in fields(ReportConfig)] == ["n"]  # only what all sections share
    with_settings = {name for name, analysis in ANALYSES.items() if analysis.settings}
    assert with_settings == set(ANALYSES) - {"accuracy"}
    for name in with_settings:
        settings = ANALYSES[name].settings
        assert set(settings) == set(PROFILES), name
        for chosen in settings.values():
            assert is_dataclass(chosen) and type(chosen).__dataclass_params__.frozen, name
        record = ANALYSES[name].settings_record("quick")
        assert record and json.loads(json.dumps(record)) == record, name
    assert ANALYSES["accuracy"].settings_record("quick") == {}


def test_class_names_cover_labels_beyond_the_datas_names():
    """A 1,000-class model on data whose names stop early: later labels get numbers."""
    import numpy as np

    from boundaryscope.report.figures import class_names

    maps = [np.array([[697, 900], [3, 697]]), np.zeros((0, 0), dtype=int)]
    names = class_names(["a", "b"], maps)
    assert len(names) == 901 and names[:3] == ["a", "b", "2"] and names[900] == "900"
    assert class_names(None, [np.array([2])]) == ["0", "1", "2"]


def test_report_other_models_add_the_cross_model_table(tmp_path):
    """``report --other``: Table 4.2 in the universal section, checked image by image."""
    import torch

    from boundaryscope import Classifier
    from boundaryscope.data import load_dataset
    from boundaryscope.report.runner import run_report
    from boundaryscope.zoo import load_model

    other = "zoo:fc500-150-10-mnist"
    path = run_report(
        "zoo:lenet-mnist", "mnist5k", tmp_path / "r", n=12, profile="quick",
        sections=["universal"], others=[other],
    )  # fmt: skip
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["meta"]["others"] == [other]
    section = results["sections"]["universal"]
    this = "this model (zoo:lenet-mnist)"
    cross = section["cross_model"]
    assert cross["models"] == [this, other]
    assert cross["matrix"][this][this] == pytest.approx(section["fooling_test"])
    # Brute force: this model's v (as stored) on the other model, one image at a time.
    v = torch.tensor(section["v"], dtype=torch.float32)
    x = load_dataset("mnist5k", "test").subset(12).x
    target = Classifier(load_model(other).module)
    changed = sum(
        int(target.predict((image + v).clamp(0, 1)[None])[0] != target.predict(image[None])[0])
        for image in x
    )
    assert abs(cross["matrix"][this][other] - changed / len(x)) <= 1 / len(x)  # v is rounded
    assert "Cross-model fooling" in path.read_text()
    with pytest.raises(ValueError, match="--other 'zoo:mlp-digits' cannot classify"):
        run_report("zoo:lenet-mnist", "mnist5k", tmp_path / "bad", n=4, profile="quick",
                   sections=["universal"], others=["zoo:mlp-digits"])  # fmt: skip


def test_verdict_says_to_check_the_data_first_when_accuracy_is_at_chance():
    at_chance = {
        "accuracy": 0.1, "n": 100, "classes": ["a", "b"], "chance_accuracy": 0.5,
        "at_chance": True,
    }  # fmt: skip
    verdict = build_verdict({"accuracy": at_chance, "robustness": _robustness_result()}, (64,))
    rows = {row.quantity: row for row in verdict.rows}
    assert "at chance (50.0%" in rows["clean accuracy"].reading
    assert verdict.advice[0].startswith("Clean accuracy is at chance")
    fine = {**at_chance, "accuracy": 0.97, "at_chance": False}
    verdict = build_verdict({"accuracy": fine, "robustness": _robustness_result()}, (64,))
    assert not any("at chance" in line for line in verdict.advice)
    assert "at chance" not in verdict.rows[0].reading


def test_accuracy_section_flags_labels_the_model_does_not_give(tmp_path):
    """Shifted labels: at chance and the warning; the model's own labels, or one class it
    agrees with, are not flagged."""
    import torch

    from boundaryscope import Classifier
    from boundaryscope.data import Dataset
    from boundaryscope.report.registry import ReportConfig, ReportContext
    from boundaryscope.report.sections.robustness import AccuracyAnalysis
    from tests.conftest import tiny_mlp

    clf = Classifier(tiny_mlp(d=6, classes=3, seed=0), bounds=(0, 1))
    x = torch.rand(30, 6, generator=torch.Generator().manual_seed(0))
    own = clf.predict(x)

    def run(labels):
        data = Dataset(x, labels, "mine", ("a", "b", "c"))
        ctx = ReportContext(clf, data, None, ReportConfig(), 0, tmp_path, data_spec="npz:mine")
        return AccuracyAnalysis().run(ctx)

    shifted = run((own + 1) % 3)
    assert shifted["accuracy"] == 0.0 and shifted["at_chance"]
    assert any("npz:mine is at chance" in line for line in shifted["warnings"])
    fine = run(own)
    assert fine["accuracy"] == 1.0 and not fine["at_chance"] and not fine["warnings"]
    one_class = run(torch.zeros(30, dtype=torch.long))
    assert one_class["chance_accuracy"] == 1.0
    assert one_class["at_chance"] == (one_class["accuracy"] < 0.98)


def test_a_misspelt_section_or_profile_gets_the_closest_name(tmp_path):
    from boundaryscope.report.runner import run_report

    with pytest.raises(ValueError, match=r"got 'robustnes' \(did you mean 'robustness'\?\)"):
        run_report("zoo:lenet-mnist", "mnist5k", tmp_path, sections=["accuracy", "robustnes"])
    with pytest.raises(ValueError, match=r"got 'quik' \(did you mean 'quick'\?\)"):
        run_report("zoo:lenet-mnist", "mnist5k", tmp_path, profile="quik")
    assert not any(tmp_path.iterdir())  # refused before anything is written
