r"""Auto-PGD: APGD-CE and APGD-T with the DLR loss (Croce & Hein, ICML 2020, §3).

The first two attacks of AutoAttack, written from the paper (docs/algorithms.md §11):

- a projected gradient *ascent* with momentum,

  .. math::
      z^{(k+1)} &= P_S\big(x^{(k)} + \eta^{(k)} u_p(\nabla \ell(x^{(k)}))\big) \\
      x^{(k+1)} &= P_S\big(x^{(k)} + \alpha (z^{(k+1)} - x^{(k)})
                   + (1 - \alpha)(x^{(k)} - x^{(k-1)})\big),

  ``α = 0.75`` (the first step is plain, ``x^{(1)} = z^{(1)}``), ``S = B_p(x, ε) ∩ box``,
  ``u_p`` the unit steepest direction (``sign`` for l∞, ``g/‖g‖₂`` for l2);
- a step size that starts at ``η = 2ε`` and is halved at checkpoints
  ``w_j = ⌈p_j N⌉`` with ``p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03,
  0.06)`` when fewer than 75% of the steps since the previous checkpoint raised the loss,
  or when neither the step size nor the best loss changed since it; after a halving the
  iterate restarts from the best point so far;
- the loss: cross-entropy (APGD-CE), or the *difference of logits ratio*, which is
  invariant to the logits' scale and so does not saturate:

  .. math::
      \mathrm{DLR}(z, y) = -\frac{z_y - \max_{i \ne y} z_i}{z_{\pi_1} - z_{\pi_3}},\qquad
      \mathrm{DLR}_t(z, y) = -\frac{z_y - z_t}{z_{\pi_1} - (z_{\pi_3} + z_{\pi_4})/2}

  (``π`` sorts the logits in decreasing order); APGD-T runs the targeted DLR once for
  each of the `targets` most likely other classes.

A sample's result is the adversarial point found first (it stops there, as AutoAttack's
evaluation does) or, if none, its highest-loss point. Random starts come from per-image
streams (`boundaryscope._random`), so a result does not depend on the batch. With
``eot_samples > 1`` every gradient is averaged over that many passes (Expectation over
Transformation, for randomised models: Athalye et al. 2018).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from boundaryscope._random import draw_per_image, image_generators
from boundaryscope.attacks.base import (
    Attack,
    RawAttack,
    check_budget,
    is_adversarial,
    predicted_labels,
    register_attack,
)
from boundaryscope.classifier import Classifier
from boundaryscope.norms import lp_norm, parse_p, project_ball_and_box, steepest_direction

__all__ = ["APGD", "APGDT", "checkpoints", "dlr_loss", "dlr_targeted_loss"]

MOMENTUM = 0.75
RHO = 0.75  # share of loss-increasing steps below which the step size is halved


def dlr_loss(scores: Tensor, y: Tensor) -> Tensor:
    """Untargeted DLR per sample ``(N,)``, larger = closer to misclassification (§3.2)."""
    ordered = scores.sort(dim=1, descending=True).values
    true = scores.gather(1, y[:, None])[:, 0]
    best_other = scores.scatter(1, y[:, None], -math.inf).amax(dim=1)
    scale = ordered[:, 0] - ordered[:, min(2, scores.shape[1] - 1)]
    return -(true - best_other) / (scale + 1e-12)


def dlr_targeted_loss(scores: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR per sample ``(N,)`` (needs 4 classes), larger = closer to `target`."""
    ordered = scores.sort(dim=1, descending=True).values
    true = scores.gather(1, y[:, None])[:, 0]
    wanted = scores.gather(1, target[:, None])[:, 0]
    scale = ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3])
    return -(true - wanted) / (scale + 1e-12)


def checkpoints(steps: int) -> list[int]:
    """The iterations ``w_j = ⌈p_j · steps⌉`` at which APGD may halve its step (§3.1).

    ``p_{j+1} − p_j = max(p_j − p_{j−1} − 0.03, 0.06)``: periods that start at 22% of the
    budget and shrink by 3% down to 6%, counted in whole iterations (so that floating
    point never moves a checkpoint: 100 steps give 22, 41, 57, 70, 80, 87, 93, 99).
    """
    period = max(int(0.22 * steps), 1)
    shrink, shortest = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    marks, mark = [], period
    while mark < steps:
        marks.append(mark)
        period = max(period - shrink, shortest)
        mark += period
    return marks


@dataclass
class _Run:
    """One APGD run's per-sample state (rows of the chunk being attacked)."""

    x: Tensor
    current: Tensor
    previous: Tensor
    best: Tensor
    best_loss: Tensor
    adversarial: Tensor
    found: Tensor
    eta: Tensor
    increases: Tensor
    best_at_checkpoint: Tensor
    halved_at_checkpoint: Tensor
    last_loss: Tensor
    start_loss: Tensor
    iterations: Tensor


@register_attack("apgd-ce")
class APGD(Attack):
    """APGD with the cross-entropy (``loss="ce"``, AutoAttack's first attack) or DLR loss.

    Args:
        eps: Radius of the l_p ball (input units);
            ``None`` (default): 0.3 of the box width (0.3 on [0, 1] images).
        p: ``inf`` or 2.
        steps: Iterations ``N`` per restart (AutoAttack: 100).
        restarts: Random restarts; a sample stops at its first success.
        loss: ``"ce"`` or ``"dlr"``.
        seed: Seed of the random starts (one stream per image).
        eot_samples: Gradient passes averaged per step (``> 1`` for randomised models).
        batch_size: Samples per pass.
    """

    loss_name = "ce"

    default_budget = 0.3  # eps=None: this fraction of the box width

    def __init__(
        self,
        *,
        eps: float | None = None,
        p: float | str = math.inf,
        steps: int = 100,
        restarts: int = 1,
        loss: str = "ce",
        seed: int = 0,
        eot_samples: int = 1,
        batch_size: int = 256,
    ) -> None:
        self.p = parse_p(p)
        if self.p not in (2.0, math.inf):
            raise ValueError(f"{type(self).__name__} supports p = 2 or inf; got p={p!r}.")
        eps = check_budget(eps, type(self).__name__)
        if steps < 1 or restarts < 1 or eot_samples < 1 or batch_size < 1:
            raise ValueError(
                f"{type(self).__name__} needs steps, restarts, eot_samples and batch_size >= 1; "
                f"got {steps}, {restarts}, {eot_samples}, {batch_size}."
            )
        if loss not in ("ce", "dlr"):
            raise ValueError(f"The 'loss' parameter must be 'ce' or 'dlr'; got {loss!r}.")
        self.eps = None if eps is None else float(eps)
        self.steps = int(steps)
        self.restarts = int(restarts)
        self.loss = loss
        self.seed = int(seed)
        self.eot_samples = int(eot_samples)
        self.batch_size = int(batch_size)

    # ------------------------------------------------------------------ the attack
    def _run(
        self, clf: Classifier, x: Tensor, reference: Tensor, target: Tensor | None
    ) -> RawAttack:
        adversarial = x.clone()
        iterations = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        gain = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        for chunk in torch.arange(x.shape[0], device=x.device).split(self.batch_size):
            tgt = None if target is None else target[chunk]
            point, used, improved = self.attack_chunk(
                clf, x[chunk], reference[chunk], tgt, self.objective(clf, tgt), judge=tgt
            )
            adversarial[chunk], iterations[chunk], gain[chunk] = point, used, improved
        return RawAttack(adversarial, iterations, {"loss_gain": gain})

    def objective(
        self, clf: Classifier, target: Tensor | None
    ) -> Callable[[Tensor, Tensor, Tensor | None], Tensor]:
        """The per-sample loss to *raise*: ``(scores, reference, target) -> (N,)``."""
        if target is not None:  # targeted: raise the target's score over the reference
            if self.loss == "dlr" and clf.num_classes >= 4:
                return lambda s, y, t: dlr_targeted_loss(s, y, _given(t))
            return lambda s, y, t: -nn.functional.cross_entropy(s, _given(t), reduction="none")
        if self.loss == "dlr":
            return lambda s, y, t: dlr_loss(s, y)
        return lambda s, y, t: nn.functional.cross_entropy(s, y, reduction="none")

    def attack_chunk(
        self,
        clf: Classifier,
        x: Tensor,
        reference: Tensor,
        target: Tensor | None,
        loss: Callable[[Tensor, Tensor, Tensor | None], Tensor],
        judge: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """All restarts on one chunk; returns points, iterations and the loss gained.

        `target` feeds the loss; `judge` is the target that success requires (``None``:
        any other label, as AutoAttack's APGD-T counts a success).
        """
        generators = image_generators(x, self.seed)
        result = x.clone()
        found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        used = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        gain = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        for _ in range(self.restarts):
            todo = torch.nonzero(~found).flatten()
            if not todo.numel():
                break
            run = self._one_run(
                clf,
                x[todo],
                reference[todo],
                None if target is None else target[todo],
                None if judge is None else judge[todo],
                loss,
                [generators[i] for i in todo.tolist()],
            )
            better = run.found | ~found[todo]  # a success, or the first restart's best
            keep = todo[better]
            result[keep] = torch.where(_rows(run.found, x[todo]), run.adversarial, run.best)[better]
            used[todo] += run.iterations
            gain[todo] = torch.maximum(gain[todo], (run.best_loss - run.start_loss).double())
            found[todo] = found[todo] | run.found
        return result, used, gain

    def _one_run(
        self,
        clf: Classifier,
        x: Tensor,
        reference: Tensor,
        target: Tensor | None,
        judge: Tensor | None,
        loss: Callable[[Tensor, Tensor, Tensor | None], Tensor],
        generators: list[torch.Generator],
    ) -> _Run:
        """One APGD run from a random start (§3.1, Alg. 1 of the paper)."""
        lower, upper = clf.bounds[0] - x, clf.bounds[1] - x
        start = _random_start(generators, self.budget, self.p, x)
        current = x + project_ball_and_box(start, self._radius(x), self.p, lower, upper)
        n = x.shape[0]
        values, grad, labels = self._loss_and_gradient(clf, current, reference, target, loss)
        found = is_adversarial(labels, reference, judge)
        run = _Run(
            x=x,
            current=current,
            previous=current.clone(),
            best=current.clone(),
            best_loss=values.clone(),
            adversarial=current.clone(),
            found=found,
            eta=torch.full((n,), 2 * self.budget, dtype=x.dtype, device=x.device),
            increases=torch.zeros(n, dtype=torch.int64, device=x.device),
            best_at_checkpoint=values.clone(),
            halved_at_checkpoint=torch.ones(n, dtype=torch.bool, device=x.device),
            last_loss=values.clone(),
            start_loss=values.clone(),
            iterations=torch.zeros(n, dtype=torch.int64, device=x.device),
        )
        marks = checkpoints(self.steps)
        last_mark = 0
        for k in range(self.steps):
            active = ~run.found
            if not bool(active.any()):
                break
            self._step(run, grad, k == 0, lower, upper)
            run.iterations += active.long()
            values, grad, labels = self._loss_and_gradient(
                clf, run.current, reference, target, loss
            )
            success = is_adversarial(labels, reference, judge) & active
            run.adversarial = torch.where(_rows(success, x), run.current, run.adversarial)
            run.found = run.found | success
            run.increases += (values > run.last_loss).long()
            run.last_loss = values
            better = values > run.best_loss
            run.best = torch.where(_rows(better, x), run.current, run.best)
            run.best_loss = torch.where(better, values, run.best_loss)
            if k + 1 in marks:
                self._checkpoint(run, k + 1 - last_mark, x)
                last_mark = k + 1
        return run

    def _step(self, run: _Run, grad: Tensor, first: bool, lower: Tensor, upper: Tensor) -> None:
        """The momentum step of §3.1 for the samples not yet adversarial."""
        active = _rows(~run.found, run.x)
        radius = self._radius(run.x)
        eta = run.eta.view(-1, *([1] * (run.x.ndim - 1)))
        z = run.x + project_ball_and_box(
            run.current + eta * steepest_direction(grad, self.p) - run.x,
            radius, self.p, lower, upper,
        )  # fmt: skip
        if first:
            moved = z
        else:
            mixed = (
                run.current
                + MOMENTUM * (z - run.current)
                + (1 - MOMENTUM) * (run.current - run.previous)
            )
            moved = run.x + project_ball_and_box(mixed - run.x, radius, self.p, lower, upper)
        run.previous = torch.where(active, run.current, run.previous)
        run.current = torch.where(active, moved, run.current)

    @staticmethod
    def _checkpoint(run: _Run, period: int, x: Tensor) -> None:
        """Halves the step where progress stalled and restarts those samples from their best."""
        oscillating = run.increases < RHO * period
        stalled = ~run.halved_at_checkpoint & (run.best_at_checkpoint >= run.best_loss)
        halve = (oscillating | stalled) & ~run.found
        run.eta = torch.where(halve, run.eta / 2, run.eta)
        run.current = torch.where(_rows(halve, x), run.best, run.current)
        run.previous = torch.where(_rows(halve, x), run.best, run.previous)
        run.halved_at_checkpoint = halve
        run.best_at_checkpoint = run.best_loss.clone()
        run.increases.zero_()

    def _radius(self, x: Tensor) -> Tensor:
        return torch.full((x.shape[0],), self.budget, dtype=x.dtype, device=x.device)

    def _loss_and_gradient(
        self,
        clf: Classifier,
        points: Tensor,
        reference: Tensor,
        target: Tensor | None,
        loss: Callable[[Tensor, Tensor, Tensor | None], Tensor],
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Loss, its input gradient (averaged over `eot_samples` passes) and the labels."""
        captured: list[Tensor] = []

        def objective(scores: Tensor) -> Tensor:
            captured.append(scores.detach())
            return loss(scores, reference, target)

        values, grad = clf.value_and_gradient(points, objective)
        for _ in range(self.eot_samples - 1):
            more_values, more_grad = clf.value_and_gradient(points, objective)
            values, grad = values + more_values, grad + more_grad
        values, grad = values / self.eot_samples, grad / self.eot_samples
        labels = predicted_labels(captured[0])
        finite = torch.isfinite(values)
        values = torch.where(finite, values, torch.full_like(values, -math.inf))
        grad = torch.where(_rows(finite, points), grad, torch.zeros_like(grad))
        return values, torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0), labels


@register_attack("apgd-t")
class APGDT(APGD):
    """APGD-T: targeted APGD with the DLR loss on the `targets` most likely other classes.

    Each target class is attacked in turn (every one with all `steps`), a sample stops at
    its first success, as AutoAttack's second attack (§4: 9 targets, 100 steps, 1 restart).
    With fewer than 4 classes the targeted cross-entropy replaces the targeted DLR. An
    explicit ``target=`` at call time attacks that class only.

    Args:
        eps: Radius of the l_p ball (input units);
            ``None`` (default): 0.3 of the box width (0.3 on [0, 1] images).
        p: ``inf`` or 2.
        steps: Iterations per target and restart (AutoAttack: 100).
        targets: Other classes attacked, most likely first (at most ``classes − 1``).
        restarts: Random restarts per target.
        loss: ``"dlr"`` (the targeted DLR) or ``"ce"`` (targeted cross-entropy).
        seed: Seed of the random starts (one stream per image).
        eot_samples: Gradient passes averaged per step.
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
        loss: str = "dlr",
        seed: int = 0,
        eot_samples: int = 1,
        batch_size: int = 256,
    ) -> None:
        super().__init__(
            eps=eps, p=p, steps=steps, restarts=restarts, loss=loss, seed=seed,
            eot_samples=eot_samples, batch_size=batch_size,
        )  # fmt: skip
        if targets < 1:
            raise ValueError(f"The 'targets' parameter must be >= 1; got {targets!r}.")
        self.targets = int(targets)

    def _run(
        self, clf: Classifier, x: Tensor, reference: Tensor, target: Tensor | None
    ) -> RawAttack:
        if target is not None:
            return super()._run(clf, x, reference, target)
        adversarial = x.clone()
        iterations = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        gain = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        for chunk in torch.arange(x.shape[0], device=x.device).split(self.batch_size):
            scores = clf.forward_scores(x[chunk])
            ranked = scores.scatter(1, reference[chunk, None], -math.inf).argsort(
                dim=1, descending=True
            )
            count = min(self.targets, clf.num_classes - 1)
            done = torch.zeros(chunk.numel(), dtype=torch.bool, device=x.device)
            for rank in range(count):
                todo = torch.nonzero(~done).flatten()
                if not todo.numel():
                    break
                rows, tgt = chunk[todo], ranked[todo, rank]
                point, used, improved = self.attack_chunk(
                    clf, x[rows], reference[rows], tgt, self.objective(clf, tgt)
                )
                labels = clf.predict_unchecked(point, self.batch_size, invalid=-1)
                success = is_adversarial(labels, reference[rows], None)
                # The first target's best point stands for a sample no target fools.
                keep = success | (rank == 0)
                adversarial[rows[keep]] = point[keep]
                iterations[rows] += used
                gain[rows] = torch.maximum(gain[rows], improved)
                done[todo] = success
        return RawAttack(adversarial, iterations, {"loss_gain": gain})


def _given(target: Tensor | None) -> Tensor:
    """The target of a targeted loss (always given there)."""
    if target is None:
        raise ValueError("a targeted APGD loss needs a target")
    return target


def _rows(mask: Tensor, like: Tensor) -> Tensor:
    """``(N,)`` mask broadcast over the sample dimensions of `like`."""
    return mask.view(-1, *([1] * (like.ndim - 1)))


def _random_start(generators: list[torch.Generator], eps: float, p: float, like: Tensor) -> Tensor:
    """AutoAttack's start: ``ε t/‖t‖_p`` with ``t`` uniform (l∞) or Gaussian (l2), per image."""
    shape = like.shape[1:]
    if math.isinf(p):
        t = draw_per_image(generators, lambda g: 2 * torch.rand(shape, generator=g) - 1, like)
    else:
        t = draw_per_image(generators, lambda g: torch.randn(shape, generator=g), like)
    norms = lp_norm(t, p).clamp_min(1e-12)
    return eps * t / _rows(norms, t)
