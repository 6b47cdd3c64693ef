"""The smallest geometric transformation that changes the label (review eq. 2; ManiFool).

The review's non-additive regime asks how far an image must be *moved* — rotated,
translated, scaled — rather than how much noise must be added. Following ManiFool (Kanbak,
Moosavi-Dezfooli & Frossard, CVPR 2018), the transformations form a manifold parametrised
by ``θ`` (``k`` numbers), an image's orbit is ``u(θ) = T_θ(x)``, and DeepFool runs in
``θ``-space with the metric the orbit induces, ``M(θ) = JᵀJ`` (``J = ∂u/∂θ``, ``d × k``):
for the score difference ``g = f_j − f_k̂`` at ``u(θ)``, the step of least image-space
length onto its linearised zero set is

    Δθ = −g · M⁻¹∇_θ g / (∇_θ gᵀ M⁻¹ ∇_θ g),     length ||J Δθ|| = |g| / sqrt(∇gᵀ M⁻¹ ∇g)

with ``∇_θ g = Jᵀ ∇_u g`` (chain rule: the classifier's input gradient, `J` by central
differences of the warp), over the closest of the `candidates` classes. After the first
``θ*`` that changes the label, the ray ``t θ*`` (``t ∈ (0, 1]``) and the opposite ray are
scanned on a grid and bisected: the result is the first change along ``±θ*`` — for a
one-parameter family (rotation) the smallest ``|θ|`` up to the grid's resolution.

What is measured (``details``): ``params`` ``(N, k)``; ``path_length``, the image-space
length of the path ``T_{tθ}(x)``, ``t ∈ [0, 1]`` (sum of 16 chords, ManiFool's geodesic
distance along this path); ``invariance`` = ``path_length / ||x||`` (ManiFool's score).
`AttackResult.norms` keeps the additive l2 norm of ``T_θ(x) − x`` like every attack.

Parameters (images are warped with ``affine_grid`` / bilinear ``grid_sample``, zero
padding, coordinates in ``[−1, 1]``): ``"rotation"`` ``(angle in radians)``,
``"translation"`` ``(tx, ty)`` in half-widths, ``"similarity"`` ``(angle, log-scale, tx,
ty)``.
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from boundaryscope.attacks.base import (
    Attack,
    RawAttack,
    first_change,
    register_attack,
    top_other_classes,
)
from boundaryscope.classifier import Classifier

__all__ = ["GeometricAttack", "warp"]

Transform = Literal["rotation", "translation", "similarity"]
_PARAMETERS = {"rotation": 1, "translation": 2, "similarity": 4}


def _affine(theta: Tensor, transform: Transform) -> Tensor:
    """``(N, 2, 3)`` affine matrices of `affine_grid` for parameters ``(N, k)``."""
    zero, one = torch.zeros_like(theta[:, 0]), torch.ones_like(theta[:, 0])
    angle = theta[:, 0] if transform in ("rotation", "similarity") else zero
    scale = theta[:, 1].exp() if transform == "similarity" else one
    shift = (
        theta[:, -2:]
        if transform in ("translation", "similarity")
        else theta.new_zeros(theta.shape[0], 2)
    )
    cos, sin = scale * angle.cos(), scale * angle.sin()
    rows = [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)]
    return torch.stack(rows, 1)


def warp(x: Tensor, theta: Tensor, transform: Transform = "rotation") -> Tensor:
    """``T_θ(x)``: images ``(N, C, H, W)`` warped by parameters ``(N, k)`` (module doc)."""
    if x.dim() != 4:
        raise ValueError(f"x must be images (N, C, H, W); got shape {tuple(x.shape)}.")
    if theta.shape != (x.shape[0], _PARAMETERS[transform]):
        raise ValueError(
            f"theta must have shape (N, {_PARAMETERS[transform]}) for {transform!r}; got "
            f"{tuple(theta.shape)}."
        )
    grid = F.affine_grid(_affine(theta.to(x.dtype), transform), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@register_attack("geometric")
class GeometricAttack(Attack):
    """ManiFool-style minimal rotation / translation / similarity (module doc).

    Args:
        transform: ``"rotation"``, ``"translation"`` or ``"similarity"``.
        steps: Linearisation steps in ``θ``-space.
        candidates: Classes considered per step (the top-scoring others).
        overshoot: Each step is ``(1 + overshoot) Δθ`` (DeepFool's).
        max_params: Largest ``|θ_i|`` per parameter (default ``π`` for angles, 0.5 for
            shifts, ``ln 2`` for log-scales); steps are clipped to it.
        grid: Points of each ray scan before bisection (the resolution of the result).
        bisect_steps: Bisection steps on the bracketing interval.
        fd_step: Central-difference step for ``J = ∂T_θ(x)/∂θ``.
    """

    p = 2.0

    def __init__(
        self,
        *,
        transform: Transform = "rotation",
        steps: int = 50,
        candidates: int = 10,
        overshoot: float = 0.02,
        max_params: tuple[float, ...] | None = None,
        grid: int = 64,
        bisect_steps: int = 20,
        fd_step: float = 1e-3,
    ) -> None:
        if transform not in _PARAMETERS:
            raise ValueError(
                f"The 'transform' parameter must be one of {list(_PARAMETERS)}; got {transform!r}."
            )
        if steps < 1 or candidates < 1 or grid < 1 or bisect_steps < 0 or not fd_step > 0:
            raise ValueError(
                "steps, candidates and grid must be >= 1, bisect_steps >= 0 and fd_step > 0; "
                f"got steps={steps}, candidates={candidates}, grid={grid}, "
                f"bisect_steps={bisect_steps}, fd_step={fd_step}."
            )
        default = {"rotation": (math.pi,), "translation": (0.5, 0.5),
                   "similarity": (math.pi, math.log(2), 0.5, 0.5)}[transform]  # fmt: skip
        if max_params is not None and len(max_params) != len(default):
            raise ValueError(
                f"max_params must hold {len(default)} numbers for {transform!r}; got "
                f"{max_params!r}."
            )
        self.transform: Transform = transform
        self.steps = steps
        self.candidates = candidates
        self.overshoot = overshoot
        self.max_params = tuple(max_params) if max_params is not None else default
        self.grid = grid
        self.bisect_steps = bisect_steps
        self.fd_step = fd_step

    # ------------------------------------------------------------------ pieces
    def _warp(self, x: Tensor, theta: Tensor) -> Tensor:
        return warp(x, theta, self.transform)

    def _jacobian(self, x: Tensor, theta: Tensor) -> Tensor:
        """``J`` ``(N, d, k)`` by central differences of the warp."""
        columns = []
        for i in range(theta.shape[1]):
            step = torch.zeros_like(theta)
            step[:, i] = self.fd_step
            forward, backward = self._warp(x, theta + step), self._warp(x, theta - step)
            columns.append(((forward - backward) / (2 * self.fd_step)).flatten(1))
        return torch.stack(columns, dim=2)

    def _step(
        self, clf: Classifier, x: Tensor, theta: Tensor, reference: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The metric DeepFool step ``Δθ`` ``(N, k)`` and the labels at ``T_θ(x)``."""
        u = clf.clip(self._warp(x, theta))
        scores = clf.scores(u)
        count = min(self.candidates, clf.num_classes - 1)
        others = top_other_classes(scores, reference, count)
        _, diff, grad = clf.score_gradients(u, reference, others)
        jac = self._jacobian(x, theta).double()  # (N, d, k)
        grad_theta = torch.einsum("njd,ndk->njk", grad.flatten(2).double(), jac)
        metric = jac.transpose(1, 2) @ jac + 1e-12 * torch.eye(theta.shape[1], dtype=jac.dtype)
        solved = torch.linalg.solve(metric[:, None], grad_theta[..., None])[..., 0]  # M⁻¹∇g
        quad = (grad_theta * solved).sum(-1).clamp_min(1e-30)  # ∇gᵀ M⁻¹ ∇g
        length = diff.double().abs() / quad.sqrt()
        best = length.argmin(dim=1)
        pick = torch.arange(x.shape[0], device=x.device)
        delta = (-diff.double()[pick, best] / quad[pick, best])[:, None] * solved[pick, best]
        return delta.to(theta.dtype), scores.argmax(dim=1)

    def _clip(self, theta: Tensor) -> Tensor:
        bound = torch.tensor(self.max_params, dtype=theta.dtype, device=theta.device)
        return torch.maximum(torch.minimum(theta, bound), -bound)

    def _changed(self, clf: Classifier, x: Tensor, theta: Tensor, reference: Tensor) -> Tensor:
        warped = clf.clip(self._warp(x, theta))
        return clf.predict_unchecked(warped, self.batch_size, invalid=-1) != reference

    def _first_change(
        self, clf: Classifier, x: Tensor, direction: Tensor, reference: Tensor
    ) -> Tensor:
        """Smallest ``t ∈ (0, 1]`` with a changed label at ``t·direction`` (``inf``: none)."""
        return first_change(
            lambda t: self._changed(clf, x, t[:, None].to(x.dtype) * direction, reference),
            [i / self.grid for i in range(1, self.grid + 1)],
            x.shape[0],
            self.bisect_steps,
            device=x.device,
        )

    def _path_length(self, x: Tensor, theta: Tensor, chords: int = 16) -> Tensor:
        points = [self._warp(x, theta * (i / chords)) for i in range(chords + 1)]
        return sum(
            ((b - a).flatten(1).norm(dim=1) for a, b in itertools.pairwise(points)),
            torch.zeros(x.shape[0], dtype=x.dtype, device=x.device),
        )

    # ------------------------------------------------------------------ the attack
    def _run(
        self, clf: Classifier, x: Tensor, reference: Tensor, target: Tensor | None
    ) -> RawAttack:
        if target is not None:
            raise ValueError("GeometricAttack is untargeted; got target classes.")
        if x.dim() != 4:
            raise ValueError(f"GeometricAttack needs images (N, C, H, W); got {tuple(x.shape)}.")
        n, k = x.shape[0], _PARAMETERS[self.transform]
        theta = x.new_zeros(n, k)
        iterations = torch.zeros(n, dtype=torch.int64, device=x.device)
        done = torch.zeros(n, dtype=torch.bool, device=x.device)
        for _ in range(self.steps):
            active = (~done).nonzero()[:, 0]
            if active.numel() == 0:
                break
            delta, labels = self._step(clf, x[active], theta[active], reference[active])
            fooled = labels != reference[active]
            done[active[fooled]] = True
            move = active[~fooled]
            theta[move] = self._clip(theta[move] + (1 + self.overshoot) * delta[~fooled])
            iterations[move] += 1
        done |= self._changed(clf, x, theta, reference)
        # Refine: the first change along +θ* and along −θ* (up to |θ*|), the nearer one kept.
        forward = self._first_change(clf, x, theta, reference)
        backward = self._first_change(clf, x, -theta, reference)
        use_back = backward < forward
        t = torch.where(use_back, -backward, forward)
        # A failure returns the image itself (θ = 0): the last iterate of a failed search
        # means nothing, and returning it would make results depend on float noise.
        found = (done & torch.isfinite(t))[:, None]
        theta = torch.where(found, t[:, None].to(x.dtype) * theta, torch.zeros_like(theta))
        adversarial = self._warp(x, theta)
        length = self._path_length(x, theta)
        norm = x.flatten(1).norm(dim=1).clamp_min(1e-30)
        details = {"params": theta, "path_length": length, "invariance": length / norm}
        return RawAttack(adversarial, iterations, details)
