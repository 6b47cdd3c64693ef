"""The curvature detector (Alg. 6) against analytic curvatures of quadratic classifiers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from boundaryscope import Classifier
from boundaryscope.attacks import DeepFool
from boundaryscope.defenses.detection import (
    ConfidenceDetector,
    CurvatureDetector,
    _unit_directions,
    evaluate,
    load_detector,
)

from .conftest import tiny_mlp


class QuadraticClassifier(nn.Module):
    """Logits ``f_k(x) = ½ xᵀ A_k x + b_kᵀ x``: every Hessian is known exactly."""

    def __init__(self, a: Tensor, b: Tensor) -> None:
        super().__init__()
        self.register_buffer("a", a)  # (C, d, d), symmetric
        self.register_buffer("b", b)  # (C, d)

    def forward(self, x: Tensor) -> Tensor:
        z = x.flatten(1).to(self.a)
        return 0.5 * torch.einsum("nd,kde,ne->nk", z, self.a, z) + z @ self.b.T


def random_quadratic(d: int, classes: int, seed: int, scale: float = 1.0) -> QuadraticClassifier:
    g = torch.Generator().manual_seed(seed)
    a = scale * torch.randn(classes, d, d, generator=g, dtype=torch.float64)
    b = torch.randn(classes, d, generator=g, dtype=torch.float64)
    return QuadraticClassifier(0.5 * (a + a.transpose(1, 2)), b).eval()


def curvature_forms(model: QuadraticClassifier, x: Tensor, directions: Tensor) -> Tensor:
    """``v_jᵀ G_i v_j`` for every other class i, by dense algebra: ``(C − 1, T)``."""
    scores = model(x[None])[0]
    k = int(scores.argmax())
    z = x.flatten().double()
    rows = []
    for i in range(scores.shape[0]):
        if i == k:
            continue
        hessian = model.a[i] - model.a[k]
        grad = hessian @ z + model.b[i] - model.b[k]
        n = grad / grad.norm()
        p = torch.eye(len(z), dtype=torch.float64) - torch.outer(n, n)
        g_matrix = p @ hessian @ p / grad.norm()
        rows.append(torch.einsum("td,de,te->t", directions, g_matrix, directions))
    return torch.stack(rows)


def analytic_rho(model: QuadraticClassifier, x: Tensor) -> float:
    """``mean_i tr(G_i) / d``: Alg. 6's expectation over the unit sphere."""
    d = x.numel()
    forms = curvature_forms(model, x, torch.eye(d, dtype=torch.float64))
    return float(forms.sum(1).mean()) / d


def test_score_is_the_hutchinson_estimate_of_the_analytic_curvature(seed):
    d, classes = 8, 4
    model = random_quadratic(d, classes, seed)
    clf = Classifier(model, bounds=(-10, 10))
    x = torch.rand(5, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    t = 400
    detector = CurvatureDetector(n_directions=t, method="exact", seed=seed)
    scores = detector.score_samples(clf, x)
    directions = _unit_directions(t, d, seed)
    block_errors, errors_large = [], []
    for n in range(5):
        forms = curvature_forms(model, x[n], directions)
        # Same directions, dense algebra: identical up to rounding.
        assert abs(float(scores[n]) - float(forms.mean())) < 1e-6 * float(forms.abs().mean())
        per_direction = forms.mean(0)  # mean over classes, one value per direction
        stderr = float(per_direction.std()) / math.sqrt(t)
        exact = analytic_rho(model, x[n])
        assert abs(float(scores[n]) - exact) <= 3 * stderr
        errors_large.append(abs(float(scores[n]) - exact))
        block_errors += (per_direction.reshape(40, 10).mean(1) - exact).tolist()
    # More directions, closer to the analytic value (T → ∞ trend): the RMS error of 10-
    # direction estimates is √40 times that of the 400-direction one in expectation.
    assert np.mean(errors_large) < 0.5 * np.sqrt(np.mean(np.square(block_errors)))


class _Sphere(nn.Module):
    """Class 1 inside the ball ||x|| < R, class 0 outside: F = R² − ||x||² for class 0 inputs."""

    def __init__(self, radius: float) -> None:
        super().__init__()
        self.radius = radius

    def forward(self, x: Tensor) -> Tensor:
        inside = self.radius**2 - x.flatten(1).pow(2).sum(1)
        return torch.stack([torch.zeros_like(inside), inside], dim=1)


def test_snap_steps_measure_the_boundary_not_the_level_set_through_the_input(seed):
    """Alg. 6 at x sees the level set ||x|| = ρ (curvature 1/ρ); Table 7.2 at z sees 1/R.

    For F = R² − ||x||², G = P H P / ||∇F|| = −P / ||x||: the same directions give scores in
    the ratio ||x|| / R, whatever the directions are.
    """
    radius, d = 2.0, 12
    clf = Classifier(_Sphere(radius).double().eval(), bounds=(-10, 10))
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(6, d, generator=g, dtype=torch.float64)
    distance = torch.linspace(2.5, 6.0, 6, dtype=torch.float64)
    x = u / u.norm(dim=1, keepdim=True) * distance[:, None]
    at_x = CurvatureDetector(n_directions=16, method="exact", seed=seed).score_samples(clf, x)
    at_z = CurvatureDetector(n_directions=16, method="exact", seed=seed, snap_steps=8)
    scores_z = at_z.score_samples(clf, x)
    torch.testing.assert_close((scores_z / at_x).double(), distance / radius, rtol=1e-5, atol=0)
    directions = _unit_directions(16, d, seed)
    normal = x / distance[:, None]
    expected = -(1 - (normal @ directions.T) ** 2).mean(1) / radius  # v^T (−P/R) v
    torch.testing.assert_close(scores_z.double(), expected, rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match="snap_steps"):
        CurvatureDetector(snap_steps=-1)


def test_fitted_threshold_gives_the_target_false_positive_rate(seed):
    d = 6
    model = random_quadratic(d, 3, seed, scale=0.5)
    clf = Classifier(model, bounds=(-10, 10))
    g = torch.Generator().manual_seed(seed)
    fit_x = 0.5 + 0.3 * torch.randn(2000, d, generator=g, dtype=torch.float64)
    held_out = 0.5 + 0.3 * torch.randn(2000, d, generator=g, dtype=torch.float64)
    detector = CurvatureDetector(n_directions=4, method="exact", fpr=0.05, batch_size=500)
    detector.fit(clf, fit_x)
    rate = float(detector.predict(clf, held_out).double().mean())
    assert abs(rate - 0.05) <= 3 * math.sqrt(0.05 * 0.95 / 2000)
    assert detector.n_fit_ == 2000 and detector.threshold_ is not None


def test_recover_finds_the_class_whose_boundary_bends_towards_the_input():
    # f_k = ½ a_k ||x||² + b_kᵀx: G_i has curvature (a_i − a_k̂)/||∇F_i|| in every tangent
    # direction, positive only for the class with the larger a.
    d = 5
    a = torch.stack([c * torch.eye(d, dtype=torch.float64) for c in (3.0, 0.0, -1.0, -2.0)])
    b = torch.zeros(4, d, dtype=torch.float64)
    b[1, 0] = 10.0  # class 1 wins near x (its linear term), class 0 bends towards it
    model = QuadraticClassifier(a, b).eval()
    clf = Classifier(model, bounds=(-10, 10))
    x = torch.tensor([[0.5, 0.1, 0.1, 0.1, 0.1]], dtype=torch.float64).repeat(3, 1)
    x[1, 1], x[2, 2] = 0.3, -0.2
    assert torch.equal(clf.predict(x), torch.ones(3, dtype=torch.long))
    detector = CurvatureDetector(n_directions=16, method="exact")
    assert torch.equal(detector.recover(clf, x), torch.zeros(3, dtype=torch.long))
    classes, curvatures = detector.class_curvatures(clf, x)
    positive = curvatures[classes == 0]
    assert bool((positive > 0).all()) and bool((curvatures[classes != 0] < 0).all())


def test_batched_equals_one_at_a_time_and_candidates(seed):
    model = random_quadratic(6, 4, seed)
    clf = Classifier(model, bounds=(-10, 10))
    x = torch.rand(7, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    batched = CurvatureDetector(8, method="exact", batch_size=64).score_samples(clf, x)
    single = CurvatureDetector(8, method="exact", batch_size=1).score_samples(clf, x)
    torch.testing.assert_close(batched, single, rtol=1e-6, atol=1e-9)
    classes, _ = CurvatureDetector(8, candidates=2, method="exact").class_curvatures(clf, x)
    scores = clf.scores(x)
    expected = scores.scatter(1, scores.argmax(1, keepdim=True), -math.inf).topk(2).indices
    assert torch.equal(classes, expected)
    assert CurvatureDetector(8, candidates=2).hvps_per_image(4) == 16
    reversed_ = CurvatureDetector(8, method="exact", orientation="reversed")
    torch.testing.assert_close(reversed_.score_samples(clf, x), -batched)
    classes, curvatures = reversed_.class_curvatures(clf, x)
    expected = classes.gather(1, curvatures.argmin(1, keepdim=True))[:, 0]
    assert torch.equal(reversed_.recover(clf, x), expected)
    scores, recovered = reversed_.score_and_recover(clf, x)
    assert torch.equal(scores, reversed_.score_samples(clf, x))
    assert torch.equal(recovered, expected)


def test_save_and_load_round_trip(tmp_path, seed):
    model = random_quadratic(6, 3, seed)
    clf = Classifier(model, bounds=(-10, 10))
    x = torch.rand(40, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    detector = CurvatureDetector(6, candidates=2, method="exact", h=0.2, fpr=0.1, seed=3)
    detector.fit(clf, x[:30])
    loaded = load_detector(detector.save(tmp_path / "det.json"))
    assert isinstance(loaded, CurvatureDetector)
    assert loaded.get_params() == detector.get_params()
    assert loaded.threshold_ == detector.threshold_
    assert torch.equal(loaded.predict(clf, x[30:]), detector.predict(clf, x[30:]))
    confidence = ConfidenceDetector(fpr=0.2).fit(clf, x)
    again = load_detector(confidence.save(tmp_path / "conf.json"))
    assert isinstance(again, ConfidenceDetector) and again.threshold_ == confidence.threshold_
    (tmp_path / "bad.json").write_text('{"kind": "magic"}')
    with pytest.raises(ValueError, match="not a saved boundaryscope detector"):
        load_detector(tmp_path / "bad.json")
    with pytest.raises(RuntimeError, match="not fitted"):
        CurvatureDetector().predict(clf, x)
    with pytest.raises(ValueError, match="'fpr' parameter"):
        CurvatureDetector(fpr=1.5)


def test_confidence_baseline_matches_softmax(seed):
    clf = Classifier(tiny_mlp(seed=seed), bounds=(0, 1))
    x = torch.rand(9, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    probabilities = clf.scores(x).softmax(1)
    detector = ConfidenceDetector()
    torch.testing.assert_close(detector.score_samples(clf, x), 1 - probabilities.amax(1))
    assert torch.equal(detector.recover(clf, x), probabilities.topk(2).indices[:, 1])


def _fitted_on_tiny_mlp(seed: int) -> tuple[Classifier, Tensor, Tensor, CurvatureDetector]:
    """A 3-class tanh MLP, 60 images labelled by it, a curvature detector fitted on 30."""
    clf = Classifier(tiny_mlp(d=6, classes=3, seed=seed), bounds=(0, 1))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(60, 6, generator=g, dtype=torch.float64)
    y = clf.predict(x)
    return clf, x, y, CurvatureDetector(4, method="exact").fit(clf, x[:30])


def test_evaluate_reports_every_attack_and_the_adaptive_attacker(seed):
    clf, x, y, curvature = _fitted_on_tiny_mlp(seed)
    confidence = ConfidenceDetector().fit(clf, x[:30])
    result = evaluate(clf, x[30:], y[30:], {"curvature": curvature, "confidence": confidence})
    assert set(result.clean) == {"curvature", "confidence"}
    assert {"DeepFool l2 × 1", "DeepFool l2 × 2", "DeepFool l2 × 5", "DeepFool l∞"} <= set(
        result.attacks
    )
    for entry in result.attacks.values():
        assert 0 <= entry["fooled"] <= 30
        for name in ("curvature", "confidence"):
            metrics = entry[name]
            if entry["fooled"]:
                assert 0 <= metrics["auc"] <= 1
                fpr, tpr = metrics["roc"]
                assert fpr == sorted(fpr) and tpr == sorted(tpr)
    assert 0 <= result.adaptive["evading"] <= 1
    assert result.cost["hvps_per_image"] == 2 * 4
    assert result.cost["backward_rows_per_image"] > 0


class CurvedNearBoundary(nn.Module):
    """Three classes on [0, 1]⁶ whose boundary is curved only near it, flat farther away.

    ``f_0 = 0``, ``f_1 = 4t − 3 exp(−(t/0.1)²) ‖x₂..₆ − ½‖²`` with ``t = x₁ − ½``, ``f_2 =
    −10``: the curvature of ``f_1 − f_0`` across the boundary decays like ``exp(−(t/0.1)²)``.
    A class-0 image pushed just over the boundary scores far above clean images that sit 0.2
    or more from it (Alg. 6 flags it), and evades at a larger α of its perturbation once the
    point is deep enough — an α the suite's (1, 2, 5) does not hold for most images. Class-1
    images pushed into class 0 see the opposite sign and evade at α = 1.
    """

    def forward(self, x: Tensor) -> Tensor:
        t = x[:, 0] - 0.5
        bump = -3.0 * torch.exp(-((t / 0.1) ** 2)) * ((x[:, 1:] - 0.5) ** 2).sum(1)
        return torch.stack([torch.zeros_like(t), 4 * t + bump, torch.full_like(t, -10.0)], 1)


def test_adaptive_attacker_matches_brute_force_and_scores_no_image_twice(seed, monkeypatch):
    """Reusing the suite's scores changes nothing: every α of every image, scored afresh."""
    clf = Classifier(CurvedNearBoundary().eval(), bounds=(0, 1))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(60, 6, generator=g, dtype=torch.float64)
    u = x[:, 0].clone()  # first coordinate at least 0.2 from the boundary's flat part
    x[:, 0] = torch.where(u < 0.5, 0.6 * u, 0.7 + 0.6 * (u - 0.5))
    y = clf.predict(x)
    curvature = CurvatureDetector(4, method="exact").fit(clf, x[:30])
    scored: dict[str, list[Tensor]] = {"all": [], "adaptive": []}
    original_curvatures = CurvatureDetector.class_curvatures
    original_predict = CurvatureDetector.predict

    def recording(self, clf, inputs):
        scored["all"].append(inputs.detach().clone())
        return original_curvatures(self, clf, inputs)

    def predicting(self, clf, inputs):  # the adaptive attacker's scoring
        scored["adaptive"].append(inputs.detach().clone())
        return original_predict(self, clf, inputs)

    monkeypatch.setattr(CurvatureDetector, "class_curvatures", recording)
    monkeypatch.setattr(CurvatureDetector, "predict", predicting)
    grid = (1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 8.0)
    result = evaluate(clf, x[30:], y[30:], {"curvature": curvature}, adaptive_alphas=grid)
    adaptive = torch.cat(scored["adaptive"]) if scored["adaptive"] else x[:0]
    earlier = torch.cat(scored["all"])[: -len(adaptive) or None]
    # The attacker scores no input the suite scored (α = 1, 2, 5) and none twice.
    assert not (adaptive[:, None] == earlier[None]).all(-1).any()
    assert torch.unique(adaptive, dim=0).shape[0] == adaptive.shape[0]
    assert adaptive.shape[0] > 0  # some α outside the suite's was needed

    monkeypatch.setattr(CurvatureDetector, "class_curvatures", original_curvatures)
    monkeypatch.setattr(CurvatureDetector, "predict", original_predict)
    r = DeepFool(p=2)(clf, x[30:], y[30:]).perturbation
    expected = []
    for i in range(30):  # the first α that keeps the label changed and scores ≤ threshold
        alpha_i = math.inf
        for alpha in grid:
            candidate = clf.clip(x[30 + i : 31 + i] + alpha * r[i : i + 1])
            fooled = bool(clf.predict(candidate)[0] != y[30 + i])
            score = float(curvature.score_samples(clf, candidate)[0])
            if fooled and score <= curvature.fitted_threshold():
                alpha_i = alpha
                break
        expected.append(alpha_i)
    assert result.adaptive["per_image_alpha"] == expected
    # Not a vacuous grid: images evade at α = 1 and at α outside the suite's.
    assert 1.0 in expected and set(expected) - {1.0, 2.0, 5.0, math.inf}

    # The cost per scored image is that of scoring the clean test images (all 30 correct).
    before = (clf.counter.forward_rows, clf.counter.backward_rows)
    curvature.score_samples(clf, x[30:])
    assert result.cost["forward_rows_per_image"] == (clf.counter.forward_rows - before[0]) / 30
    assert result.cost["backward_rows_per_image"] == (clf.counter.backward_rows - before[1]) / 30
