"""Transferability of minimal perturbations from one model to another, image by image.

Table 4.2 of the thesis (§4.3) measures how *universal* perturbations transfer between
networks (`boundaryscope.universal.transfer_matrix`); the review (§3) recalls that
per-image adversarial perturbations transfer too (Szegedy et al. 2014). A minimal
perturbation is the hardest case: it stops just past the source model's boundary. What
this module measures, for each image ``x`` and the source model's minimal perturbation
``r = r_A(x)`` (DeepFool by default), is how far the target model ``B`` needs the same
direction to be pushed:

    t*(x) = min { t > 0 : k̂_B(clip(x + t·r)) ≠ k̂_B(x) }

``t* ≤ 1``: ``r`` fools ``B`` as it is; ``t* = 3``: ``B``'s boundary lies three times
further along ``A``'s normal. The ratio is invariant to the norm, so it compares l2 and l∞
perturbations alike. Along a ray an affine model's clean region is an interval (an
intersection of half-spaces), so the first label change is

    t* = min over k with (w_k − w_ŷ)·r > 0 of (f_ŷ(x) − f_k(x)) / ((w_k − w_ŷ)·r),

the closed form the tests check. For a network the first change is searched on a grid of
``t`` and refined by bisection (a change that starts and ends between two grid points is
missed: the grid step bounds what can be).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from boundaryscope.attacks import DeepFool
from boundaryscope.attacks.base import Attack, first_change
from boundaryscope.classifier import Classifier, check_classifier
from boundaryscope.norms import lp_norm

__all__ = ["TransferResult", "transfer_scale", "transferability"]


@dataclass(frozen=True)
class TransferResult:
    """How one model's minimal perturbations act on another, per image.

    Attributes:
        source_norm: ``(N,)`` ``||r_A(x)||_p`` (NaN where the source attack failed).
        fooled: ``(N,)`` bool: ``clip(x + r_A(x))`` changes the target's label (False where
            the source attack failed).
        scale: ``(N,)`` float64 ``t*(x)``; ``inf`` where no change was found up to `t_max`,
            NaN where the source attack failed.
        t_max: The largest multiplier searched.
        p: The norm of the source attack.
    """

    source_norm: Tensor
    fooled: Tensor
    scale: Tensor
    t_max: float
    p: float

    def to_dict(self) -> dict[str, Any]:
        """Rates and the per-image distribution of ``t*`` over the source's successes."""
        attacked = ~torch.isnan(self.scale)
        n = int(attacked.sum())
        scale = self.scale[attacked]
        finite = scale[torch.isfinite(scale)]

        def quantile(q: float) -> float:
            # Over all attacked images, beyond-t_max ones as +inf (no interpolation with inf).
            return float(torch.quantile(scale, q, interpolation="higher")) if n else math.nan

        return {
            "p": "inf" if math.isinf(self.p) else self.p,
            "n": int(self.scale.numel()),
            "source_successes": n,
            "transfer_rate": float(self.fooled[attacked].double().mean()) if n else math.nan,
            "scale_median": quantile(0.5),
            "scale_p90": quantile(0.9),
            "scale_mean_finite": float(finite.mean()) if finite.numel() else math.nan,
            "beyond_t_max": float((~torch.isfinite(scale)).double().mean()) if n else math.nan,
            "t_max": self.t_max,
        }


def transfer_scale(
    target: Classifier,
    x: Tensor,
    r: Tensor,
    t_max: float = 8.0,
    grid: int = 32,
    bisect_steps: int = 30,
) -> Tensor:
    """``t*(x)``: the first multiplier of `r` that changes `target`'s label (module doc).

    Args:
        target: The model the perturbations are carried to.
        x: ``(N, ...)`` images inside the target's bounds.
        r: ``(N, ...)`` perturbations (directions; their length is the unit of ``t``).
        t_max: Largest multiplier searched.
        grid: Multipliers ``t_max·i/grid``, ``i = 1..grid``, tried before bisection.
        bisect_steps: Halvings of the bracketing interval (its width ends at
            ``t_max / grid / 2**bisect_steps``).

    Returns:
        ``(N,)`` float64 ``t*``, the upper end of the final bracket (a point that changes
        the label); ``inf`` where no grid point up to `t_max` does (``r = 0`` included).

    Memory: one batch of the target's ``batch_size`` images at a time.
    """
    target = check_classifier(target, "target")
    x = target.validate(x)
    if r.shape != x.shape:
        raise ValueError(f"r must have the shape of x {tuple(x.shape)}; got {tuple(r.shape)}.")
    if not (t_max > 0 and math.isfinite(t_max)) or grid < 1 or bisect_steps < 0:
        raise ValueError(
            f"t_max must be finite and > 0, grid >= 1 and bisect_steps >= 0; got t_max={t_max}, "
            f"grid={grid}, bisect_steps={bisect_steps}."
        )
    r = r.to(device=x.device, dtype=x.dtype)
    multipliers = [t_max * i / grid for i in range(1, grid + 1)]
    shape = (-1,) + (1,) * (x.dim() - 1)
    out = []
    with target.session():
        for xb, rb in zip(x.split(target.batch_size), r.split(target.batch_size), strict=True):
            clean = target.predict_unchecked(xb)

            def changed(
                t: Tensor, xb: Tensor = xb, rb: Tensor = rb, clean: Tensor = clean
            ) -> Tensor:
                moved = target.clip(xb + t.to(xb.dtype).view(shape) * rb)
                return target.predict_unchecked(moved) != clean

            scale = first_change(changed, multipliers, len(xb), bisect_steps, device=x.device)
            out.append(scale.cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def transferability(
    source: Classifier,
    target: Classifier,
    x: Tensor,
    y: Tensor | None = None,
    attack: Attack | None = None,
    t_max: float = 8.0,
    grid: int = 32,
) -> TransferResult:
    """The source model's minimal perturbations carried to the target model.

    Args:
        source: The model the perturbations are computed on.
        target: The model they are carried to (same input shape and bounds).
        x: ``(N, ...)`` images.
        y: Labels for the source attack (default: the source's predictions).
        attack: The source attack (default: ``DeepFool(p=2)``, the minimal perturbation).
        t_max: Largest multiplier searched (`transfer_scale`).
        grid: Grid points before bisection (`transfer_scale`).

    Returns:
        A `TransferResult`; images the source attack did not fool have NaN entries.
    """
    source = check_classifier(source, "source")
    target = check_classifier(target, "target")
    x = source.validate(x)
    if source.bounds != target.bounds:
        raise ValueError(
            f"source and target must share their input bounds; got {source.bounds} and "
            f"{target.bounds}."
        )
    attack = attack if attack is not None else DeepFool(p=2)
    result = attack(source, x, y)
    r = result.perturbation.to(x.dtype)
    scale = transfer_scale(target, x, r, t_max, grid).double()
    success = result.success.cpu()
    with target.session():
        fooled = (
            target.predict_unchecked(target.clip(x + r)) != target.predict_unchecked(x)
        ).cpu() & success
    p = float(getattr(attack, "p", 2.0))
    norm = lp_norm(r, p).double().cpu()
    nan = torch.tensor(math.nan, dtype=torch.float64)
    return TransferResult(
        source_norm=torch.where(success, norm, nan),
        fooled=fooled,
        scale=torch.where(success, scale, nan),
        t_max=t_max,
        p=p,
    )
