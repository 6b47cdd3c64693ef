"""Random baselines: Bernoulli ±ε noise (seed 001 §V) and a random l_p direction.

They calibrate the fooling-ratio curves: a classifier that random noise of the same
budget fools as often as an attack does has no particular adversarial weakness there.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from boundaryscope.attacks.base import Attack, RawAttack, register_attack
from boundaryscope.classifier import Classifier
from boundaryscope.norms import parse_p

__all__ = ["BernoulliNoise", "RandomDirection"]


@register_attack("random")
class BernoulliNoise(Attack):
    """i.i.d. entries ``±ε`` with probability 1/2 each (``||η||_∞ = ε``), clipped to the box.

    Args:
        eps: Magnitude of every entry.
        seed: Seed of the noise; the same seed gives the same noise.
    """

    def __init__(self, *, eps: float = 0.1, seed: int = 0) -> None:
        if not eps >= 0:
            raise ValueError(f"The 'eps' parameter of BernoulliNoise must be >= 0. Got {eps!r}.")
        self.eps = float(eps)
        self.seed = seed
        self.p = math.inf

    def _run(
        self, clf: Classifier, x: Tensor, reference: Tensor, target: Tensor | None
    ) -> RawAttack:
        generator = torch.Generator().manual_seed(self.seed)
        signs = torch.randint(0, 2, x.shape, generator=generator).to(x.device, x.dtype) * 2 - 1
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
        if not eps >= 0:
            raise ValueError(f"The 'eps' parameter of RandomDirection must be >= 0. Got {eps!r}.")
        self.eps = float(eps)
        self.p = parse_p(p)
        self.seed = seed

    def _run(
        self, clf: Classifier, x: Tensor, reference: Tensor, target: Tensor | None
    ) -> RawAttack:
        generator = torch.Generator().manual_seed(self.seed)
        gaussian = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        flat = gaussian.flatten(1)
        norms = torch.linalg.vector_norm(flat, ord=self.p, dim=1).clamp_min(1e-12)
        direction = (flat / norms[:, None]).view_as(x)
        ones = torch.ones(x.shape[0], dtype=torch.int64, device=x.device)
        return RawAttack(clf.clip(x + self.eps * direction), ones)
