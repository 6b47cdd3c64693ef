"""Universal adversarial perturbations (thesis ch. 4, Alg. 4; §6.3; docs/algorithms.md §6).

One perturbation ``v`` with ``||v||_p <= ξ`` that changes the label of most images:

    v = 0
    repeat (shuffled passes over X):
        for each x in X with k̂(clip(x + v)) = k̂(x):
            Δv = DeepFool's minimal perturbation from clip(x + v)   (accepted if converged)
            v  = P_{p,ξ}(v + Δv)
    until fooling rate on X >= 1 - δ or max_passes

The fooling rate is the share of images whose *predicted* label changes (not an accuracy
drop). ``ξ`` is in the units of the classifier's bounds: the seeds' ``ξ = 10`` (l∞) and
``2000`` (l2) for 0–255 ImageNet images are ``10/255 ≈ 0.039`` and ``2000/255 ≈ 7.8`` for
images in [0, 1].

Two variants: ``"paper"`` is Alg. 4 as published (one image per update, the original
code's rule of accepting only DeepFool steps that converged); ``"minibatch"`` runs DeepFool
on a batch of not-yet-fooled images at once and adds their converged steps together before
projecting, which is much faster and reaches similar fooling rates.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from boundaryscope._io import load_checkpoint, remove_stale_temporaries, save_torch
from boundaryscope._progress import tqdm_disable
from boundaryscope.attacks import AttackResult, DeepFool
from boundaryscope.classifier import Classifier, check_classifier
from boundaryscope.geometry.theory import flat_fooling_probability
from boundaryscope.norms import lp_norm, parse_p, project_lp_ball

__all__ = [
    "FlatModel",
    "UniversalResult",
    "check_perturbation",
    "diversity",
    "dominant_label_graph",
    "flat_model",
    "fooling_rate",
    "fooling_vs_size",
    "normal_subspace",
    "perturbed_labels",
    "phase_transition",
    "subspace_fooling_rates",
    "transfer_matrix",
    "universal_perturbation",
]

_logger = logging.getLogger("boundaryscope")
Variant = Literal["paper", "minibatch"]


@dataclass
class UniversalResult:
    """A universal perturbation and how it was found.

    Attributes:
        v: ``(*shape)`` the perturbation, ``||v||_p <= xi``.
        xi: Radius of the l_p ball.
        p: Norm.
        fooling_rate: Fooling rate of `v` on ``X``.
        history: Fooling rate on ``X`` after each pass.
        passes: Passes made.
        accepted: Updates accepted (from converged DeepFool steps).
        rejected: DeepFool steps rejected because they did not converge.
        converged: Whether ``fooling_rate >= 1 - delta`` was reached.
        variant: ``"paper"`` or ``"minibatch"``.
    """

    v: Tensor
    xi: float
    p: float
    fooling_rate: float
    history: list[float] = field(default_factory=list)
    passes: int = 0
    accepted: int = 0
    rejected: int = 0
    converged: bool = False
    variant: str = "paper"

    @property
    def norm(self) -> float:
        """``||v||_p``."""
        return float(lp_norm(self.v[None], self.p)[0])


def fooling_rate(
    clf: Classifier,
    x: Tensor,
    v: Tensor,
    batch_size: int | None = None,
    clean: Tensor | None = None,
) -> float:
    """Share of images whose predicted label changes under ``clip(x + v)``.

    Measured against the clean predictions, not the labels (thesis §4.2). Callers that
    evaluate many perturbations on the same images pass those predictions as `clean`.
    ``nan`` for an empty batch (a rate of nothing is undefined).
    """
    clf = check_classifier(clf)
    x = clf.validate(x)
    v = check_perturbation(v, x)
    with clf.session():
        if clean is None:
            clean = clf.predict_unchecked(x, batch_size)
        changed = int((perturbed_labels(clf, x, v, batch_size) != clean.to(x.device)).sum())
    return changed / x.shape[0] if x.shape[0] else math.nan


def perturbed_labels(clf: Classifier, x: Tensor, v: Tensor, batch_size: int | None) -> Tensor:
    """Predicted labels of ``clip(x + v)``, with ``x + v`` formed chunk by chunk (memory)."""
    size = batch_size or clf.batch_size
    return torch.cat([clf.predict_unchecked(clf.clip(chunk + v), size) for chunk in x.split(size)])


def check_perturbation(v: object, x: Tensor, name: str = "v") -> Tensor:
    """`v` as one finite perturbation of ``x``'s image shape, on its device and dtype.

    Accepts ``x.shape[1:]`` or a batch of one ``(1, *x.shape[1:])``.

    Raises:
        TypeError: `v` is not a floating-point tensor.
        ValueError: wrong shape, or NaN/inf values.
    """
    if not isinstance(v, Tensor) or not v.is_floating_point():
        got = f"dtype {v.dtype}" if isinstance(v, Tensor) else type(v).__name__
        raise TypeError(
            f"{name} must be a floating-point tensor of shape {tuple(x.shape[1:])}; got {got}."
        )
    if tuple(v.shape) not in (tuple(x.shape[1:]), (1, *x.shape[1:])):
        raise ValueError(
            f"{name} must have the image shape {tuple(x.shape[1:])} (or (1, ...)); got "
            f"{tuple(v.shape)}."
        )
    if not bool(torch.isfinite(v).all()):
        raise ValueError(
            f"{name} must be finite; got {int((~torch.isfinite(v)).sum())} NaN/inf values."
        )
    return v.reshape(x.shape[1:]).to(x.device, x.dtype)


def _state(
    v: Tensor,
    best: Tensor,
    generator: torch.Generator,
    result: UniversalResult,
    config: dict[str, Any],
) -> dict[str, Any]:
    return {
        "config": config,
        "v": v.cpu(),
        "best": best.cpu(),
        "generator": generator.get_state(),
        "history": result.history,
        "passes": result.passes,
        "accepted": result.accepted,
        "rejected": result.rejected,
    }


def universal_perturbation(
    clf: Classifier,
    x: Tensor,
    xi: float,
    *,
    p: float | str = math.inf,
    delta: float = 0.2,
    max_passes: int = 10,
    variant: Variant = "paper",
    batch_size: int = 32,
    candidates: int = 10,
    overshoot: float = 0.02,
    df_steps: int = 10,
    seed: int = 0,
    keep_best: bool = True,
    checkpoint: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool | None = None,
) -> UniversalResult:
    """Computes a universal perturbation with Alg. 4 (thesis §4.2).

    Args:
        clf: Classifier.
        x: The images ``X`` ``(N, *shape)``.
        xi: Radius of the l_p ball, in input units (see module docstring for the seeds').
        p: ``inf`` or 2 (or any ``p >= 1``; other p are rescaled onto the ball).
        delta: Stop when the fooling rate on ``X`` reaches ``1 - delta``.
        max_passes: Maximum passes over ``X``.
        variant: ``"paper"`` (one image per update) or ``"minibatch"``.
        batch_size: Images per DeepFool call in the mini-batch variant.
        candidates: DeepFool's candidate classes.
        overshoot: DeepFool's overshoot.
        df_steps: DeepFool's iteration limit; a step is accepted only if DeepFool
            converged within it (the original code's rule).
        seed: Seed of the shuffles.
        keep_best: Return the ``v`` with the highest fooling rate on ``X`` over the passes
            (the original returns the last one; the rate can oscillate from pass to pass,
            e.g. 0.46 → 0.20 on the shipped LeNet at l∞ ξ = 0.4).
        checkpoint: File written (atomically) after every pass.
        resume: Checkpoint to continue from; gives the same ``v`` as an uninterrupted run.
        progress: Progress bar (``None``: only on a terminal).

    Returns:
        A `UniversalResult`.
    """
    p = parse_p(p)
    if not xi > 0 or not 0 <= delta < 1 or max_passes < 0:
        raise ValueError(
            f"Need xi > 0, 0 <= delta < 1, max_passes >= 0; got xi={xi!r}, "
            f"delta={delta!r}, max_passes={max_passes!r}."
        )
    if variant not in ("paper", "minibatch"):
        raise ValueError(f"variant must be 'paper' or 'minibatch'; got {variant!r}.")
    clf = check_classifier(clf)
    x = clf.validate(x)
    if x.shape[0] == 0:
        raise ValueError("x must hold at least one image to compute a universal perturbation.")
    # Everything that changes the sequence of v's; max_passes may grow on resume.
    config = {
        "xi": float(xi),
        "p": p,
        "delta": float(delta),
        "variant": variant,
        "batch_size": int(batch_size) if variant == "minibatch" else None,
        "candidates": int(candidates),
        "overshoot": float(overshoot),
        "df_steps": int(df_steps),
        "seed": int(seed),
        "images": [int(x.shape[0]), *map(int, x.shape[1:])],
        "images_sum": round(float(x.double().sum()), 4),
    }
    deepfool = DeepFool(
        p=2, steps=df_steps, candidates=candidates, overshoot=overshoot, refine_steps=0
    )
    generator = torch.Generator().manual_seed(seed)
    v = torch.zeros_like(x[0])
    best = v.clone()
    result = UniversalResult(v, float(xi), p, 0.0, variant=variant)
    if checkpoint is not None:
        remove_stale_temporaries(Path(checkpoint).parent)
    if resume is not None:
        state = load_checkpoint(resume, config, "config", ("v", "best", "generator"))
        v = state["v"].to(x.device, x.dtype)
        best = state["best"].to(x.device, x.dtype)
        generator.set_state(state["generator"])
        result.history, result.passes = list(state["history"]), int(state["passes"])
        result.accepted, result.rejected = int(state["accepted"]), int(state["rejected"])
    with clf.session():
        clean = clf.predict_unchecked(x, 500)
        bar = tqdm(
            total=max_passes,
            initial=result.passes,
            desc=f"universal ({variant})",
            disable=tqdm_disable(progress),
        )
        while result.passes < max_passes and not (
            result.history and result.history[-1] >= 1 - delta
        ):
            order = torch.randperm(x.shape[0], generator=generator).to(x.device)
            step = 1 if variant == "paper" else batch_size
            for start in range(0, x.shape[0], step):
                index = order[start : start + step]
                moved = clf.clip(x[index] + v)
                unfooled = clf.predict_unchecked(moved) == clean[index]
                if not bool(unfooled.any()):
                    continue
                attack = deepfool(clf, moved[unfooled], clean[index][unfooled])
                # The original code accepts a step only if DeepFool converged in time.
                ok = attack.success & (attack.iterations < df_steps)
                result.accepted += int(ok.sum())
                result.rejected += int((~ok).sum())
                if bool(ok.any()):
                    v = project_lp_ball((v + attack.perturbation[ok].sum(dim=0))[None], xi, p)[0]
            result.passes += 1
            result.history.append(fooling_rate(clf, x, v, clean=clean))
            if result.history[-1] >= max(result.history):
                best = v.clone()
            bar.update(1)
            bar.set_postfix(fooling=f"{result.history[-1]:.3f}")
            _logger.info("universal pass %d: fooling rate %.4f", result.passes, result.history[-1])
            if checkpoint is not None:
                save_torch(checkpoint, _state(v, best, generator, result, config))
        bar.close()
    assert v.shape == x.shape[1:]
    result.v = best if keep_best and result.history else v
    if not result.history:
        result.fooling_rate = fooling_rate(clf, x, result.v)
    else:
        result.fooling_rate = max(result.history) if keep_best else result.history[-1]
    result.converged = result.fooling_rate >= 1 - delta
    return result


def diversity(perturbations: Tensor) -> Tensor:
    """Pairwise normalised inner products ``<v_i, v_j> / (||v_i|| ||v_j||)`` (§4.3.1).

    Args:
        perturbations: ``(K, *shape)``.

    Returns:
        ``(K, K)`` matrix (ones on the diagonal); the seed reports values below 0.1.
    """
    flat = perturbations.flatten(1).double()
    flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return flat @ flat.T


def transfer_matrix(
    classifiers: dict[str, Classifier], perturbations: dict[str, Tensor], x: Tensor
) -> dict[str, dict[str, float]]:
    """Fooling rate of each model's perturbation on every model (Table 4.2).

    Returns:
        ``matrix[source][target]``: rate on ``target`` of the perturbation computed on
        ``source``; the diagonal holds each perturbation's own fooling rate on ``x``.
    """
    return {
        source: {target: fooling_rate(clf, x, v) for target, clf in classifiers.items()}
        for source, v in perturbations.items()
    }


def dominant_label_graph(
    clf: Classifier, x: Tensor, v: Tensor, num_classes: int | None = None
) -> dict[str, Any]:
    """Where a universal perturbation sends each class (Fig. 4.7).

    For each (clean-predicted) class ``i`` whose images change label, the edge ``i → j``
    goes to its dominant label ``j``: the label that most of them are sent to.

    Returns:
        ``{"transitions": C×C counts [clean][perturbed], "edges": [(i, j, share), ...]}``
        with ``share`` the fraction of class ``i``'s images that went to ``j``.
    """
    clf = check_classifier(clf)
    x = clf.validate(x)
    v = check_perturbation(v, x)
    with clf.session():
        clean = clf.predict_unchecked(x)
        perturbed = perturbed_labels(clf, x, v, None)
    c = num_classes or clf.num_classes
    counts = torch.zeros(c, c, dtype=torch.int64)
    counts.index_put_((clean.cpu(), perturbed.cpu()), torch.ones_like(clean.cpu()), accumulate=True)
    edges = []
    for i in range(c):
        moved = counts[i].clone()
        moved[i] = 0
        total = int(counts[i].sum())
        if total and int(moved.sum()):
            j = int(moved.argmax())
            edges.append((i, j, int(moved[j]) / total))
    return {"transitions": counts.tolist(), "edges": edges}


def fooling_vs_size(
    clf: Classifier,
    x_train: Tensor,
    x_test: Tensor,
    sizes: Sequence[int],
    xi: float,
    **options: Any,
) -> dict[int, float]:
    """Held-out fooling rate of a universal perturbation computed on ``|X|`` images (Fig. 4.6).

    Args:
        clf: Classifier.
        x_train: Pool of images; ``X`` is its first ``size`` images.
        x_test: Held-out images.
        sizes: The ``|X|`` values.
        xi: Radius.
        **options: Passed to `universal_perturbation` (``p``, ``variant``, ...).

    Returns:
        ``{size: held-out fooling rate}``.
    """
    return {
        int(size): fooling_rate(
            clf, x_test, universal_perturbation(clf, x_train[:size], xi, **options).v
        )
        for size in sizes
    }


def phase_transition(
    clf: Classifier,
    x: Tensor,
    universal: Tensor,
    norms: Sequence[float],
    *,
    p: float | str = 2,
    seed: int = 0,
    batch_size: int = 256,
    deepfool: AttackResult | None = None,
) -> dict[str, list[float]]:
    """Fooling rate against the norm of five kinds of perturbation (thesis Fig. 4.9).

    Each direction is normalised to unit l_p norm and scaled to every value of `norms`:
    the universal perturbation, a random direction, the DeepFool perturbation of a single
    image applied to all, the sum of the DeepFool perturbations of all images, and the
    dataset mean image. Universal perturbations fool far more than the others at the same
    norm; the sum of adversarial perturbations is the strongest of the simple baselines.

    Args:
        clf: The classifier.
        x: Images ``(N, *shape)``.
        universal: The universal perturbation ``(*shape)`` (only its direction is used).
        norms: l_p norms each direction is scaled to.
        p: Norm of `norms`.
        seed: Seed of the random direction.
        batch_size: Rows per model pass.
        deepfool: DeepFool's l2 result on `x` where the caller has it (`flat_model` needs
            the same): not computed again.

    Returns:
        ``{kind: fooling rate per norm}`` (rates against clean predictions).
    """
    p = parse_p(p)
    x = clf.validate(x)
    generator = torch.Generator().manual_seed(seed)
    clean = clf.predict_unchecked(x, batch_size)
    adversarial = _deepfool_l2(clf, x, batch_size, deepfool).perturbation
    directions = {
        "universal": universal.to(x.device, x.dtype),
        "random": torch.randn(x.shape[1:], generator=generator, dtype=x.dtype).to(x.device),
        "single adversarial": adversarial[0],
        "sum of adversarial": adversarial.sum(dim=0),
        "dataset mean": x.mean(dim=0),
    }
    curves = {}
    for kind, direction in directions.items():
        unit = direction / lp_norm(direction[None], p).clamp_min(1e-30)[0]
        curves[kind] = [
            fooling_rate(clf, x, float(norm) * unit, batch_size, clean=clean) for norm in norms
        ]
    return curves


def _deepfool_l2(
    clf: Classifier, x: Tensor, batch_size: int, given: AttackResult | None
) -> AttackResult:
    """`given` (checked to be DeepFool's l2 result on `x`'s rows), else DeepFool l2 on `x`."""
    if given is None:
        return DeepFool(p=2, batch_size=batch_size)(clf, x)
    if given.p != 2 or tuple(given.perturbation.shape) != tuple(x.shape):
        raise ValueError(
            f"deepfool must be DeepFool's l2 result on x, perturbation of shape "
            f"{tuple(x.shape)}; got p={given.p:g} and shape {tuple(given.perturbation.shape)}."
        )
    return given


@dataclass
class FlatModel:
    """The flat-boundary model of thesis §6.3 (Fig. 6.3 and the S_f construction).

    Attributes:
        singular_values: Singular values of the matrix N of unit normals ``r(x)/||r(x)||``.
        random_singular_values: The same for as many random unit vectors (the reference).
        fooling_rates: ``{m: mean fooling rate}`` of random unit vectors of the top-``m``
            right singular subspace ``S_f`` of N, scaled to ``xi`` (``m`` is capped at the
            number of normals).
        random_fooling_rate: Mean fooling rate of random directions of norm ``xi``.
        xi: Norm of the drawn perturbations (l2).
        draws: Random vectors drawn per ``m``.
        predicted_rates: ``{m: rate}`` the flat model predicts for the same draws (Theorem
            3's model, one-sided for vectors: ``x`` is fooled when ``r̂ᵀv >= ||r||``, with
            probability ``P(|u₁| >= ||r|| / (ξ ||P_S r̂||)) / 2``, averaged over the images;
            0 for an image DeepFool did not fool).
    """

    singular_values: list[float]
    random_singular_values: list[float]
    fooling_rates: dict[int, float]
    random_fooling_rate: float
    xi: float
    draws: int
    predicted_rates: dict[int, float] = field(default_factory=dict)


def normal_subspace(perturbations: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """S_f (§6.3): singular values and right singular vectors of the matrix of normals.

    Args:
        perturbations: Minimal perturbations ``r(x)`` ``(N, *shape)``, all nonzero.

    Returns:
        ``(normals (N, d), singular values, basis (min(N, d), d))`` in float64, the basis
        rows ordered by decreasing singular value.
    """
    r = perturbations.flatten(1).double()
    normals = r / r.norm(dim=1, keepdim=True).clamp_min(1e-30)
    _, singular, basis = torch.linalg.svd(normals, full_matrices=False)
    return normals, singular, basis


def subspace_fooling_rates(
    clf: Classifier,
    x: Tensor,
    basis: Tensor | None,
    xi: float,
    ms: Sequence[int],
    *,
    draws: int = 10,
    generator: torch.Generator | None = None,
    clean: Tensor | None = None,
    batch_size: int = 256,
) -> dict[int, float]:
    """Mean fooling rate of random vectors from the span of the first m basis vectors.

    The constructive side of Theorems 3 and 4 (§6.3–6.4): a random unit vector of a
    subspace where the boundary's normals concentrate (``S_f``) or where it is positively
    curved (``S_c``), scaled to l2 norm ``ξ``, is a universal perturbation. ``basis=None``
    draws from the whole space (the random baseline; ``ms`` is then ignored but keyed).

    Args:
        clf: The classifier.
        x: Images ``(N, *shape)``.
        basis: Orthonormal rows ``(M, d)`` or ``(M, *shape)``, or ``None``.
        xi: l2 norm of the perturbations (input units).
        ms: Subspace dimensions (capped at ``M``).
        draws: Random vectors per dimension; their fooling rates are averaged.
        generator: Source of the random coefficients (default: seeded with 0).
        clean: Clean predictions of `x`, if already known.
        batch_size: Samples per forward pass.

    Returns:
        ``{m: mean fooling rate}``.
    """
    x = clf.validate(x)
    generator = generator or torch.Generator().manual_seed(0)
    clean = clf.predict_unchecked(x, batch_size) if clean is None else clean
    d = x[0].numel()
    rates = {}
    for requested in ms:
        if basis is None:
            vectors = torch.randn(draws, d, generator=generator, dtype=torch.float64)
        else:
            flat = basis.flatten(1).double().cpu()
            m = min(int(requested), flat.shape[0])
            coefficients = torch.randn(draws, m, generator=generator, dtype=torch.float64)
            vectors = coefficients @ flat[:m]
        unit = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-30)
        rates[int(requested)] = sum(
            fooling_rate(clf, x, (xi * u).view(x.shape[1:]).to(x.dtype), clean=clean) for u in unit
        ) / len(unit)
    return rates


def flat_model(
    clf: Classifier,
    x: Tensor,
    xi: float,
    ms: Sequence[int],
    *,
    draws: int = 10,
    seed: int = 0,
    batch_size: int = 256,
    deepfool: AttackResult | None = None,
) -> FlatModel:
    """Universal perturbations from the subspace of decision-boundary normals (§6.3).

    The normals ``r(x)/||r(x)||`` (DeepFool, l2) of the images are stacked into N; if they
    concentrate in a low-dimensional subspace (singular values decaying much faster than
    those of random vectors, Fig. 6.3), random vectors from its top-``m`` singular subspace
    ``S_f`` are universal perturbations (Theorem 3). Singular values by `torch.linalg.svd`.

    Args:
        clf: The classifier.
        x: Images ``(N, *shape)``.
        xi: l2 norm of the random vectors drawn from ``S_f`` (and of the random reference).
        ms: Dimensions of ``S_f`` to try.
        draws: Random vectors per dimension.
        seed: Seed of the draws.
        batch_size: Rows per model pass.
        deepfool: DeepFool's l2 result on `x` where the caller has it (`phase_transition`
            needs the same): not computed again.

    Returns:
        A `FlatModel`.
    """
    x = clf.validate(x)
    generator = torch.Generator().manual_seed(seed)
    clean = clf.predict_unchecked(x, batch_size)
    result = _deepfool_l2(clf, x, batch_size, deepfool)
    r = result.perturbation[result.success]
    normals, singular, basis = normal_subspace(r)
    distance = r.flatten(1).double().norm(dim=1).cpu()
    gaussian = torch.randn(normals.shape, generator=generator, dtype=torch.float64)
    random_singular = torch.linalg.svdvals(gaussian / gaussian.norm(dim=1, keepdim=True))

    fooling = {
        min(int(m), basis.shape[0]): rate  # S_f has at most one dimension per normal
        for m, rate in subspace_fooling_rates(
            clf,
            x,
            basis,
            xi,
            ms,
            draws=draws,
            generator=generator,
            clean=clean,
            batch_size=batch_size,
        ).items()
    }
    random_rate = subspace_fooling_rates(
        clf,
        x,
        None,
        xi,
        [0],
        draws=draws,
        generator=generator,
        clean=clean,
        batch_size=batch_size,
    )[0]
    predicted = {}
    for m in fooling:
        projection = (normals.cpu() @ basis[:m].cpu().T).norm(dim=1).clamp_min(1e-30)
        chance = flat_fooling_probability(m, distance / (float(xi) * projection)) / 2
        predicted[m] = float(chance.sum()) / max(x.shape[0], 1)
    return FlatModel(
        singular.tolist(),
        random_singular.tolist(),
        fooling,
        random_rate,
        float(xi),
        draws,
        predicted,
    )
