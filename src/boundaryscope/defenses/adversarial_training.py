"""Adversarial training, the baselines users know: PGD-AT, TRADES, FGSM-RS and GradAlign.

Each is an `Objective` of the one loop (`boundaryscope.defenses.training.fit`); the inner
attack runs with the model in eval mode (the classifier's session) and the loss on its
points in train mode. Every random draw comes from the run's generator, so a resumed run
is bit-identical to an uninterrupted one.

- `PGDTraining` (Madry et al., ICLR 2018): cross-entropy at the PGD maximiser.
- `TRADES` (Zhang et al., ICML 2019): ``CE(f(x), y) + β KL(p(x) ‖ p(x'))`` with ``x'`` the
  KL maximiser in the ball.
- `FGSMRS` (Wong, Rice & Kolter, "Fast is better than free", ICLR 2020): one FGSM step of
  ``1.25 ε`` from a uniform random point of the ball, with the catastrophic-overfitting
  check of `boundaryscope.defenses.watch.OverfittingCheck`.
- `NFGSM` (de Jorge et al., "Make some noise", NeurIPS 2022): one FGSM step of ``ε`` from
  uniform noise of ``2 ε``, not projected back onto the ball — FGSM-RS's cost, for the
  large radii where FGSM-RS's one step is too weak or overfits.
- `GradAlign` (Andriushchenko & Flammarion, NeurIPS 2020): FGSM training plus
  ``λ (1 − cos(∇ℓ(x), ∇ℓ(x + η)))``, η uniform in the ball, which keeps the loss locally
  linear so that the one FGSM step stays a good maximiser (the catastrophic-overfitting
  cure of the paper).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from boundaryscope.attacks import PGD
from boundaryscope.attacks.gradient import uniform_ball
from boundaryscope.classifier import Classifier
from boundaryscope.defenses.objectives import (
    Objective,
    TrainingStep,
    input_gradient_with_graph,
    linear_ramp,
)
from boundaryscope.defenses.watch import OverfittingCheck
from boundaryscope.norms import project_lp_ball, steepest_direction

__all__ = [
    "FGSMRS",
    "NFGSM",
    "TRADES",
    "GradAlign",
    "PGDTraining",
    "gradient_alignment",
    "trades_kl",
]


def _check_ball(owner: str, eps: float, steps: int, p: float, ramp: float = 0.0) -> None:
    if (
        not (eps > 0 and math.isfinite(eps))
        or steps < 1
        or p not in (2.0, math.inf)
        or not ramp >= 0
    ):
        raise ValueError(
            f"{owner} needs eps > 0, steps >= 1, p = 2 or inf and eps_ramp_epochs >= 0; got "
            f"eps={eps!r}, steps={steps!r}, p={p!r}, eps_ramp_epochs={ramp!r}."
        )


def _step_at_radius(step_size: float | None, radius: float, eps: float) -> float | None:
    """A fixed step size at a ramped radius: its ratio to the radius stays (``None`` stays)."""
    if step_size is None or radius == eps:
        return step_size
    return step_size * radius / eps


def _batch_seed(step: TrainingStep) -> int:
    """A seed for the batch's attack, drawn from the run's generator."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=step.generator))


@dataclass(frozen=True)
class PGDTraining(Objective):
    """Adversarial training (Madry et al. 2018): cross-entropy at the PGD maximiser.

    Every batch is replaced by ``argmax_{||δ||_p ≤ ε, x+δ ∈ box} ℓ(x + δ)`` found by PGD from a
    random start, all `steps` steps taken (no early stop), the model in eval mode for the
    attack and in train mode for the update. With ``eps_ramp_epochs > 0`` the radius grows
    linearly from 0 to ε over those epochs (a curriculum: fine-tuning a standard LeNet
    straight at Madry et al.'s ε = 0.3 collapses it, benchmarks/robust_training.py); the
    step size follows the current radius.

    Attributes:
        eps: Radius of the threat model (input units).
        steps: PGD iterations.
        step_size: ``None``: ``2.5 ε / steps`` (Madry et al.'s rule).
        p: ``inf`` or 2.
        eps_ramp_epochs: Epochs over which the radius grows from 0 (0: none).
    """

    name: ClassVar[str] = "pgd"
    eps: float = 0.1
    steps: int = 10
    step_size: float | None = None
    p: float = math.inf
    eps_ramp_epochs: float = 0.0

    def __post_init__(self) -> None:
        _check_ball("PGDTraining", self.eps, self.steps, self.p, self.eps_ramp_epochs)

    def attack(self, seed: int, eps: float | None = None) -> PGD:
        """The inner attack at radius `eps` (default ε), one seed per batch."""
        radius = self.eps if eps is None else eps
        return PGD(
            eps=radius,
            p=self.p,
            steps=self.steps,
            step_size=_step_at_radius(self.step_size, radius, self.eps),
            seed=seed,
            early_stop=False,
        )

    def batch_loss(self, step: TrainingStep) -> tuple[Tensor, Tensor]:
        """Cross-entropy at the batch's PGD points (at the ramped radius)."""
        seed = _batch_seed(step)
        radius = linear_ramp(self.eps, self.eps_ramp_epochs, step.progress)
        adversarial = step.x
        if radius > 0:
            before = step.clf.counter.backward_rows
            adversarial = self.attack(seed, radius)(step.clf, step.x, step.y).adversarial.detach()
            step.backward_rows += step.clf.counter.backward_rows - before
        logits = step.logits(adversarial)
        return nn.functional.cross_entropy(logits, step.y, reduction="none"), logits


class _SingleStepTraining(Objective):
    """One-step adversarial training, watched for catastrophic overfitting after every epoch.

    Subclasses are frozen dataclasses with ``eps``, ``p`` and ``check`` fields.
    """

    eps: float
    p: float
    check: bool

    def overfitting_check(self) -> OverfittingCheck | None:
        """PGD(10) on 128 training images after every epoch (Wong et al.'s early stop)."""
        return OverfittingCheck(eps=self.eps, p=self.p) if self.check else None


@dataclass(frozen=True)
class FGSMRS(_SingleStepTraining):
    """FGSM adversarial training with a random start (Wong et al., ICLR 2020, Alg. 3).

    ``δ ~ U(B_p(0, ε))``, ``δ ← Π_{B_p(0, ε)}(δ + α u_p(∇_δ ℓ(x + δ)))`` with ``α = 1.25 ε``
    (the paper's step), ``x + δ`` clipped to the box; cross-entropy at ``x + δ``. One
    attack gradient per image instead of PGD-10's ten. Its known failure, catastrophic
    overfitting, is watched after every epoch (`overfitting_check`): PGD(10) on 128 fixed
    training images; a fall of more than 20 points stops the run with the previous
    epoch's weights. With ``eps_ramp_epochs > 0`` the radius (and ``α`` with it) grows
    linearly from 0, as `PGDTraining`'s; the check always attacks at the full ε.

    Attributes:
        eps: Radius of the threat model (input units).
        step_ratio: ``α / ε``.
        p: ``inf`` or 2.
        check: Run the catastrophic-overfitting check.
        eps_ramp_epochs: Epochs over which the radius grows from 0 (0: none).
    """

    name: ClassVar[str] = "fgsm-rs"
    eps: float = 0.1
    step_ratio: float = 1.25
    p: float = math.inf
    check: bool = True
    eps_ramp_epochs: float = 0.0

    def __post_init__(self) -> None:
        _check_ball("FGSMRS", self.eps, 1, self.p, self.eps_ramp_epochs)
        if not (self.step_ratio > 0 and math.isfinite(self.step_ratio)):
            raise ValueError(f"FGSMRS.step_ratio must be > 0; got {self.step_ratio!r}.")

    def attack(self, seed: int, eps: float | None = None) -> PGD:
        """One PGD step of ``α = step_ratio · ε`` from a uniform point of the ball.

        At radius `eps` (default ε) when a ramp asks for a smaller one.
        """
        radius = self.eps if eps is None else eps
        return PGD(
            eps=radius,
            p=self.p,
            steps=1,
            step_size=self.step_ratio * radius,
            random_start=True,
            seed=seed,
            early_stop=False,
        )

    def batch_loss(self, step: TrainingStep) -> tuple[Tensor, Tensor]:
        """Cross-entropy at the batch's FGSM-RS points (at the ramped radius)."""
        radius = linear_ramp(self.eps, self.eps_ramp_epochs, step.progress)
        adversarial = step.x
        if radius > 0:
            before = step.clf.counter.backward_rows
            attack = self.attack(_batch_seed(step), radius)
            adversarial = attack(step.clf, step.x, step.y).adversarial.detach()
            step.backward_rows += step.clf.counter.backward_rows - before
        logits = step.logits(adversarial)
        return nn.functional.cross_entropy(logits, step.y, reduction="none"), logits


@dataclass(frozen=True)
class NFGSM(_SingleStepTraining):
    """N-FGSM (de Jorge et al., NeurIPS 2022, Alg. 1): strong noise, one step, no projection.

    ``η ~ U([−k ε, k ε]^d)``, ``δ = η + α sign(∇_x ℓ(x + η))`` with ``k = 2`` and
    ``α = ε`` (the paper's defaults), ``x + δ`` clipped to the box but *not* projected
    onto the ε-ball (``‖δ‖∞ ≤ 3 ε``): the paper finds that the projection, not the lack of
    noise, is what makes one-step training overfit at large radii. Cross-entropy at
    ``x + δ``; one attack gradient per image, as FGSM-RS. l∞ only (the paper's threat
    model). The catastrophic-overfitting check of `FGSMRS` runs after every epoch, at ε;
    with ``eps_ramp_epochs > 0`` the radius (noise and step with it) grows from 0.

    Attributes:
        eps: Radius of the threat model (input units).
        noise_ratio: ``k``, the noise's half-width over ε.
        step_ratio: ``α / ε``.
        p: ``inf`` (the only one).
        check: Run the catastrophic-overfitting check.
        eps_ramp_epochs: Epochs over which the radius grows from 0 (0: none).
    """

    name: ClassVar[str] = "n-fgsm"
    eps: float = 0.1
    noise_ratio: float = 2.0
    step_ratio: float = 1.0
    p: float = math.inf
    check: bool = True
    eps_ramp_epochs: float = 0.0

    def __post_init__(self) -> None:
        _check_ball("NFGSM", self.eps, 1, self.p, self.eps_ramp_epochs)
        ratios = (self.noise_ratio, self.step_ratio)
        if not math.isinf(self.p) or not all(r >= 0 and math.isfinite(r) for r in ratios):
            raise ValueError(
                "NFGSM needs p = inf, noise_ratio >= 0 and step_ratio >= 0; got "
                f"p={self.p!r}, noise_ratio={self.noise_ratio!r}, step_ratio={self.step_ratio!r}."
            )

    def perturb(self, step: TrainingStep, radius: float) -> Tensor:
        """``clip(x + η + α sign(∇ℓ(x + η)))`` for the batch, at `radius`; detached."""
        x = step.x
        noise = uniform_ball([step.generator] * x.shape[0], self.noise_ratio * radius, self.p, x)
        start = step.clf.clip(x + noise)
        before = step.clf.counter.backward_rows
        _, grad = step.clf.loss_gradient(start, step.y)  # in eval mode, as every attack
        step.backward_rows += step.clf.counter.backward_rows - before
        direction = steepest_direction(grad, self.p)
        return step.clf.clip(start + self.step_ratio * radius * direction).detach()

    def batch_loss(self, step: TrainingStep) -> tuple[Tensor, Tensor]:
        """Cross-entropy at the batch's N-FGSM points (at the ramped radius)."""
        radius = linear_ramp(self.eps, self.eps_ramp_epochs, step.progress)
        adversarial = self.perturb(step, radius) if radius > 0 else step.x
        logits = step.logits(adversarial)
        return nn.functional.cross_entropy(logits, step.y, reduction="none"), logits


def trades_kl(natural_logits: Tensor, adversarial_logits: Tensor) -> Tensor:
    """``KL(p(x) ‖ p(x')) = Σ_c p_c(x) (log p_c(x) − log p_c(x'))`` per sample, ``(B,)``."""
    log_natural = nn.functional.log_softmax(natural_logits, dim=1)
    log_adversarial = nn.functional.log_softmax(adversarial_logits, dim=1)
    return (log_natural.exp() * (log_natural - log_adversarial)).sum(dim=1)


@dataclass(frozen=True)
class TRADES(Objective):
    """TRADES (Zhang et al., ICML 2019, eq. 5): ``CE(f(x), y) + β KL(p(x) ‖ p(x'))``.

    ``x' = argmax_{x' ∈ B_p(x, ε) ∩ box} KL(p(x) ‖ p(x'))`` by `steps` signed-gradient
    (l∞) or normalised-gradient (l2) ascent steps of `step_size`, from
    ``x + 0.001 N(0, I)`` (the paper's start), with ``p(x)`` held fixed and the model in
    eval mode; the outer loss is computed in train mode, with gradients through both
    terms. ``β = 1`` is the authors' MNIST setting (``1/λ``; their CIFAR-10 one is 6):
    fine-tuning the shipped LeNet at ε = 0.2 with β = 6 cost 8.4 points of clean accuracy
    (benchmarks/robust_training.py).

    Attributes:
        eps: Radius of the ball (input units).
        beta: Weight of the robustness term.
        steps: Inner ascent steps.
        step_size: ``None``: ``2.5 ε / steps``.
        p: ``inf`` or 2.
        eps_ramp_epochs: Epochs over which the radius grows from 0 (0: none; as
            `PGDTraining`).
    """

    name: ClassVar[str] = "trades"
    eps: float = 0.1
    beta: float = 1.0
    steps: int = 10
    step_size: float | None = None
    p: float = math.inf
    eps_ramp_epochs: float = 0.0

    def __post_init__(self) -> None:
        _check_ball("TRADES", self.eps, self.steps, self.p, self.eps_ramp_epochs)
        if not (self.beta >= 0 and math.isfinite(self.beta)):
            raise ValueError(f"TRADES.beta must be >= 0; got {self.beta!r}.")

    def maximise_kl(
        self, clf: Classifier, x: Tensor, generator: torch.Generator, eps: float | None = None
    ) -> Tensor:
        """The inner maximiser ``x'`` ``(B, *shape)`` (detached) at radius `eps` (default ε)."""
        radius = self.eps if eps is None else eps
        alpha = _step_at_radius(self.step_size, radius, self.eps)
        if alpha is None:
            alpha = 2.5 * radius / self.steps
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        current = clf.clip(x + 0.001 * noise)
        natural = clf.forward_scores(x)
        for _ in range(self.steps):
            _, grad = clf.value_and_gradient(current, lambda scores: trades_kl(natural, scores))
            moved = current + alpha * steepest_direction(grad, self.p)
            current = clf.clip(x + project_lp_ball(moved - x, radius, self.p))
        return current

    def batch_loss(self, step: TrainingStep) -> tuple[Tensor, Tensor]:
        """Per-sample TRADES loss and the natural logits (at the ramped radius)."""
        radius = linear_ramp(self.eps, self.eps_ramp_epochs, step.progress)
        adversarial = None
        if radius > 0:  # the maximiser first, in eval mode, as without a ramp
            before = step.clf.counter.backward_rows
            adversarial = self.maximise_kl(step.clf, step.x, step.generator, radius)
            step.backward_rows += step.clf.counter.backward_rows - before
        natural = step.logits(step.x)
        loss = nn.functional.cross_entropy(natural, step.y, reduction="none")
        if self.beta > 0 and adversarial is not None:
            loss = loss + self.beta * trades_kl(natural, step.logits(adversarial))
        return loss, natural


def gradient_alignment(clf: Classifier, x: Tensor, y: Tensor, eta: Tensor) -> Tensor:
    """``cos(∇_x ℓ(x), ∇_x ℓ(x + η))`` per sample ``(B,)``, differentiable in the parameters.

    ``ℓ`` is the cross-entropy at label ``y``; ``x + η`` is clipped to the box. Both input
    gradients are built with ``create_graph=True`` (double backward), the model in eval
    mode as in `boundaryscope.defenses.objectives.cure_penalty`, so that BatchNorm's
    running statistics never see the shifted points. A zero gradient gives cosine 0
    (``‖g‖`` clamped at 1e-12), as in the authors' use of ``cosine_similarity``.

    Args:
        clf: Classifier around the model being trained.
        x: Inputs ``(B, *shape)``.
        y: Labels ``(B,)``.
        eta: Shifts ``(B, *shape)`` (uniform in the ε-ball for GradAlign).
    """
    with clf.session(), torch.enable_grad():
        g0 = input_gradient_with_graph(clf, x, y).flatten(1)
        g1 = input_gradient_with_graph(clf, clf.clip(x + eta), y).flatten(1)
        norms = g0.norm(dim=1).clamp_min(1e-12) * g1.norm(dim=1).clamp_min(1e-12)
        return (g0 * g1).sum(dim=1) / norms


@dataclass(frozen=True)
class GradAlign(_SingleStepTraining):
    """FGSM training with gradient alignment (Andriushchenko & Flammarion, NeurIPS 2020).

    ``CE(f(x + δ), y) + λ (1 − cos(∇ℓ(x), ∇ℓ(x + η)))`` with ``δ`` one FGSM step of size
    ε from ``x`` (no random start: the paper shows the randomness only shrinks the step),
    clipped to the box, and ``η`` uniform in the ε-ball (`gradient_alignment`). The
    regulariser is what prevents catastrophic overfitting: when the loss is locally linear
    the gradients inside the ball align and the FGSM step is the maximiser. The paper's
    CIFAR-10 setting at ε = 8/255 is λ = 0.2, increased with ε; the default here is λ =
    0.2, not tuned for MNIST. Cost: the FGSM gradient, two input gradients with a graph and
    the parameter backward through them (≈ 4 backward passes per image against PGD-10's
    11). The catastrophic-overfitting check of `FGSMRS` runs after every epoch.

    Attributes:
        eps: Radius of the threat model (input units).
        lam: ``λ``, the weight of the alignment term.
        p: ``inf`` or 2.
        check: Run the catastrophic-overfitting check.
    """

    name: ClassVar[str] = "gradalign"
    eps: float = 0.1
    lam: float = 0.2
    p: float = math.inf
    check: bool = True

    def __post_init__(self) -> None:
        _check_ball("GradAlign", self.eps, 1, self.p)
        if not (self.lam >= 0 and math.isfinite(self.lam)):
            raise ValueError(f"GradAlign.lam must be >= 0; got {self.lam!r}.")

    def attack(self) -> PGD:
        """FGSM: one PGD step of size ε from the image itself."""
        return PGD(
            eps=self.eps, p=self.p, steps=1, step_size=self.eps, random_start=False,
            early_stop=False,
        )  # fmt: skip

    def batch_loss(self, step: TrainingStep) -> tuple[Tensor, Tensor]:
        """Cross-entropy at the FGSM points plus ``λ (1 − alignment)``."""
        before = step.clf.counter.backward_rows
        adversarial = self.attack()(step.clf, step.x, step.y).adversarial.detach()
        step.backward_rows += step.clf.counter.backward_rows - before
        logits = step.logits(adversarial)
        loss = nn.functional.cross_entropy(logits, step.y, reduction="none")
        if self.lam > 0:
            eta = uniform_ball([step.generator] * step.x.shape[0], self.eps, self.p, step.x)
            alignment = gradient_alignment(step.clf, step.x, step.y, eta)
            step.backward_rows += 2 * step.x.shape[0]
            loss = loss + self.lam * (1 - alignment)
        return loss, logits
