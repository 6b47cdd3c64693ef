"""Convex-programming attacks of Balda, Behboodi & Mathar 2018 (docs/algorithms.md §5).

Linearising a score function ``L`` around ``x`` turns the design of an adversarial
perturbation into the convex problem

    (GNII)   min_η  L(x) + ηᵀ∇L(x)   s.t.  ||η||_p <= ε,

whose solution is closed-form (Prop. 2): ``η = -ε · u_p(∇L)``, with ``u_p`` the unit
l_p steepest direction of `boundaryscope.norms` (``-ε sign(∇L)`` for ``p = inf``). Fooling
is impossible for the linearised problem below ``ε = L(x) / ||∇L(x)||_q`` (Prop. 1).

- Algorithm 1 uses the margin ``L = f_k0 - max_{l != k0} f_l`` (one step of size ε);
  Algorithm 1-n takes ``n`` re-linearised steps of ε/n; Algorithm 2 uses only ``f_k0``.
- The targeted margin is ``L_t = f_k0 - f_t``.
- The single-pixel attack (l1 constraint) moves the input coordinate whose Jacobian column
  has the largest l2 norm; the regression attack follows the top right singular vector of
  the Jacobian (l2 constraint, §IV of the seed), for any ``nn.Module`` with vector output.

Scores are probabilities (the seed's choice) or logits, set by ``space``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Literal

import torch
from torch import Tensor, nn

from boundaryscope.attacks.base import Attack, RawAttack, check_budget, register_attack
from boundaryscope.classifier import Classifier
from boundaryscope.norms import dual_exponent, lp_norm, parse_p, steepest_direction

__all__ = [
    "Algorithm1",
    "Algorithm2",
    "ScoreSpace",
    "SinglePixel",
    "gnii_solution",
    "infeasibility_bound",
    "jacobian_column_norms",
    "margin",
    "regression_perturbation",
    "top_singular_direction",
]

ScoreSpace = Literal["probabilities", "logits"]


def _in_space(scores: Tensor, space: ScoreSpace) -> Tensor:
    if space == "probabilities":
        return scores.softmax(dim=1)
    if space == "logits":
        return scores
    raise ValueError(f"space must be 'probabilities' or 'logits'; got {space!r}.")


def margin(scores: Tensor, label: Tensor, space: ScoreSpace = "probabilities") -> Tensor:
    """``L(x) = f_k0(x) - max_{l != k0} f_l(x)`` per sample; negative means fooled (eq. 3).

    Args:
        scores: ``(N, C)`` logits.
        label: ``(N,)`` reference classes ``k0``.
        space: Compute ``f`` as probabilities (softmax of the logits) or logits.
    """
    values = _in_space(scores, space)
    own = values.gather(1, label[:, None]).squeeze(1)
    others = values.scatter(1, label[:, None], -math.inf)
    return own - others.amax(dim=1)


def gnii_solution(grad: Tensor, eps: float | Tensor, p: float) -> Tensor:
    """Closed-form minimiser of (GNII), Prop. 2: ``η = -ε sign(g) |g|^(q-1) / ||g||_q^(q-1)``.

    Args:
        grad: ``(N, *shape)`` gradients ``∇L(x)``.
        eps: l_p budget (scalar or ``(N,)``).
        p: Norm of the constraint.

    Returns:
        ``(N, *shape)``; its objective value is ``L(x) - ε ||∇L(x)||_q``.
    """
    eps_t = torch.as_tensor(eps, dtype=grad.dtype, device=grad.device)
    eps_t = eps_t.view(-1, *([1] * (grad.ndim - 1))) if eps_t.ndim else eps_t
    return -eps_t * steepest_direction(grad, p)


def infeasibility_bound(
    clf: Classifier, x: Tensor, label: Tensor, p: float, space: ScoreSpace = "logits"
) -> Tensor:
    """Prop. 1 for each class: ``min_{l != k0} (f_k0 - f_l)(x) / ||∇(f_k0 - f_l)(x)||_q``.

    The margin is the minimum of the ``C - 1`` functions ``f_k0 - f_l``; fooling needs one
    of them negative, which the linearisation forbids below its own bound. On an affine
    classifier (``space="logits"``) this is the exact minimal l_p distance to the boundary,
    so no perturbation with a smaller norm can change the label.

    Returns:
        ``(N,)`` bounds (0 for samples already not of class ``label``).
    """
    num_classes = clf.num_classes
    others = torch.stack(
        [
            torch.cat([torch.arange(0, int(k)), torch.arange(int(k) + 1, num_classes)])
            for k in label.cpu()
        ]
    ).to(label.device)
    q = dual_exponent(p)
    if space == "logits":
        _, diff, grad = clf.score_gradients(x, label, others)
        bounds = (-diff) / lp_norm(grad, q, start_dim=2).clamp_min(1e-12)
        return bounds.amin(dim=1).clamp_min(0.0)
    columns = []
    for j in range(others.shape[1]):
        values, grad = clf.value_and_gradient(
            x, partial(_pair_margin, label=label, other=others[:, j], space=space)
        )
        columns.append(values / lp_norm(grad, q).clamp_min(1e-12))
    return torch.stack(columns, dim=1).amin(dim=1).clamp_min(0.0)


def _pair_margin(scores: Tensor, label: Tensor, other: Tensor, space: ScoreSpace) -> Tensor:
    values = _in_space(scores, space)
    return values.gather(1, label[:, None]).squeeze(1) - values.gather(1, other[:, None]).squeeze(1)


class _GNIIAttack(Attack):
    """n re-linearised (GNII) steps of size ε/n on a score function; fooled samples stop.

    ``details["certificate"]`` holds Prop. 1's ``L(x) / ||∇L(x)||_q`` at the clean input
    and ``details["infeasible"]`` whether ε is below it: then (GN), the linearised
    fooling problem, has no solution within the budget (the network itself may still be
    fooled, as it is not linear; on an affine binary model it cannot be).
    """

    default_budget = 0.1  # eps=None: this fraction of the box width

    def __init__(
        self,
        *,
        eps: float | None = None,
        p: float | str = math.inf,
        steps: int = 1,
        space: ScoreSpace = "probabilities",
        batch_size: int = 256,
    ) -> None:
        eps = check_budget(eps, type(self).__name__)
        if steps < 1:
            raise ValueError(f"{type(self).__name__} needs steps >= 1; got steps={steps!r}.")
        if space not in ("probabilities", "logits"):
            raise ValueError(f"space must be 'probabilities' or 'logits'; got {space!r}.")
        self.eps = None if eps is None else float(eps)
        self.p = parse_p(p)
        self.steps = steps
        self.space: ScoreSpace = space
        self.batch_size = batch_size

    def objective(self, scores: Tensor, label: Tensor, target: Tensor | None) -> Tensor:
        """The score function ``L`` to decrease (per sample)."""
        raise NotImplementedError

    def _run(
        self, clf: Classifier, x: Tensor, reference: Tensor, target: Tensor | None
    ) -> RawAttack:
        adversarial = x.clone()
        iterations = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        certificate = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        q = dual_exponent(self.p)
        for chunk in torch.arange(x.shape[0], device=x.device).split(self.batch_size):
            ref = reference[chunk]
            tgt = None if target is None else target[chunk]
            current = x[chunk]
            active = torch.ones(chunk.numel(), dtype=torch.bool, device=x.device)
            for step_index in range(self.steps):
                ref_a, tgt_a = ref[active], _sub(tgt, active)
                values, grad = clf.value_and_gradient(
                    current[active],
                    partial(self.objective, label=ref_a, target=tgt_a),
                )
                if step_index == 0:  # Prop. 1 at the clean input, free from the first step
                    certificate[chunk] = values / lp_norm(grad, q).clamp_min(1e-30)
                step = gnii_solution(grad, self.budget / self.steps, self.p)
                current[active] = clf.clip(current[active] + step)
                iterations[chunk[active]] += 1
                labels = clf.forward_scores(current).argmax(dim=1)
                active = labels == ref if tgt is None else labels != tgt
                if not bool(active.any()):
                    break
            adversarial[chunk] = current
        details = {"certificate": certificate, "infeasible": certificate > self.budget}
        return RawAttack(adversarial, iterations, details)


def _sub(values: Tensor | None, mask: Tensor) -> Tensor | None:
    return None if values is None else values[mask]


@register_attack("alg1")
class Algorithm1(_GNIIAttack):
    r"""Balda et al. Algorithm 1 (and 1-n): (GNII) on the classification margin.

    .. math::
        \eta = -\frac{\epsilon}{n}\, u_p\big(\nabla L(x_i)\big),\quad
        L = f_{k_0} - \max_{l \ne k_0} f_l \quad(\text{targeted: } L_t = f_{k_0} - f_t)

    applied ``n = steps`` times from the clean input, re-linearising each time and
    clipping to the box; a sample stops as soon as it is fooled. ``steps=1`` is
    Algorithm 1. The total perturbation has ``||η||_p <= ε``.

    Args:
        eps: Budget in l_p, input units;
            ``None`` (default): 0.1 of the box width (0.1 on [0, 1] images).
        p: Constraint norm (the seed uses ``inf``).
        steps: ``n``.
        space: Margin on ``"probabilities"`` (seed) or ``"logits"``.
        batch_size: Samples per pass.
    """

    def objective(self, scores: Tensor, label: Tensor, target: Tensor | None) -> Tensor:
        """The margin ``L`` (or ``L_t`` when targeted)."""
        if target is None:
            return margin(scores, label, self.space)
        return _pair_margin(scores, label, target, self.space)


@register_attack("alg2")
class Algorithm2(_GNIIAttack):
    r"""Balda et al. Algorithm 2: (GNII) on the predicted-class score alone, ``L ≈ f_k0``.

    Cheaper than Algorithm 1 when there are many classes (one score, no max); fooling is
    not guaranteed by ``L < 0`` any more. Same arguments as `Algorithm1`.
    """

    def objective(self, scores: Tensor, label: Tensor, target: Tensor | None) -> Tensor:
        """The reference class's score ``f_k0`` (minus ``f_t`` when targeted)."""
        values = _in_space(scores, self.space)
        own = values.gather(1, label[:, None]).squeeze(1)
        if target is None:
            return own
        return own - values.gather(1, target[:, None]).squeeze(1)


def jacobian_column_norms(fn: Callable[[Tensor], Tensor], x: Tensor, chunk: int = 16) -> Tensor:
    """Per-sample l2 norms of the Jacobian's columns, ``||∂f/∂x_k||_2`` for every input k.

    ``Σ_j (∂f_j/∂x_k)²`` is accumulated from one vector-Jacobian product per output
    ``j`` (batched over `chunk` outputs at a time), so at most ``chunk × N × d`` values are
    held, never the dense ``m × d`` Jacobian of each sample.

    Args:
        fn: Maps ``(N, *shape)`` to ``(N, m)``; samples must not interact.
        x: Inputs ``(N, *shape)``.
        chunk: Outputs per batched backward pass.

    Returns:
        ``(N, *shape)`` column norms.
    """
    with torch.enable_grad():
        x_var = x.detach().requires_grad_(True)
        out = fn(x_var)
        m = out.shape[1]
        squares = torch.zeros_like(x)
        for start in range(0, m, chunk):
            stop = min(start + chunk, m)
            eye = torch.zeros(stop - start, *out.shape, dtype=out.dtype, device=out.device)
            for j in range(start, stop):
                eye[j - start, :, j] = 1
            (grads,) = torch.autograd.grad(
                out, x_var, eye, retain_graph=stop < m, is_grads_batched=True
            )
            squares += grads.pow(2).sum(dim=0)
    return squares.sqrt()


@register_attack("single-pixel")
class SinglePixel(Attack):
    """Single-pixel attack (Balda et al. 2018 §IV, ``p = 1``): move one input coordinate by ε.

    The coordinate is ``k* = argmax_k ||J_k||_2``, the Jacobian column of largest norm
    (``||J||_{1→2}``), found with `jacobian_column_norms`; the sign is the one that
    decreases the margin ``L`` to first order. Exactly one coordinate changes (less where
    the box clips it).

    Args:
        eps: l1 (= l0-coordinate) budget.
        space: Jacobian of ``"probabilities"`` or ``"logits"``.
        batch_size: Samples per pass.
    """

    def __init__(
        self, *, eps: float = 1.0, space: ScoreSpace = "probabilities", batch_size: int = 256
    ) -> None:
        self.eps = check_budget(eps, "SinglePixel", optional=False)
        self.p = 1.0
        self.space: ScoreSpace = space
        self.batch_size = batch_size

    def _run(
        self, clf: Classifier, x: Tensor, reference: Tensor, target: Tensor | None
    ) -> RawAttack:
        chunks = []
        for index in torch.arange(x.shape[0], device=x.device).split(self.batch_size):
            xs, ref = x[index], reference[index]
            with clf.session():
                norms = jacobian_column_norms(
                    lambda z: _in_space(clf.differentiable_scores(z), self.space), xs
                ).flatten(1)
                _, grad = clf.value_and_gradient(xs, partial(margin, label=ref, space=self.space))
            k = norms.argmax(dim=1, keepdim=True)
            slope = grad.flatten(1).gather(1, k)
            sign = torch.where(slope > 0, -1.0, 1.0).to(x.dtype)
            step = torch.zeros_like(xs).flatten(1).scatter(1, k, self.eps * sign)
            chunks.append(clf.clip(xs + step.view_as(xs)))
        ones = torch.ones(x.shape[0], dtype=torch.int64, device=x.device)
        return RawAttack(torch.cat(chunks), ones)


def top_singular_direction(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    iterations: int = 50,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Top right singular vector and value of the Jacobian of `fn` at each sample.

    Power iteration on ``JᵀJ`` with Jacobian-vector products (forward mode) and
    vector-Jacobian products (reverse mode) only: no Jacobian is formed.

    Args:
        fn: Maps ``(N, *shape)`` to ``(N, m)``; samples must not interact (eval mode).
        x: ``(N, *shape)``.
        iterations: Power iterations.
        generator: Random start (seeded for reproducibility).

    Returns:
        ``(v, sigma)``: unit vectors ``(N, *shape)`` and ``σ_max (N,)``.
    """
    v = torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
    v = v / lp_norm(v, 2).clamp_min(1e-12).view(-1, *([1] * (x.ndim - 1)))
    x = x.detach()
    vjp_fn = torch.func.vjp(fn, x)[1]
    sigma = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for _ in range(iterations):
        jv = torch.func.jvp(fn, (x,), (v,))[1]
        (jtjv,) = vjp_fn(jv)
        norm = lp_norm(jtjv, 2).clamp_min(1e-30)
        sigma = norm.sqrt()
        v = jtjv / norm.view(-1, *([1] * (x.ndim - 1)))
    return v.detach(), sigma.detach()


def regression_perturbation(
    module: nn.Module,
    x: Tensor,
    eps: float,
    iterations: int = 50,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Regression attack (Balda et al. 2018, eq. 9): ``argmax_η ||J η||_2`` over ``||η||_2 <= ε``.

    The maximiser is ``ε v_max``, v_max the top right singular vector of J. Works for any
    ``nn.Module`` with vector output ``(N, m)`` (not only classifiers); the module's mode
    is left as it is, so put it in eval mode first.

    Returns:
        ``(N, *shape)`` perturbations of l2 norm ε.
    """
    v, _ = top_singular_direction(module, x, iterations, generator)
    return eps * v
