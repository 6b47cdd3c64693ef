r"""Square Attack: score-based random search (Andriushchenko et al., ECCV 2020).

AutoAttack's fourth attack and our check against gradient masking: it uses the model's
scores only, never a gradient (docs/algorithms.md §11). It minimises the margin
``L(x) = z_y(x) − max_{j≠y} z_j(x)`` (targeted: ``max_{j≠t} z_j − z_t``) over the ε-ball
by random updates restricted to a square window, accepted only when they lower the loss:

- **l∞** (§3.1): start from vertical stripes ``x + ε·s`` with one random sign per column and
  channel; each step picks a window of side ``h`` at a random position and sets it to
  ``±ε`` with one random sign per channel — the vertices of the ball, where the extremal
  solutions of a linear problem lie.
- **l2** (§3.2, simplified here): start from ``ε``-scaled random stripes; each step picks
  two windows, clears both and puts all the mass the rest of the perturbation leaves in
  the ball into the first, with a fresh random sign per channel (so ``‖δ‖₂ = ε`` before
  clipping to the box). The paper shapes each window's mass as concentric squares; this
  version keeps the mass-moving update and the schedule, and says so.

The window's area is a fraction ``p_i`` of the image, ``p_0 = p_init`` (0.8, AutoAttack's
default) halved at the queries 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 (rescaled to
`queries`/10,000). Every image draws from its own random stream, so a result does not
depend on the batch; a sample stops once it is adversarial.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from boundaryscope._random import image_generators
from boundaryscope.attacks.apgd import _rows
from boundaryscope.attacks.base import (
    Attack,
    RawAttack,
    check_budget,
    is_adversarial,
    predicted_labels,
    register_attack,
)
from boundaryscope.classifier import Classifier
from boundaryscope.norms import lp_norm, parse_p

__all__ = ["Square", "square_fraction"]

_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def _as_images(x: Tensor) -> Tensor:
    """``x`` viewed as images ``(N, C, H, W)``.

    ``(N, H, W)`` gets one channel; any other shape becomes one row of pixels
    ``(N, 1, 1, d)``, whose windows are runs of pixels.
    """
    if x.ndim == 4:
        return x
    if x.ndim == 3:
        return x.unsqueeze(1)
    return x.reshape(x.shape[0], 1, 1, -1)


def square_fraction(query: int, queries: int, p_init: float) -> float:
    """The window's share of the image at `query` (halved on the paper's schedule)."""
    scaled = int(query / queries * 10_000) if queries else query
    return p_init / 2 ** sum(scaled > mark for mark in _HALVINGS)


@register_attack("square")
class Square(Attack):
    """The Square attack, l∞ or l2 (score-based; no gradients).

    Args:
        eps: Radius of the ball (input units);
            ``None`` (default): 0.3 of the box width (0.3 on [0, 1] images).
        p: ``inf`` or 2.
        queries: Model queries per image (AutoAttack: 5,000).
        p_init: Initial window share of the image (AutoAttack: 0.8).
        seed: Seed of the per-image random streams.
        batch_size: Samples per pass.
    """

    default_budget = 0.3  # eps=None: this fraction of the box width

    def __init__(
        self,
        *,
        eps: float | None = None,
        p: float | str = math.inf,
        queries: int = 5000,
        p_init: float = 0.8,
        seed: int = 0,
        batch_size: int = 256,
    ) -> None:
        self.p = parse_p(p)
        if self.p not in (2.0, math.inf):
            raise ValueError(f"Square supports p = 2 or inf; got p={p!r}.")
        self.eps = check_budget(eps, "Square")
        if queries < 1 or not 0 < p_init <= 1:
            raise ValueError(
                f"Square needs queries >= 1 and 0 < p_init <= 1; got {queries!r}, {p_init!r}."
            )
        self.queries = int(queries)
        self.p_init = float(p_init)
        self.seed = int(seed)
        self.batch_size = int(batch_size)

    def _run(
        self, clf: Classifier, x: Tensor, reference: Tensor, target: Tensor | None
    ) -> RawAttack:
        shape = x.shape
        images = _as_images(x)
        adversarial = images.clone()
        iterations = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        for chunk in torch.arange(x.shape[0], device=x.device).split(self.batch_size):
            tgt = None if target is None else target[chunk]
            adversarial[chunk], iterations[chunk] = self._attack_chunk(
                clf, images[chunk], reference[chunk], tgt, shape[1:]
            )
        return RawAttack(adversarial.reshape(shape), iterations)

    def _margin(
        self,
        clf: Classifier,
        points: Tensor,
        reference: Tensor,
        target: Tensor | None,
        shape: tuple[int, ...],
    ) -> tuple[Tensor, Tensor]:
        """Margin loss ``(N,)`` (negative = adversarial) and the labels, in one pass."""
        scores = clf.forward_scores(points.reshape(-1, *shape))
        labels = predicted_labels(scores)
        if target is None:
            true = scores.gather(1, reference[:, None])[:, 0]
            other = scores.scatter(1, reference[:, None], -math.inf).amax(dim=1)
            margin = true - other
        else:
            wanted = scores.gather(1, target[:, None])[:, 0]
            other = scores.scatter(1, target[:, None], -math.inf).amax(dim=1)
            margin = other - wanted
        margin = torch.where(torch.isfinite(margin), margin, torch.full_like(margin, math.inf))
        return margin, labels

    def _attack_chunk(
        self,
        clf: Classifier,
        x: Tensor,
        reference: Tensor,
        target: Tensor | None,
        shape: tuple[int, ...],
    ) -> tuple[Tensor, Tensor]:
        n, c, h, w = x.shape
        generators = image_generators(x, self.seed)
        lo, hi = clf.bounds
        delta = self._start(generators, x)
        current = (x + delta).clamp(lo, hi)
        loss, labels = self._margin(clf, current, reference, target, shape)
        done = is_adversarial(labels, reference, target)
        used = torch.ones(n, dtype=torch.int64, device=x.device)
        for query in range(1, self.queries):
            active = torch.nonzero(~done).flatten()
            if not active.numel():
                break
            side = self._side(query, h, w, c)
            proposal = current[active].clone()
            for row, index in enumerate(active.tolist()):
                proposal[row] = self._propose(
                    generators[index], x[index], current[index], side, lo, hi
                )
            new_loss, new_labels = self._margin(
                clf, proposal, reference[active],
                None if target is None else target[active], shape,
            )  # fmt: skip
            better = new_loss < loss[active]
            accepted = active[better]
            current[accepted] = proposal[better]
            loss[accepted] = new_loss[better]
            success = (
                is_adversarial(
                    new_labels, reference[active], None if target is None else target[active]
                )
                & better
            )
            done[active[success]] = True
            used[active] += 1
        return current, used

    def _side(self, query: int, h: int, w: int, c: int) -> int:
        """Window side ``round(sqrt(p_i · h · w))``, at least 1 and at most the image."""
        share = square_fraction(query, self.queries, self.p_init)
        return max(1, min(h, w, round(math.sqrt(share * h * w))))

    def _start(self, generators: list[torch.Generator], x: Tensor) -> Tensor:
        """Vertical stripes: one random sign per column and channel (l2: scaled to ``ε``)."""
        n, c, h, w = x.shape
        signs = torch.stack(
            [torch.randint(0, 2, (c, 1, w), generator=g) * 2 - 1 for g in generators]
        ).to(x)
        stripes = signs.expand(n, c, h, w).clone()
        if math.isinf(self.p):
            return self.budget * stripes
        return self.budget * stripes / _rows(lp_norm(stripes, 2).clamp_min(1e-12), stripes)

    def _propose(
        self,
        g: torch.Generator,
        x: Tensor,
        current: Tensor,
        side: int,
        lo: float,
        hi: float,
    ) -> Tensor:
        """One random window update of one image ``(C, H, W)``."""
        c, h, w = x.shape
        delta = current - x
        r, s = (int(v) for v in torch.randint(0, max(h - side, 0) + 1, (2,), generator=g))
        s = min(s, max(w - side, 0))
        window = (slice(None), slice(r, r + side), slice(s, s + side))
        signs = (torch.randint(0, 2, (c, 1, 1), generator=g) * 2 - 1).to(x)
        if math.isinf(self.p):
            delta[window] = self.budget * signs.expand(c, side, side)
        else:
            r2, s2 = (int(v) for v in torch.randint(0, max(h - side, 0) + 1, (2,), generator=g))
            s2 = min(s2, max(w - side, 0))
            second = (slice(None), slice(r2, r2 + side), slice(s2, s2 + side))
            delta[window] = 0.0
            delta[second] = 0.0
            room = math.sqrt(max(self.budget**2 - float(delta.pow(2).sum()), 0.0))
            pattern = signs.expand(c, side, side)
            delta[window] = pattern * room / float(pattern.norm().clamp_min(1e-12))
        return (x + delta).clamp(lo, hi)
