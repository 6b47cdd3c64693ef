"""SPSA: a gradient-free l_inf attack (Uesato et al. 2018; thesis §8.5.1; docs/algorithms.md §4).

Used to rule out gradient masking: if SPSA, which never asks the model for a gradient,
finds adversarial examples that gradient attacks miss, the gradients are misleading.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from boundaryscope._random import draw_per_image, image_generators
from boundaryscope.attacks.base import Attack, RawAttack, check_budget, register_attack
from boundaryscope.attacks.convex import margin
from boundaryscope.classifier import Classifier
from boundaryscope.norms import project_lp_ball

__all__ = ["SPSA", "spsa_gradient"]


def spsa_gradient(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    samples: int = 64,
    delta: float = 0.01,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> Tensor:
    r"""Simultaneous-perturbation estimate of the gradient of a per-sample function.

    .. math:: \hat g = \frac{1}{K}\sum_{k=1}^{K}
        \frac{f(x + \delta v_k) - f(x - \delta v_k)}{2\delta}\, v_k,\quad
        v_k \in \{-1, 1\}^d \text{ uniform}

    Only values of `fn` are used; all ``2K`` evaluations of a batch go in one call.

    Args:
        fn: Maps ``(M, *shape)`` to ``(M,)``; samples must not interact.
        x: ``(N, *shape)``.
        samples: ``K``.
        delta: Finite-difference step ``δ``.
        generator: Source of the random signs: one generator for the batch, or a list with
            one per sample of `x` (each sample's signs then come from its own stream).

    Returns:
        ``(N, *shape)`` estimate.
    """
    n = x.shape[0]
    if isinstance(generator, list):
        signs = draw_per_image(
            generator, lambda g: torch.randint(0, 2, (samples, *x.shape[1:]), generator=g), x, 1
        )
    else:
        signs = torch.randint(0, 2, (samples, *x.shape), generator=generator)
        signs = signs.to(x.device, x.dtype)
    signs = signs * 2 - 1
    points = torch.cat([x + delta * signs, x - delta * signs]).flatten(0, 1)
    values = fn(points).view(2, samples, n)
    slopes = (values[0] - values[1]) / (2 * delta)
    return (slopes.view(samples, n, *([1] * (x.ndim - 1))) * signs).mean(dim=0)


@register_attack("spsa")
class SPSA(Attack):
    """l_inf SPSA attack on the logit margin: signed steps on the SPSA gradient, projected.

    ``x ← Π(x − α · sign(ĝ))`` where ``ĝ`` estimates ``∇ (f_y − max_{l≠y} f_l)``
    (targeted: ``∇ (max_{l≠t} f_l − f_t)``); Uesato et al. use Adam on the same
    estimate. A sample stops once adversarial. Each image draws its signs from its own
    stream (seeded by `seed` and the image), so results do not depend on `batch_size`, on
    the order of the images or on how they are sharded.

    Args:
        eps: l_inf radius;
            ``None`` (default): 0.1 of the box width (0.1 on [0, 1] images).
        steps: Iterations.
        samples: Random sign vectors per estimate.
        delta: Finite-difference step.
        step_size: ``α``; default ``ε / 10``.
        seed: Seed of the random signs.
        batch_size: Samples per pass (each evaluates ``2 · samples`` points).
    """

    default_budget = 0.1  # eps=None: this fraction of the box width

    def __init__(
        self,
        *,
        eps: float | None = None,
        steps: int = 50,
        samples: int = 64,
        delta: float = 0.01,
        step_size: float | None = None,
        seed: int = 0,
        batch_size: int = 32,
    ) -> None:
        self.eps = check_budget(eps, "SPSA")
        if steps < 1 or samples < 1 or not delta > 0:
            raise ValueError(
                "SPSA needs steps >= 1, samples >= 1 and delta > 0; got "
                f"steps={steps!r}, samples={samples!r}, delta={delta!r}."
            )
        self.steps = steps
        self.samples = samples
        self.delta = float(delta)
        self.step_size = step_size
        self.seed = seed
        self.batch_size = batch_size
        self.p = math.inf

    def _run(
        self, clf: Classifier, x: Tensor, reference: Tensor, target: Tensor | None
    ) -> RawAttack:
        alpha = self.step_size if self.step_size is not None else self.budget / 10
        generators = image_generators(x, self.seed)
        labels = reference if target is None else target
        sign = 1.0 if target is None else -1.0
        adversarial = x.clone()
        iterations = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        for index in torch.arange(x.shape[0], device=x.device).split(self.batch_size):
            x0, lab = x[index], labels[index]
            current = x0.clone()
            for _ in range(self.steps):
                predicted = clf.forward_scores(current).argmax(dim=1)
                active = predicted == lab if target is None else predicted != lab
                if not bool(active.any()):
                    break
                reps = lab[active].repeat(2 * self.samples)

                def loss(points: Tensor, reps: Tensor = reps) -> Tensor:
                    return sign * margin(clf.forward_scores(points), reps, "logits")

                grad = spsa_gradient(
                    loss,
                    current[active],
                    samples=self.samples,
                    delta=self.delta,
                    generator=[generators[i] for i in index[active].tolist()],
                )
                moved = current[active] - alpha * grad.sign()
                delta = project_lp_ball(moved - x0[active], self.budget, math.inf)
                current[active] = clf.clip(x0[active] + delta)
                iterations[index[active]] += 1
            adversarial[index] = current
        return RawAttack(adversarial, iterations)
