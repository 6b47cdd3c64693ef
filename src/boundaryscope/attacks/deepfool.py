"""DeepFool: minimal l_p adversarial perturbations by iterative linearisation.

docs/algorithms.md §1; thesis §3.2 (Alg. 1 binary, Alg. 2 multi-class, eqs. 3.7–3.10) and
§3.4.1 (general l_p, eqs. 3.11–3.14); §3.4.2 (Alg. 3) through the `subspace` argument.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from boundaryscope import memory
from boundaryscope._progress import tqdm_disable
from boundaryscope.attacks.base import (
    Attack,
    RawAttack,
    is_adversarial,
    predicted_labels,
    register_attack,
    top_other_classes,
)
from boundaryscope.attacks.landing import (
    Side,
    adversarial_margin,
    land_on_boundary,
    rival_class,
    tangent_polish,
)
from boundaryscope.classifier import Classifier
from boundaryscope.norms import (
    dual_exponent,
    linear_step,
    lp_norm,
    parse_p,
    project_hyperplane_box,
)

__all__ = ["DeepFool", "Projector"]

#: ``P_S``: maps gradients ``(A, K, *shape)`` of samples ``index`` ``(A,)`` to their
#: projections onto a subspace, same shape (see `boundaryscope.subspaces`).
Projector = Callable[[Tensor, Tensor], Tensor]
BoxMode = Literal["clip-then-project", "project", "freeze", "ignore"]
BOX_MODES: tuple[BoxMode, ...] = ("clip-then-project", "project", "freeze", "ignore")
# How one step treats the box: a `BoxMode` other than "clip-then-project", or "clip" (the
# class chosen as "project" chooses it, the step the paper's, clipped afterwards).
StepMode = Literal["project", "freeze", "ignore", "clip"]
_TINY = 1e-12


@register_attack("deepfool")
class DeepFool(Attack):
    r"""DeepFool (Moosavi-Dezfooli et al., CVPR 2016), batched, any l_p with p >= 1.

    At iterate ``x_i`` with current class ``k̂`` and candidate classes ``k``
    (thesis Alg. 2, eqs. 3.11–3.12):

    .. math::
        w'_k = \nabla f_k(x_i) - \nabla f_{\hat k}(x_i),\quad
        f'_k = f_k(x_i) - f_{\hat k}(x_i),\quad
        \hat l = \arg\min_k \frac{|f'_k|}{\|w'_k\|_q},\quad
        r_i = \frac{|f'_{\hat l}|}{\|w'_{\hat l}\|_q^q}\,|w'_{\hat l}|^{q-1}\odot
              \operatorname{sign}(w'_{\hat l})

    with ``q = p / (p - 1)``. The perturbation is accumulated, ``r = Σ r_i``, and every
    iterate is the *overshot, clipped* point ``x_{i+1} = clip(x + (1 + η) r)``: the
    overshoot ``η`` multiplies the accumulated perturbation, as in the paper (thesis
    §3.2.1, "the final perturbation vector r̂ is multiplied by 1 + η") and the original
    code. torchattacks applies it to every step instead, ART once at the end with
    ``η = 1e-6`` (research/peers.md §2); both differ from the paper. Success is tested on
    the same point that is linearised next, so each iteration costs one forward pass for
    the whole active batch and one forward + ``K`` batched backward passes for the
    samples that are still not adversarial; where the first step weighs every other
    class (untargeted, `candidates` ≥ the number of classes) its gradient pass at ``x``
    is the check too.

    Four refinements beyond the paper; ``as_published()`` turns them off
    (docs/algorithms.md §1.3):

    - `box`: how each linearised step treats the box ``[lo, hi]``. ``"project"`` takes
      the minimal step to the linearised boundary *inside* the box,
      ``argmin ‖δ‖_p s.t. f' + <w', δ> = 0, lo <= x_i + δ <= hi`` (FAB's projection,
      `project_hyperplane_box`; the class is chosen by the distance with saturated
      coordinates frozen). On an affine model it is the exact box-constrained minimum in
      one step, where the published step needs several because clipping eats part of
      each (6.6 instead of 1.4 iterations on the shipped LeNet). But from the clean
      image that one long step lands far from the smallest perturbation on a trained
      BatchNorm ResNet with a dark background (Fashion-MNIST `resnet8-fashion`: per-image
      norms +5% median, +15% p90 against the paper's step), so the default for p = 2 and
      inf is ``"clip-then-project"``: the first step goes towards the class whose
      boundary is nearest inside the box but is the paper's step, clipped; the later
      ones are projected. Per image it is the tightest of the three on the LeNet and the
      ResNet-8 (median 0.952 and 1.010 of adv_lib's ``df`` against 0.960 and 1.054 for
      ``"project"``), at 2.3 instead of 1.45 steps on the LeNet
      (benchmarks/deepfool_vs_peers.py). ``"freeze"`` (default for
      p = 1) only drops the coordinates on the box that a step would push outward: the
      l1 step puts all its mass on few pixels, which the published step pushes out of
      the box, so DeepFool l1 fails on 96% of LeNet's images without it. ``"ignore"`` is
      the paper's step.
    - `later_candidates` (2): after the first step, only the class that step aimed at and
      the strongest other class at the current point are linearised (the first step
      still weighs all `candidates`): a later step corrects the approach to a boundary
      already chosen, and 2 gradients cost a fifth of 9. Same norms on the shipped LeNet
      (300 images, l2 and l∞), 22% fewer backward passes.
    - `refine_steps` (at most 10): forward passes landing the final point back on the
      boundary along its ray from ``x``, by regula falsi on the margin
      (`land_on_boundary`); a point stops once its margin is 0.1% of the clean one (one
      or two passes on the shipped LeNet).
    - `polish_steps` (1 for p = 2 and inf): at the landed point, one gradient of the
      binding score difference; ``x`` is projected on that tangent hyperplane and the new
      direction searched for the boundary (`tangent_polish`). Larger steps from ``x``
      land farther past the boundary than the paper's small last steps; the polish more
      than makes up for it: on the shipped LeNet, 300 images, l2, the default is 2.6×
      faster than the published step and its per-image norms are smaller (median ratio
      0.95 of adv_lib's ``df``; benchmarks/deepfool_vs_peers.py).

    For the smallest perturbation at a few times DeepFool's cost, refine its point with
    `FMN` (``FMN(p=p)`` starts from this DeepFool).

    A binary model (one logit ``f``) is handled as two scores ``[0, f]``, for which this
    update is exactly Alg. 1: ``r_i = -f(x_i) ∇f / ||∇f||²``.

    Batching: at most `batch_size` samples are active; a sample leaves as soon as it is
    adversarial (or out of steps) and the next waiting sample takes its place, so batches
    stay full; landing and polish run on blocks of `batch_size`. Peak gradient memory is
    ``batch_size × (candidates − 1) × d`` values, and fewer samples are active when that
    would not fit the memory budget (`boundaryscope.memory`; never on MNIST-sized inputs).

    Args:
        p: Norm of the minimal perturbation: 1, 2, inf or any real ``p > 1``.
        steps: Maximum number of linearisation steps per sample; samples not adversarial
            after it are reported as failures (``success=False``, norm ``inf``).
        candidates: Number of classes considered, the original one included, taken as the
            top scores at the clean input (``>= num_classes`` means all classes).
        overshoot: ``η`` above.
        min_step: Floor on each step's ``l_p`` length, in input units: a point lying on a
            boundary (``f' = 0``) would otherwise never move.
        batch_size: Maximum number of active samples.
        box: ``"clip-then-project"``, ``"project"``, ``"freeze"`` or ``"ignore"`` (see
            above); ``None`` (default): ``"clip-then-project"`` for p = 2 and inf,
            ``"freeze"`` for p = 1, ``"ignore"`` for other p and with a `subspace`.
        refine_steps: Most forward passes landing the final point on the boundary (0 = off).
        polish_steps: Tangent-polish rounds (see above); ``None`` (default): 1 for p = 2
            and inf without a `subspace`, else 0. Needs ``refine_steps >= 1``.
        later_candidates: Classes linearised after the first step (see above); ``None``:
            the `candidates` of the first step every time, as in the paper.
        subspace: Optional projector ``P_S`` applied to every ``w'_k`` (subspace-constrained
            DeepFool, thesis Alg. 3), called as ``subspace(grads, sample_ids)``; ``None`` is
            the full space. See `boundaryscope.subspaces`. Steps then stay in the
            subspace: the projecting box modes and the polish, which leave it, are
            refused.
        progress: Show a progress bar (``None``: only on a terminal).

    Returns (via ``__call__``):
        `AttackResult` with ``details["crossed_class"]``: the candidate class whose
        linearised boundary the last step aimed at (``-1`` when no step was taken).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from boundaryscope import Classifier
        >>> net = nn.Linear(2, 3)
        >>> _ = torch.manual_seed(0)
        >>> result = DeepFool(p=2)(Classifier(net, bounds=(-10, 10)), torch.zeros(4, 2))
        >>> bool(result.success.all())
        True
    """

    def __init__(
        self,
        *,
        p: float | str = 2,
        steps: int = 50,
        candidates: int = 10,
        overshoot: float = 0.02,
        min_step: float = 1e-4,
        batch_size: int = 256,
        box: BoxMode | None = None,
        refine_steps: int = 10,
        polish_steps: int | None = None,
        later_candidates: int | None = 2,
        subspace: Projector | None = None,
        progress: bool | None = False,
    ) -> None:
        self.p = parse_p(p)
        if steps < 1 or candidates < 2 or batch_size < 1:
            raise ValueError(
                "DeepFool needs steps >= 1, candidates >= 2 and batch_size >= 1; got "
                f"steps={steps}, candidates={candidates}, batch_size={batch_size}."
            )
        finite = math.isfinite(overshoot) and math.isfinite(min_step)
        if not finite or overshoot < 0 or min_step < 0 or refine_steps < 0:
            raise ValueError(
                "DeepFool needs finite overshoot, min_step >= 0 and refine_steps >= 0; got "
                f"overshoot={overshoot}, min_step={min_step}, refine_steps={refine_steps}."
            )
        self.steps = steps
        self.candidates = candidates
        self.overshoot = overshoot
        self.min_step = min_step
        self.batch_size = batch_size
        if later_candidates is not None and later_candidates < 1:
            raise ValueError(
                f"DeepFool later_candidates must be >= 1 or None; got {later_candidates}."
            )
        self.later_candidates = later_candidates
        self.refine_steps = refine_steps
        self.subspace = subspace
        self.progress = progress
        self.box = self._box_mode(box)
        self.polish_steps = self._polish_rounds(polish_steps)

    @property
    def _projectable(self) -> bool:
        """Whether the box projection and the polish apply: p = 2 or inf, no subspace."""
        return self.p in (2.0, math.inf) and self.subspace is None

    def _box_mode(self, box: BoxMode | None) -> BoxMode:
        """`box` checked, or its default for this p and subspace."""
        projectable = self._projectable
        if box is None:
            return "freeze" if self.p == 1 else "clip-then-project" if projectable else "ignore"
        if box not in BOX_MODES:
            raise ValueError(f"DeepFool box must be one of {BOX_MODES} or None; got {box!r}.")
        if box in ("project", "clip-then-project") and not projectable:
            raise ValueError(
                f"DeepFool box={box!r} needs p = 2 or inf and no subspace (the projected "
                f"step leaves a subspace); got p={self.p:g}, "
                f"subspace={'given' if self.subspace is not None else None}."
            )
        return box

    def _polish_rounds(self, polish_steps: int | None) -> int:
        """`polish_steps` checked, or its default for this p and subspace."""
        polishable = self._projectable
        if polish_steps is None:
            return 1 if polishable and self.refine_steps > 0 else 0
        if polish_steps < 0 or (polish_steps and not (polishable and self.refine_steps)):
            raise ValueError(
                "DeepFool polish_steps must be >= 0, and > 0 only with p = 2 or inf, no "
                f"subspace and refine_steps >= 1; got polish_steps={polish_steps}, "
                f"p={self.p:g}, refine_steps={self.refine_steps}, "
                f"subspace={'given' if self.subspace is not None else None}."
            )
        return polish_steps

    def for_shard(self, start: int, stop: int) -> DeepFool:
        """This DeepFool for samples ``start:stop``: the subspace sees their batch positions.

        A projector receives each sample's position in the batch (per-sample random
        subspaces are drawn from it), so a block starting at `start` shifts them back.
        """
        if self.subspace is None or start == 0:
            return self
        shifted = copy.copy(self)
        shifted.subspace = _ShiftedProjector(self.subspace, start)
        return shifted

    @classmethod
    def as_published(cls, **kwargs: Any) -> DeepFool:
        """DeepFool exactly as in the paper: its own step, no landing, no polish.

        Same as ``DeepFool(box="ignore", refine_steps=0, polish_steps=0,
        later_candidates=None, **kwargs)``.
        """
        published = {"box": "ignore", "refine_steps": 0, "polish_steps": 0}
        return cls(**{**kwargs, **published, "later_candidates": None})

    def _run(
        self, clf: Classifier, x: Tensor, reference: Tensor, target: Tensor | None
    ) -> RawAttack:
        n = x.shape[0]
        num_others = 1 if target is not None else min(self.candidates, clf.num_classes) - 1
        total = torch.zeros_like(x)
        adversarial = x.clone()
        iterations = torch.zeros(n, dtype=torch.int64, device=x.device)
        finished = torch.zeros(n, dtype=torch.bool, device=x.device)
        reached = torch.zeros(n, dtype=torch.bool, device=x.device)
        others = torch.zeros(n, num_others, dtype=torch.int64, device=x.device)
        crossed = torch.full((n,), -1, dtype=torch.int64, device=x.device)
        # Margins at x and at the returned point: the two ends the landing starts from.
        margin_clean = torch.zeros(n, dtype=x.dtype, device=x.device)
        margin_final = torch.zeros(n, dtype=x.dtype, device=x.device)
        rival_final = torch.zeros(n, dtype=torch.int64, device=x.device)
        # Later steps on fewer classes (see the class) only when that is fewer than all.
        narrowing = self.later_candidates is not None and self.later_candidates < num_others
        # Where the first step weighs every other class, its classes are known before any
        # pass: the first pass at x is the gradient pass itself, whose scores also tell
        # which samples are adversarial already (one forward row per image less; the
        # gradients of samples misclassified at x are then made for nothing).
        eager = target is None and num_others == clf.num_classes - 1
        # First and later steps run apart when they differ in classes or in box mode, and
        # whenever the first step's gradients come with its check.
        split = narrowing or self.box == "clip-then-project" or eager
        bar = tqdm(total=n, desc=f"DeepFool l{self.p:g}", disable=tqdm_disable(self.progress))
        # Each active sample holds its candidates' gradients and a few copies of itself.
        per_sample = 4 * (num_others + 1) * x[0].numel() * x.element_size() if n else 1
        max_active = memory.rows_within(per_sample, at_most=self.batch_size, device=x.device)
        while True:
            idx = torch.nonzero(~finished).flatten()[:max_active]
            if idx.numel() == 0:
                break
            x_i = clf.clip(x[idx] + (1 + self.overshoot) * total[idx])
            fresh = iterations[idx] == 0
            first: tuple[Tensor, Tensor] | None = None  # the fresh rows' (diff, grad)
            if eager and bool(fresh.any()):
                others[idx[fresh]] = _all_others(reference[idx[fresh]], clf.num_classes)
                fresh_scores, diff, grad = clf.score_gradients(
                    x_i[fresh], reference[idx[fresh]], others[idx[fresh]]
                )
                first = (diff, grad)
                scores = fresh_scores.new_empty((idx.numel(), fresh_scores.shape[1]))
                scores[fresh] = fresh_scores
                if not bool(fresh.all()):
                    scores[~fresh] = clf.forward_scores(x_i[~fresh]).to(scores.dtype)
            else:
                scores = clf.forward_scores(x_i)
            current = scores.argmax(dim=1)
            tgt = None if target is None else target[idx]
            margin = adversarial_margin(scores, reference[idx], tgt).to(x.dtype)
            if bool(fresh.any()):
                if first is None:
                    others[idx[fresh]] = self._candidates(
                        scores[fresh],
                        reference[idx[fresh]],
                        None if tgt is None else tgt[fresh],
                        num_others,
                    )
                margin_clean[idx[fresh]] = margin[fresh]
            adversarial_now = is_adversarial(predicted_labels(scores), reference[idx], tgt)
            stop = adversarial_now | (iterations[idx] >= self.steps)
            adversarial[idx[stop]] = x_i[stop]
            finished[idx[stop]] = True
            reached[idx[adversarial_now]] = True
            margin_final[idx[stop]] = margin[stop]
            rival_final[idx[stop]] = rival_class(
                scores[stop], reference[idx[stop]], None if tgt is None else tgt[stop]
            )
            bar.update(int(stop.sum()))
            go = ~stop
            if not bool(go.any()):
                continue
            active, rows = idx[go], torch.nonzero(go).flatten()
            later = iterations[active] > 0
            groups = [(~later, False), (later, True)] if split else [(None, False)]
            for group, is_later in groups:
                here, ids = (rows, active) if group is None else (rows[group], active[group])
                if not ids.numel():
                    continue
                candidates = (
                    self._later_candidates(scores[here], current[here], crossed[ids])
                    if is_later and narrowing
                    else others[ids]
                )
                box = self._step_box(is_later)
                computed = None
                if first is not None and not is_later:
                    # The fresh rows still going, among the fresh rows the pass was made for.
                    keep = go[fresh]
                    computed = (first[0][keep], first[1][keep])
                step, chosen = self._step(
                    clf, x_i[here], current[here], candidates, ids, box, computed
                )
                total[ids] += step
                crossed[ids] = chosen
            iterations[active] += 1
        bar.close()
        # Landing and polish only where a step was taken and crossed the boundary.
        moved = torch.nonzero(reached & (iterations > 0)).flatten()
        for block in moved.split(self.batch_size):
            adversarial[block] = self._finish(
                clf,
                x[block],
                Side(adversarial[block], margin_final[block], rival_final[block]),
                reference[block],
                None if target is None else target[block],
                margin_clean[block],
            )
        return RawAttack(adversarial, iterations, {"crossed_class": crossed})

    def _finish(
        self,
        clf: Classifier,
        x: Tensor,
        found: Side,
        reference: Tensor,
        target: Tensor | None,
        margin_clean: Tensor,
    ) -> Tensor:
        """Lands a block of found points on the boundary, then polishes them (see the class)."""
        if not self.refine_steps:
            return found.points
        landed = land_on_boundary(clf, x, found, reference, target, self.refine_steps, margin_clean)
        for _ in range(self.polish_steps):
            landed = tangent_polish(
                clf, x, landed, reference, target, self.p, self.refine_steps, margin_clean
            )
        return landed.points

    def _later_candidates(self, scores: Tensor, current: Tensor, crossed: Tensor) -> Tensor:
        """After the first step: the class aimed at, then the strongest others now.

        ``(N, later_candidates)`` classes: ``crossed`` first, then the top-scoring classes
        at the current point other than ``current`` and ``crossed``.
        """
        assert self.later_candidates is not None
        masked = scores.scatter(1, current[:, None], -math.inf)
        masked = masked.scatter(1, crossed[:, None], -math.inf)
        rest = masked.topk(self.later_candidates - 1, dim=1).indices
        return torch.cat([crossed[:, None], rest], dim=1)

    @staticmethod
    def _candidates(
        scores: Tensor, reference: Tensor, target: Tensor | None, num_others: int
    ) -> Tensor:
        """Top-scoring classes other than the reference (or the fixed target)."""
        if target is not None:
            return target[:, None]
        return top_other_classes(scores, reference, num_others)

    def _step_box(self, later: bool) -> StepMode:
        """The box mode of a first or a later step: ``"clip-then-project"`` splits in two."""
        if self.box != "clip-then-project":
            return self.box
        return "project" if later else "clip"

    def _step(
        self,
        clf: Classifier,
        x_i: Tensor,
        current: Tensor,
        others: Tensor,
        index: Tensor,
        box: StepMode,
        computed: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """One linearised step (eqs. 3.11–3.12) for samples that are not adversarial yet.

        `box` is this step's mode (`_step_box`): ``"clip"`` chooses the class as
        ``"project"`` does (nearest linearised boundary inside the box: exact on affine
        models) but takes the paper's step towards it. `computed`: the score differences
        and gradients at `x_i` when the pass that checked the samples already made them.
        """
        if computed is None:
            _, diff, grad = clf.score_gradients(x_i, current, others)
        else:
            diff, grad = computed
        paper_step = box in ("ignore", "clip")
        free = grad if paper_step else _freeze_saturated(grad, x_i, clf.bounds)
        if self.subspace is not None:
            free = self.subspace(free, index)
        q = dual_exponent(self.p)
        distances = diff.abs() / lp_norm(free, q, start_dim=2).clamp_min(_TINY)
        choice = distances
        if box in ("project", "clip"):
            projected, reached = _project_in_box(grad, diff, x_i, clf.bounds, self.p)
            # The class whose boundary is nearest inside the box; where none is in reach,
            # the step's own distances choose (and that step goes as far as it can).
            inside = lp_norm(projected, self.p, start_dim=2).masked_fill(~reached, math.inf)
            choice = torch.where(reached.any(dim=1, keepdim=True), inside, distances)
            if box == "project":
                distances = choice
        best = choice.argmin(dim=1)
        rows = torch.arange(x_i.shape[0], device=x_i.device)
        distance = distances[rows, best].clamp_min(self.min_step)
        step = linear_step(distance, free[rows, best], self.p)
        if box == "project":
            chosen = projected[rows, best]
            # On a boundary (f' = 0) the projection is zero: the floored step moves instead.
            long_enough = lp_norm(chosen, self.p) >= self.min_step
            step = torch.where(long_enough.view(-1, *([1] * (x_i.ndim - 1))), chosen, step)
        assert step.shape == x_i.shape
        return step, others[rows, best]


def _all_others(reference: Tensor, num_classes: int) -> Tensor:
    """``(N, C − 1)``: every class but ``reference[n]``, in class order."""
    classes = torch.arange(num_classes - 1, device=reference.device).expand(len(reference), -1)
    return classes + (classes >= reference[:, None]).long()


def _project_in_box(
    grad: Tensor, diff: Tensor, x_i: Tensor, bounds: tuple[float, float], p: float
) -> tuple[Tensor, Tensor]:
    """Minimal steps onto each candidate's linearised boundary inside the box.

    Args:
        grad: ``(N, K, *shape)`` gradients ``w'_k``.
        diff: ``(N, K)`` score differences ``f'_k``.
        x_i: ``(N, *shape)`` current points.
        bounds: The box.
        p: 2 or inf.

    Returns:
        ``(steps (N, K, *shape), reached (N, K))``: ``δ_k`` minimising ``‖δ‖_p`` with
        ``f'_k + <w'_k, δ> = 0`` and ``x_i + δ`` in the box, and whether the box reaches
        that hyperplane at all (else ``δ_k`` is the box point that comes closest).
    """
    n, k = diff.shape
    lo, hi = bounds
    flat_grad = grad.reshape(n * k, *grad.shape[2:])
    room_low = (lo - x_i).unsqueeze(1).expand_as(grad).reshape(flat_grad.shape)
    room_high = (hi - x_i).unsqueeze(1).expand_as(grad).reshape(flat_grad.shape)
    steps = project_hyperplane_box(flat_grad, -diff.reshape(-1), p, room_low, room_high)
    achieved = (flat_grad * steps).flatten(1).sum(dim=1).view(n, k)
    reached = (achieved + diff).abs() <= 1e-3 * diff.abs() + _TINY
    return steps.view_as(grad), reached


def _freeze_saturated(grad: Tensor, x_i: Tensor, bounds: tuple[float, float]) -> Tensor:
    """Zeroes gradient coordinates along which a step would leave the box.

    A coordinate at the lower bound cannot decrease and one at the upper bound cannot
    increase; the step moves along ``+sign(w')``, so such coordinates are dropped from the
    linearised problem. Without this, clipping discards part of every step on images with
    saturated pixels (MNIST) and DeepFool needs several times more iterations.
    """
    lo, hi = bounds
    at_lo = (x_i <= lo).unsqueeze(1)
    at_hi = (x_i >= hi).unsqueeze(1)
    blocked = (at_lo & (grad < 0)) | (at_hi & (grad > 0))
    return grad.masked_fill(blocked, 0.0)


class _ShiftedProjector:
    """``P_S`` for a block of a batch: the block's sample ``i`` is the batch's ``start + i``."""

    def __init__(self, projector: Projector, start: int) -> None:
        self.projector = projector
        self.start = start

    def __call__(self, grads: Tensor, index: Tensor) -> Tensor:
        return self.projector(grads, index + self.start)

    def __repr__(self) -> str:
        return repr(self.projector)
