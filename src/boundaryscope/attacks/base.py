"""`AttackResult` and the `Attack` base class (docs/design.md).

An attack is a small object: keyword-only hyperparameters stored under their own names,
data only at call time. The base class's ``__call__`` does every shared chore: it
validates inputs, resolves ``y`` (``None`` = the model's own prediction), clips the
returned points to the box, judges success on those clipped points with a fresh forward
pass, and computes per-sample norms. Subclasses write only their maths in ``_run``.

A point where the model's outputs are not finite (NaN, ±inf) has no label: its label is
``-1`` and it is never adversarial, however the attack got there (a model returning NaN
off the data would otherwise look fooled everywhere); the classifier warns once.
"""

from __future__ import annotations

import copy
import inspect
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Literal, TypeVar, overload

import torch
from torch import Tensor

from boundaryscope import _sharding
from boundaryscope._inputs import closest_hint
from boundaryscope.classifier import Classifier, check_classifier, finite_argmax
from boundaryscope.norms import lp_norm

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackResult",
    "RawAttack",
    "check_budget",
    "check_label_shape",
    "check_labels",
    "first_change",
    "is_adversarial",
    "predicted_labels",
    "register_attack",
    "shrink_to_boundary",
    "top_other_classes",
    "unknown_name",
]


@dataclass
class AttackResult:
    """What every attack returns; all tensors are per sample and on the classifier device.

    Attributes:
        adversarial: ``(N, *shape)`` returned points, inside the classifier bounds.
        perturbation: ``(N, *shape)`` ``adversarial - x``.
        success: ``(N,)`` bool, judged on `adversarial` (label differs from
            `original_label`, or equals the target in targeted mode; never where the
            model's outputs are not finite).
        norms: ``(N,)`` ``||perturbation||_p``; ``inf`` where the attack failed.
        iterations: ``(N,)`` int64 iterations each sample used.
        original_label: ``(N,)`` reference labels (``y``, or the clean prediction).
        adversarial_label: ``(N,)`` predicted labels at `adversarial` (``-1`` where the
            outputs are not finite).
        p: The norm exponent of `norms`.
        details: Attack-specific per-sample tensors (e.g. DeepFool's crossed class).
    """

    adversarial: Tensor
    perturbation: Tensor
    success: Tensor
    norms: Tensor
    iterations: Tensor
    original_label: Tensor
    adversarial_label: Tensor
    p: float
    details: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.success.shape[0])

    def __iter__(self) -> Iterator[Any]:
        """Refuses tuple unpacking, showing the fields instead (users arriving from Foolbox)."""
        raise TypeError(
            "An AttackResult is not a tuple: read its fields. Foolbox's "
            "`raw, clipped, success = attack(model, x, y, epsilons=eps)` is "
            "`result = attack(clf, x, y)` here, then result.adversarial (clipped to the box), "
            "result.success, result.norms, result.perturbation."
        )

    def take(self, index: slice | Tensor) -> AttackResult:
        """The result of the samples `index` (a slice, indices or a boolean mask)."""
        return self._map(lambda tensor: tensor[index])

    def to(self, device: torch.device | str) -> AttackResult:
        """The same result with every tensor on `device`."""
        return self._map(lambda tensor: tensor.to(device))

    def _map(self, fn: Callable[[Tensor], Tensor]) -> AttackResult:
        """`fn` applied to every per-sample tensor, details included."""
        per_sample = [f.name for f in fields(self) if f.name not in ("p", "details")]
        tensors: dict[str, Any] = {name: fn(getattr(self, name)) for name in per_sample}
        details = {k: fn(v) for k, v in self.details.items()}
        return replace(self, **tensors, details=details)

    @property
    def success_rate(self) -> float:
        """Fraction of samples for which the attack succeeded."""
        return float(self.success.float().mean()) if len(self) else math.nan

    def to_dict(self, include_tensors: bool = True) -> dict[str, Any]:
        """JSON-ready dictionary (lists of numbers; ``inf`` norms as ``"inf"``)."""
        from boundaryscope._io import to_jsonable

        payload: dict[str, Any] = {
            "p": self.p,
            "success": self.success,
            "norms": self.norms,
            "iterations": self.iterations,
            "original_label": self.original_label,
            "adversarial_label": self.adversarial_label,
            "details": self.details,
        }
        if include_tensors:
            payload["shape"] = list(self.adversarial.shape)
            payload["adversarial"] = self.adversarial.flatten()
            payload["perturbation"] = self.perturbation.flatten()
        return dict(to_jsonable(payload))

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> AttackResult:
        """Inverse of `to_dict` (with tensors)."""

        def floats(values: list[Any]) -> Tensor:
            return torch.tensor([float(v) for v in values], dtype=torch.float32)

        shape = payload["shape"]
        adversarial = floats(payload["adversarial"]).view(shape)
        return cls(
            adversarial=adversarial,
            perturbation=floats(payload["perturbation"]).view(shape),
            success=torch.tensor(payload["success"], dtype=torch.bool),
            norms=floats(payload["norms"]),
            iterations=torch.tensor(payload["iterations"], dtype=torch.int64),
            original_label=torch.tensor(payload["original_label"], dtype=torch.int64),
            adversarial_label=torch.tensor(payload["adversarial_label"], dtype=torch.int64),
            p=float(payload["p"]),
            details={k: torch.tensor(v) for k, v in payload.get("details", {}).items()},
        )


@dataclass
class RawAttack:
    """What an attack's ``_run`` hands back to the base class before success is judged.

    Attributes:
        adversarial: ``(N, *shape)`` candidate points (clipped again by the base class).
        iterations: ``(N,)`` iterations used per sample.
        details: Attack-specific per-sample tensors.
    """

    adversarial: Tensor
    iterations: Tensor
    details: dict[str, Tensor] = field(default_factory=dict)


class Attack(ABC):
    """Base class: ``attack(clf, x, y=None, *, target=None) -> AttackResult``.

    Subclasses set `name`, store keyword-only hyperparameters in ``__init__`` under the
    same names, define the attribute ``p`` (the norm reported in ``AttackResult.norms``)
    and implement `_run`.
    """

    name: ClassVar[str] = "attack"
    p: float = 2.0
    batch_size: int = 256
    #: Budgeted attacks: the ε used when ``eps=None``, as a fraction of the box width
    #: ``hi − lo`` (0.1 → 0.1 on [0, 1] images, 25.5 on [0, 255]); resolved at each call.
    default_budget: ClassVar[float | None] = None

    def __new__(cls, *args: Any, **kwargs: Any) -> Attack:
        """Refuses positional settings, with the form that works (the torchattacks habit).

        torchattacks builds ``PGD(model, eps=…)``; here settings are keywords and the
        model comes at call time, wrapped in a `Classifier` that knows the input box.
        """
        if args:
            got = ", ".join(type(a).__name__ for a in args)
            raise TypeError(
                f"{cls.__name__} takes its settings as keywords and the model at call time: "
                f"{cls.__name__}(eps=8/255)(Classifier(model, bounds=(0, 1)), x, y), one "
                f"attack object for every batch and model; got positional argument(s) of "
                f"type {got}."
            )
        return super().__new__(cls)

    def __repr__(self) -> str:
        """``Name(param=value, ...)`` over the constructor's parameters, which ``eval`` rebuilds."""
        parameters = inspect.signature(type(self).__init__).parameters
        args = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in parameters
            if name != "self" and hasattr(self, name)
        )
        return f"{type(self).__name__}({args})"

    def __call__(
        self,
        clf: Classifier,
        x: Tensor,
        y: Tensor | None = None,
        *,
        target: Tensor | None = None,
        **unexpected: Any,
    ) -> AttackResult:
        """Runs the attack on a batch.

        Args:
            clf: The classifier.
            x: ``(N, *shape)`` inputs inside ``clf.bounds``.
            y: ``(N,)`` labels to move away from; ``None`` = the model's predictions.
            target: ``(N,)`` target classes for a targeted attack (``None`` = untargeted).
            **unexpected: Refused with a message saying where such settings go.

        Returns:
            An `AttackResult`; success is judged on the returned, clipped points.

        Raises:
            TypeError: an unknown keyword; a budget (``epsilons=``, ``eps=``, as in
                Foolbox or torchattacks) belongs to the attack's constructor.
        """
        if unexpected:
            raise _call_error(self, unexpected)
        clf = check_classifier(clf)
        resolved = self._with_budget(clf)
        if resolved is not self:
            return resolved(clf, x, y, target=target)
        x = clf.validate(x)
        share = _sharding.ACTIVE.get()
        if share is not None:  # under `distributed.sharding`: this process's share only
            result: AttackResult = share(self, clf, x, y, target)
            return result
        with clf.session():
            # The clean prediction is only needed where no labels are given: given labels
            # save a pass over the batch (one row tells the number of classes if unknown).
            if y is None:
                reference = self.predict(clf, x)
            else:
                if not clf.num_classes_known:
                    self.predict(clf, x[:1])
                reference = check_labels(y, x, clf, "y")
            if target is not None:
                target = check_labels(target, x, clf, "target")
            # An empty batch has nothing to attack; every attack returns an empty result.
            raw = (
                RawAttack(x.clone(), torch.zeros(0, dtype=torch.int64, device=x.device))
                if x.shape[0] == 0
                else self._run(clf, x, reference, target)
            )
            adversarial = _finite_or_clean(clf.clip(raw.adversarial.to(dtype=x.dtype)), x)
            adversarial_label = self.predict(clf, adversarial)
        if bool((adversarial_label < 0).any()) or bool((reference < 0).any()):
            clf.warn_once(
                "non-finite",
                "The model returned NaN or infinite outputs for some inputs; such points "
                "have no label and are never counted as adversarial (the attacks there "
                "are reported as failures).",
            )
        success = is_adversarial(adversarial_label, reference, target)
        perturbation = adversarial - x
        norms = lp_norm(perturbation, self.p)
        norms = torch.where(success, norms, torch.full_like(norms, math.inf))
        return AttackResult(
            adversarial=adversarial,
            perturbation=perturbation,
            success=success,
            norms=norms,
            iterations=raw.iterations.to(torch.int64),
            original_label=reference,
            adversarial_label=adversarial_label,
            p=self.p,
            details=raw.details,
        )

    @property
    def budget(self) -> float:
        """The ε in force inside `_run`: ``eps``, or its default resolved for the box."""
        eps = getattr(self, "eps", None)
        if eps is None:
            raise RuntimeError(f"{type(self).__name__}: eps is resolved when the attack is called.")
        return float(eps)

    def _with_budget(self, clf: Classifier) -> Attack:
        """This attack, or a copy whose ``eps=None`` became `default_budget` of the box width."""
        if self.default_budget is None or getattr(self, "eps", 0.0) is not None:
            return self
        lo, hi = clf.bounds
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(
                f"{type(self).__name__} needs eps, a budget in input units, when the box is "
                f"unbounded (its default is {self.default_budget:g} of the box width); got "
                f"eps=None with bounds={clf.bounds}."
            )
        resolved = copy.copy(self)
        resolved.eps = self.default_budget * (hi - lo)  # type: ignore[attr-defined]
        return resolved

    def for_shard(self, start: int, stop: int) -> Attack:
        """The attack to run on samples ``start:stop`` of a batch as if on the whole batch.

        Sharding (`boundaryscope.distributed`) splits a batch over processes and needs
        every sample's result to equal the one-process result. Attacks treat samples
        independently and draw random numbers per image, so the default is the attack
        itself; an attack holding per-sample state (a precomputed start, per-sample
        subspaces indexed by position) returns a copy that addresses that block.
        """
        return self

    def predict(self, clf: Classifier, x: Tensor) -> Tensor:
        """Labels for validated inputs, in chunks of `batch_size`; ``-1`` for non-finite outputs."""
        return clf.predict_unchecked(x, self.batch_size, invalid=-1)

    @abstractmethod
    def _run(
        self, clf: Classifier, x: Tensor, reference: Tensor, target: Tensor | None
    ) -> RawAttack:
        """The attack's maths: returns candidate points for validated inputs."""


def is_adversarial(labels: Tensor, reference: Tensor, target: Tensor | None) -> Tensor:
    """``(N,)`` bool: the label differs from `reference` (or equals `target` if targeted).

    A label of ``-1`` (`predicted_labels` of non-finite outputs) is never adversarial, and
    nothing is adversarial against a reference of ``-1`` (a clean point without a label).
    """
    valid = (labels >= 0) & (reference >= 0)
    return valid & (labels != reference if target is None else labels == target)


def top_other_classes(scores: Tensor, reference: Tensor, count: int) -> Tensor:
    """``(N, count)``: the highest-scoring classes other than ``reference[n]``, best first.

    The candidate classes of DeepFool, FMN's restarts, the geometric attack and the
    curvature detector: what bounds their cost on data with many classes.
    """
    return scores.scatter(1, reference[:, None], -math.inf).topk(count, dim=1).indices


def predicted_labels(scores: Tensor) -> Tensor:
    """``(N,)`` labels of class scores, ``-1`` where a row is not finite (see the module)."""
    return finite_argmax(scores, -1)


def _finite_or_clean(adversarial: Tensor, x: Tensor) -> Tensor:
    """`adversarial` with every row holding a NaN/inf replaced by the clean input (a failure)."""
    finite = torch.isfinite(adversarial.flatten(1)).all(dim=1)
    if bool(finite.all()):
        return adversarial
    return torch.where(finite.view(-1, *([1] * (x.ndim - 1))), adversarial, x)


@overload
def check_budget(eps: object, attack: str, *, optional: Literal[False]) -> float: ...


@overload
def check_budget(eps: object, attack: str, *, optional: bool = True) -> float | None: ...


def check_budget(eps: object, attack: str, *, optional: bool = True) -> float | None:
    """`eps` as a float once checked: a finite number ``>= 0`` in input units.

    ``None`` passes where the attack has a default (`optional`: `Attack.default_budget` of
    the box width). A string gets the hint that Python evaluates ``8/255`` itself (the
    command line's habit); a one-element tensor counts as its value.

    Raises:
        TypeError: not a number.
        ValueError: negative, NaN or infinite.
    """
    if eps is None and optional:
        return None
    if isinstance(eps, Tensor) and eps.numel() == 1:
        eps = eps.item()
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        hint = ": write 8/255 without quotes, Python computes it" if isinstance(eps, str) else ""
        allowed = " (or None for the default)" if optional else ""
        raise TypeError(
            f"The 'eps' parameter of {attack} must be a number in input units{allowed}; "
            f"got {eps!r}{hint}."
        )
    value = float(eps)
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(
            f"The 'eps' parameter of {attack} must be a finite number >= 0; got {eps!r}."
        )
    return value


def shrink_to_boundary(
    clf: Classifier,
    x: Tensor,
    adversarial: Tensor,
    reference: Tensor,
    target: Tensor | None,
    steps: int,
    batch_size: int,
) -> Tensor:
    """Shrinks each perturbation along its ray to the smallest adversarial scale.

    For ``s`` in ``[0, 1]``, ``clip(x + s·(adversarial − x))`` is tested; `steps`
    bisection steps move the upper end only to adversarial scales, so a sample that was
    adversarial stays adversarial and its norm never grows (forward passes only); a sample
    for which no tested scale is adversarial is returned unchanged.

    Args:
        clf: The classifier.
        x: ``(N, *shape)`` clean inputs.
        adversarial: ``(N, *shape)`` points to shrink.
        reference: ``(N,)`` labels to move away from.
        target: ``(N,)`` targets, or ``None``.
        steps: Bisection steps (the scale is found to ``2**-steps``).
        batch_size: Samples per forward pass.

    Returns:
        ``(N, *shape)`` shrunk points.
    """
    shrunk = adversarial.clone()
    shape = (-1, *([1] * (x.ndim - 1)))
    for chunk in torch.arange(x.shape[0], device=x.device).split(batch_size):
        x0, delta = x[chunk], adversarial[chunk] - x[chunk]
        tgt = None if target is None else target[chunk]
        lo = torch.zeros(chunk.numel(), dtype=x.dtype, device=x.device)
        hi = torch.ones_like(lo)
        for _ in range(steps):
            mid = 0.5 * (lo + hi)
            label = predicted_labels(clf.forward_scores(clf.clip(x0 + mid.view(shape) * delta)))
            ok = is_adversarial(label, reference[chunk], tgt)
            hi = torch.where(ok, mid, hi)
            lo = torch.where(ok, lo, mid)
        shrunk[chunk] = clf.clip(x0 + hi.view(shape) * delta)
    return shrunk


def first_change(
    changed: Callable[[Tensor], Tensor],
    grid: Sequence[float],
    n: int,
    bisect_steps: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Per sample, the first scale on `grid` where `changed` holds, refined by bisection.

    The ray searches (`line_search`, `transfer_scale`, the geometric attack's refinement)
    share this: the increasing `grid` is scanned, one call of `changed` per point, until
    every sample has a bracket ``(lo, hi]`` with ``changed(hi)``; then `bisect_steps`
    halvings move ``hi`` down to scales that still change. A change that starts and ends
    between two grid points is missed: the grid bounds what can be.

    Args:
        changed: ``t (N,) -> (N,) bool``: whether scale ``t_i`` changes sample ``i``.
        grid: Increasing positive scales.
        n: Number of samples.
        bisect_steps: Halvings of each bracket.
        dtype: Of the scales passed to `changed` and returned.
        device: Of the scales.

    Returns:
        ``(N,)`` the upper end of each final bracket; ``inf`` where no grid point changes.
    """
    lo = torch.zeros(n, dtype=dtype, device=device)
    hi = torch.full((n,), math.inf, dtype=dtype, device=device)
    for t in grid:
        open_ = torch.isinf(hi)
        if not bool(open_.any()):
            break
        now = open_ & changed(torch.full((n,), t, dtype=dtype, device=device))
        hi = torch.where(now, torch.full_like(hi, t), hi)
        lo = torch.where(open_ & ~now, torch.full_like(lo, t), lo)
    found = torch.isfinite(hi)
    for _ in range(bisect_steps if bool(found.any()) else 0):
        mid = torch.where(found, 0.5 * (lo + hi), lo)
        now = found & changed(mid)
        hi = torch.where(now, mid, hi)
        lo = torch.where(found & ~now, mid, lo)
    return hi


def check_labels(labels: Tensor, x: Tensor, clf: Classifier, name: str) -> Tensor:
    """`labels` as int64 on ``x``'s device, after checking dtype, shape ``(N,)`` and range.

    ``clf.num_classes`` must be known (the classifier has been called once).

    Raises:
        TypeError: for a non-integer tensor; ValueError: for a wrong shape or range.
    """
    if not isinstance(labels, Tensor) or labels.dtype not in (
        torch.int64,
        torch.int32,
        torch.int16,
        torch.uint8,
    ):
        got = labels.dtype if isinstance(labels, Tensor) else type(labels).__name__
        raise TypeError(f"{name} must be an integer tensor of class indices; got {got}.")
    check_label_shape(labels, x, name)
    labels = labels.to(device=x.device, dtype=torch.int64)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= clf.num_classes):
        raise ValueError(
            f"{name} must hold class indices in [0, {clf.num_classes - 1}]; got values in "
            f"[{int(labels.min())}, {int(labels.max())}]."
        )
    return labels


def check_label_shape(labels: Tensor, x: Tensor, name: str) -> None:
    """Raises ValueError unless `labels` has shape ``(N,)`` for ``x`` ``(N, *shape)``."""
    shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
    if shape != (x.shape[0],):
        raise ValueError(f"{name} must have shape ({x.shape[0]},) to match x; got {shape}.")


ATTACKS: dict[str, type[Attack]] = {}
AttackT = TypeVar("AttackT", bound=type[Attack])


def register_attack(name: str) -> Callable[[AttackT], AttackT]:
    """Class decorator adding an attack to `ATTACKS` under `name` (used by CLI and report)."""

    def decorate(cls: AttackT) -> AttackT:
        cls.name = name
        ATTACKS[name] = cls
        return cls

    return decorate


def unknown_name(kind: str, name: str, choices: Sequence[str]) -> ValueError:
    """The error for a misspelt name: the valid choices, and the closest one if any.

    Example:
        >>> str(unknown_name("attack", "pgdd", ["fgsm", "pgd"]))
        "attack must be one of ['fgsm', 'pgd']; got 'pgdd' (did you mean 'pgd'?)."
    """
    hint = closest_hint(name, choices)
    return ValueError(f"{kind} must be one of {list(choices)}; got {name!r}{hint}.")


def _call_error(attack: Attack, unexpected: dict[str, Any]) -> TypeError:
    """The error for keywords an attack call does not take, pointing to the constructor."""
    names = sorted(unexpected)
    budget = {"epsilons", "epsilon", "eps", "steps", "p", "norm"} & set(names)
    if budget:
        return TypeError(
            f"{type(attack).__name__}(...)(clf, x, y) takes no {', '.join(names)}: settings "
            f"such as the budget belong to the constructor, e.g. PGD(eps=8/255, steps=40)"
            f"(clf, x, y), and one attack object serves every batch. Foolbox's "
            f"epsilons=[...] sweep is boundaryscope.curves.fooling_curves(clf, x, y, "
            f"['pgd'], [...])."
        )
    return TypeError(
        f"{type(attack).__name__}(...)(clf, x, y, target=None) got unexpected keywords {names}."
    )
