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


def _hyperplane_box_reference(w, b, p, lower, upper):
    """scipy's answer to min ‖δ‖_p s.t. <w, δ> = b, lower <= δ <= upper (one sample)."""
    from scipy.optimize import linprog, minimize

    d = w.size
    if p == 2:
        result = minimize(
            lambda z: z @ z, np.zeros(d), jac=lambda z: 2 * z, method="SLSQP",
            bounds=list(zip(lower, upper, strict=True)),
            constraints=[{"type": "eq", "fun": lambda z: w @ z - b, "jac": lambda z: w}],
            options={"ftol": 1e-14, "maxiter": 500},
        )  # fmt: skip
        assert result.success, result.message  # the reference's own status first
        return result.x
    # l∞: variables (δ, t); minimise t with −t <= δ_i <= t.
    cost = np.r_[np.zeros(d), 1.0]
    rows = np.block([[np.eye(d), -np.ones((d, 1))], [-np.eye(d), -np.ones((d, 1))]])
    result = linprog(
        cost, A_ub=rows, b_ub=np.zeros(2 * d), A_eq=np.r_[w, 0.0][None], b_eq=[b],
        bounds=[*zip(lower, upper, strict=True), (0, None)], method="highs",
    )  # fmt: skip
    assert result.status == 0, result.message
    return result.x[:d]


@pytest.mark.parametrize("p", [2.0, math.inf])
def test_hyperplane_box_projection_matches_scipy_where_reachable(p):
    from boundaryscope.norms import project_hyperplane_box

    generator = torch.Generator().manual_seed(0)
    n, d = 40, 9
    w = torch.randn(n, d, generator=generator, dtype=torch.float64)
    w[::5, :3] = 0.0  # coordinates the normal ignores
    b = torch.randn(n, generator=generator, dtype=torch.float64)
    lower = -torch.rand(n, d, generator=generator, dtype=torch.float64)
    upper = torch.rand(n, d, generator=generator, dtype=torch.float64)
    lower[::3] = 0.0  # a pixel on the box's lower face, as on MNIST
    got = project_hyperplane_box(w, b, p, lower, upper)
    assert bool((got >= lower).all() and (got <= upper).all())
    # The most <w, δ> can reach in the direction of b inside the box.
    reach = torch.where(w * b.sign()[:, None] > 0, upper, lower) * w * b.sign()[:, None]
    reachable = reach.sum(1) >= b.abs() * (1 + 1e-9)
    assert 10 < int(reachable.sum()) < n  # both kinds are exercised
    for i in range(n):
        if reachable[i]:
            expected = _hyperplane_box_reference(
                w[i].numpy(), float(b[i]), p, lower[i].numpy(), upper[i].numpy()
            )
            assert float(w[i] @ got[i]) == pytest.approx(float(b[i]), abs=1e-9)
            assert float(lp_norm(got[i : i + 1], p)) == pytest.approx(
                float(np.linalg.norm(expected, ord=p)), rel=1e-6, abs=1e-9
            )
        else:  # out of reach: the box corner that comes closest
            corner = torch.where(w[i] * b[i].sign() > 0, upper[i], lower[i])
            corner = torch.where(w[i] == 0, torch.zeros_like(corner), corner)
            torch.testing.assert_close(got[i], corner)


def test_hyperplane_box_projection_is_the_same_in_blocks_under_a_small_budget():
    from boundaryscope import memory
    from boundaryscope.norms import project_hyperplane_box

    generator = torch.Generator().manual_seed(1)
    w = torch.randn(30, 1, 8, 8, generator=generator)
    x = torch.rand(30, 1, 8, 8, generator=generator)
    b = torch.randn(30, generator=generator)
    whole = project_hyperplane_box(w, b, 2.0, -x, 1 - x)
    with memory.budget_limit(6 * 8 * 64 * 4):  # four rows per block
        blocks = project_hyperplane_box(w, b, 2.0, -x, 1 - x)
    assert torch.equal(whole, blocks)
