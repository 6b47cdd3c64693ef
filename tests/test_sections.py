"""Normal cross-sections, Alg. 5 paths, the convexity probe and principal angles.

References: closed-form boundaries (a hyperplane, a parabola, an annulus), analytic
membership of sampled path points, the SVD formula for principal angles.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from boundaryscope import Classifier
from boundaryscope.attacks import DeepFool
from boundaryscope.geometry.sections import (
    normal_section,
    orthonormal_direction,
    region_boundary,
    section_gallery,
)
from boundaryscope.geometry.topology import (
    _LENGTHEN,
    NoPairsError,
    _inside,
    convexity_probe,
    find_path,
    principal_angles,
    random_subspace_angles,
    scenario_pairs,
    stitched_sections,
)

from .conftest import affine_model


class Parabolic(nn.Module):
    """Logits ``[0, g]``, ``g = x_0 − 1 + (k/2) x_1²``: class 0 at the origin, boundary the
    parabola ``x_0 = 1 − (k/2) x_1²`` whose curvature at its vertex is ``k``."""

    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: Tensor) -> Tensor:
        z = x.flatten(1)
        g = z[:, 0] - 1 + 0.5 * self.k * z[:, 1] ** 2
        return torch.stack([torch.zeros_like(g), g], dim=1)


class Annulus(nn.Module):
    """Logits ``[0, (ρ − 1.5)² − 0.25]`` with ``ρ = ||(x_0, x_1)||``: class 0 is the annulus
    ``1 ≤ ρ ≤ 2`` (further coordinates are ignored)."""

    def forward(self, x: Tensor) -> Tensor:
        rho = x.flatten(1)[:, :2].norm(dim=1)
        g = (rho - 1.5) ** 2 - 0.25
        return torch.stack([torch.zeros_like(g), g], dim=1)


def in_annulus(points: Tensor) -> Tensor:
    rho = points.flatten(1)[:, :2].double().norm(dim=1)
    return (rho >= 1) & (rho <= 2)


# ---------------------------------------------------------------------- cross-sections
def test_affine_section_is_the_line_a_equals_one(seed: int) -> None:
    clf = Classifier(affine_model(d=6, classes=2, seed=seed), bounds=(-10, 10))
    x = torch.randn(1, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    r = DeepFool(p=2, overshoot=0.0, refine_steps=0)(clf, x).perturbation[0]
    direction = torch.randn(6, dtype=torch.float64)
    section = normal_section(clf, x[0], r, direction, resolution=(61, 41))
    # DeepFool is exact on an affine model: the boundary is the line a = 1 for every b.
    lines = section.boundary()
    assert len(lines) == 1
    assert np.abs(lines[0][:, 0] - 1).max() < 1e-9
    assert lines[0][:, 1].min() == pytest.approx(-4) and lines[0][:, 1].max() == pytest.approx(4)
    assert section.crossing == pytest.approx(1, abs=1e-9)
    away = np.abs(section.a - 1) > 1e-6
    expected = np.where(section.a[away] < 1, section.source, 1 - section.source)
    assert (section.labels[away] == expected[:, None]).all()
    assert section.adversarial_label == 1 - section.source
    assert abs(section.plane_curvature()) < 1e-9


def test_multiclass_affine_section_crosses_at_one_along_the_normal() -> None:
    clf = Classifier(affine_model(d=6, classes=4, seed=1), bounds=(-10, 10))
    x = torch.randn(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    gallery = section_gallery(clf, x, {"random": None}, resolution=21, progress=False)
    assert len(gallery.sections) == 5
    for row in gallery.sections:
        assert row[0].crossing == pytest.approx(1, abs=1e-6)


def test_quadratic_section_is_the_parabola_of_known_curvature() -> None:
    k = 0.8
    clf = Classifier(Parabolic(k).double().eval(), bounds=(-10, 10))
    x = torch.zeros(1, 3, dtype=torch.float64)
    gallery = section_gallery(
        clf,
        x,
        {"e1": torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)},
        resolution=(201, 161),
        tangent_range=(-1.0, 1.0),
        progress=False,
    )
    section = gallery.sections[0][0]
    assert section.radius == pytest.approx(1, abs=1e-6)  # snapped onto g = 0 at (1, 0, 0)
    points = np.concatenate(section.boundary())
    # In units of ||r|| = 1 the boundary is a = 1 − (k/2) b²: fit a quadratic to the contour.
    quadratic, linear, constant = np.polyfit(points[:, 1], points[:, 0], 2)
    assert quadratic == pytest.approx(-k / 2, rel=1e-3)
    assert abs(linear) < 1e-6 and constant == pytest.approx(1, abs=1e-5)
    assert np.abs(points[:, 0] - (1 - 0.5 * k * points[:, 1] ** 2)).max() < 1e-4
    assert section.plane_curvature(window=0.5) == pytest.approx(k, rel=1e-3)


def test_direction_parallel_to_the_normal_is_rejected() -> None:
    normal = torch.tensor([0.6, 0.8, 0.0])
    with pytest.raises(ValueError, match="parallel"):
        orthonormal_direction(normal, 2 * normal)
    v = orthonormal_direction(normal, torch.tensor([1.0, 0.0, 1.0]))
    assert float(v @ normal) == pytest.approx(0, abs=1e-7) and float(v.norm()) == pytest.approx(1)


def test_region_boundary_of_a_disc_is_a_circle() -> None:
    a = np.linspace(-2, 2, 101)
    b = np.linspace(-2, 2, 101)
    margin = 1 - (a[:, None] ** 2 + b[None, :] ** 2)
    (line,) = region_boundary(a, b, margin)
    assert np.abs(np.hypot(line[:, 0], line[:, 1]) - 1).max() < 2e-3


def test_lenet_sweep_matches_the_model_and_leaves_it_untouched(
    lenet_clf: Classifier, mnist_test
) -> None:
    x = mnist_test.x[:300]
    before = {k: (v.clone(), v.is_contiguous()) for k, v in lenet_clf.model.state_dict().items()}
    with lenet_clf.sweep() as scores:
        fast = scores(x)
    reference = lenet_clf.scores(x)
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-4)
    for key, value in lenet_clf.model.state_dict().items():
        assert torch.equal(value, before[key][0])
        assert value.is_contiguous() == before[key][1]


class ViewAfterConv(nn.Module):
    """A model that calls ``.view`` on conv features: channels-last copies fail on it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        return self.fc(h.view(h.shape[0], -1))


def test_sweep_falls_back_to_the_model_when_the_copy_fails() -> None:
    torch.manual_seed(0)
    clf = Classifier(ViewAfterConv().eval())
    x = torch.rand(8, 1, 6, 6)
    with clf.sweep() as scores:
        out = scores(x)
    torch.testing.assert_close(out, clf.scores(x))


# ---------------------------------------------------------------------- Alg. 5 paths
def test_path_through_an_annulus_stays_in_it() -> None:
    clf = Classifier(Annulus().double().eval(), bounds=(-3, 3))
    x1 = torch.tensor([1.5, 0.0], dtype=torch.float64)
    x2 = torch.tensor([-1.5, 0.3], dtype=torch.float64)
    straight = x1 + torch.linspace(0, 1, 101, dtype=torch.float64)[:, None] * (x2 - x1)
    assert not bool(in_annulus(straight).all())  # the segment crosses the hole
    path = find_path(clf, x1, x2, spacing=1e-3)
    assert path.valid and path.failure is None and path.anchor_count >= 2
    assert bool(in_annulus(path.anchors).all())
    t = torch.linspace(0, 1, 2001, dtype=torch.float64)[:, None]
    for p, q in zip(path.anchors[:-1], path.anchors[1:], strict=True):
        assert bool(in_annulus(p + t * (q - p)).all())  # independent dense check
    # No path in the annulus is shorter than the geodesic around the unit hole: the two
    # tangents from x1 and x2 to the unit circle plus the arc between their touch points.
    r1, r2 = float(x1.norm()), float(x2.norm())
    between = math.atan2(float(x2[1]), float(x2[0])) - math.atan2(float(x1[1]), float(x1[0]))
    arc = between - math.acos(1 / r1) - math.acos(1 / r2)
    geodesic = math.sqrt(r1**2 - 1) + math.sqrt(r2**2 - 1) + arc
    assert geodesic / float((x2 - x1).norm()) <= path.deviation < 1.3
    lengths = (path.anchors[1:] - path.anchors[:-1]).norm(dim=1).sum()
    assert path.deviation == pytest.approx(float(lengths / (x2 - x1).norm()))


def test_valid_straight_segment_has_deviation_exactly_one() -> None:
    clf = Classifier(Annulus().double().eval(), bounds=(-3, 3))
    path = find_path(
        clf, torch.tensor([1.5, 0.0], dtype=torch.float64), torch.tensor([1.6, 0.1]).double()
    )
    assert path.valid and path.anchor_count == 0 and path.depth == 0
    assert path.deviation == 1.0
    # The margin is far from zero all along: every 64th sample of 10,001 (spacing 1e-4).
    assert path.samples == 158
    dense = find_path(
        clf, torch.tensor([1.5, 0.0]).double(), torch.tensor([1.6, 0.1]).double(), refine=False
    )
    assert dense.valid and dense.samples == 10_001


def test_depth_limit_reports_the_failure() -> None:
    clf = Classifier(Annulus().double().eval(), bounds=(-3, 3))
    path = find_path(
        clf, torch.tensor([1.5, 0.0]).double(), torch.tensor([-1.5, 0.3]).double(), max_depth=0
    )
    assert not path.valid
    assert path.failure is not None and "depth 0" in path.failure
    assert path.segment_valid.tolist() == [False]


def test_anchor_budget_leaves_a_longer_path_undecided_and_keeps_a_shorter_one() -> None:
    clf = Classifier(Annulus().double().eval(), bounds=(-3, 3))
    x1, x2 = torch.tensor([1.5, 0.0]).double(), torch.tensor([-1.5, 0.3]).double()
    free = find_path(clf, x1, x2, spacing=1e-3)
    assert free.valid and not free.undecided and free.anchor_count >= 2
    exact = find_path(clf, x1, x2, spacing=1e-3, max_anchors=free.anchor_count)
    assert exact.valid and not exact.undecided
    assert torch.equal(exact.anchors, free.anchors) and exact.samples == free.samples
    short = find_path(clf, x1, x2, spacing=1e-3, max_anchors=free.anchor_count - 1)
    assert short.undecided and not short.valid
    assert short.failure is not None and f"more than {free.anchor_count - 1}" in short.failure
    assert short.samples < free.samples  # the rest of the path is not checked
    none = find_path(clf, x1, x2, spacing=1e-3, max_anchors=0)
    assert none.undecided and none.anchor_count == 0 and none.segment_valid.tolist() == [False]
    with pytest.raises(ValueError, match="max_anchors"):
        find_path(clf, x1, x2, max_anchors=-1)


def test_pushes_are_lengthened_to_the_least_factor_with_a_safe_margin(lenet_clf, mnist_test):
    """`_inside` against every factor of its ladder evaluated at once (the brute force).

    In float64, so that no margin near the threshold depends on the batch it is computed in.
    """
    lenet_clf = Classifier(copy.deepcopy(lenet_clf.model).double(), bounds=(0.0, 1.0))
    x = mnist_test.x[:6].double()
    labels = lenet_clf.predict(x)
    target = (labels + 1) % 10
    found = DeepFool(p=2, overshoot=0.0, refine_steps=0)(lenet_clf, x, target=target)
    # Ends short of, at and beyond the targeted boundary: some need lengthening, some not.
    for scale in (0.5, 0.999, 1.0, 1.05, 3.0):
        end = x + scale * (found.adversarial - x)
        points, ok = _inside(lenet_clf, x, end, target, 1e-4)
        for i in range(x.shape[0]):
            ladder = torch.tensor(_LENGTHEN, dtype=x.dtype)
            candidates = lenet_clf.clip(x[i] + ladder.view(-1, 1, 1, 1) * (end[i] - x[i]))
            candidates[0] = lenet_clf.clip(end[i])  # factor 1: the push's own end
            scores = lenet_clf.scores(candidates).double()
            own = scores[:, int(target[i])].clone()
            scores[:, int(target[i])] = -math.inf
            top = lenet_clf.scores(candidates).double().abs().max(1).values
            good = ((own - scores.max(1).values) / top >= 1e-4).nonzero()[:, 0]
            assert bool(ok[i]) == (good.numel() > 0), (scale, i)
            expected = candidates[int(good[0])] if good.numel() else candidates[0]
            torch.testing.assert_close(points[i], expected, rtol=0, atol=1e-6)


def test_find_path_rejects_points_of_two_labels() -> None:
    clf = Classifier(Annulus().double().eval(), bounds=(-3, 3))
    with pytest.raises(ValueError, match="same predicted label"):
        find_path(clf, torch.tensor([1.5, 0.0]).double(), torch.zeros(2).double())


def test_stitched_panels_contain_the_path_segments() -> None:
    clf = Classifier(Annulus().double().eval(), bounds=(-3, 3))
    x1 = torch.tensor([1.5, 0.0, 0.0], dtype=torch.float64)
    x2 = torch.tensor([-1.5, 0.3, 0.0], dtype=torch.float64)
    path = find_path(clf, x1, x2, spacing=1e-3)
    normal = torch.tensor([0.0, 0.0, 0.5], dtype=torch.float64)  # the model ignores x_2
    panels = stitched_sections(clf, path, normal, resolution=(21, 15))
    assert len(panels) == path.anchor_count + 1
    for panel, p, q in zip(panels, path.anchors[:-1], path.anchors[1:], strict=True):
        middle = panel.labels[10]  # row a = 0: the segment itself
        assert (middle == path.label).all()
        assert panel.b[-1] == pytest.approx(float((q - p).norm()) / 0.5)


def test_scenario_pairs_share_a_label(lenet_clf: Classifier, mnist_test) -> None:
    x = mnist_test.x[:60]
    for scenario in ("natural", "adversarial", "noise"):
        x1, x2 = scenario_pairs(lenet_clf, x, scenario, 4, seed=0)  # type: ignore[arg-type]
        assert 1 <= x1.shape[0] <= 4 and x1.shape == x2.shape
        assert torch.equal(lenet_clf.predict(x1), lenet_clf.predict(x2))
        if scenario != "natural":
            assert not bool((x2 == x1).all())


def test_one_image_or_one_label_gives_no_pairs_instead_of_an_error() -> None:
    """A model that predicts one class, or one image: scenarios without pairs (the report's
    regions section records that and goes on)."""
    constant = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval())
    with torch.no_grad():
        constant.model[1].weight.zero_()
        constant.model[1].bias.copy_(torch.tensor([0.0, 1.0, 0.0]))
    x = torch.rand(5, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(NoPairsError):
        scenario_pairs(constant, x, "adversarial", 3, seed=0)
    x1, x2 = scenario_pairs(constant, x[:1], "noise", 3, seed=0)  # radius 0: the image itself
    assert x1.shape[0] == x2.shape[0] == 0


# ---------------------------------------------------------------------- convexity, angles
def test_convexity_of_a_half_space_is_one() -> None:
    clf = Classifier(affine_model(d=5, classes=2, seed=3), bounds=(-10, 10))
    x = torch.randn(200, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    probe = convexity_probe(clf, x, ks=(2, 5, 10), trials=300)
    assert probe.probability == [1.0, 1.0, 1.0]
    assert probe.stderr == [0.0, 0.0, 0.0]


def test_convexity_of_an_annulus_is_below_one() -> None:
    clf = Classifier(Annulus().double().eval(), bounds=(-3, 3))
    angle = torch.rand(300, generator=torch.Generator().manual_seed(0)) * 2 * math.pi
    x = 1.5 * torch.stack([angle.cos(), angle.sin()], dim=1).double()
    probe = convexity_probe(clf, x, ks=(2, 10), trials=400)
    # Two random points on the mid-circle: the midpoint-ish combination leaves the annulus
    # for a large angle between them; ten points average towards the hole.
    assert 0.2 < probe.probability[0] < 0.9
    assert probe.probability[1] < min(0.2, probe.probability[0])


def test_principal_angles_match_the_svd_formula(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(4, 30, generator=g, dtype=torch.float64)
    b = torch.randn(6, 30, generator=g, dtype=torch.float64)
    qa, _ = torch.linalg.qr(a.T)
    qb, _ = torch.linalg.qr(b.T)
    cosines = torch.linalg.svdvals(qa.T @ qb).clamp(max=1)
    expected = torch.sort(torch.arccos(cosines)).values
    torch.testing.assert_close(principal_angles(a, b), expected, atol=1e-10, rtol=0)
    mixed = torch.randn(4, 4, generator=g, dtype=torch.float64) @ a  # same span
    assert float(principal_angles(a, mixed).max()) < 1e-6
    baseline = random_subspace_angles(30, 4, 6, seed=seed)
    assert baseline.shape == (4,) and bool((baseline > 0).all())
