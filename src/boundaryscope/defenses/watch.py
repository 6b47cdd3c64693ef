"""What the training loop watches: held-out numbers, collapse and catastrophic overfitting.

- `Monitor`: held-out accuracy, ρ_adv (thesis Fig. 3.6), FGSM's robustness estimate beside
  it (Fig. 3.9: the same nets judged by DeepFool and by FGSM), and the trusted and PGD
  robust accuracies, recorded before training and after every epoch.
- `CollapseWatch`: a defence that destroys the model shows it first in the held-out
  accuracy; the best epoch's weights are kept and a warning says so at once.
- `OverfittingCheck`: single-step adversarial training (FGSM-RS) can suddenly lose all
  robustness to multi-step attacks within an epoch — "catastrophic overfitting" (Wong et
  al., ICLR 2020, §5.3). After every epoch a cheap PGD runs on a fixed batch of training
  images; a fall of more than `drop` below the best so far stops the run and rolls the
  weights back to the epoch before.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from boundaryscope.attacks import PGD, DeepFool, smallest_fooling_epsilon
from boundaryscope.classifier import Classifier
from boundaryscope.metrics import rho_adv
from boundaryscope.norms import lp_norm

__all__ = ["BEST", "CollapseWatch", "Monitor", "OverfittingCheck"]


BEST = "best.pt"


@dataclass
class CollapseWatch:
    """Watches the monitored clean accuracy epoch by epoch; keeps the best weights.

    A defence that destroys the model (too high a learning rate for the data, a
    regulariser out of scale) shows it first in the held-out accuracy. After each epoch,
    an accuracy more than `drop` below the best so far (epoch 0, the model before
    training, included) is a collapse: a warning says so loudly at once, naming the best
    epoch, whose weights are kept — in memory and, with a run directory, in ``best.pt``.
    Everything is derived from the history, so a resumed run watches the same way.

    Attributes:
        drop: Fall in accuracy (fraction) below the best that counts as a collapse.
        best_epoch: Epoch with the highest accuracy so far (``-1``: none seen).
        best_accuracy: That accuracy.
        collapsed: Epochs at which a collapse was seen.
        best_state: The best epoch's weights (CPU copies).
        start_accuracy: The accuracy before training (epoch 0), if monitored.
    """

    drop: float = 0.2
    best_epoch: int = -1
    best_accuracy: float = -math.inf
    collapsed: list[int] = field(default_factory=list)
    best_state: dict[str, Tensor] | None = None
    start_accuracy: float | None = None

    def replay(self, records: list[dict[str, float]]) -> None:
        """Best epoch and collapses of an earlier part of the run (on resume)."""
        for record in records:
            self._judge(int(record["epoch"]), record.get("test_accuracy"))

    def observe(self, epoch: int, record: dict[str, float], model: nn.Module) -> bool:
        """Judges one epoch; returns whether its weights are the best so far (then kept)."""
        improved, collapsed = self._judge(epoch, record.get("test_accuracy"))
        if improved:
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if collapsed:
            message = (
                f"held-out accuracy fell to {record['test_accuracy']:.1%} at epoch {epoch}, "
                f"from {self.best_accuracy:.1%} at epoch {self.best_epoch}: the defence is "
                "destroying the model (lower --lr, or the defence's strength); the weights of "
                f"epoch {self.best_epoch} are kept ({BEST} in a run directory)."
            )
            warnings.warn(message, UserWarning, stacklevel=3)  # the CLI logs it, once
        return improved

    def _judge(self, epoch: int, accuracy: float | None) -> tuple[bool, bool]:
        if accuracy is None or not math.isfinite(accuracy):
            return False, False
        if epoch == 0:
            self.start_accuracy = float(accuracy)
        collapsed = accuracy < self.best_accuracy - self.drop
        if collapsed:
            self.collapsed.append(epoch)
        improved = accuracy > self.best_accuracy
        if improved:
            self.best_epoch, self.best_accuracy = epoch, float(accuracy)
        return improved, collapsed

    def summary(self) -> dict[str, Any]:
        """JSON-ready: start, best epoch and accuracy, collapsed epochs, the threshold."""
        return {
            "start_test_accuracy": self.start_accuracy,
            "best_epoch": self.best_epoch,
            "best_test_accuracy": self.best_accuracy,
            "collapsed_epochs": list(self.collapsed),
            "drop": self.drop,
        }


# ---------------------------------------------------------------------- monitoring
@dataclass(frozen=True)
class Monitor:
    """Held-out numbers recorded before training and after every epoch.

    Attributes:
        x: Held-out inputs ``(N, *shape)``.
        y: Labels ``(N,)``.
        rho_p: Norm of the DeepFool ρ_adv (2 as Fig. 3.6; ``None`` skips it).
        curvature_n: Also record the loss curvature on the first `curvature_n` images
            (thesis Fig. 8.10: curvature falls while robustness rises under CURE): the
            median top eigenvalue ``ν`` of the input Hessian of the loss
            (``loss_curvature_top``), the median ``ν / ‖∇ℓ‖`` (``loss_curvature_relative``;
            the raw ``ν`` grows when a saturated loss wakes up) and the median
            gradient–eigenvector alignment. 0 skips it (Lanczos, ~2×120 Hessian-vector
            products per image).
        fgsm_rho: Also record FGSM's robustness estimate ``rho_fgsm`` (thesis §3.2.3: the
            smallest l∞ ε fooling 90% of the correctly classified images, over the mean
            l∞ norm of the images), to set beside ρ_adv as Fig. 3.9 does.
        pgd_eps: l∞ budgets at which robust accuracy is recorded: the trusted one
            (``robust_accuracy@ε``, `boundaryscope.evaluation` with the `evaluation`
            profile: minimal norms, then AutoAttack's cascade) and PGD(`pgd_steps`)'s
            (``pgd_accuracy@ε``, an upper bound kept for comparison with older runs).
        pgd_steps: PGD iterations.
        evaluation: Profile of the trusted evaluation (``None``: PGD only).
        batch_size: Rows per pass.
    """

    x: Tensor
    y: Tensor
    rho_p: float | None = 2.0
    curvature_n: int = 0
    fgsm_rho: bool = False
    pgd_eps: tuple[float, ...] = ()
    pgd_steps: int = 20
    evaluation: str | None = "quick"
    batch_size: int = 256

    def __call__(self, clf: Classifier) -> dict[str, float]:
        """The numbers for the model `clf` wraps now."""
        x, y = clf.validate(self.x), self.y.to(clf.device)
        correct = clf.predict_unchecked(x, self.batch_size) == y
        out = {"test_accuracy": float(correct.float().mean())}
        if self.rho_p is not None:
            result = DeepFool(p=self.rho_p, batch_size=self.batch_size)(clf, x, y)
            inputs = lp_norm(x, result.p)
            out["rho_adv"] = rho_adv(result.norms, inputs, correct)
        if self.curvature_n > 0:
            out.update(_curvature_numbers(clf, x[: self.curvature_n], y[: self.curvature_n]))
        if self.fgsm_rho and bool(correct.any()):
            search = smallest_fooling_epsilon(clf, x[correct], y[correct])
            scale = float(lp_norm(x[correct], math.inf).mean())
            out["rho_fgsm"] = search.epsilon / scale if scale > 0 else math.nan
        if self.pgd_eps and self.evaluation is not None:
            from boundaryscope.evaluation import evaluate

            trusted = evaluate(clf, x, y, self.pgd_eps, math.inf, self.evaluation, progress=False)
            for eps in self.pgd_eps:
                out[f"robust_accuracy@{eps:g}"] = trusted.robust_accuracy(eps)
        for eps in self.pgd_eps:
            attack = PGD(eps=eps, steps=self.pgd_steps, batch_size=self.batch_size)
            fooled = attack(clf, x, y).success
            out[f"pgd_accuracy@{eps}"] = float((correct & ~fooled).float().mean())
        return out

    def settings(self) -> dict[str, Any]:
        """JSON-ready description (checked on resume)."""
        return {
            "n": int(self.x.shape[0]),
            "rho_p": self.rho_p,
            "fgsm_rho": self.fgsm_rho,
            "curvature_n": self.curvature_n,
            "pgd_eps": list(self.pgd_eps),
            "pgd_steps": self.pgd_steps,
            "evaluation": self.evaluation,
        }


def _curvature_numbers(clf: Classifier, x: Tensor, y: Tensor) -> dict[str, float]:
    """Median top eigenvalue, its ratio to the gradient norm and the alignment (§8.2)."""
    from boundaryscope.geometry.curvature import loss_curvature

    profile = loss_curvature(clf, x, y, k=1)
    top = profile.eigenvalues[:, 0]
    relative = top / profile.gradient_norm.clamp_min(1e-30)
    return {
        "loss_curvature_top": float(top.median()),
        "loss_curvature_relative": float(relative.median()),
        "loss_alignment": float(profile.alignment.median()),
    }


@dataclass(frozen=True)
class OverfittingCheck:
    """Catastrophic-overfitting detector of single-step adversarial training.

    Wong et al. (ICLR 2020) watch PGD accuracy on a training mini-batch each epoch and stop
    when it falls sharply: FGSM training can jump within one epoch from PGD-level
    robustness to none, while FGSM accuracy stays high. Here the first `n` clean training
    images are attacked by PGD (`steps` steps, seeded, l_p ball of radius `eps`) after
    every epoch; an accuracy more than `drop` below the best so far is catastrophic
    overfitting. Cost: ``n × steps`` backward rows per epoch, recorded.

    Attributes:
        eps: Radius of the threat model trained for.
        p: Its norm.
        steps: PGD iterations of the check.
        n: Training images checked (fixed: the first `n`).
        drop: Fall in PGD accuracy (fraction) that counts as overfitting.
    """

    eps: float
    p: float = math.inf
    steps: int = 10
    n: int = 128
    drop: float = 0.2

    def accuracy(self, clf: Classifier, x: Tensor, y: Tensor, seed: int) -> float:
        """PGD accuracy on the check batch (the first `n` of ``(x, y)``)."""
        x, y = x[: self.n], y[: self.n]
        attack = PGD(eps=self.eps, p=self.p, steps=self.steps, seed=seed)
        result = attack(clf, x, y)
        correct = clf.predict_unchecked(x) == y
        return float((correct & ~result.success).float().mean())

    def fired(self, history: list[dict[str, float]], accuracy: float) -> bool:
        """Whether `accuracy` is more than `drop` below the best check of `history`."""
        earlier = [r["check_pgd_accuracy"] for r in history if "check_pgd_accuracy" in r]
        return bool(earlier) and accuracy < max(earlier) - self.drop
