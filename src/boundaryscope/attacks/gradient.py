"""One-step gradient attacks FGSM / FGM (Goodfellow et al. 2015; docs/algorithms.md §4)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from boundaryscope._random import draw_per_image, image_generators
from boundaryscope.attacks.base import (
    Attack,
    RawAttack,
    check_budget,
    check_labels,
    register_attack,
)
from boundaryscope.classifier import Classifier, check_classifier
from boundaryscope.norms import parse_p, project_lp_ball, steepest_direction

__all__ = [
    "BIM",
    "FGSM",
    "PGD",
    "EpsilonSearch",
    "fgsm_fooling_curve",
    "smallest_fooling_epsilon",
]


@register_attack("fgsm")
class FGSM(Attack):
    r"""Fast gradient (sign) method: one l_p-steepest step on the cross-entropy loss.

    .. math:: x_{adv} = \operatorname{clip}\big(x + \epsilon\, u_p(\nabla_x J(x, y))\big)

    where ``u_p`` is the unit-l_p steepest direction (``sign`` for ``p = inf``, the FGSM of
    the seeds; ``g / ||g||_2`` for ``p = 2``). Targeted mode descends the loss of the target.

    Args:
        eps: Step length in l_p, in input units;
            ``None`` (default): 0.1 of the box width (0.1 on [0, 1] images).
        p: Norm of the step (``inf`` by default).
        batch_size: Samples per gradient pass.
    """

    default_budget = 0.1  # eps=None: this fraction of the box width

    def __init__(
        self, *, eps: float | None = None, p: float | str = math.inf, batch_size: int = 256
    ) -> None:
        self.eps = check_budget(eps, type(self).__name__)
        self.p = parse_p(p)
        self.batch_size = batch_size

    def direction(self, clf: Classifier, x: Tensor, labels: Tensor, targeted: bool) -> Tensor:
        """Unit-l_p ascent direction of the loss of `labels` (descent when `targeted`)."""
        chunks = []
        for i in range(0, x.shape[0], self.batch_size):
            _, grad = clf.loss_gradient(x[i : i + self.batch_size], labels[i : i + self.batch_size])
            chunks.append(steepest_direction(grad, self.p))
        direction = torch.cat(chunks) if chunks else torch.zeros_like(x)
        return -direction if targeted else direction

    def _run(
        self, clf: Classifier, x: Tensor, reference: Tensor, target: Tensor | None
    ) -> RawAttack:
        labels = reference if target is None else target
        adversarial = torch.empty_like(x)
        for i in range(0, x.shape[0], self.batch_size):  # memory bounded by batch_size
            rows = slice(i, i + self.batch_size)
            step = self.direction(clf, x[rows], labels[rows], targeted=target is not None)
            adversarial[rows] = clf.clip(x[rows] + self.budget * step)
        ones = torch.ones(x.shape[0], dtype=torch.int64, device=x.device)
        return RawAttack(adversarial, ones)


@dataclass(frozen=True)
class EpsilonSearch:
    """Result of `smallest_fooling_epsilon`.

    Attributes:
        epsilon: Smallest ``eps`` found whose fooling rate reaches `fraction` (``inf`` if
            none up to the box width).
        fooling_rate: Fooling rate at `epsilon` (among correctly classified samples).
        fraction: The requested fooling rate.
    """

    epsilon: float
    fooling_rate: float
    fraction: float


def _fgsm_fooling_rate(
    clf: Classifier, x: Tensor, y: Tensor, p: float | str, batch_size: int
) -> Callable[[float], float] | None:
    """``eps -> FGSM fooling rate`` among correctly classified samples (one gradient pass).

    The FGSM direction does not depend on ``eps``, so it is computed once; each call then
    costs one forward pass. ``None`` when no sample is correctly classified.
    """
    clf = check_classifier(clf)
    x = clf.validate(x)
    attack = FGSM(eps=0.0, p=p, batch_size=batch_size)
    with clf.session():
        predicted = attack.predict(clf, x)
        y = check_labels(y, x, clf, "y")
        correct = predicted == y
        x, y = x[correct], y[correct]
        if x.shape[0] == 0:
            return None
        direction = attack.direction(clf, x, y, targeted=False)

    def fooling_rate(eps: float) -> float:
        with clf.session():
            labels = attack.predict(clf, clf.clip(x + eps * direction))
        return float((labels != y).float().mean())

    return fooling_rate


def fgsm_fooling_curve(
    clf: Classifier,
    x: Tensor,
    y: Tensor,
    epsilons: Sequence[float],
    *,
    p: float | str = math.inf,
    batch_size: int = 256,
) -> list[float]:
    """FGSM fooling rate (among correctly classified samples) at each ``eps``."""
    rate = _fgsm_fooling_rate(clf, x, y, p, batch_size)
    return [math.nan if rate is None else rate(float(e)) for e in epsilons]


_MAX_DOUBLINGS = 64


def smallest_fooling_epsilon(
    clf: Classifier,
    x: Tensor,
    y: Tensor,
    *,
    fraction: float = 0.9,
    p: float | str = math.inf,
    tolerance: float = 1e-4,
    batch_size: int = 256,
) -> EpsilonSearch:
    """Smallest FGSM ``eps`` that misclassifies `fraction` of the correctly classified data.

    The comparison protocol of the seeds (thesis §3.2.3, Table 3.1: "we chose the smallest
    ε such that 90% of the data are misclassified"). The gradient is computed once; ``eps``
    is found by bisection between 0 and the box's l_p diameter ``(hi - lo) d^(1/p)`` to
    `tolerance` (relative above 1), one forward pass per trial. Without a box (infinite
    bounds) the upper end is found by doubling from the data's largest magnitude, at most
    64 times.
    Bisection assumes the fooling rate grows with ``eps``, which holds in practice but is
    not guaranteed.

    Returns:
        An `EpsilonSearch`; ``epsilon = inf`` when even the box width does not reach it
        within the box (the seed notes FGSM never reaches 100% on some data sets).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction!r}.")
    rate = _fgsm_fooling_rate(clf, x, y, p, batch_size)
    if rate is None:
        return EpsilonSearch(math.nan, math.nan, fraction)
    d = x[0].numel()
    lo, hi = 0.0, (clf.bounds[1] - clf.bounds[0]) * d ** (1 / parse_p(p))
    if math.isinf(hi):
        # No box to bound eps: bracket by doubling from the data's own scale instead.
        hi = max(float(x.abs().max()), 1e-3)
        for _ in range(_MAX_DOUBLINGS):
            if rate(hi) >= fraction:
                break
            lo, hi = hi, 2 * hi
    if rate(hi) < fraction:
        return EpsilonSearch(math.inf, rate(hi), fraction)
    while hi - lo > tolerance * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if rate(mid) >= fraction else (mid, hi)
    return EpsilonSearch(hi, rate(hi), fraction)


def uniform_ball(generators: list[torch.Generator], eps: float, p: float, like: Tensor) -> Tensor:
    """Uniform samples ``(len(generators), *like.shape[1:])`` from the l∞ or l2 ball.

    One per generator, of radius `eps` (l2: a Gaussian direction times ``eps · u^{1/d}``), on
    `like`'s device and dtype.
    """
    shape = like.shape[1:]
    if math.isinf(p):
        u = draw_per_image(generators, lambda g: torch.rand(shape, generator=g), like)
        return (2 * u - 1) * eps
    d = like[0].numel()

    def ball_point(g: torch.Generator) -> Tensor:
        direction = torch.randn(shape, generator=g, dtype=torch.float64)
        radius = eps * float(torch.rand((), generator=g, dtype=torch.float64)) ** (1 / d)
        return direction / direction.norm().clamp_min(1e-12) * radius

    return draw_per_image(generators, ball_point, like)


@register_attack("pgd")
class PGD(Attack):
    r"""Projected gradient descent on the cross-entropy (Madry et al.; BIM without start).

    .. math::
        x_{i+1} = \Pi_{B_p(x, \epsilon) \cap [lo, hi]^d}\big(x_i + \alpha\, u_p(\nabla J(x_i))\big)

    from a uniform random point of the ε-ball (``random_start``) or from ``x`` (BIM).
    With `early_stop` (the default, for evaluation) a sample stops moving once it is
    adversarial, so success never flips back; without it every sample takes all `steps`
    ascent steps on the loss, the inner maximisation of Madry et al.'s adversarial training.

    Args:
        eps: Radius of the l_p ball (``p`` = inf or 2);
            ``None`` (default): 0.1 of the box width (0.1 on [0, 1] images).
        p: Norm.
        steps: Iterations.
        step_size: ``α``; default ``2.5 ε / steps``.
        random_start: Start from a random point of the ball.
        seed: Seed of the random start (each image draws from its own stream).
        batch_size: Samples per pass.
        early_stop: Freeze a sample once it is adversarial.
    """

    default_budget = 0.1  # eps=None: this fraction of the box width

    def __init__(
        self,
        *,
        eps: float | None = None,
        p: float | str = math.inf,
        steps: int = 40,
        step_size: float | None = None,
        random_start: bool = True,
        seed: int = 0,
        batch_size: int = 256,
        early_stop: bool = True,
    ) -> None:
        self.p = parse_p(p)
        if self.p not in (2.0, math.inf):
            raise ValueError(f"{type(self).__name__} supports p = 2 or inf; got p={p!r}.")
        self.eps = check_budget(eps, type(self).__name__)
        if steps < 1:
            raise ValueError(f"{type(self).__name__} needs steps >= 1; got steps={steps!r}.")
        self.steps = steps
        self.step_size = step_size
        self.random_start = random_start
        self.seed = seed
        self.batch_size = batch_size
        self.early_stop = early_stop

    def _run(
        self, clf: Classifier, x: Tensor, reference: Tensor, target: Tensor | None
    ) -> RawAttack:
        alpha = self.step_size if self.step_size is not None else 2.5 * self.budget / self.steps
        generators = image_generators(x, self.seed)
        sign = 1.0 if target is None else -1.0
        labels = reference if target is None else target
        adversarial = x.clone()
        iterations = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        for index in torch.arange(x.shape[0], device=x.device).split(self.batch_size):
            x0, lab = x[index], labels[index]
            start = uniform_ball([generators[i] for i in index.tolist()], self.budget, self.p, x0)
            current = clf.clip(x0 + start) if self.random_start else x0.clone()
            for _ in range(self.steps):
                if self.early_stop:
                    predicted = clf.forward_scores(current).argmax(dim=1)
                    active = predicted == lab if target is None else predicted != lab
                    if not bool(active.any()):
                        break
                else:
                    active = torch.ones_like(lab, dtype=torch.bool)
                _, grad = clf.loss_gradient(current[active], lab[active])
                moved = current[active] + sign * alpha * steepest_direction(grad, self.p)
                delta = project_lp_ball(moved - x0[active], self.budget, self.p)
                current[active] = clf.clip(x0[active] + delta)
                iterations[index[active]] += 1
            adversarial[index] = current
        return RawAttack(adversarial, iterations)


@register_attack("bim")
class BIM(PGD):
    """Basic iterative method (Kurakin et al.): `PGD` starting from ``x`` (no random start).

    Same arguments as `PGD`, with ``steps=10`` and ``random_start=False`` by default.
    """

    def __init__(
        self,
        *,
        eps: float | None = None,
        p: float | str = math.inf,
        steps: int = 10,
        step_size: float | None = None,
        random_start: bool = False,
        seed: int = 0,
        batch_size: int = 256,
    ) -> None:
        super().__init__(
            eps=eps,
            p=p,
            steps=steps,
            step_size=step_size,
            random_start=random_start,
            seed=seed,
            batch_size=batch_size,
        )
