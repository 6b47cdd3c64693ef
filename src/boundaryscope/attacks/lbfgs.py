"""Box-constrained L-BFGS attack (Szegedy et al.; thesis §2.1; docs/algorithms.md §4)."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor
from tqdm.auto import tqdm

from boundaryscope._progress import tqdm_disable
from boundaryscope.attacks.base import Attack, RawAttack, register_attack
from boundaryscope.classifier import Classifier

__all__ = ["LBFGS"]


@register_attack("lbfgs")
class LBFGS(Attack):
    r"""Minimal l2 perturbation by a penalised box-constrained problem, searched over ``c``.

    For each sample, with margin loss ``h(x') = max(0, f_y(x') - max_{l≠y} f_l(x') + κ)``
    (targeted: ``max(0, max_{l≠t} f_l(x') - f_t(x') + κ)``):

    .. math:: \min_{x' \in [lo, hi]^d}\ \|x' - x\|_2^2 + c\, h(x')

    is solved by ``scipy.optimize.minimize(method="L-BFGS-B")`` with the box as bounds, and
    ``c`` is bisected (after doubling until the result is adversarial) to the smallest
    value whose solution is still adversarial; the smallest adversarial perturbation seen
    is returned. On an affine classifier the solution is the exact projection onto the
    boundary shifted by κ, so the minimal perturbation is recovered up to ``κ / ||w||``.
    Szegedy et al. used the cross-entropy of a target class instead of the margin; the
    margin makes the untargeted minimal-perturbation problem exact on affine models.

    Args:
        c: Initial penalty weight.
        search_steps: Evaluations of the search over ``c``.
        max_iter: L-BFGS-B iterations per solve.
        kappa: Confidence margin ``κ`` in logit units.
        progress: A bar over the images (``None``: only on a terminal; one solve per
            image makes this the slowest attack).
    """

    def __init__(
        self,
        *,
        c: float = 1.0,
        search_steps: int = 10,
        max_iter: int = 100,
        kappa: float = 1e-3,
        progress: bool | None = False,
    ) -> None:
        if not c > 0 or search_steps < 1 or max_iter < 1 or kappa < 0:
            raise ValueError(
                "LBFGS needs c > 0, search_steps >= 1, max_iter >= 1 and kappa >= 0; got "
                f"c={c!r}, search_steps={search_steps!r}, max_iter={max_iter!r}, kappa={kappa!r}."
            )
        self.c = float(c)
        self.search_steps = search_steps
        self.max_iter = max_iter
        self.kappa = float(kappa)
        self.progress = progress
        self.p = 2.0

    def _hinge(self, scores: Tensor, label: Tensor, targeted: bool) -> Tensor:
        own = scores.gather(1, label[:, None]).squeeze(1)
        rest = scores.scatter(1, label[:, None], -math.inf).amax(dim=1)
        gap = rest - own if targeted else own - rest
        return (gap + self.kappa).clamp_min(0.0)

    def _solve(
        self, clf: Classifier, x0: Tensor, label: Tensor, c: float, targeted: bool
    ) -> Tensor:
        """One L-BFGS-B solve of the penalised problem for one sample ``(1, *shape)``."""
        shape, dtype = x0.shape, x0.dtype
        lo, hi = clf.bounds

        def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
            x_var = torch.from_numpy(flat).to(x0.device, dtype).view(shape)
            with torch.enable_grad():
                x_var.requires_grad_(True)
                scores = clf.differentiable_scores(x_var)
                distance = (x_var - x0).flatten(1).pow(2).sum(dim=1)
                total = (distance + c * self._hinge(scores, label, targeted)).sum()
                (grad,) = torch.autograd.grad(total, x_var)
            return float(total.detach()), grad.detach().cpu().double().numpy().ravel()

        result = minimize(
            objective,
            x0.detach().cpu().double().numpy().ravel(),
            jac=True,
            method="L-BFGS-B",
            bounds=[(lo, hi)] * x0.numel(),
            options={"maxiter": self.max_iter},
        )
        return torch.from_numpy(result.x).to(x0.device, dtype).view(shape)

    def _run(
        self, clf: Classifier, x: Tensor, reference: Tensor, target: Tensor | None
    ) -> RawAttack:
        labels = reference if target is None else target
        adversarial = x.clone()
        iterations = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        with clf.session():
            for i in tqdm(
                range(x.shape[0]), desc="L-BFGS", unit="image", disable=tqdm_disable(self.progress)
            ):
                # One problem per sample: a joint solve would couple samples through the
                # shared line search and stopping rule, so results would depend on the batch.
                adversarial[i], iterations[i] = self._search(
                    clf, x[i : i + 1], labels[i : i + 1], target is not None
                )
        return RawAttack(adversarial, iterations)

    def _search(
        self, clf: Classifier, x0: Tensor, label: Tensor, targeted: bool
    ) -> tuple[Tensor, int]:
        """Search over ``c`` for one sample; returns the best point and the solves used."""
        c, c_lo, c_hi = self.c, 0.0, math.inf
        best, best_norm = x0[0].clone(), math.inf
        for _ in range(self.search_steps):
            solution = self._solve(clf, x0, label, c, targeted)
            predicted = int(clf.forward_scores(solution).argmax(dim=1))
            ok = predicted != int(label) if not targeted else predicted == int(label)
            norm = float((solution - x0).norm())
            if ok and norm < best_norm:
                best, best_norm = solution[0], norm
            if ok:
                c_hi = min(c_hi, c)
            else:
                c_lo = max(c_lo, c)
            c = c * 10 if math.isinf(c_hi) else 0.5 * (c_lo + c_hi)
        return best, self.search_steps
