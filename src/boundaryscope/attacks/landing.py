"""Landing on the decision boundary: the last few passes of a minimal-norm attack.

docs/algorithms.md §1.3. A minimal-perturbation attack ends with a point past the
boundary; two cheap finishing moves bring it back to the boundary and then closer to the
clean input:

- `land_on_boundary`: along the ray ``s ↦ clip(x + s·(a − x))``, the smallest adversarial
  scale by bracketed *regula falsi* on the adversarial margin (Illinois variant), a
  handful of forward passes where bisection needs ten for 0.1%;
- `tangent_polish`: at a boundary point ``z``, one gradient of the binding score
  difference gives the tangent hyperplane; the clean ``x`` is projected onto it inside
  the box (FAB's projection, `boundaryscope.norms.project_hyperplane_box`), and the new
  direction is searched for the boundary no farther than ``‖z − x‖``. At a minimal
  point, ``z − x`` is normal to the boundary (thesis §3.2, the geometric reading of
  eq. 3.4); the polish restores that condition where the path of linearisations left it.

Both only ever return points that were tested adversarial, never farther from ``x``
than the point they received.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from boundaryscope.attacks.base import is_adversarial, predicted_labels
from boundaryscope.classifier import Classifier
from boundaryscope.norms import lp_norm, project_hyperplane_box

__all__ = ["Side", "adversarial_margin", "land_on_boundary", "rival_class", "tangent_polish"]

_TINY = 1e-12
# Each regula-falsi guess aims this fraction of the way from the estimated root to the
# adversarial end, so that the adversarial end keeps moving where the margin is convex.
_AIM = 1e-3
# A guess is kept only with a margin of at least this fraction of the clean one: nearer to
# the boundary, the float rounding of another batch composition (convolutions choose their
# algorithm by batch size) can flip its label when the point is judged again.
_SAFETY = 1e-4
# A point counts as landed once its margin is within this fraction of the clean margin.
_LANDED = 1e-3


def _strongest_other(scores: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """``(values, classes)`` of the highest score other than class `keep`, per row."""
    values, classes = scores.scatter(1, keep[:, None], -math.inf).max(dim=1)
    return values, classes


def adversarial_margin(scores: Tensor, reference: Tensor, target: Tensor | None) -> Tensor:
    """``(N,)`` signed margin: ``>= 0`` on the adversarial side of the binding boundary.

    Untargeted: ``max_{k ≠ reference} f_k − f_reference``; targeted:
    ``f_target − max_{k ≠ target} f_k``. NaN where the scores are not finite.
    """
    keep = reference if target is None else target
    others, _ = _strongest_other(scores, keep)
    own = scores.gather(1, keep[:, None])[:, 0]
    margin = others - own if target is None else own - others
    finite = torch.isfinite(scores).all(dim=1)
    return margin.where(finite, torch.full_like(margin, math.nan))


def rival_class(scores: Tensor, reference: Tensor, target: Tensor | None) -> Tensor:
    """``(N,)`` the strongest class other than `reference` (untargeted) or `target`.

    The margin of `adversarial_margin` is ``f_rival − f_reference`` untargeted and
    ``f_target − f_rival`` targeted.
    """
    return _strongest_other(scores, reference if target is None else target)[1]


@dataclass
class Side:
    """Points on the adversarial side and what one forward pass said there.

    Attributes:
        points: ``(N, *shape)`` adversarial points.
        margin: ``(N,)`` `adversarial_margin` at `points` (``>= 0``).
        rival: ``(N,)`` `rival_class` at `points`.
    """

    points: Tensor
    margin: Tensor
    rival: Tensor

    @classmethod
    def measured(
        cls, points: Tensor, scores: Tensor, reference: Tensor, target: Tensor | None
    ) -> Side:
        """The side of `points` from their `scores`."""
        margin = adversarial_margin(scores, reference, target).to(points.dtype)
        return cls(points, margin, rival_class(scores, reference, target))


def land_on_boundary(
    clf: Classifier,
    x: Tensor,
    found: Side,
    reference: Tensor,
    target: Tensor | None,
    evaluations: int,
    margin_clean: Tensor,
) -> Side:
    """The smallest adversarial scale along ``clip(x + s·(a − x))``, ``s ∈ [0, 1]``.

    Regula falsi on the margin ``m(s)`` (`adversarial_margin`) between ``s = 0``
    (``m < 0``) and ``s = 1`` (``m >= 0``), with the Illinois halving of a stale end: each
    guess ``s = hi − g_hi (hi − lo) / (g_hi − g_lo)`` of the root of ``g = m − 10⁻⁴ |m(0)|``
    costs one forward pass, and only adversarial guesses with ``g >= 0`` move the upper
    end: a landed point keeps a margin of ``10⁻⁴ |m(0)|``, as closer to the boundary float
    rounding may flip its label when it is judged again. On a model that is affine along
    the ray, the first guess lands there. A non-finite margin falls back to the bracket's
    midpoint.

    Args:
        clf: The classifier.
        x: ``(N, *shape)`` clean inputs.
        found: Adversarial points ``a`` (``(N, *shape)``) with their margins and rivals.
        reference: ``(N,)`` labels to move away from.
        target: ``(N,)`` targets, or ``None``.
        evaluations: Forward passes (``0`` returns `found` unchanged).
        margin_clean: ``(N,)`` margin at `x` (``< 0``).

    Returns:
        The adversarial end of each bracket.
    """
    shape = (-1, *([1] * (x.ndim - 1)))
    delta = found.points - x
    lo = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    hi = torch.ones_like(lo)
    # The root sought is that of g = m - safe: a landed point keeps a margin of `safe`.
    clean = margin_clean.to(x.dtype)
    safe = _SAFETY * clean.abs()
    g_lo, g_hi = clean - safe, found.margin.clone() - safe
    m_hi, rival = found.margin.clone(), found.rival.clone()
    moved_hi = torch.zeros_like(lo, dtype=torch.bool)
    moved_lo = torch.zeros_like(moved_hi)
    for _ in range(evaluations):
        # Landed: the margin left is a small fraction of the clean one (~ that fraction of
        # the distance where the margin is affine along the ray).
        active = torch.nonzero(g_hi > _LANDED * clean.abs()).flatten()
        if not active.numel():
            break
        a_lo, a_hi, a_glo, a_ghi = lo[active], hi[active], g_lo[active], g_hi[active]
        root = a_hi - a_ghi * (a_hi - a_lo) / (a_ghi - a_glo).clamp_min(_TINY)
        guess = root + _AIM * (a_hi - root)
        # After a miss the next guess goes at least halfway: regula falsi alone creeps up
        # on a margin that is convex along the ray (a far first step on a curved boundary).
        middle = 0.5 * (a_lo + a_hi)
        guess = torch.where(moved_lo[active], torch.maximum(guess, middle), guess)
        guess = torch.where(torch.isfinite(guess), guess, middle)
        guess = torch.minimum(torch.maximum(guess, a_lo), a_hi)
        scores = clf.forward_scores(clf.clip(x[active] + guess.view(shape) * delta[active]))
        ref, tgt = reference[active], None if target is None else target[active]
        margin = adversarial_margin(scores, ref, tgt).to(x.dtype)
        g = margin - safe[active]
        ok = is_adversarial(predicted_labels(scores), ref, tgt) & (g >= 0)
        g = torch.where(torch.isfinite(g), g, torch.zeros_like(g))
        # Illinois: an end that stays put twice in a row has its value halved.
        a_glo = torch.where(ok & moved_hi[active], 0.5 * a_glo, a_glo)
        a_ghi = torch.where(~ok & moved_lo[active], 0.5 * a_ghi, a_ghi)
        hi[active] = torch.where(ok, guess, a_hi)
        g_hi[active] = torch.where(ok, g, a_ghi)
        m_hi[active] = torch.where(ok, margin, m_hi[active])
        lo[active] = torch.where(ok, a_lo, guess)
        g_lo[active] = torch.where(ok, a_glo, g)
        rival[active] = torch.where(ok, rival_class(scores, ref, tgt), rival[active])
        moved_hi[active], moved_lo[active] = ok, ~ok
    return Side(clf.clip(x + hi.view(shape) * delta), m_hi, rival)


def tangent_polish(
    clf: Classifier,
    x: Tensor,
    boundary: Side,
    reference: Tensor,
    target: Tensor | None,
    p: float,
    evaluations: int,
    margin_clean: Tensor,
) -> Side:
    """One polish round: ``x`` projected on the tangent hyperplane at `boundary`, then landed.

    With ``w = ∇m(z)`` the gradient of the margin (the score difference of the rival and
    the reference, or of the target and the rival) at ``z`` = ``boundary.points``, the
    linearised boundary is ``m(z) + <w, z' − z> = 0``; its minimal-``l_p`` point from
    ``x`` inside the box is ``x + δ`` with ``<w, δ> = <w, z − x> − m(z)``. Along ``δ``, the
    scale ``s = ‖z − x‖_p / ‖δ‖_p`` is as far as ``z``: where that point is adversarial,
    `land_on_boundary` brings it back to the boundary, and the result replaces ``z`` when
    it is nearer to ``x``. Costs one forward-backward pass with one cotangent and
    ``1 + evaluations`` forward passes.

    Args:
        clf: The classifier.
        x: ``(N, *shape)`` clean inputs.
        boundary: Adversarial points near the boundary, with their margins and rivals.
        reference: ``(N,)`` labels to move away from.
        target: ``(N,)`` targets, or ``None``.
        p: 2 or inf.
        evaluations: Landing forward passes.
        margin_clean: ``(N,)`` margin at `x`.

    Returns:
        Adversarial points, each no farther from ``x`` than `boundary`'s.
    """
    shape = (-1, *([1] * (x.ndim - 1)))
    z = boundary.points
    high, low = (boundary.rival, reference) if target is None else (target, boundary.rival)
    _, margin, grad = clf.score_gradients(z, low, high[:, None])
    w = grad[:, 0]
    offset = (w * (z - x)).flatten(1).sum(dim=1) - margin[:, 0]
    lo, hi = clf.bounds
    delta = project_hyperplane_box(w, offset, p, lo - x, hi - x)
    radius = lp_norm(z - x, p)
    scale = radius / lp_norm(delta, p).clamp_min(_TINY)
    candidate = clf.clip(x + scale.view(shape) * delta)
    scores = clf.forward_scores(candidate)
    usable = torch.isfinite(w.flatten(1)).all(dim=1) & torch.isfinite(scale)
    usable &= is_adversarial(predicted_labels(scores), reference, target)
    idx = torch.nonzero(usable).flatten()
    if not idx.numel():
        return boundary
    tgt = None if target is None else target[idx]
    landed = land_on_boundary(
        clf,
        x[idx],
        Side.measured(candidate[idx], scores[idx], reference[idx], tgt),
        reference[idx],
        tgt,
        evaluations,
        margin_clean[idx],
    )
    nearer = lp_norm(landed.points - x[idx], p) < radius[idx]
    polished = Side(boundary.points.clone(), boundary.margin.clone(), boundary.rival.clone())
    polished.points[idx[nearer]] = landed.points[nearer]
    polished.margin[idx[nearer]] = landed.margin[nearer]
    polished.rival[idx[nearer]] = landed.rival[nearer]
    return polished
