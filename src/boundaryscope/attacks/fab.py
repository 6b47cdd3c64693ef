r"""FAB-T: the targeted Fast Adaptive Boundary attack (Croce & Hein, ICML 2020).

AutoAttack's third attack, written from the paper (docs/algorithms.md §11). For a target
class ``t`` let ``f(x) = z_t(x) − z_y(x)`` (positive beyond the boundary) and ``w = ∇f``. At
the current point ``x^{(i)}`` the boundary is linearised to the hyperplane
``π = {z : f(x^{(i)}) + <w, z − x^{(i)}> = 0}``, and the minimal-l_p steps onto ``π`` inside
the box are taken from the current point *and* from the original image ``x``:

.. math::
    δ^{(i)} = \mathrm{proj}_p(x^{(i)}, π, C) - x^{(i)},\qquad
    δ_{orig} = \mathrm{proj}_p(x, π, C) - x,\\
    α = \min\Big(\frac{‖δ^{(i)}‖_p}{‖δ^{(i)}‖_p + ‖δ_{orig}‖_p}, α_{max}\Big),\qquad
    x^{(i+1)} = P_C\big((1-α)(x^{(i)} + η δ^{(i)}) + α (x + η δ_{orig})\big),

``η = 1.05`` (extrapolation), ``α_max = 0.1``. Once ``x^{(i+1)}`` is adversarial it is kept
if it is the smallest so far and the iterate steps back towards ``x``:
``x^{(i+1)} ← (1 − β) x + β x^{(i+1)}``, ``β = 0.9``. The projections are exact
(`boundaryscope.norms.project_hyperplane_box`). DeepFool-like, with the bias towards ``x``
that makes it a minimal-norm attack.

As in AutoAttack, FAB-T attacks the `targets` most likely other classes in turn (all with
`steps` iterations) and keeps the smallest adversarial point. With ``eps`` set it is a
budgeted attack: a point counts only if its norm is at most ``eps`` (otherwise the sample
is returned unperturbed, a failure); without, it returns the smallest point found.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from boundaryscope._random import image_generators
from boundaryscope.attacks.apgd import _random_start, _rows
from boundaryscope.attacks.base import (
    Attack,
    RawAttack,
    check_budget,
    is_adversarial,
    predicted_labels,
    register_attack,
)
from boundaryscope.classifier import Classifier
from boundaryscope.norms import lp_norm, parse_p, project_hyperplane_box

__all__ = ["FABT"]

ETA = 1.05
ALPHA_MAX = 0.1
BETA = 0.9


@register_attack("fab-t")
class FABT(Attack):
    """Targeted FAB on the most likely other classes (AutoAttack's FAB-T).

    Args:
        eps: Budget: a point counts only if ``‖δ‖_p <= eps`` (``None``: minimal norm).
        p: ``inf`` or 2.
        steps: Iterations per target and restart (AutoAttack: 100).
        targets: Other classes attacked, most likely first (AutoAttack: 9).
        restarts: Starts per target; the first is ``x`` itself, later ones random points
            of the ball of half the best norm so far (or of `eps`).
        seed: Seed of the random restarts (one stream per image).
        batch_size: Samples per pass.
    """

    def __init__(
        self,
        *,
        eps: float | None = None,
        p: float | str = math.inf,
        steps: int = 100,
        targets: int = 9,
        restarts: int = 1,
        seed: int = 0,
        batch_size: int = 256,
    ) -> None:
        self.p = parse_p(p)
        if self.p not in (2.0, math.inf):
            raise ValueError(f"FABT supports p = 2 or inf; got p={p!r}.")
        eps = check_budget(eps, "FABT")
        if min(steps, targets, restarts, batch_size) < 1:
            raise ValueError(
                "FABT needs steps, targets, restarts and batch_size >= 1; got "
                f"{steps}, {targets}, {restarts}, {batch_size}."
            )
        self.eps = None if eps is None else float(eps)
        self.steps = int(steps)
        self.targets = int(targets)
        self.restarts = int(restarts)
        self.seed = int(seed)
        self.batch_size = int(batch_size)

    def _run(
        self, clf: Classifier, x: Tensor, reference: Tensor, target: Tensor | None
    ) -> RawAttack:
        best = x.clone()
        best_norm = torch.full((x.shape[0],), math.inf, dtype=torch.float64, device=x.device)
        iterations = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        for chunk in torch.arange(x.shape[0], device=x.device).split(self.batch_size):
            if target is not None:
                ranked = target[chunk, None]
            else:
                scores = clf.forward_scores(x[chunk])
                others = scores.scatter(1, reference[chunk, None], -math.inf)
                count = min(self.targets, clf.num_classes - 1)
                ranked = others.argsort(dim=1, descending=True)[:, :count]
            generators = image_generators(x[chunk], self.seed)
            for rank in range(ranked.shape[1]):
                for restart in range(self.restarts):
                    point, norm, used = self._one_run(
                        clf, x[chunk], reference[chunk], ranked[:, rank], target is not None,
                        best_norm[chunk], generators if restart else None,
                    )  # fmt: skip
                    better = norm < best_norm[chunk]
                    best[chunk[better]] = point[better]
                    best_norm[chunk[better]] = norm[better]
                    iterations[chunk] += used
        if self.eps is not None:  # budgeted: a point beyond eps does not count
            over = best_norm > self.eps * (1 + 1e-6)
            best = torch.where(_rows(over, x), x, best)
        return RawAttack(best, iterations, {"norm_found": best_norm.float()})

    def _one_run(
        self,
        clf: Classifier,
        x: Tensor,
        reference: Tensor,
        target: Tensor,
        targeted: bool,
        best_norm: Tensor,
        generators: list[torch.Generator] | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One FAB run towards `target`; the smallest adversarial points and their norms."""
        current = x.clone()
        if generators is not None:  # a random restart inside half the best radius
            radius = torch.where(
                torch.isfinite(best_norm), best_norm / 2, torch.full_like(best_norm, 1.0)
            )
            if self.eps is not None:
                radius = torch.minimum(radius, torch.full_like(radius, self.eps))
            unit = _random_start(generators, 1.0, self.p, x)
            current = clf.clip(x + unit * _rows(radius.to(x.dtype), x))
        found = torch.full((x.shape[0],), math.inf, dtype=torch.float64, device=x.device)
        point = x.clone()
        used = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        judge = target if targeted else None
        lo, hi = clf.bounds
        for _ in range(self.steps):
            captured: list[Tensor] = []

            def gap(scores: Tensor, captured: list[Tensor] = captured) -> Tensor:
                captured.append(scores.detach())
                return (
                    scores.gather(1, target[:, None])[:, 0]
                    - scores.gather(1, reference[:, None])[:, 0]
                )

            f, w = clf.value_and_gradient(current, gap)
            used += 1
            adversarial = is_adversarial(predicted_labels(captured[0]), reference, judge)
            norm = lp_norm(current - x, self.p).double()
            better = adversarial & (norm < found)
            point = torch.where(_rows(better, x), current, point)
            found = torch.where(better, norm, found)
            finite = torch.isfinite(f) & torch.isfinite(w).flatten(1).all(dim=1)
            w = torch.where(_rows(finite, w), w, torch.zeros_like(w))
            f = torch.where(finite, f, torch.zeros_like(f))
            step_here = project_hyperplane_box(w, -f, self.p, lo - current, hi - current)
            shift = -f - (w * (x - current)).flatten(1).sum(dim=1)
            step_orig = project_hyperplane_box(w, shift, self.p, lo - x, hi - x)
            size_here = lp_norm(step_here, self.p)
            size_orig = lp_norm(step_orig, self.p)
            alpha = (size_here / (size_here + size_orig).clamp_min(1e-12)).clamp(max=ALPHA_MAX)
            alpha = _rows(alpha, x)
            moved = (1 - alpha) * (current + ETA * step_here) + alpha * (x + ETA * step_orig)
            moved = clf.clip(moved)
            # Where the iterate was adversarial, step back towards x before moving on.
            current = torch.where(
                _rows(adversarial, x), clf.clip((1 - BETA) * x + BETA * current), moved
            )
        # The last iterate has not been judged yet.
        labels = clf.predict_unchecked(current, self.batch_size, invalid=-1)
        norm = lp_norm(current - x, self.p).double()
        better = is_adversarial(labels, reference, judge) & (norm < found)
        point = torch.where(_rows(better, x), current, point)
        found = torch.where(better, norm, found)
        return point, found, used
