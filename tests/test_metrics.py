from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from boundaryscope.attacks import AttackResult
from boundaryscope.metrics import RobustnessAccumulator, median_norm, rho_adv


def make_result(norms: torch.Tensor, iterations: torch.Tensor) -> AttackResult:
    n = norms.shape[0]
    success = torch.isfinite(norms)
    zeros = torch.zeros(n, 2)
    return AttackResult(
        zeros,
        zeros,
        success,
        norms,
        iterations,
        torch.zeros(n, dtype=torch.long),
        torch.ones(n, dtype=torch.long),
        2.0,
    )


def test_rho_adv_and_median_against_numpy():
    norms = torch.tensor([0.5, 1.0, math.inf, 2.0, 0.1])
    x_norms = torch.tensor([1.0, 2.0, 3.0, 4.0, 0.5])
    mask = torch.tensor([True, True, True, True, False])
    assert rho_adv(norms, x_norms, mask) == pytest.approx(np.mean([0.5, 0.5, 0.5]))
    assert median_norm(norms, mask) == pytest.approx(np.median([0.5, 1.0, np.inf, 2.0]))


def test_accumulator_merge_equals_single_pass():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(40, 2, generator=gen) + 0.1
    norms = torch.rand(40, generator=gen)
    norms[[3, 17]] = math.inf
    iterations = torch.randint(0, 5, (40,), generator=gen)
    correct = torch.rand(40, generator=gen) > 0.2
    whole = RobustnessAccumulator(p=2)
    whole.update(make_result(norms, iterations), x, correct)
    parts = [RobustnessAccumulator(p=2) for _ in range(3)]
    for part, index in zip(parts, torch.arange(40).split([13, 20, 7]), strict=True):
        part.update(make_result(norms[index], iterations[index]), x[index], correct[index])
    merged = parts[2].merge(parts[0]).merge(parts[1])
    a, b = whole.compute(), merged.compute()
    assert a.n_failures == b.n_failures == int((~torch.isfinite(norms) & correct).sum())
    assert a.rho_adv == pytest.approx(b.rho_adv)
    assert a.median_norm == pytest.approx(b.median_norm)
    assert sum(a.iteration_histogram) == sum(b.iteration_histogram) == int(correct.sum())
    keep = correct & torch.isfinite(norms)
    assert a.rho_adv == pytest.approx(float((norms[keep] / x[keep].norm(dim=1)).mean()), rel=1e-6)
    assert a.success_rate == pytest.approx(float(keep.sum()) / float(correct.sum()))


def test_mismatch_warning_is_said_only_at_chance():
    from boundaryscope.metrics import chance_check, mismatch_warning

    labels = torch.tensor([0, 0, 0, 1, 2, 2])  # chance: the largest class, 3 of 6
    assert chance_check(0.5, labels) == {"chance_accuracy": 0.5, "at_chance": True}
    assert mismatch_warning(0.53, labels, "npz:x.npz") is None  # above chance + 2 points
    message = mismatch_warning(0.0, labels, "folder:imgs")
    assert message is not None
    assert "0.0% on 6 images of folder:imgs is at chance" in message
    assert "50.0%" in message and "class order" in message and "--mean" in message
    assert mismatch_warning(0.0, labels[:0], "npz:x.npz") is None  # no image: nothing to say
    one_class = torch.zeros(8, dtype=torch.long)
    assert mismatch_warning(1.0, one_class, "npz:x.npz") is None  # agrees with its one class
    assert mismatch_warning(0.0, one_class, "npz:x.npz") is not None
