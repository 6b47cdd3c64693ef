"""Topology of classification regions: paths, convexity, principal angles (thesis §7.3, §6.5).

Path finding (Alg. 5): two points ``x1, x2`` with the same predicted label are joined by a
piecewise-linear path of anchors ``p_0 = x1, p_1, …, p_n, p_{n+1} = x2``. When the straight
segment leaves the region, its midpoint is pushed back into the region by the smallest l2
step that restores the label (targeted DeepFool), and both halves are treated the same way,
recursively. A segment is *valid* when every point sampled on it at spacing
``spacing × ||x1 − x2||`` (the thesis: four orders of magnitude below the endpoints'
distance) keeps the label — an empirical check, not a certificate. The deviation from the
straight path is

    D(p) = Σ_i ||p_i − p_{i+1}|| / ||p_0 − p_{n+1}||        (D = 1: the segment itself).

The convexity probe (Fig. 7.3) estimates the probability that a random convex combination
of k points of one region stays in it; principal angles between subspaces of two models
(Fig. 6.12) use `scipy.linalg.subspace_angles`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from boundaryscope._progress import tqdm_disable
from boundaryscope.attacks import DeepFool
from boundaryscope.classifier import Classifier
from boundaryscope.geometry.refinement import segment_keeps_label
from boundaryscope.geometry.sections import PlaneGrid, orthonormal_direction, plane_grid

__all__ = [
    "SCENARIOS",
    "ConvexityProbe",
    "NoPairsError",
    "RegionPath",
    "RegionsConfig",
    "Scenario",
    "config_path",
    "convexity_probe",
    "find_path",
    "model_subspace_angles",
    "principal_angles",
    "random_subspace_angles",
    "regions_study",
    "scenario_pairs",
    "scenario_paths",
    "stitched_sections",
]

Scenario = Literal["natural", "adversarial", "noise"]
SCENARIOS: tuple[Scenario, ...] = ("natural", "adversarial", "noise")
_STRIDES = (1024, 128, 16, 1)  # coarse-to-fine sampling: an invalid segment fails early


# ---------------------------------------------------------------------- paths (Alg. 5)
@dataclass
class RegionPath:
    """A piecewise-linear path between two points of one classification region (Alg. 5).

    Attributes:
        anchors: ``(n + 2, *shape)``: ``x1``, the ``n`` interior anchors, ``x2``.
        segment_valid: ``(n + 1,)`` bool: segment ``i`` (``p_i → p_{i+1}``) passed the
            check.
        label: The region's label ``k̂(x1) = k̂(x2)``.
        depth: Deepest bisection level reached (0: the straight segment was valid).
        samples: Model rows spent on validity checks and midpoint labels (the targeted
            DeepFool pushes are not counted).
        failure: Why the path is not valid (``None`` when it is).
        undecided: The anchor budget ran out before every segment was checked: neither
            found nor shown not to exist (``valid`` is False).
    """

    anchors: Tensor
    segment_valid: Tensor
    label: int
    depth: int
    samples: int
    failure: str | None = None
    undecided: bool = False

    @property
    def valid(self) -> bool:
        """Every segment passed the check."""
        return self.failure is None and bool(self.segment_valid.all())

    @property
    def anchor_count(self) -> int:
        """Interior anchors ``n`` (0 for the straight segment)."""
        return int(self.anchors.shape[0]) - 2

    @property
    def deviation(self) -> float:
        """``D(p) = Σ ||p_i − p_{i+1}|| / ||p_0 − p_{n+1}||`` (computed in float64)."""
        p = self.anchors.flatten(1).double()
        length = float((p[1:] - p[:-1]).norm(dim=1).sum())
        return length / float((p[-1] - p[0]).norm())


@dataclass
class _PathSearch:
    """State of one Alg. 5 search: the region, the sampling step, the model's two uses."""

    label: int
    step: float
    max_depth: int
    push: Callable[[Tensor], Tensor | None]
    scores: Callable[[Tensor], Tensor]
    batch_size: int
    refine: bool = True
    max_anchors: int | None = None
    samples: int = 0
    depth: int = 0
    anchors: int = 0
    undecided: bool = False
    failures: list[str] = field(default_factory=list)

    def segment_valid(self, p: Tensor, q: Tensor) -> bool:
        """Whether every sample of ``p → q`` at spacing ``step`` keeps the label."""
        count = max(math.ceil(float((q - p).double().norm()) / self.step), 1)
        if not self.refine:
            return self._dense_check(p, q, count)

        def margin_at(index: np.ndarray) -> np.ndarray:
            t = torch.from_numpy(index).double() / count
            return self._margins(p, q, t)

        keeps, samples = segment_keeps_label(margin_at, count)
        self.samples += samples
        return keeps

    def _margins(self, p: Tensor, q: Tensor, t: Tensor) -> np.ndarray:
        """``f_c − max_{k≠c} f_k`` at ``p + t (q − p)``; ``−inf`` where the label is not c."""
        out = []
        for start in range(0, t.numel(), self.batch_size):
            scores = self.scores(_on_segment(p, q, t[start : start + self.batch_size])).double()
            others = scores.clone()
            others[:, self.label] = -math.inf
            margin = scores[:, self.label] - others.max(dim=1).values
            margin[scores.argmax(dim=1) != self.label] = -math.inf
            out.append(margin.cpu())
        return torch.cat(out).numpy()

    def _dense_check(self, p: Tensor, q: Tensor, count: int) -> bool:
        """Every sample ``i / count``, coarse strides first (an invalid segment fails early)."""
        t = torch.arange(count + 1, dtype=torch.float64) / count
        checked = torch.zeros(count + 1, dtype=torch.bool)
        for stride in _STRIDES:
            todo = torch.arange(0, count + 1, stride)
            todo = todo[~checked[todo]]
            checked[todo] = True
            for start in range(0, todo.numel(), self.batch_size):
                chunk = t[todo[start : start + self.batch_size]]
                self.samples += int(chunk.numel())
                labels = self.scores(_on_segment(p, q, chunk)).argmax(dim=1)
                if bool((labels != self.label).any()):
                    return False
        return True

    def search(self, p: Tensor, q: Tensor, depth: int) -> tuple[list[Tensor], list[bool]]:
        """Alg. 5 on ``p → q``: anchors after ``p`` (``q`` last) and per-segment validity."""
        self.depth = max(self.depth, depth)
        if self.undecided:  # no more model passes on a path that cannot be decided
            return [q], [False]
        if self.segment_valid(p, q):
            return [q], [True]
        if depth >= self.max_depth:
            self.failures.append(f"a segment was still invalid at depth {self.max_depth}")
            return [q], [False]
        if self.max_anchors is not None and self.anchors >= self.max_anchors:
            self.undecided = True
            self.failures.append(f"undecided: more than {self.max_anchors} anchors needed")
            return [q], [False]
        self.anchors += 1
        midpoint = (p + q) / 2
        self.samples += 1
        if int(self.scores(midpoint[None]).argmax(dim=1)[0]) != self.label:
            pushed = self.push(midpoint)
            if pushed is None:
                self.failures.append(
                    f"targeted DeepFool could not bring a midpoint back to label {self.label}"
                )
                return [q], [False]
            midpoint = pushed
        left, left_ok = self.search(p, midpoint, depth + 1)
        right, right_ok = self.search(midpoint, q, depth + 1)
        return left + right, left_ok + right_ok


def _on_segment(p: Tensor, q: Tensor, t: Tensor) -> Tensor:
    """Points ``p + t_i (q − p)`` ``(len(t), *shape)``, computed in float64."""
    t = t.to(device=p.device, dtype=torch.float64).view(-1, *[1] * p.ndim)
    return (p.double()[None] + t * (q - p).double()[None]).to(p.dtype)


# The validity check of a segment holds one parameter and one flag per sample (9 bytes);
# 10⁷ samples per segment (spacing 1e-7) is 90 MB and minutes of forward passes.
MIN_SPACING = 1e-7


def check_spacing(spacing: float) -> None:
    """Refuses a sample spacing outside ``[MIN_SPACING, 1)``, naming what it would cost.

    Raises:
        ValueError: `spacing` is not in range (with the samples and memory it asks for).
    """
    if not 0 < spacing < 1:
        raise ValueError(f"spacing must be in (0, 1) (a fraction of ||x1 - x2||); got {spacing}.")
    if spacing < MIN_SPACING:
        samples = 1 / spacing
        raise ValueError(
            f"spacing {spacing:g} asks for {samples:.3g} samples per segment "
            f"({samples * 9 / 2**30:.3g} GiB, as many forward rows); the smallest spacing is "
            f"{MIN_SPACING:g}."
        )


def find_path(
    clf: Classifier,
    x1: Tensor,
    x2: Tensor,
    *,
    spacing: float = 1e-4,
    max_depth: int = 16,
    overshoot: float = 0.02,
    margin: float = 1e-4,
    steps: int = 50,
    batch_size: int = 256,
    refine: bool = True,
    max_anchors: int | None = None,
) -> RegionPath:
    """Alg. 5 (thesis §7.3): a path from `x1` to `x2` inside their classification region.

    Recursive bisection; a midpoint outside the region is replaced by its targeted DeepFool
    point (l2, label ``k̂(x1)``, overshoot `overshoot` so that it lies inside, not on the
    boundary). Segments are checked by sampling at ``spacing × ||x1 − x2||``, coarse
    strides first so that an invalid segment is rejected after a few samples.

    Args:
        clf: The classifier.
        x1: One input ``(*shape)``.
        x2: Another input ``(*shape)`` with the same predicted label.
        spacing: Sample spacing as a fraction of ``||x1 − x2||`` (thesis: 1e-4).
        max_depth: Bisection depth limit; a segment still invalid there makes the path
            invalid, with a `RegionPath.failure` message.
        overshoot: DeepFool overshoot of the push-back step (a failed push is retried
            once with 4 × `steps` and 10 × `overshoot`).
        margin: Least relative margin ``(f_c − max_{k≠c} f_k) / max_k |f_k|`` of a pushed
            midpoint: the push is lengthened (× 1.02 … 64) until it is reached, so that no
            anchor sits within float32 rounding of the boundary, where a label would depend
            on the batch it is computed in.
        steps: DeepFool iterations of the push-back step.
        batch_size: Samples per forward pass.
        refine: Check a segment by bisection where its margin comes near zero
            (`boundaryscope.geometry.refinement.segment_keeps_label`: every 64th sample,
            then halving) instead of running every sample; the verdicts equal the dense
            check's on the shipped LeNets at a small fraction of the rows.
        max_anchors: Most interior anchors before the search gives up and the path is
            `RegionPath.undecided` (``None``: no limit but `max_depth`). Each anchor costs a
            push and two segment checks, so this bounds the path's passes: fragmented
            regions (a random-weight CIFAR ResNet-18 needs 15–200 anchors per pair where the
            shipped LeNet needs 0 for most pairs) cannot make the search run for hours.

    Returns:
        A `RegionPath` (``valid`` says whether every segment passed).

    Raises:
        ValueError: The points have different predicted labels, coincide, or `spacing` is
            not in (0, 1).
    """
    check_spacing(spacing)
    if max_depth < 0:
        raise ValueError(f"max_depth must be >= 0; got {max_depth}.")
    if max_anchors is not None and max_anchors < 0:
        raise ValueError(f"max_anchors must be >= 0 or None; got {max_anchors}.")
    ends = clf.validate(torch.stack([x1, x2]), "x1, x2")
    labels = clf.predict(ends)
    if int(labels[0]) != int(labels[1]):
        raise ValueError(
            "find_path needs x1 and x2 with the same predicted label; got "
            f"{int(labels[0])} and {int(labels[1])}."
        )
    distance = float((ends[1] - ends[0]).double().norm())
    if distance == 0:
        raise ValueError("find_path needs two distinct points; x1 and x2 coincide.")
    label = int(labels[0])
    # No final bisection (refine_steps=0): a point refined back onto the boundary would make
    # every later sub-segment graze it; the overshoot keeps the anchor strictly inside.
    # Box-aware steps: midpoints between clipped images sit on the box's faces.
    # A second, longer attempt with a larger overshoot rescues the rare midpoint that the
    # first cannot bring back within `steps` (measured: 3 of 300 LeNet pairs).
    attacks = [
        DeepFool(p=2, steps=steps, overshoot=overshoot, refine_steps=0, batch_size=1),
        DeepFool(p=2, steps=4 * steps, overshoot=10 * overshoot, refine_steps=0, batch_size=1),
    ]
    target = torch.tensor([label], device=ends.device)

    def push(point: Tensor) -> Tensor | None:
        start = clf.clip(point)[None]
        for attack in attacks:
            result = attack(clf, start, target=target)
            inside, ok = _inside(clf, start, result.adversarial, target, margin)
            if bool(ok[0]):
                return inside[0]
        return None

    with clf.sweep() as scores:
        search = _PathSearch(
            label, spacing * distance, max_depth, push, scores, batch_size, refine, max_anchors
        )
        anchors, valid = search.search(ends[0], ends[1], 0)
    return RegionPath(
        anchors=torch.stack([ends[0], *anchors]).cpu(),
        segment_valid=torch.tensor(valid),
        label=label,
        depth=search.depth,
        samples=search.samples,
        failure="; ".join(dict.fromkeys(search.failures)) or None,
        undecided=search.undecided,
    )


def scenario_pairs(
    clf: Classifier,
    x: Tensor,
    scenario: Scenario,
    count: int,
    *,
    seed: int = 0,
    margin: float = 1e-4,
    batch_size: int = 256,
) -> tuple[Tensor, Tensor]:
    """Pairs of points with one predicted label, the three scenarios of thesis §7.3.

    - ``"natural"``: two images of `x` with the same predicted label;
    - ``"adversarial"``: an image ``x1`` and ``x2 = x̃2 + r``, ``x̃2`` an image predicted
      differently and ``r`` its targeted DeepFool perturbation (l2, as published: overshoot
      0.02, so ``x2`` lies inside the region, not on its boundary) towards ``k̂(x1)``;
    - ``"noise"``: the same with ``x̃2`` a random image: uniform on the sphere of radius
      ``ρ`` (the median distance of the images to their mean) around the mean image,
      clipped to the box (the thesis' sphere ``ρS^{d−1}`` assumes centred images).

    Args:
        clf: The classifier.
        x: Images ``(N, *shape)`` (N >= 2).
        scenario: ``"natural"``, ``"adversarial"`` or ``"noise"``.
        count: Pairs wanted.
        seed: Seed of every random choice.
        margin: Least relative margin of ``x2`` (see `find_path`).
        batch_size: Rows per pass.

    Returns:
        ``(x1, x2)``, each ``(M, *shape)`` with ``M <= count`` (pairs whose targeted attack
        failed, and pairs whose two points coincide, are dropped; ``M < count`` also when
        too few images share a label).
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}; got {scenario!r}.")
    x = clf.validate(x)
    labels = clf.predict(x, batch_size=batch_size).cpu()
    generator = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    if scenario == "natural":
        pairs = _same_label_tuples(labels, 2, count, generator).to(x.device)
        return x[pairs[:, 0]], x[pairs[:, 1]]
    first = torch.randint(n, (count,), generator=generator)
    if scenario == "adversarial":
        other = torch.stack([_other_label(labels, int(labels[i]), generator) for i in first])
        start = x[other.to(x.device)]
    else:
        mean = x.mean(0, keepdim=True)
        rho = float((x - mean).flatten(1).norm(dim=1).median())
        u = torch.randn(count, x[0].numel(), generator=generator, dtype=torch.float64)
        u = u / u.norm(dim=1, keepdim=True)
        start = clf.clip(mean + rho * u.to(x).reshape(count, *x.shape[1:]))
    target = labels[first].to(x.device)
    # The paper's DeepFool (overshoot 0.02, no refinement), lengthened if needed, leaves x2
    # strictly inside the region (see find_path's `margin`).
    result = DeepFool.as_published(p=2, batch_size=batch_size)(clf, start, target=target)
    inside, keep = _inside(clf, start, result.adversarial, target, margin)
    keep = (keep & result.success).cpu()
    x1, x2 = x[first[keep].to(x.device)], inside[keep.to(x.device)]
    # A pair that coincides has no path to find (one image: the noise sphere's radius is 0).
    distinct = (x1 - x2).flatten(1).norm(dim=1) > 0
    return x1[distinct], x2[distinct]


_LENGTHEN = (1.0, 1.02, 1.05, 1.1, 1.25, 1.5, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


def _inside(
    clf: Classifier, start: Tensor, end: Tensor, label: Tensor, margin: float
) -> tuple[Tensor, Tensor]:
    """Lengthens each push ``start → end`` until its end is safely inside `label`'s region.

    Returns ``clip(start + t (end − start))`` for the least ``t`` in `_LENGTHEN` whose relative
    margin is at least `margin` (``clip(end)`` where none is), as ``(points (N, *shape),
    found (N,))``.
    """
    # The push's own end (t = 1) is usually far enough (measured: 4 pushes in 5 on a CIFAR
    # ResNet-18, more on the LeNets): the longer ones are tried only where it is not.
    points = clf.clip(end)
    found = _relative_margin(clf, points, label) >= margin
    short = (~found).nonzero()[:, 0]
    if short.numel() == 0:
        return points, found
    n, t = short.numel(), torch.tensor(_LENGTHEN[1:], dtype=start.dtype, device=start.device)
    shape = (1, -1, *[1] * (start.ndim - 1))
    begin, step = start[short][:, None], (end - start)[short][:, None]
    candidates = clf.clip(begin + t.view(shape) * step)
    relative = _relative_margin(
        clf, candidates.flatten(0, 1), label[short].repeat_interleave(t.numel())
    )
    good = relative.view(n, t.numel()) >= margin
    lengthened = good.any(1)  # the others keep their own end, as found = False says
    first = good.double().argmax(1)[lengthened]
    points[short[lengthened]] = candidates[lengthened.nonzero()[:, 0], first]
    found[short] = lengthened
    return points, found


def _relative_margin(clf: Classifier, x: Tensor, label: Tensor) -> Tensor:
    """``(f_c − max_{k≠c} f_k) / max_k |f_k|`` at each row of `x`, ``c`` = `label` ``(N,)``."""
    scores = clf.forward_scores(x).double()
    own = scores.gather(1, label.view(-1, 1))[:, 0]
    others = scores.scatter(1, label.view(-1, 1), -math.inf)
    return (own - others.max(1).values) / scores.abs().max(1).values.clamp_min(1e-30)


def _same_label_tuples(labels: Tensor, k: int, count: int, generator: torch.Generator) -> Tensor:
    """``(count, k)`` indices of distinct points sharing a label (``(0, k)`` if no label has k).

    The first point is uniform over the points whose label has at least k members, the
    others uniform without replacement among its label's other points.
    """
    members = {int(c): (labels == c).nonzero()[:, 0] for c in labels.unique()}
    eligible = [idx for idx in members.values() if idx.numel() >= k]
    if not eligible:
        return torch.empty(0, k, dtype=torch.int64)
    pool = torch.cat(eligible)
    chosen = torch.empty(count, k, dtype=torch.int64)
    for t, i in enumerate(pool[torch.randint(pool.numel(), (count,), generator=generator)]):
        mates = members[int(labels[i])]
        mates = mates[mates != i]
        pick = torch.randperm(mates.numel(), generator=generator)[: k - 1]
        chosen[t] = torch.cat([i.view(1), mates[pick]])
    return chosen


class NoPairsError(ValueError):
    """A scenario has no pairs on these images (the report notes it and goes on)."""


def _other_label(labels: Tensor, label: int, generator: torch.Generator) -> Tensor:
    others = (labels != label).nonzero()[:, 0]
    if others.numel() == 0:
        raise NoPairsError("the adversarial scenario needs images of at least two predicted labels")
    return others[torch.randint(others.numel(), (1,), generator=generator)][0]


# ---------------------------------------------------------------------- stitched picture
def stitched_sections(
    clf: Classifier,
    path: RegionPath,
    normal: Tensor,
    *,
    normal_range: tuple[float, float] = (-1.0, 1.0),
    resolution: tuple[int, int] = (80, 60),
    batch_size: int = 128,
    coarse: int = 8,
) -> list[PlaneGrid]:
    """The cross-sections of Fig. 7.2 (right): one panel per path segment.

    Panel ``i`` is the plane through ``p_i`` spanned by `normal` (vertical, e.g. ``r(x1)``)
    and the part of ``p_{i+1} − p_i`` orthogonal to it (horizontal). Both axes are in units
    of ``||normal||``; the segment runs from ``(0, 0)`` to ``(β_i, α_i)`` with
    ``p_{i+1} − p_i = ||normal|| (α_i n + β_i v_i)``, so the horizontal axis spans
    ``[0, β_i]``. Each panel is refined where the label changes from every `coarse`-th point
    (`plane_grid`; 1: every point).

    Returns:
        One `PlaneGrid` per segment (margin and loss refer to the path's label).
    """
    scale = float(normal.double().norm())
    n = normal / scale
    panels = []
    na, nb = resolution
    a = np.linspace(*normal_range, na)
    with clf.sweep():  # one model copy for every panel
        for p, q in zip(path.anchors[:-1], path.anchors[1:], strict=True):
            step = (q - p).to(n)
            v = orthonormal_direction(n, step, "path segment")
            beta = float((step.double().flatten() @ v.double().flatten()) / scale)
            b = np.linspace(0.0, beta, nb)
            grid = plane_grid(
                clf, p.to(n), n, v, a, b, scale=scale, label=path.label, batch_size=batch_size,
                coarse=coarse,
            )  # fmt: skip
            panels.append(grid)
    return panels


# ---------------------------------------------------------------------- convexity (Fig. 7.3)
@dataclass
class ConvexityProbe:
    """Probability that a random convex combination of k same-label points keeps the label.

    Attributes:
        ks: Numbers of points ``k``.
        probability: Estimated probability per ``k``.
        stderr: Binomial standard error per ``k``.
        trials: Combinations drawn per ``k``.
    """

    ks: list[int]
    probability: list[float]
    stderr: list[float]
    trials: int


def convexity_probe(
    clf: Classifier,
    x: Tensor,
    ks: Sequence[int] = tuple(range(2, 11)),
    *,
    trials: int = 1000,
    seed: int = 0,
    batch_size: int = 256,
) -> ConvexityProbe:
    """Fig. 7.3: ``P[k̂(Σ_i w_i x_i) = c]`` for k points ``x_i`` predicted ``c``.

    Each trial picks a random point, ``k − 1`` others with its predicted label (without
    replacement) and weights ``w`` uniform on the simplex (Dirichlet(1, …, 1), from
    normalised exponentials).

    Args:
        clf: The classifier.
        x: Images ``(N, *shape)``.
        ks: The values of k (each >= 1).
        trials: Combinations per k.
        seed: Seed of the draws.
        batch_size: Rows per pass.

    Returns:
        A `ConvexityProbe`; a k with no label having k points gets probability ``nan``.
    """
    if trials < 1 or any(int(k) < 1 for k in ks):
        raise ValueError(f"convexity_probe needs trials >= 1 and every k >= 1; got {trials}, {ks}.")
    x = clf.validate(x)
    labels = clf.predict(x, batch_size=batch_size).cpu()
    generator = torch.Generator().manual_seed(seed)
    probability, stderr = [], []
    for k in (int(k) for k in ks):
        chosen = _same_label_tuples(labels, k, trials, generator)
        if chosen.numel() == 0:
            probability.append(math.nan)
            stderr.append(math.nan)
            continue
        weights = -torch.rand(trials, k, generator=generator, dtype=torch.float64).log()
        weights = weights / weights.sum(1, keepdim=True)
        combos = torch.einsum("tk,tkd->td", weights, x[chosen].flatten(2).double().cpu())
        predicted = clf.predict(combos.to(x).reshape(trials, *x.shape[1:]), batch_size).cpu()
        hit = float((predicted == labels[chosen[:, 0]]).double().mean())
        probability.append(hit)
        stderr.append(math.sqrt(hit * (1 - hit) / trials))
    return ConvexityProbe([int(k) for k in ks], probability, stderr, trials)


# ---------------------------------------------------------------------- principal angles
def principal_angles(a: Tensor, b: Tensor) -> Tensor:
    """Principal angles between ``span(a)`` and ``span(b)`` (thesis Fig. 6.12), ascending.

    Args:
        a: Spanning vectors ``(m, *shape)`` (need not be orthonormal).
        b: Spanning vectors ``(k, *shape)``.

    Returns:
        ``(min(m, k),)`` angles in radians, smallest first (``cos`` of them is Fig. 6.12).
    """
    if a.ndim < 2 or b.ndim < 2 or a[0].numel() != b[0].numel():
        raise ValueError(
            "principal_angles needs (m, *shape) and (k, *shape) spanning sets of one dimension; "
            f"got {tuple(a.shape)} and {tuple(b.shape)}."
        )
    angles = scipy.linalg.subspace_angles(
        a.flatten(1).double().cpu().numpy().T, b.flatten(1).double().cpu().numpy().T
    )
    return torch.from_numpy(np.sort(angles).copy())


def random_subspace_angles(d: int, m: int, k: int, *, seed: int = 0) -> Tensor:
    """Principal angles between two random subspaces of dimensions m, k in R^d (baseline)."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(m, d, generator=generator, dtype=torch.float64)
    b = torch.randn(k, d, generator=generator, dtype=torch.float64)
    return principal_angles(a, b)


# ---------------------------------------------------------------------- the study
@dataclass(frozen=True)
class RegionsConfig:
    """Sizes of `regions_study` (the report's and the CLI's settings).

    Attributes:
        pairs: Pairs per scenario (the thesis uses 1,000).
        scenarios: Scenarios of §7.3 to run.
        spacing: Sample spacing of the validity check, fraction of ``||x1 − x2||``.
        max_depth: Bisection depth limit.
        ks: ``k`` values of the convexity probe.
        trials: Convex combinations per ``k``.
        stitched_max_panels: Longest path drawn as stitched sections (Fig. 7.2).
        panel_resolution: ``(na, nb)`` of each stitched panel.
        batch_size: Rows per forward pass.
        refine: Check segments by bisection near small margins instead of every sample
            (`find_path`), and refine the stitched panels where the label changes.
        max_anchors: Anchor budget of each path (`find_path`; ``None``: none, as the
            thesis).
    """

    pairs: int = 1000
    scenarios: tuple[Scenario, ...] = SCENARIOS
    spacing: float = 1e-4
    max_depth: int = 16
    ks: tuple[int, ...] = tuple(range(2, 11))
    trials: int = 1000
    stitched_max_panels: int = 12
    panel_resolution: tuple[int, int] = (81, 41)
    batch_size: int = 256
    refine: bool = True
    max_anchors: int | None = None

    def __post_init__(self) -> None:
        check_spacing(self.spacing)  # before any work: the cost is known from the settings
        if self.max_anchors is not None and self.max_anchors < 0:
            raise ValueError(f"max_anchors must be >= 0 or None; got {self.max_anchors}.")


def regions_study(
    clf: Classifier,
    x: Tensor,
    config: RegionsConfig = RegionsConfig(),
    *,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Alg. 5 paths for the scenarios of §7.3, the convexity probe, one stitched path.

    Args:
        clf: The classifier.
        x: Images the pairs are drawn from.
        config: Sizes.
        seed: Seed of every random choice.
        classes: Class names for the figures.
        progress: Show a progress bar (``None``: only on a terminal).

    Returns:
        JSON-ready ``{"scenarios": {name: {...per-pair lists...}}, "convexity": {...},
        "stitched": {...}, "path_passes": {...}, ...}`` (``path_passes``: the model rows
        of the pairs and their paths, forward and backward).
    """
    import time

    started = time.perf_counter()
    scenarios: dict[str, dict[str, Any]] = {}
    best: RegionPath | None = None  # the valid path with most anchors that fits the figure
    before = (clf.counter.forward_rows, clf.counter.backward_rows)
    timer = time.perf_counter()
    for scenario, paths, no_pairs in scenario_paths(clf, x, config, seed=seed, progress=progress):
        if no_pairs is not None:  # one predicted label only: no adversarial pairs
            scenarios[scenario] = {**_scenario_json([], 0.0), "failures": [no_pairs]}
        else:
            scenarios[scenario] = _scenario_json(paths, time.perf_counter() - timer)
        for path in paths:
            fits = path.valid and path.anchor_count + 1 <= config.stitched_max_panels
            if fits and (best is None or path.anchor_count > best.anchor_count):
                best = path
        timer = time.perf_counter()
    path_passes = {
        "forward_rows": clf.counter.forward_rows - before[0],
        "backward_rows": clf.counter.backward_rows - before[1],
    }
    probe = convexity_probe(
        clf, x, config.ks, trials=config.trials, seed=seed, batch_size=config.batch_size
    )
    stitched = None if best is None else _stitched_json(clf, best, config)
    return {
        "config": {**config.__dict__},
        "classes": None if classes is None else [str(c) for c in classes],
        "scenarios": scenarios,
        "convexity": probe.__dict__,
        "stitched": stitched,
        "path_passes": path_passes,
        "seconds": time.perf_counter() - started,
    }


def scenario_paths(
    clf: Classifier,
    x: Tensor,
    config: RegionsConfig,
    *,
    seed: int = 0,
    progress: bool | None = None,
) -> Iterator[tuple[Scenario, list[RegionPath], str | None]]:
    """Alg. 5 paths between `config.pairs` pairs of each of `config.scenarios`, in turn.

    The k-th scenario draws its pairs with seed ``seed + k`` (`scenario_pairs`); the paths
    share one model copy (`Classifier.sweep`).

    Yields:
        ``(scenario, paths, no_pairs)``: the paths (`config_path`), or none and why
        (`NoPairsError`'s message) where the scenario has no pairs.
    """
    from tqdm.auto import tqdm

    with clf.sweep():
        for offset, scenario in enumerate(config.scenarios):
            try:
                x1, x2 = scenario_pairs(
                    clf, x, scenario, config.pairs, seed=seed + offset, batch_size=config.batch_size
                )
            except NoPairsError as why:
                yield scenario, [], str(why)
                continue
            pairs = tqdm(
                list(zip(x1, x2, strict=True)),
                desc=f"paths ({scenario})",
                disable=tqdm_disable(progress),
            )
            yield scenario, [config_path(clf, a, b, config) for a, b in pairs], None


def config_path(clf: Classifier, x1: Tensor, x2: Tensor, config: RegionsConfig) -> RegionPath:
    """`find_path` from `x1` to `x2` with the sizes of `config`."""
    return find_path(
        clf, x1, x2, spacing=config.spacing, max_depth=config.max_depth,
        batch_size=config.batch_size, refine=config.refine, max_anchors=config.max_anchors,
    )  # fmt: skip


def _scenario_json(paths: Sequence[RegionPath], seconds: float) -> dict[str, Any]:
    valid = [p for p in paths if p.valid]
    return {
        "pairs": len(paths),
        "connected": len(valid) / len(paths) if paths else math.nan,
        "undecided": sum(p.undecided for p in paths),
        "anchors": [p.anchor_count for p in paths],
        "deviation": [p.deviation for p in paths],
        "valid": [p.valid for p in paths],
        "depth": [p.depth for p in paths],
        "samples": [p.samples for p in paths],
        "failures": sorted({p.failure for p in paths if p.failure}),
        "mean_anchors": float(np.mean([p.anchor_count for p in valid])) if valid else math.nan,
        "mean_deviation_minus_one": (
            float(np.mean([p.deviation - 1 for p in valid])) if valid else math.nan
        ),
        "straight": float(np.mean([p.anchor_count == 0 for p in valid])) if valid else math.nan,
        "seconds": seconds,
    }


def _stitched_json(clf: Classifier, path: RegionPath, config: RegionsConfig) -> dict[str, Any]:
    x1 = path.anchors[0].to(clf.device)
    normal = DeepFool(p=2)(clf, x1[None]).perturbation[0]
    panels = stitched_sections(
        clf, path, normal, resolution=config.panel_resolution, batch_size=config.batch_size,
        coarse=8 if config.refine else 1,
    )  # fmt: skip
    scale = float(normal.double().norm())
    n = (normal / scale).double().flatten().cpu()
    out = []
    for panel, p, q in zip(panels, path.anchors[:-1], path.anchors[1:], strict=True):
        step = (q - p).double().flatten()
        alpha = float(step @ n) / scale
        out.append(
            {
                "a": panel.a.tolist(),
                "b": panel.b.tolist(),
                "labels": panel.labels.astype(int).tolist(),
                "end": [float(panel.b[-1]), alpha],
            }
        )
    return {
        "label": path.label,
        "anchors": path.anchor_count,
        "deviation": path.deviation,
        "radius": scale,
        "panels": out,
    }


def model_subspace_angles(
    clf_a: Classifier,
    clf_b: Classifier,
    x: Tensor,
    m: int = 20,
    *,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Principal angles between two models' S_c and S_f on the same images (Fig. 6.12).

    ``S_c``: the top-m eigenvectors of the average boundary-curvature matrix
    (`boundaryscope.geometry.curvature.curved_subspace`, §6.4.1); ``S_f``: the top-m
    singular vectors of the DeepFool normals (§4.4, `boundaryscope.universal.normal_subspace`).
    A random pair of m-dimensional subspaces of R^d is the baseline.

    Returns:
        JSON-ready ``{"m", "d", "S_c": {"cosines"}, "S_f": {...}, "random": {...}}``, each
        list of cosines sorted from the smallest angle.
    """
    from boundaryscope.geometry.curvature import boundary_points, curved_subspace
    from boundaryscope.universal import normal_subspace

    d, n = int(x[0].numel()), int(x.shape[0])
    if not 1 <= m < d or m > n:
        raise ValueError(
            f"m must be in [1, min(d - 1, N)] = [1, {min(d - 1, n)}] (a subspace of R^d "
            f"spanned by at most N = {n} normals, d = {d}); got m = {m}. Lower m or give more "
            "images."
        )
    subspaces: dict[str, list[Tensor]] = {"S_c": [], "S_f": []}
    for clf in (clf_a, clf_b):
        points = boundary_points(clf, x, batch_size=batch_size)
        subspaces["S_c"].append(curved_subspace(clf, points, m, seed=seed)[0])
        subspaces["S_f"].append(normal_subspace(points.z - points.x)[2][:m])
    out: dict[str, Any] = {"m": m, "d": d, "images": int(x.shape[0])}
    for name, (a, b) in subspaces.items():
        out[name] = {"cosines": principal_angles(a, b).cos().tolist()}
    out["random"] = {"cosines": random_subspace_angles(d, m, m, seed=seed).cos().tolist()}
    return out
