r"""Exact minimal l∞ and l1 perturbations of small ReLU networks by mixed-integer programming.

DeepFool approximates the robustness of eq. (3.1) of the thesis (§3.2),
``Δ(x; k̂) = min_r ||r||_p  s.t.  k̂(x + r) ≠ k̂(x)``, and the thesis warns that the greedy
linearisation "is not guaranteed to converge to the optimal perturbation in (3.1)". For a
piecewise-affine network (Linear/Conv2d/AvgPool2d/BatchNorm layers and ReLUs) the problem
is a mixed-integer linear program (Tjeng, Xiao & Tedrake, ICLR 2019): every ReLU
``a = max(z, 0)`` with pre-activation bounds ``l < 0 < u`` becomes

.. math::
    a \ge z,\quad a \ge 0,\quad a \le u\,s,\quad a \le z - l\,(1 - s),\quad
    s \in \{0, 1\},

stable ReLUs (``u <= 0`` or ``l >= 0``) stay linear, the norm is linear for p = ∞
(``t >= ±δ_i``) and p = 1 (``u_i >= ±δ_i``), and "class k wins" is the row
``f_k(x + δ) >= f_y(x + δ)``. The answer is the infimum of eq. (3.1) (the boundary point
itself, where the two scores tie). ``scipy.optimize.milp`` (HiGHS) solves it.

What keeps it fast:

- an initial upper bound from an attack (`FMN` refining DeepFool by default): only the ball
  of that radius is searched, which tightens every bound below;
- interval bounds, then LP bound tightening (two LPs per unstable neuron, with the
  triangle relaxation of the layers before it and the norm ball);
- one sub-problem per target class, most likely class first; a class whose LP relaxation
  cannot beat the best radius so far is pruned without branching, and every MILP carries
  ``||δ|| <= best`` so that branches which cannot improve are cut.

A time limit per point returns certified bounds instead of failing: ``lower`` (the least
of the classes' dual bounds) and ``upper`` (the best adversarial point found, MILP or
attack), ``exact`` where they meet.

Precision: the program is solved in float64 on the model's weights, so ``lower`` is
certified for the network in exact arithmetic, up to HiGHS's tolerances (1e-6 on rows,
1e-6 relative gap). The model itself runs in float32, whose rounding can flip the label
of a point within about 1e-5 (relative) of the boundary: an attack may appear to beat
``lower`` by that much (seen on 2 of 100 digits images, by 4e-6 and 1.5e-5).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, OptimizeResult, milp
from torch import Tensor, nn
from tqdm.auto import tqdm

from boundaryscope._progress import tqdm_disable
from boundaryscope.attacks.base import Attack, AttackResult, check_labels
from boundaryscope.attacks.convex import margin
from boundaryscope.classifier import Classifier
from boundaryscope.norms import lp_norm, parse_p

__all__ = ["ReLUNetwork", "VerificationResult", "minimal_perturbation"]

_AFFINE_LEAVES = (
    nn.Linear,
    nn.Conv2d,
    nn.AvgPool2d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.Flatten,
    nn.Identity,
    nn.Dropout,
)
#: HiGHS gap at which a MILP counts as solved; bounds closer than this are "exact".
_REL_GAP = 1e-6
_ABS_GAP = 1e-7


@dataclass(frozen=True)
class ReLUNetwork:
    """A classifier as alternating affine maps and ReLUs, in float64 and input units.

    ``logits(x) = W_L relu(… relu(W_1 x + b_1) …) + b_L`` on flattened inputs; the
    classifier's preprocessing is folded into ``W_1, b_1`` and a one-logit binary model
    gets the score row ``0`` prepended (``[0, f]``, as `Classifier.expand_scores`).

    Attributes:
        weights: ``L`` matrices ``(n_out, n_in)``.
        biases: ``L`` vectors ``(n_out,)``.
        input_shape: Shape of one input.
    """

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    input_shape: tuple[int, ...]

    @classmethod
    def from_classifier(cls, clf: Classifier, example: Tensor) -> ReLUNetwork:
        """Extracts the network of an ``nn.Sequential`` classifier (nested Sequentials allowed).

        Each run of consecutive affine layers is composed into one matrix by applying a
        float64 copy of it to the identity basis, so Conv2d and average pooling are exact.

        Args:
            clf: The classifier; its model must be an ``nn.Sequential`` of Linear, Conv2d,
                AvgPool2d, BatchNorm (eval), Flatten, Dropout (eval), Identity and ReLU.
            example: One validated input batch ``(N, *shape)``, used for its shape and to
                check the extracted network against the model.

        Raises:
            ValueError: naming the first unsupported layer.
        """
        shape = tuple(int(s) for s in example.shape[1:])
        leaves = list(_leaves(clf.model))
        weights: list[np.ndarray] = []
        biases: list[np.ndarray] = []
        current = _preprocessing_map(clf, shape)
        current_shape = shape
        for position, leaf in enumerate(leaves):
            if isinstance(leaf, nn.ReLU):
                weights.append(current[0])
                biases.append(current[1])
                current = _identity_map(int(np.prod(current_shape)))
                continue
            if not isinstance(leaf, _AFFINE_LEAVES):
                raise ValueError(
                    "verify needs an nn.Sequential of Linear, Conv2d, AvgPool2d, BatchNorm, "
                    f"Flatten, Dropout, Identity and ReLU layers; layer {position} is "
                    f"{type(leaf).__name__}."
                )
            matrix, bias, current_shape = _affine_matrix(leaf, current_shape)
            current = (matrix @ current[0], matrix @ current[1] + bias)
        weights.append(current[0])
        biases.append(current[1])
        if weights[-1].shape[0] == 1:  # binary model: scores [0, f]
            weights[-1] = np.vstack([np.zeros_like(weights[-1]), weights[-1]])
            biases[-1] = np.concatenate([[0.0], biases[-1]])
        network = cls(weights, biases, shape)
        network._check_against(clf, example)
        return network

    @property
    def hidden_sizes(self) -> list[int]:
        """Number of ReLUs per hidden layer."""
        return [w.shape[0] for w in self.weights[:-1]]

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Scores ``(N, C)`` of flattened inputs ``(N, d)`` (float64)."""
        a = x
        for w, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            a = np.maximum(a @ w.T + b, 0.0)
        return np.asarray(a @ self.weights[-1].T + self.biases[-1])

    def _check_against(self, clf: Classifier, example: Tensor) -> None:
        """Refuses an extraction that does not reproduce the model (e.g. a custom forward)."""
        probe = example[: min(8, example.shape[0])]
        expected = clf.forward_scores(probe).double().cpu().numpy()
        got = self.logits(probe.double().flatten(1).cpu().numpy())
        scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
        if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-4 * scale):
            raise ValueError(
                "verify could not reproduce the model's scores from its layers (the model "
                "is not a plain nn.Sequential of the supported layers, or its forward adds "
                "something); largest difference "
                f"{float(np.abs(got - expected).max()) if got.shape == expected.shape else 'n/a'}."
            )


@dataclass
class VerificationResult:
    """Certified bounds on the minimal perturbation of eq. (3.1), per image.

    Attributes:
        lower: ``(N,)`` certified lower bound: no adversarial point is closer.
        upper: ``(N,)`` norm of the closest adversarial point found (``inf`` if none in
            the box).
        exact: ``(N,)`` bool, the solver proved optimality: its optimum and `lower` agree
            to 1e-6 relative (also where both are ``inf``: no adversarial point exists in
            the box). `upper` can exceed `lower` by the move across the tie (below).
        adversarial: ``(N, *shape)`` a point the model classifies as adversarial, of norm
            `upper` (a MILP optimum moved across the tie by at most 1e-4 of its norm);
            ``x`` where none was found.
        target_class: ``(N,)`` class of that point (``-1`` where none).
        label: ``(N,)`` the label the perturbation moves away from.
        seconds: ``(N,)`` solver time per image.
        status: Per image: ``"optimal"``, ``"time limit"`` or ``"no adversarial in box"``.
        p: The norm (1 or inf).
        attack_norms: ``(N,)`` the initial upper bound (the attack's norm; ``inf`` if none).
    """

    lower: Tensor
    upper: Tensor
    exact: Tensor
    adversarial: Tensor
    target_class: Tensor
    label: Tensor
    seconds: Tensor
    status: list[str]
    p: float
    attack_norms: Tensor = field(default_factory=lambda: torch.empty(0))

    def __len__(self) -> int:
        return int(self.lower.shape[0])


def minimal_perturbation(
    clf: Classifier,
    x: Tensor,
    y: Tensor | None = None,
    *,
    p: float | str = math.inf,
    upper_bound: AttackResult | Tensor | None = None,
    attack: Attack | str | None = "default",
    time_limit: float = 10.0,
    tighten: bool = True,
    progress: bool | None = False,
) -> VerificationResult:
    """The exact minimal l∞ or l1 perturbation (eq. 3.1) of each image, by MILP.

    Args:
        clf: Classifier whose model is an ``nn.Sequential`` ReLU network (see
            `ReLUNetwork.from_classifier`).
        x: ``(N, *shape)`` inputs inside the box.
        y: ``(N,)`` labels to move away from; ``None`` = the model's predictions.
        p: ``inf`` or ``1`` (l2 would need a quadratic objective, which ``milp`` lacks).
        upper_bound: Known adversarial points: an `AttackResult` (its norms and points
            seed the search) or a ``(N,)`` tensor of norms. Overrides `attack`.
        attack: Attack run first for the initial upper bound; ``"default"`` is
            ``FMN(p=p, steps=100)`` started from DeepFool, ``None`` searches the whole box.
        time_limit: Seconds of solver time per image; when reached, the certified
            bounds so far are returned (``exact=False``).
        tighten: Tighten interval bounds with LPs before branching.
        progress: Show a progress bar (``None``: only on a terminal).

    Returns:
        A `VerificationResult`.

    Raises:
        ValueError: for p other than 1/inf, an unsupported model, or bad `upper_bound`.
    """
    p = parse_p(p)
    if p not in (1.0, math.inf):
        raise ValueError(
            f"minimal_perturbation supports p = 1 or inf (linear objectives); got p={p!r}."
        )
    if not time_limit > 0:
        raise ValueError(f"time_limit must be a positive number of seconds; got {time_limit!r}.")
    x = clf.validate(x)
    with clf.session():
        # Extraction runs the model once, so num_classes is known for the label check.
        network = ReLUNetwork.from_classifier(clf, x)
        labels = clf.predict_unchecked(x, 256) if y is None else check_labels(y, x, clf, "y")
        norms, points = _initial_upper_bounds(clf, x, labels, p, upper_bound, attack)
    flat = x.double().flatten(1).cpu().numpy()
    start_points = points.double().flatten(1).cpu().numpy()
    outcomes = []
    for i in tqdm(range(x.shape[0]), desc=f"MILP l{p:g}", disable=tqdm_disable(progress)):
        problem = _PointProblem(network, flat[i], int(labels[i]), p, clf.bounds, tighten)
        outcomes.append(problem.solve(float(norms[i]), start_points[i], time_limit))
    result = _collect(outcomes, x, labels, p, norms)
    with clf.session():
        _make_witnesses_strict(clf, x, result)
    return result


def _make_witnesses_strict(clf: Classifier, x: Tensor, result: VerificationResult) -> None:
    """Moves MILP witnesses, which sit on the boundary, just across it, in place.

    A MILP optimum ties two scores (to the solver's 1e-7), so the model's argmax may still
    return the original label there, and which of two tied float32 scores wins can even
    change with the batch the point is evaluated in. The perturbation is scaled by
    ``1 + s`` for ``s = 0, 1e-7 … 1e-2`` until another class beats the label by more than
    float32 noise (1e-6 of the largest score), and `upper` becomes the norm of that
    checked point (typically 1e-5 above `lower` relative, more when the clean margin is
    small); `lower` and `exact` are untouched. Where no scale works the status says so
    and `upper` keeps the MILP value.
    """
    found = torch.isfinite(result.upper).to(x.device)
    if not bool(found.any()):
        return
    delta = result.adversarial - x
    labels = result.label.to(x.device)
    todo = found.clone()
    for scale in (0.0, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2):
        if not bool(todo.any()):
            break
        candidate = clf.clip(x[todo] + (1 + scale) * delta[todo])
        crossed = _clearly_adversarial(clf.forward_scores(candidate), labels[todo])
        rows = torch.nonzero(todo).flatten()[crossed]
        result.adversarial[rows] = candidate[crossed]
        todo[rows] = False
    for i in torch.nonzero(todo).flatten().tolist():
        result.status[i] = "witness on the boundary (tie)"
    moved = (found & ~todo).cpu()
    norms = lp_norm((result.adversarial - x).double(), result.p).cpu()
    result.upper = torch.where(moved, torch.maximum(norms, result.lower), result.upper)


def _gap_tolerance(upper: Tensor | float) -> Tensor | float:
    """Largest ``upper − lower`` that counts as closed (the solver's gap, with margin)."""
    return 10 * _REL_GAP * upper + _ABS_GAP


def _exact(lower: Tensor, upper: Tensor) -> Tensor:
    """Bounds that meet (``inf`` = ``inf``: certified that no adversarial point exists)."""
    return ((upper - lower) <= _gap_tolerance(upper)) | (lower == upper)


def _clearly_adversarial(scores: Tensor, labels: Tensor) -> Tensor:
    """``(N,)`` bool: some other class beats the label by more than float32 noise."""
    noise = 1e-6 * (1 + scores.abs().amax(dim=1))
    return -margin(scores, labels, "logits") > noise


# ---------------------------------------------------------------------------- extraction
def _leaves(module: nn.Module) -> Iterable[nn.Module]:
    if isinstance(module, nn.Sequential):
        for child in module:
            yield from _leaves(child)
    else:
        yield module


def _identity_map(d: int) -> tuple[np.ndarray, np.ndarray]:
    return np.eye(d), np.zeros(d)


def _preprocessing_map(clf: Classifier, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(x - mean) / std`` as a diagonal affine map on flattened inputs."""
    d = int(np.prod(shape))
    if clf.preprocessing is None:
        return _identity_map(d)
    ones = torch.ones((1, *shape), dtype=torch.float64)
    zero = torch.zeros((1, *shape), dtype=torch.float64)
    offset = clf.preprocessing.apply(zero).flatten().numpy()
    scale = clf.preprocessing.apply(ones).flatten().numpy() - offset
    return np.diag(scale), offset


def _affine_matrix(
    leaf: nn.Module, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """``(W, b, output shape)`` of an affine layer acting on flattened inputs of `shape`."""
    layer = copy.deepcopy(leaf).double().eval()
    d = int(np.prod(shape))
    with torch.no_grad():
        bias_out = layer(torch.zeros((1, *shape), dtype=torch.float64))
        basis = layer(torch.eye(d, dtype=torch.float64).view(d, *shape))
    out_shape = tuple(int(s) for s in bias_out.shape[1:])
    bias = bias_out.flatten().numpy()
    matrix = (basis.flatten(1) - bias_out.flatten(1)).T.numpy()
    return matrix, bias, out_shape


# ---------------------------------------------------------------------------- upper bounds
def _initial_upper_bounds(
    clf: Classifier,
    x: Tensor,
    labels: Tensor,
    p: float,
    upper_bound: AttackResult | Tensor | None,
    attack: Attack | str | None,
) -> tuple[Tensor, Tensor]:
    """Norms ``(N,)`` and points ``(N, *shape)`` of known adversarial examples (inf: none)."""
    if isinstance(upper_bound, AttackResult):
        if upper_bound.adversarial.shape != x.shape:
            raise ValueError(
                f"upper_bound must be an AttackResult for x of shape {tuple(x.shape)}; got "
                f"adversarial points of shape {tuple(upper_bound.adversarial.shape)}."
            )
        adversarial = upper_bound.adversarial.to(x.device, x.dtype)
        still = clf.predict_unchecked(adversarial, 256) != labels
        norms = torch.where(still, lp_norm(adversarial - x, p), math.inf)
        return norms, torch.where(_rows(still, x), adversarial, x)
    if isinstance(upper_bound, Tensor):
        if upper_bound.shape != (x.shape[0],) or bool(torch.isnan(upper_bound).any()):
            raise ValueError(
                f"upper_bound must be a (N,) tensor of norms without NaN (N={x.shape[0]}); "
                f"got shape {tuple(upper_bound.shape)}."
            )
        return upper_bound.to(x.device, torch.float64), x.clone()
    if upper_bound is not None:
        raise TypeError(
            "upper_bound must be an AttackResult, a (N,) tensor or None; got "
            f"{type(upper_bound).__name__}."
        )
    if attack is None:
        return torch.full((x.shape[0],), math.inf, device=x.device), x.clone()
    if attack == "default":
        from boundaryscope.attacks.fmn import FMN

        attack = FMN(p=p, steps=100)
    if not isinstance(attack, Attack):
        raise TypeError(f"attack must be an Attack, 'default' or None; got {attack!r}.")
    result = attack(clf, x, labels)
    return _initial_upper_bounds(clf, x, labels, p, result, None)


def _rows(mask: Tensor, like: Tensor) -> Tensor:
    return mask.view(-1, *([1] * (like.ndim - 1)))


# ---------------------------------------------------------------------------- one image
class _Program:
    """Rows ``lb <= A v <= ub`` and variable bounds, built block by block (sparse)."""

    def __init__(self) -> None:
        self.lower: list[np.ndarray] = []
        self.upper: list[np.ndarray] = []
        self.integer: list[np.ndarray] = []
        self.entries: list[sparse.coo_matrix] = []
        self.row_lb: list[np.ndarray] = []
        self.row_ub: list[np.ndarray] = []
        self.num_vars = 0
        self.num_rows = 0

    def variables(self, lower: np.ndarray, upper: np.ndarray, integer: bool = False) -> slice:
        """Adds ``len(lower)`` variables; returns their slice."""
        start = self.num_vars
        self.lower.append(np.asarray(lower, dtype=float))
        self.upper.append(np.asarray(upper, dtype=float))
        self.integer.append(np.full(len(lower), 1 if integer else 0))
        self.num_vars += len(lower)
        return slice(start, self.num_vars)

    def rows(
        self, terms: Sequence[tuple[slice, np.ndarray]], lb: np.ndarray, ub: np.ndarray
    ) -> None:
        """Adds rows ``lb <= Σ M_j v[s_j] <= ub`` for blocks ``(s_j, M_j)``."""
        count = len(lb)
        if count == 0:
            return
        for columns, matrix in terms:
            block = sparse.coo_matrix(np.asarray(matrix, dtype=float).reshape(count, -1))
            self.entries.append(
                sparse.coo_matrix(
                    (block.data, (block.row + self.num_rows, block.col + columns.start)),
                )
            )
        self.row_lb.append(np.asarray(lb, dtype=float))
        self.row_ub.append(np.asarray(ub, dtype=float))
        self.num_rows += count

    def compile(self) -> _Compiled:
        """The constraint matrix, row and variable bounds, for repeated solves."""
        matrix = sparse.csr_matrix(
            (
                np.concatenate([e.data for e in self.entries]),
                (
                    np.concatenate([e.row for e in self.entries]),
                    np.concatenate([e.col for e in self.entries]),
                ),
            ),
            shape=(self.num_rows, self.num_vars),
        )
        return _Compiled(
            LinearConstraint(matrix, np.concatenate(self.row_lb), np.concatenate(self.row_ub)),
            Bounds(np.concatenate(self.lower), np.concatenate(self.upper)),
            np.concatenate(self.integer),
        )


@dataclass
class _Compiled:
    constraints: LinearConstraint
    bounds: Bounds
    integrality: np.ndarray

    def solve(
        self, cost: np.ndarray, relax: bool, time_limit: float | None = None
    ) -> OptimizeResult:
        """``milp`` (or its LP relaxation) minimising ``cost @ v``."""
        options: dict[str, float] = {"mip_rel_gap": _REL_GAP}
        if time_limit is not None:
            options["time_limit"] = max(time_limit, 1e-3)
        return milp(
            cost,
            constraints=self.constraints,
            bounds=self.bounds,
            integrality=np.zeros_like(self.integrality) if relax else self.integrality,
            options=options,
        )


@dataclass
class _Outcome:
    lower: float
    upper: float
    point: np.ndarray
    target: int
    seconds: float
    status: str


class _PointProblem:
    """Eq. (3.1) for one image: bounds, then one MILP per target class."""

    def __init__(
        self,
        network: ReLUNetwork,
        x0: np.ndarray,
        label: int,
        p: float,
        box: tuple[float, float],
        tighten: bool,
    ) -> None:
        self.network = network
        self.x0 = x0
        self.label = label
        self.p = p
        self.box = box
        self.tighten = tighten

    # ------------------------------------------------------------ bounds
    def _delta_bounds(self, radius: float) -> tuple[np.ndarray, np.ndarray]:
        lo = self.box[0] - self.x0
        hi = self.box[1] - self.x0
        if math.isfinite(radius):
            lo, hi = np.maximum(lo, -radius), np.minimum(hi, radius)
        return lo, np.maximum(hi, lo)

    def _bounds(self, radius: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """Pre-activation bounds of every hidden layer on the ball of `radius` ∩ box."""
        lo, hi = self._delta_bounds(radius)
        w1, b1 = self.network.weights[0], self.network.biases[0]
        centre = w1 @ self.x0 + b1
        positive, negative = np.maximum(w1, 0), np.minimum(w1, 0)
        bounds: list[tuple[np.ndarray, np.ndarray]] = []
        layer_lo, layer_hi = (
            centre + positive @ lo + negative @ hi,
            centre + positive @ hi + negative @ lo,
        )
        for j in range(len(self.network.hidden_sizes)):
            if j > 0:
                w, b = self.network.weights[j], self.network.biases[j]
                a_lo, a_hi = np.maximum(bounds[-1][0], 0), np.maximum(bounds[-1][1], 0)
                positive, negative = np.maximum(w, 0), np.minimum(w, 0)
                layer_lo = b + positive @ a_lo + negative @ a_hi
                layer_hi = b + positive @ a_hi + negative @ a_lo
            if self.tighten and (j > 0 or (self.p == 1 and math.isfinite(radius))):
                layer_lo, layer_hi = self._tighten_layer(j, bounds, layer_lo, layer_hi, radius)
            bounds.append((layer_lo, layer_hi))
        return bounds

    def _tighten_layer(
        self,
        j: int,
        bounds: list[tuple[np.ndarray, np.ndarray]],
        layer_lo: np.ndarray,
        layer_hi: np.ndarray,
        radius: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """LP bounds (triangle relaxation of layers < j) on layer j's unstable neurons."""
        program = _Program()
        _, _, previous = self._encode(program, bounds[:j], radius)
        compiled = program.compile()
        w = self.network.weights[j]
        offset = self.network.biases[j] if j > 0 else w @ self.x0 + self.network.biases[0]
        layer_lo, layer_hi = layer_lo.copy(), layer_hi.copy()
        for i in np.flatnonzero((layer_lo < 0) & (layer_hi > 0)):
            cost = np.zeros(program.num_vars)
            cost[previous] = w[i]
            low, high = compiled.solve(cost, relax=True), compiled.solve(-cost, relax=True)
            # A failed LP keeps the interval bound, which is always valid.
            if low.status == 0:
                layer_lo[i] = max(layer_lo[i], low.fun + offset[i] - _ABS_GAP)
            if high.status == 0:
                layer_hi[i] = min(layer_hi[i], -high.fun + offset[i] + _ABS_GAP)
        return layer_lo, layer_hi

    # ------------------------------------------------------------ encoding
    def _encode(
        self, program: _Program, bounds: list[tuple[np.ndarray, np.ndarray]], radius: float
    ) -> tuple[slice, slice, slice]:
        """Variables δ, the norm, and the ReLU layers in `bounds`: slices of δ, norm, last layer.

        The last layer's slice indexes the post-activations (δ itself when `bounds` is
        empty, where the next affine map acts on ``x0 + δ``).
        """
        lo, hi = self._delta_bounds(radius)
        d = len(self.x0)
        delta = program.variables(lo, hi)
        eye = np.eye(d)
        if self.p == math.inf:
            t = program.variables(
                np.zeros(1), np.array([radius if math.isfinite(radius) else np.inf])
            )
            column = -np.ones((d, 1))
            program.rows([(delta, eye), (t, column)], np.full(d, -np.inf), np.zeros(d))
            program.rows([(delta, -eye), (t, column)], np.full(d, -np.inf), np.zeros(d))
            norm = t
        else:
            u = program.variables(np.zeros(d), np.maximum(np.abs(lo), np.abs(hi)))
            program.rows([(delta, eye), (u, -eye)], np.full(d, -np.inf), np.zeros(d))
            program.rows([(delta, -eye), (u, -eye)], np.full(d, -np.inf), np.zeros(d))
            if math.isfinite(radius):
                program.rows([(u, np.ones((1, d)))], np.array([-np.inf]), np.array([radius]))
            norm = u
        previous = delta
        for j, (z_lo, z_hi) in enumerate(bounds):
            w = self.network.weights[j]
            offset = self.network.biases[j] + (w @ self.x0 if j == 0 else 0.0)
            previous = self._relu_layer(program, previous, w, offset, z_lo, z_hi)
        return delta, norm, previous

    @staticmethod
    def _relu_layer(
        program: _Program,
        previous: slice,
        w: np.ndarray,
        offset: np.ndarray,
        z_lo: np.ndarray,
        z_hi: np.ndarray,
    ) -> slice:
        """``a = relu(W v + offset)``: exact where stable, big-M with a binary otherwise."""
        active, unstable = z_lo >= 0, (z_lo < 0) & (z_hi > 0)
        a = program.variables(np.maximum(z_lo, 0) * active, np.maximum(z_hi, 0))
        n = len(z_lo)
        eye = np.eye(n)
        # Stable active: a − W v = offset.
        rows = np.flatnonzero(active)
        program.rows([(a, eye[rows]), (previous, -w[rows])], offset[rows], offset[rows])
        rows = np.flatnonzero(unstable)
        if len(rows):
            s = program.variables(np.zeros(len(rows)), np.ones(len(rows)), integer=True)
            ones = np.eye(len(rows))
            # a >= W v + offset
            program.rows(
                [(a, eye[rows]), (previous, -w[rows])], offset[rows], np.full(len(rows), np.inf)
            )
            # a <= W v + offset − l (1 − s)  ⇔  a − W v − l s <= offset − l
            program.rows(
                [(a, eye[rows]), (previous, -w[rows]), (s, -z_lo[rows, None] * ones)],
                np.full(len(rows), -np.inf),
                offset[rows] - z_lo[rows],
            )
            # a <= u s
            program.rows(
                [(a, eye[rows]), (s, -z_hi[rows, None] * ones)],
                np.full(len(rows), -np.inf),
                np.zeros(len(rows)),
            )
        return a

    def _target_row(self, program: _Program, last: slice, k: int) -> None:
        """``f_k(x0 + δ) − f_y(x0 + δ) >= 0``."""
        w, b = self.network.weights[-1], self.network.biases[-1]
        row = w[k] - w[self.label]
        offset = b[k] - b[self.label]
        if not self.network.hidden_sizes:  # no hidden layer: the map acts on x0 + δ
            offset = offset + row @ self.x0
        program.rows([(last, row[None, :])], np.array([-offset]), np.array([np.inf]))

    # ------------------------------------------------------------ search
    def solve(self, radius: float, start_point: np.ndarray, time_limit: float) -> _Outcome:
        """Best bounds within `time_limit` seconds, starting from a known adversarial radius."""
        begin = time.perf_counter()
        best = _Outcome(math.inf, radius, start_point, -1, 0.0, "optimal")
        if math.isfinite(radius):
            best.target = int(np.argmax(self.network.logits(start_point[None])[0]))
        bounds = self._bounds(radius)
        logits = self.network.logits(self.x0[None])[0]
        class_lower: list[float] = []
        timed_out = False
        for k in [int(c) for c in np.argsort(-logits) if c != self.label]:
            remaining = time_limit - (time.perf_counter() - begin)
            program = _Program()
            delta, norm, last = self._encode(program, bounds, best.upper)
            self._target_row(program, last, k)
            cost = np.zeros(program.num_vars)
            cost[norm] = 1.0
            compiled = program.compile()
            relaxed = compiled.solve(cost, relax=True)
            if relaxed.status == 2:  # no point of class k within the radius (or box)
                class_lower.append(best.upper)
                continue
            _check_status(relaxed, "LP relaxation")
            if relaxed.fun >= best.upper * (1 - _REL_GAP) - _ABS_GAP or remaining <= 0:
                class_lower.append(min(relaxed.fun, best.upper))
                timed_out |= remaining <= 0 and relaxed.fun < best.upper
                continue
            result = compiled.solve(cost, relax=False, time_limit=remaining)
            if result.status == 2:
                class_lower.append(best.upper)
                continue
            if result.status not in (0, 1):
                _check_status(result, "MILP")
            dual = getattr(result, "mip_dual_bound", None)
            dual = relaxed.fun if dual is None or not np.isfinite(dual) else max(dual, relaxed.fun)
            class_lower.append(result.fun if result.status == 0 else dual)
            timed_out |= result.status == 1
            if result.x is not None and result.fun < best.upper:
                step = _within_norm(result.x[delta], float(result.fun), self.p)
                best.upper = float(_norm(step, self.p))
                best.point = np.clip(self.x0 + step, *self.box)
                best.target = k
        best.lower = min([best.upper, *class_lower])
        best.seconds = time.perf_counter() - begin
        if not math.isfinite(best.upper) and not timed_out:
            best.status = "no adversarial in box"
        elif timed_out and best.upper - best.lower > _gap_tolerance(best.upper):
            best.status = "time limit"
        return best


def _within_norm(delta: np.ndarray, bound: float, p: float) -> np.ndarray:
    """δ pulled back onto ``||δ||_p <= bound``.

    HiGHS accepts MILP rows violated by up to 1e-6, so ``|δ_i| <= t`` may hold only to
    that tolerance and ``||δ||`` exceed the optimum ``t`` by 1e-5 relative on small radii.
    The witness is clipped (l∞) or scaled (l1) onto the optimum's ball; it may then tie
    the scores slightly on the wrong side, which `_make_witnesses_strict` corrects.
    """
    if p == math.inf:
        return np.clip(delta, -bound, bound)
    norm = float(np.abs(delta).sum())
    return delta * (bound / norm) if norm > bound > 0 else delta


def _check_status(result: OptimizeResult, what: str) -> None:
    if result.status != 0:
        raise RuntimeError(f"HiGHS could not solve the {what}: {result.message}")


def _norm(v: np.ndarray, p: float) -> float:
    return float(np.abs(v).max(initial=0.0) if p == math.inf else np.abs(v).sum())


def _collect(
    outcomes: list[_Outcome], x: Tensor, labels: Tensor, p: float, attack_norms: Tensor
) -> VerificationResult:
    adversarial = (
        torch.stack([torch.from_numpy(o.point).view(x.shape[1:]) for o in outcomes]).to(
            x.device, x.dtype
        )
        if outcomes
        else x.clone()
    )
    lower = torch.tensor([o.lower for o in outcomes], dtype=torch.float64)
    upper = torch.tensor([o.upper for o in outcomes], dtype=torch.float64)
    return VerificationResult(
        lower=lower,
        upper=upper,
        exact=_exact(lower, upper),
        adversarial=adversarial,
        target_class=torch.tensor([o.target for o in outcomes], dtype=torch.int64),
        label=labels.cpu(),
        seconds=torch.tensor([o.seconds for o in outcomes], dtype=torch.float64),
        status=[o.status for o in outcomes],
        p=p,
        attack_norms=attack_norms.double().cpu(),
    )
