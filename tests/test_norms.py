from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from boundaryscope.norms import (
    dual_exponent,
    linear_step,
    lp_norm,
    parse_p,
    project_lp_ball,
    steepest_direction,
)

P_VALUES = [1.0, 1.5, 2.0, 3.0, math.inf]


@pytest.mark.parametrize("p", P_VALUES)
def test_lp_norm_matches_numpy(p):
    x = torch.randn(7, 3, 4, dtype=torch.float64)
    expected = np.linalg.norm(x.flatten(1).numpy(), ord=p, axis=1)
    np.testing.assert_allclose(lp_norm(x, p).numpy(), expected, rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(P_VALUES), st.integers(0, 10_000))
def test_steepest_direction_is_unit_and_attains_the_dual_norm(p, seed):
    w = torch.randn(3, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    u = steepest_direction(w, p)
    np.testing.assert_allclose(lp_norm(u, p).numpy(), 1.0, rtol=1e-9)
    np.testing.assert_allclose(
        (u * w).sum(1).numpy(), lp_norm(w, dual_exponent(p)).numpy(), rtol=1e-9
    )


def test_linear_step_length_and_hyperplane():
    w = torch.randn(4, 6, dtype=torch.float64)
    distance = torch.rand(4, dtype=torch.float64)
    for p in P_VALUES:
        r = linear_step(distance, w, p)
        np.testing.assert_allclose(lp_norm(r, p).numpy(), distance.numpy(), rtol=1e-9)


def test_dual_exponents_and_parse():
    assert dual_exponent(2) == 2
    assert dual_exponent(1) == math.inf
    assert dual_exponent(math.inf) == 1
    assert dual_exponent(3) == pytest.approx(1.5)
    assert parse_p("inf") == math.inf
    with pytest.raises(ValueError, match="p must be"):
        parse_p(0.5)
    with pytest.raises(ValueError, match="p must be"):
        parse_p("two")


def test_projection_on_balls():
    v = torch.randn(5, 8, dtype=torch.float64) * 3
    inf_proj = project_lp_ball(v, 0.5, math.inf)
    torch.testing.assert_close(inf_proj, v.clamp(-0.5, 0.5))
    l2_proj = project_lp_ball(v, 1.0, 2)
    np.testing.assert_allclose(lp_norm(l2_proj, 2).numpy(), np.minimum(1.0, lp_norm(v, 2).numpy()))
    small = v * 1e-3
    torch.testing.assert_close(project_lp_ball(small, 10.0, 2), small)
