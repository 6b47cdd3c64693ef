"""Refined label grids and bisection path checks equal the dense sweeps they replace.

Brute force on synthetic label maps and margins (every point evaluated), then the real
models: sections and Alg. 5 paths of the shipped LeNet, and a CIFAR-shaped BatchNorm ResNet,
refined against dense.
"""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import directed_hausdorff

from boundaryscope import Classifier
from boundaryscope.geometry.curvature import boundary_points
from boundaryscope.geometry.refinement import (
    MIN_INTERVALS,
    refined_label_grid,
    segment_keeps_label,
)
from boundaryscope.geometry.sections import normal_section
from boundaryscope.geometry.topology import find_path, scenario_pairs
from tests.factories import cifar_resnet


def _evaluator(label_of, value_of, calls: list[int]):
    """A grid evaluator from functions of the integer (row, column) indices."""

    def evaluate(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(points.shape[0])
        rows, cols = points[:, 0].astype(float), points[:, 1].astype(float)
        return label_of(rows, cols), np.stack([value_of(rows, cols), rows + cols], axis=1)

    return evaluate


def _disks(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Three labels: two disks (radius 18 and 11) in a background."""
    first = (rows - 40) ** 2 + (cols - 30) ** 2 <= 18**2
    second = (rows - 20) ** 2 + (cols - 80) ** 2 <= 11**2
    return np.where(first, 1, np.where(second, 2, 0))


@pytest.mark.parametrize("coarse", [2, 4, 8, 16])
@pytest.mark.parametrize("shape", [(81, 121), (64, 100), (121, 1), (1, 97)])
def test_refined_grid_labels_equal_brute_force(coarse: int, shape: tuple[int, int]) -> None:
    calls: list[int] = []

    def margin(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return np.hypot(rows - 40, cols - 30) - 18.0

    grid = refined_label_grid(_evaluator(_disks, margin, calls), shape, coarse)
    rows, cols = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    np.testing.assert_array_equal(grid.labels, _disks(rows, cols))
    # Exact where evaluated; every point has a finite value; each point evaluated once.
    at = grid.evaluated
    np.testing.assert_allclose(grid.values[..., 0][at], margin(rows, cols)[at])
    assert np.isfinite(grid.values).all()
    assert sum(calls) == grid.rows == int(at.sum())
    # (rows + cols) is affine: its bilinear fill is exact everywhere.
    np.testing.assert_allclose(grid.values[..., 1], rows + cols, atol=1e-9)
    if min(shape) > 1 and coarse >= 4:
        assert grid.rows < 0.6 * grid.labels.size


def test_refined_grid_boundary_cells_are_all_evaluated() -> None:
    """Every pair of neighbouring points with different labels was evaluated (the contour)."""
    grid = refined_label_grid(_evaluator(_disks, lambda r, c: r * 0, []), (100, 120), coarse=16)
    labels, at = grid.labels, grid.evaluated
    vertical = labels[1:] != labels[:-1]
    horizontal = labels[:, 1:] != labels[:, :-1]
    assert vertical.any() and horizontal.any()
    assert (at[1:][vertical] & at[:-1][vertical]).all()
    assert (at[:, 1:][horizontal] & at[:, :-1][horizontal]).all()


def test_coarse_one_is_the_dense_grid_and_bad_strides_are_refused() -> None:
    grid = refined_label_grid(_evaluator(_disks, lambda r, c: r, []), (30, 40), coarse=1)
    assert grid.evaluated.all()
    for bad in (0, 3, 12):
        with pytest.raises(ValueError, match="power of two"):
            refined_label_grid(_evaluator(_disks, lambda r, c: r, []), (30, 40), coarse=bad)


def _dense_verdict(margins: np.ndarray) -> bool:
    return bool((margins >= 0).all())


def test_segment_check_equals_dense_on_random_smooth_margins() -> None:
    """Sums of random sinusoids (some dipping below zero between coarse samples)."""
    rng = np.random.default_rng(0)
    agree, rejected, spent, dense_rows = 0, 0, 0, 0
    for _ in range(300):
        count = int(rng.integers(2, 20_000))
        t = np.arange(count + 1) / count
        waves = rng.integers(1, 40, size=4)
        margin = rng.uniform(0.05, 1.5) + sum(
            rng.uniform(0, 0.4) * np.sin(2 * math.pi * w * t + rng.uniform(0, 6)) for w in waves
        )
        margin = np.where(margin < 0, -np.inf, margin)
        keeps, samples = segment_keeps_label(lambda i, m=margin: m[i], count)
        agree += keeps == _dense_verdict(margin)
        rejected += not keeps
        spent += samples
        dense_rows += count + 1
    assert agree == 300 and 30 < rejected < 270
    assert spent < 0.2 * dense_rows


def test_segment_check_finds_a_dip_between_two_coarse_samples() -> None:
    count = 10_000
    t = np.arange(count + 1, dtype=float)
    # The margin falls to zero at sample 5,001 and rises again (a V over 400 samples); three
    # samples around its tip, all between two coarse samples (4,992 and 5,056), are outside.
    margin = np.abs(t - 5_001) * 0.003 - 0.002
    margin = np.where(margin < 0, -np.inf, np.minimum(margin, 1.0))
    assert int(np.isinf(margin).sum()) == 1 and not np.isinf(margin[::64]).any()
    keeps, samples = segment_keeps_label(lambda i: margin[i], count)
    assert not keeps and samples < count / 10


def test_short_segments_are_sampled_at_least_min_intervals_times() -> None:
    """Two anchors just inside the boundary with the region left once in between."""
    count = 40
    margin = np.full(count + 1, 2e-4)  # a flat margin: no slope to see
    margin[7] = -np.inf
    keeps, samples = segment_keeps_label(lambda i: margin[i], count)
    assert not keeps and samples == count + 1  # 40 // MIN_INTERVALS = 1: every sample
    long = np.full(64 * MIN_INTERVALS + 1, 2e-4)
    assert segment_keeps_label(lambda i: long[i], long.size - 1) == (True, MIN_INTERVALS + 1)


# ---------------------------------------------------------------------- the real models
def _assert_same_labels(refined, dense) -> None:
    """Equal labels, but for points on the boundary itself (margin within float32 rounding),
    whose label depends on the batch they are computed in (the grid point (1, 0) is the
    DeepFool point)."""
    differ = refined.labels != dense.labels
    assert not (differ & (np.abs(dense.margin) > 1e-4)).any()
    assert differ.sum() <= 2


def test_lenet_sections_refined_equal_dense(lenet_clf: Classifier, mnist_test) -> None:
    points = boundary_points(lenet_clf, mnist_test.x[:400:100])
    generator = torch.Generator().manual_seed(0)
    for i in range(len(points)):
        r = points.z[i] - points.x[i]
        direction = torch.randn(r.shape, generator=generator)
        dense = normal_section(lenet_clf, points.x[i], r, direction, resolution=81, coarse=1)
        refined = normal_section(lenet_clf, points.x[i], r, direction, resolution=81, coarse=8)
        _assert_same_labels(refined, dense)
        assert refined.crossing == pytest.approx(dense.crossing, abs=1e-6)
        # The same boundary: every contour point of one lies on the other's (Hausdorff).
        lines_d, lines_r = np.concatenate(dense.boundary()), np.concatenate(refined.boundary())
        gap = max(directed_hausdorff(lines_d, lines_r)[0], directed_hausdorff(lines_r, lines_d)[0])
        assert gap < 1e-3  # grid spacing 0.075
        assert refined.plane_curvature() == pytest.approx(
            dense.plane_curvature(), rel=1e-3, abs=1e-6, nan_ok=True
        )
        assert refined.rows < dense.rows / 3


def test_lenet_paths_refined_equal_dense(lenet_clf: Classifier, mnist_test) -> None:
    x = mnist_test.x[:300]
    dense_rows = refined_rows = 0
    for offset, scenario in enumerate(("natural", "adversarial", "noise")):
        x1, x2 = scenario_pairs(lenet_clf, x, scenario, 3, seed=offset)  # type: ignore[arg-type]
        for a, b in zip(x1, x2, strict=True):
            dense = find_path(lenet_clf, a, b, spacing=1e-3, refine=False)
            refined = find_path(lenet_clf, a, b, spacing=1e-3, refine=True)
            assert refined.segment_valid.tolist() == dense.segment_valid.tolist()
            torch.testing.assert_close(refined.anchors, dense.anchors)
            dense_rows += dense.samples
            refined_rows += refined.samples
    assert refined_rows < dense_rows / 2


def test_cifar_batchnorm_resnet_section_refined_equals_dense() -> None:
    clf = Classifier(cifar_resnet(), bounds=(0, 1))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    points = boundary_points(clf, x)
    r = points.z[0] - points.x[0]
    direction = torch.randn(r.shape, generator=torch.Generator().manual_seed(1))
    dense = normal_section(clf, points.x[0], r, direction, resolution=33, coarse=1)
    refined = normal_section(clf, points.x[0], r, direction, resolution=33, coarse=8)
    _assert_same_labels(refined, dense)
    assert refined.crossing == pytest.approx(dense.crossing, abs=1e-5)
    assert refined.rows < dense.rows
