"""Random baselines: ±ε noise, a random direction, the minimal step along a random line.

Bernoulli ±ε noise is Balda et al. (2018) §V's baseline; the line search measures the random-noise
regime of thesis §5.3 (``m = 1``).

They calibrate the fooling-ratio curves: a classifier that random noise of the same
budget fools as often as an attack does has no particular adversarial weakness there.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from boundaryscope._random import draw_per_image, image_generators
from boundaryscope.attacks.base import (
    Attack,
    RawAttack,
    check_budget,
    first_change,
    register_attack,
)
from boundaryscope.classifier import Classifier
from boundaryscope.norms import parse_p, steepest_direction

__all__ = ["BernoulliNoise", "RandomDirection", "RandomLineSearch", "line_search"]


@register_attack("random")
class BernoulliNoise(Attack):
    """i.i.d. entries ``±ε`` with probability 1/2 each (``||η||_∞ = ε``), clipped to the box.

    Args:
        eps: Magnitude of every entry.
        seed: Seed of the noise; the same seed and image give the same noise (per-image
            streams, independent of batching).
    """

    def __init__(self, *, eps: float = 0.1, seed: int = 0) -> None:
        self.eps = check_budget(eps, "BernoulliNoise", optional=False)
        self.seed = seed
        self.p = math.inf

    def _run(
        self, clf: Classifier, x: Tensor, reference: Tensor, target: Tensor | None
    ) -> RawAttack:
        signs = draw_per_image(
            image_generators(x, self.seed),
            lambda g: torch.randint(0, 2, x.shape[1:], generator=g),
            x,
        )
        signs = signs * 2 - 1
        ones = torch.ones(x.shape[0], dtype=torch.int64, device=x.device)
        return RawAttack(clf.clip(x + self.eps * signs), ones)


@register_attack("random-direction")
class RandomDirection(Attack):
    """A uniformly random direction scaled to l_p norm ε (Gaussian, then l_p-normalised).

    For ``p = 2`` the direction is uniform on the sphere; for other ``p`` it is the
    normalised Gaussian, a common convention.

    Args:
        eps: Norm of the perturbation.
        p: Norm.
        seed: Seed of the direction.
    """

    def __init__(self, *, eps: float = 1.0, p: float | str = 2, seed: int = 0) -> None:
        self.eps = check_budget(eps, "RandomDirection", optional=False)
        self.p = parse_p(p)
        self.seed = seed

    def _run(
        self, clf: Classifier, x: Tensor, reference: Tensor, target: Tensor | None
    ) -> RawAttack:
        gaussian = draw_per_image(
            image_generators(x, self.seed),
            lambda g: torch.randn(x.shape[1:], generator=g, dtype=x.dtype),
            x,
        )
        flat = gaussian.flatten(1)
        norms = torch.linalg.vector_norm(flat, ord=self.p, dim=1).clamp_min(1e-12)
        direction = (flat / norms[:, None]).view_as(x)
        ones = torch.ones(x.shape[0], dtype=torch.int64, device=x.device)
        return RawAttack(clf.clip(x + self.eps * direction), ones)


def line_search(
    clf: Classifier,
    x: Tensor,
    direction: Tensor,
    reference: Tensor,
    *,
    t_start: float = 1e-3,
    t_max: float = 1e4,
    growth: float = 2.0,
    bisection_steps: int = 40,
) -> Tensor:
    """Smallest ``|t|`` with ``k̂(clip(x + t v)) ≠ reference``, along ``±v``, per sample.

    Scans ``t = t_start · growth^k`` (up to `t_max`) in both directions, one batched
    forward pass per grid point and sign; the first grid interval where the label changes
    is then bisected. On an affine classifier the region of a class is convex, so the
    crossing found is exact (up to ``growth^-bisection_steps`` relative).

    Args:
        clf: Classifier (its box applies).
        x: ``(N, *shape)`` inputs.
        direction: ``(N, *shape)`` directions ``v`` (unit norm for ``|t|`` to be a norm).
        reference: ``(N,)`` labels to leave.
        t_start: First grid point.
        t_max: Last grid point; no change up to it is a failure.
        growth: Ratio between grid points.
        bisection_steps: Bisection steps inside the bracketing interval.

    Returns:
        ``(N,)`` signed ``t`` (``inf`` where no change up to `t_max`).
    """
    steps = max(1, math.ceil(math.log(t_max / t_start, growth)) + 1)
    grid = [t_start * growth**k for k in range(steps)]
    n = x.shape[0]
    shape = (-1, *([1] * (x.ndim - 1)))
    best = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
    with clf.session():
        for sign in (1.0, -1.0):

            def changed(t: Tensor, sign: float = sign) -> Tensor:
                moved = clf.clip(x + sign * t.view(shape) * direction)
                return clf.predict_unchecked(moved) != reference

            candidate = first_change(
                changed, grid, n, bisection_steps, dtype=x.dtype, device=x.device
            )
            better = candidate < best.abs()
            best = torch.where(better, sign * candidate, best)
    return best


@register_attack("random-line")
class RandomLineSearch(Attack):
    """Random-noise robustness as an attack: minimal ``|t|`` along a random direction ±v.

    ``v`` is uniform on the unit sphere (a normalised Gaussian), drawn per image from a
    stream seeded by `seed` and the image itself (`boundaryscope._random`).
    ``||r||_2 = |t|``; by Theorem 1 it is about ``sqrt(d) ||r*||`` for flat boundaries.

    Args:
        seed: Seed of the directions.
        t_max: Largest ``|t|`` searched (failure beyond).
        bisection_steps: Bisection steps after bracketing.
    """

    def __init__(self, *, seed: int = 0, t_max: float = 1e4, bisection_steps: int = 40) -> None:
        self.seed = seed
        self.t_max = t_max
        self.bisection_steps = bisection_steps
        self.p = 2.0

    def directions(self, x: Tensor) -> Tensor:
        """Unit directions ``(N, *shape)``, each from its image's own random stream."""
        gaussian = draw_per_image(
            image_generators(x, self.seed),
            lambda g: torch.randn(x.shape[1:], generator=g, dtype=torch.float64),
            x.double(),
        )
        return steepest_direction(gaussian, 2.0).to(x.dtype)

    def _run(
        self, clf: Classifier, x: Tensor, reference: Tensor, target: Tensor | None
    ) -> RawAttack:
        direction = self.directions(x)
        t = line_search(
            clf, x, direction, reference, t_max=self.t_max, bisection_steps=self.bisection_steps
        )
        t_safe = torch.where(torch.isfinite(t), t, torch.zeros_like(t))
        adversarial = clf.clip(x + t_safe.view(-1, *([1] * (x.ndim - 1))) * direction)
        iterations = torch.ones(x.shape[0], dtype=torch.int64, device=x.device)
        return RawAttack(adversarial, iterations, {"t": t})
