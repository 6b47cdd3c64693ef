"""Before/after evidence for a defence: robust accuracy, gradient masking, loss curvature.

What thesis Part III measures on an original and a defended network, for one model at a
time (`assess`) so that any number of models can be put side by side (`compare_models`):

- clean accuracy and ρ_adv (DeepFool l2 and l∞, thesis §3.3, Fig. 3.6);
- robust accuracy — the share of *all* test images that are correctly classified and not
  fooled — under FGSM, l∞ DeepFool (fooled at ε when its minimal norm is ≤ ε), PGD(20)
  and SPSA at several ε (thesis Table 8.1, Tables 8.2–8.3, Fig. 8.6). SPSA is gradient
  free: when it beats PGD by more than a few points, PGD's gradients are masked (§8.5.1);
  the FGSM − PGD gap shrinks after adversarial training (Table 8.1);
- the loss-curvature profile (extreme eigenvalues of the input Hessian of the loss,
  Fig. 8.2), the alignment ``|gᵀu|/||g||`` of the gradient with the top eigenvector and
  the Theorem 5 bounds (§8.2–8.3);
- ``−ℓ`` on a normal cross-section of one image (Fig. 8.3).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from boundaryscope._progress import tqdm_disable
from boundaryscope.attacks import FGSM, PGD, SPSA, DeepFool
from boundaryscope.classifier import Classifier
from boundaryscope.evaluation import describe, evaluate
from boundaryscope.geometry.curvature import loss_curvature
from boundaryscope.geometry.sections import orthonormal_direction, plane_grid, random_tangent
from boundaryscope.metrics import median_norm, rho_adv
from boundaryscope.norms import lp_norm

__all__ = ["AssessmentConfig", "assess", "compare_models", "default_epsilons"]


@dataclass(frozen=True)
class AssessmentConfig:
    """Sizes of `assess`.

    Attributes:
        n: Test images for accuracy, ρ_adv, FGSM, DeepFool and PGD.
        epsilons: l∞ budgets of the robust-accuracy table (input units); ``None`` picks
            `default_epsilons` for the data.
        curve_points: Budgets of the accuracy-vs-ε curves (0 … the largest table ε).
        pgd_steps: PGD iterations (PGD(20) in the thesis).
        spsa_n: Images attacked by SPSA (it costs ``2 × samples`` forward rows per step).
        spsa_steps: SPSA iterations.
        spsa_samples: SPSA's random directions per gradient estimate.
        curvature_n: Correctly classified images of the loss-curvature profile.
        k: Eigenvalues per end of the profile.
        surface_resolution: Grid points per side of the loss surface.
        evaluation: Profile of `boundaryscope.evaluation` for the trusted robust accuracy
            (AutoAttack's cascade after the l∞ DeepFool norms), the number models are ranked
            by; ``"fast"``, ``"standard"`` or ``"quick"``.
        batch_size: Rows per model pass.
    """

    n: int = 500
    epsilons: tuple[float, ...] | None = None
    curve_points: int = 7
    pgd_steps: int = 20
    spsa_n: int = 100
    spsa_steps: int = 20
    spsa_samples: int = 32
    curvature_n: int = 20
    k: int = 10
    surface_resolution: int = 41
    evaluation: str = "fast"
    batch_size: int = 256


# The key of the trusted robust accuracy in `assess`'s table (ranked by; PGD's is an upper
# bound above it).
TRUSTED = "evaluated"


def default_epsilons(x: Tensor, bounds: tuple[float, float]) -> tuple[float, ...]:
    """The usual l∞ budgets for the data, as a share of the box width.

    Grey-scale images (MNIST): 0.1, 0.2, 0.3 of the range (Madry et al.); colour images
    (CIFAR, ImageNet): 2/255, 4/255, 8/255 (RobustBench's language).
    """
    width = bounds[1] - bounds[0]
    fractions = (0.1, 0.2, 0.3) if x.ndim == 4 and x.shape[1] == 1 else (2 / 255, 4 / 255, 8 / 255)
    return tuple(round(f * width, 6) for f in fractions)


def _robust_accuracy(correct: Tensor, fooled: Tensor) -> float:
    return float((correct & ~fooled).float().mean()) if correct.numel() else math.nan


def _fooled(
    clf: Classifier,
    x: Tensor,
    y: Tensor,
    epsilons: Sequence[float],
    config: AssessmentConfig,
    seed: int,
    bar: Any,
) -> dict[float, dict[str, Tensor]]:
    """Per ε > 0: which images FGSM and PGD(steps) fool (one run of each per ε)."""
    out: dict[float, dict[str, Tensor]] = {}
    for eps in sorted({float(e) for e in epsilons if e > 0}):
        pgd = PGD(eps=eps, steps=config.pgd_steps, seed=seed, batch_size=config.batch_size)
        out[eps] = {
            "fgsm": FGSM(eps=eps, batch_size=config.batch_size)(clf, x, y).success,
            f"pgd{config.pgd_steps}": pgd(clf, x, y).success,
        }
        bar.update(1)
    return out


def _spsa_check(
    clf: Classifier,
    x: Tensor,
    y: Tensor,
    correct: Tensor,
    epsilons: Sequence[float],
    config: AssessmentConfig,
    seed: int,
) -> dict[str, Any]:
    """SPSA and PGD robust accuracy on the same images: a gradient-masking check (§8.5.1)."""
    n = min(config.spsa_n, x.shape[0])
    xs, ys, cs = x[:n], y[:n], correct[:n]
    spsa, pgd = [], []
    for eps in epsilons:
        attack = SPSA(eps=eps, steps=config.spsa_steps, samples=config.spsa_samples, seed=seed)
        spsa.append(_robust_accuracy(cs, attack(clf, xs, ys).success))
        pgd_attack = PGD(eps=eps, steps=config.pgd_steps, seed=seed, batch_size=config.batch_size)
        pgd.append(_robust_accuracy(cs, pgd_attack(clf, xs, ys).success))
    return {"n": n, "epsilons": list(epsilons), "spsa": spsa, "pgd": pgd}


def _loss_profile(
    clf: Classifier,
    x: Tensor,
    y: Tensor,
    correct: Tensor,
    l2_norms: Tensor,
    config: AssessmentConfig,
) -> dict[str, Any]:
    """Fig. 8.2's profile, the alignment and Theorem 5 at correctly classified images."""
    index = torch.nonzero(correct).flatten()[: config.curvature_n]
    if index.numel() == 0:
        return {}
    result = loss_curvature(clf, x[index], y[index], config.k, batch_size=config.batch_size)
    distance = l2_norms[index].double().cpu()
    lower = result.lower.double()
    holds = torch.isfinite(lower) & torch.isfinite(distance)
    # ν/||g|| per image: the curvature of the loss's level set (units 1/length). The raw
    # eigenvalues scale with the softmax's saturation (a confident model has ℓ ≈ 1e-7 and a
    # tiny Hessian however bent its boundary); relative to the gradient they compare models.
    gradient = result.gradient_norm.double().clamp_min(1e-30)[:, None]
    relative = result.eigenvalues.double() / gradient
    return {
        "n": int(index.numel()),
        "eigenvalues_mean": result.eigenvalues.double().mean(0).tolist(),
        "relative_eigenvalues_mean": relative.mean(0).tolist(),
        "relative_top": relative[:, 0].tolist(),
        "top_eigenvalue": result.eigenvalues[:, 0].tolist(),
        "alignment": result.alignment.tolist(),
        "gradient_norm": result.gradient_norm.tolist(),
        "loss": result.loss.tolist(),
        "lower": result.lower.tolist(),
        "upper": result.upper.tolist(),
        "deepfool_l2": distance.tolist(),
        # Theorem 5's lower bound must not exceed the smallest fooling perturbation found.
        "lower_below_deepfool": float((lower[holds] <= distance[holds] * (1 + 1e-6)).float().mean())
        if bool(holds.any())
        else math.nan,
    }


def _loss_surface(
    clf: Classifier,
    image: Tensor,
    label: int,
    radius: float,
    config: AssessmentConfig,
    seed: int,
) -> dict[str, Any]:
    """``−ℓ`` on the plane of the image's DeepFool normal and a random direction (Fig. 8.3).

    Axes are in input units (l2), ``[−radius, radius]`` on both, so that surfaces of several
    models share a scale.
    """
    result = DeepFool(p=2)(clf, image[None], torch.tensor([label], device=clf.device))
    r = result.perturbation[0]
    if not bool(result.success[0]) or not float(r.norm()) > 0:
        return {}
    normal = r / r.norm()
    tangent = random_tangent(normal, torch.Generator().manual_seed(seed))
    tangent = orthonormal_direction(normal, tangent)
    axis = np.linspace(-radius, radius, config.surface_resolution)
    grid = plane_grid(clf, image, normal, tangent, axis, axis, scale=1.0, label=label)
    return {
        "a": axis.tolist(),
        "b": axis.tolist(),
        "negative_loss": np.round(-grid.loss, 4).tolist(),
        "distance": float(r.norm()),
        "labels": grid.labels.tolist(),
    }


def assess(
    clf: Classifier,
    x: Tensor,
    y: Tensor,
    config: AssessmentConfig = AssessmentConfig(),
    *,
    seed: int = 0,
    surface_index: int | None = None,
    surface_radius: float | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Every number of the before/after comparison for one model (thesis §3.3, §8.2–8.5).

    Args:
        clf: The classifier.
        x: Test images ``(N, *shape)``; the first `config.n` are used.
        y: Labels ``(N,)``.
        config: Sizes.
        seed: Seed of PGD's random start, SPSA and the loss surface's random direction.
        surface_index: Image of the loss surface (default: the first correctly classified).
        surface_radius: Half-width of the loss surface in l2 input units (default: three
            times this model's median DeepFool l2 distance).
        progress: Progress bar (``None``: only on a terminal).

    Returns:
        A JSON-ready dict: ``clean_accuracy``, ``rho_adv`` / ``median_norm`` per norm,
        ``robust`` (ε → attack → robust accuracy), ``curves`` (accuracy vs ε), ``spsa``,
        ``loss_curvature``, ``surface`` and ``seconds`` per part.
    """
    started = time.perf_counter()
    x = clf.validate(x[: config.n])
    y = y[: config.n].to(clf.device)
    # Rounded, so that a table ε met again on the curve's grid is attacked once.
    epsilons = tuple(round(float(e), 9) for e in config.epsilons or default_epsilons(x, clf.bounds))
    top = max(epsilons)
    curve_eps = [round(float(e), 9) for e in np.linspace(0.0, top, max(config.curve_points, 2))]
    correct = clf.predict(x, config.batch_size) == y
    seconds: dict[str, float] = {}
    out: dict[str, Any] = {
        "n": int(x.shape[0]),
        "clean_accuracy": float(correct.float().mean()),
        "epsilons": list(epsilons),
    }
    bar = tqdm(
        total=len({float(e) for e in [*curve_eps, *epsilons] if e > 0}),
        desc="assess",
        disable=tqdm_disable(progress),
    )
    timer = time.perf_counter()
    deepfool: dict[str, Tensor] = {}
    for name, p in (("l2", 2.0), ("linf", math.inf)):
        result = DeepFool(p=p, batch_size=config.batch_size)(clf, x, y)
        deepfool[name] = result.norms
        out[f"rho_adv_{name}"] = rho_adv(result.norms, lp_norm(x, p), correct)
        out[f"median_norm_{name}"] = median_norm(result.norms, correct)
    seconds["deepfool"] = time.perf_counter() - timer
    timer = time.perf_counter()
    fooled = _fooled(clf, x, y, [*curve_eps, *epsilons], config, seed, bar)
    fooled[0.0] = {name: torch.zeros_like(correct) for name in next(iter(fooled.values()))}
    for eps in {0.0, *curve_eps, *epsilons}:
        fooled[float(eps)]["deepfool-linf"] = deepfool["linf"] <= eps
    names = ["fgsm", "deepfool-linf", f"pgd{config.pgd_steps}"]
    out["curves"] = {
        "epsilons": curve_eps,
        "accuracy": {
            name: [_robust_accuracy(correct, fooled[float(e)][name]) for e in curve_eps]
            for name in names
        },
    }
    table = {
        f"{eps:g}": {name: _robust_accuracy(correct, fooled[float(eps)][name]) for name in names}
        for eps in epsilons
    }
    seconds["attacks"] = time.perf_counter() - timer
    timer = time.perf_counter()
    evaluation = evaluate(
        clf, x, y, epsilons, math.inf, config.evaluation,
        minimal=torch.where(correct, deepfool["linf"], 0.0), minimal_label="l∞ DeepFool",
        seed=seed, progress=False,
    )  # fmt: skip
    for eps in epsilons:
        table[f"{eps:g}"][TRUSTED] = evaluation.robust_accuracy(eps)
    out["robust"] = table
    out["evaluation"] = {
        "description": describe(evaluation.config, evaluation.minimal_label),
        "checks_fired": [asdict(c) for c in evaluation.fired],
    }
    seconds["evaluation"] = time.perf_counter() - timer
    timer = time.perf_counter()
    out["spsa"] = _spsa_check(clf, x, y, correct, epsilons, config, seed)
    seconds["spsa"] = time.perf_counter() - timer
    timer = time.perf_counter()
    out["loss_curvature"] = _loss_profile(clf, x, y, correct, deepfool["l2"], config)
    seconds["loss_curvature"] = time.perf_counter() - timer
    timer = time.perf_counter()
    index = surface_index
    if index is None:
        hits = torch.nonzero(correct).flatten()
        index = int(hits[0]) if hits.numel() else None
    if index is not None:
        finite = deepfool["l2"][correct & torch.isfinite(deepfool["l2"])]
        radius = surface_radius or (3 * float(finite.median()) if finite.numel() else 1.0)
        out["surface"] = {
            "index": index,
            "radius": radius,
            **_loss_surface(clf, x[index], int(y[index]), radius, config, seed),
        }
    seconds["surface"] = time.perf_counter() - timer
    bar.close()
    seconds["total"] = time.perf_counter() - started
    out["seconds"] = seconds
    out["config"] = {**asdict(config), "epsilons": list(epsilons)}
    return out


def compare_models(
    models: Mapping[str, Classifier],
    x: Tensor,
    y: Tensor,
    config: AssessmentConfig = AssessmentConfig(),
    *,
    seed: int = 0,
    progress: bool | None = None,
    on_model_end: Callable[[str, float], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """`assess` for several models on the same images, with a shared loss-surface plane.

    The loss surfaces use the first image every model classifies correctly and the first
    model's radius, so the surfaces are drawn on one scale (Fig. 8.3's before/after).

    `on_model_end(name, seconds)` is called after each model (the command line prints a
    line per model when its output is not a terminal).

    Returns:
        Model name → `assess` result.
    """
    if not models:
        raise ValueError("models must name at least one classifier; got an empty mapping.")
    x, y = x[: config.n], y[: config.n]
    correct = torch.ones(x.shape[0], dtype=torch.bool)
    for clf in models.values():
        correct &= (clf.predict(x, config.batch_size) == y.to(clf.device)).cpu()
    hits = torch.nonzero(correct).flatten()
    index = int(hits[0]) if hits.numel() else None
    results: dict[str, dict[str, Any]] = {}
    radius: float | None = None
    for name, clf in models.items():
        started = time.perf_counter()
        results[name] = assess(
            clf,
            x,
            y,
            config,
            seed=seed,
            surface_index=index,
            surface_radius=radius,
            progress=progress,
        )
        radius = radius or results[name].get("surface", {}).get("radius")
        if on_model_end is not None:
            on_model_end(name, time.perf_counter() - started)
    return results
