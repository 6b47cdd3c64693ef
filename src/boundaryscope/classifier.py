"""The `Classifier` wrapper: the only object in boundaryscope that touches the user's model.

Everything else (attacks, analyses, the report) asks a `Classifier` for logits, labels and
input gradients of class-score differences, the hot path of DeepFool (docs/algorithms.md §1,
thesis §3.2, Alg. 2 lines 6–9). The wrapper owns the box constraints, the optional
normalisation, the device/dtype, evaluation mode (set during use, restored after), input
validation and the cheap sanity warnings that catch common evaluation mistakes.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from boundaryscope._inputs import add_note, check_bounds, check_inputs
from boundaryscope._passes import PassPlanner

__all__ = [
    "Classifier",
    "PassCounter",
    "Preprocessing",
    "check_classifier",
    "finite_argmax",
    "resolve_device",
]


GradientStrategy = Literal["auto", "batched", "loop"]


@dataclass
class PassCounter:
    """Counts model passes, to compare attacks by work done rather than by wall time.

    Attributes:
        forward_calls: Forward passes through the model.
        forward_rows: Samples in those passes.
        backward_calls: Backward passes (a batched backward over K cotangents counts K).
        backward_rows: Samples times cotangents in those passes.
    """

    forward_calls: int = 0
    forward_rows: int = 0
    backward_calls: int = 0
    backward_rows: int = 0

    def reset(self) -> None:
        """Sets every count back to zero."""
        self.forward_calls = self.forward_rows = self.backward_calls = self.backward_rows = 0


@dataclass(frozen=True)
class Preprocessing:
    """Per-channel normalisation ``(x - mean) / std`` applied inside the classifier.

    Attacks work in the unnormalised input space (the box ``bounds``); the model sees
    normalised tensors. Gradients are taken through the normalisation by autograd.

    Attributes:
        mean: One value per channel (or a single value).
        std: One value per channel (or a single value), all positive.
        axis: The channel axis of the input, counted from the end (``-3`` for NCHW).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    axis: int = -3

    @classmethod
    def from_spec(cls, spec: Preprocessing | Mapping[str, object] | None) -> Preprocessing | None:
        """Builds a `Preprocessing` from ``None``, an instance or a ``{mean, std, axis}`` dict."""
        if spec is None or isinstance(spec, Preprocessing):
            return spec
        if not isinstance(spec, Mapping) or not {"mean", "std"} <= set(spec):
            raise ValueError(
                "The 'preprocessing' parameter of Classifier must be None or a mapping with keys "
                f"'mean', 'std' and optionally 'axis'. Got {spec!r} instead."
            )
        mean = tuple(float(v) for v in _as_sequence(spec["mean"]))
        std = tuple(float(v) for v in _as_sequence(spec["std"]))
        axis = int(spec.get("axis", -3))  # type: ignore[call-overload]
        if len(mean) != len(std):
            raise ValueError(
                "The 'preprocessing' parameter of Classifier must have as many 'mean' as 'std' "
                f"values. Got {len(mean)} means and {len(std)} stds instead."
            )
        if not all(s > 0 and math.isfinite(s) for s in std) or not all(
            math.isfinite(m) for m in mean
        ):
            raise ValueError(
                "The 'preprocessing' parameter of Classifier must have finite 'mean' and "
                "positive, finite 'std' values. "
                f"Got mean {mean}, std {std} instead."
            )
        if axis >= 0:
            raise ValueError(
                "The 'preprocessing' parameter of Classifier must give 'axis' counted from the "
                f"end (negative, e.g. -3 for NCHW). Got {axis} instead."
            )
        return cls(mean=mean, std=std, axis=axis)

    def apply(self, x: Tensor) -> Tensor:
        """Returns ``(x - mean) / std`` broadcast along `axis`."""
        shape = [1] * x.ndim
        if len(self.mean) > 1:
            shape[self.axis] = len(self.mean)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return (x - mean) / std


def _as_sequence(value: object) -> Sequence[float]:
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, Tensor):
        return value.flatten().tolist()
    return list(value)  # type: ignore[call-overload]


class Classifier:
    """Wraps a PyTorch image classifier for attacks and analyses.

    The wrapped model maps a batch ``(N, *input_shape)`` to scores ``(N, C)`` (logits;
    ``C = 1`` for a binary model whose label is ``1`` where the logit is positive). Inputs
    live in the box ``bounds``; the optional `preprocessing` is applied inside the wrapper,
    so perturbations and norms are measured in input units.

    Guarantees: the model is put in eval mode during every call and its previous mode is
    restored after; its parameters never change and never receive ``.grad``; input tensors
    are never mutated.

    Args:
        model: Any ``nn.Module`` returning ``(N, C)`` scores.
        bounds: ``(lo, hi)`` box of valid inputs, e.g. ``(0, 1)``.
        preprocessing: ``None`` or ``{"mean": ..., "std": ..., "axis": -3}``.
        device: Where to run; defaults to the device of the model's first parameter.
        input_shape: Expected shape of one input (e.g. ``(1, 28, 28)``); when given, inputs
            of another shape are rejected with a clear error.
        gradient_strategy: How `score_gradients` obtains the ``K`` gradients: ``"batched"``
            uses one backward with ``is_grads_batched=True`` (vmap over cotangents),
            ``"loop"`` one backward per class over the whole batch (sharing one forward).
            ``"auto"`` picks ``"loop"`` on CPU, where it measured 1.2–1.6× faster on the zoo
            models (vmap falls back for convolution/max-pool backward), else ``"batched"``.
        batch_size: Samples per forward pass in `predict` and `logits` (and every analysis
            that asks for labels of a whole data set), so memory is bounded by it and not by
            the number of images. Results do not depend on it.

    Memory: every pass is also split so that its activations fit the memory budget
    (`boundaryscope.memory`; per-row cost measured once per input shape, `row_bytes`), and a
    pass that runs out of memory is retried in halves (the smaller size is kept). Gradients
    and products of a batch are therefore bounded whatever batch an attack or analysis asks
    for; on an MNIST model nothing is split.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> clf = Classifier(net, bounds=(0, 1))
        >>> clf.predict(torch.zeros(2, 1, 2, 2)).shape
        torch.Size([2])
    """

    def __init__(
        self,
        model: nn.Module,
        bounds: tuple[float, float] = (0.0, 1.0),
        preprocessing: Preprocessing | Mapping[str, object] | None = None,
        device: torch.device | str | None = None,
        input_shape: Sequence[int] | None = None,
        gradient_strategy: GradientStrategy = "auto",
        batch_size: int = 256,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(
                "The 'model' parameter of Classifier must be a torch.nn.Module. "
                f"Got {type(model).__name__} instead."
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                "The 'batch_size' parameter of Classifier must be a positive int. "
                f"Got {batch_size!r} instead."
            )
        self.batch_size = batch_size
        lo, hi = check_bounds(bounds)
        if gradient_strategy not in ("auto", "batched", "loop"):
            raise ValueError(
                "The 'gradient_strategy' parameter of Classifier must be 'auto', 'batched' or "
                f"'loop'. Got {gradient_strategy!r} instead."
            )
        self.model = model
        self.bounds = (lo, hi)
        self.preprocessing = Preprocessing.from_spec(preprocessing)
        first = next(iter(model.parameters()), None)
        self.device = (
            resolve_device(device)
            if device is not None
            else (first.device if first is not None else torch.device("cpu"))
        )
        self.dtype = (
            first.dtype if first is not None and first.is_floating_point() else (torch.float32)
        )
        if first is not None and first.device != self.device:
            # Moving the user's model is the one change we make to it, and only on request.
            model.to(self.device)
        self.input_shape = tuple(int(s) for s in input_shape) if input_shape else None
        self.gradient_strategy: Literal["batched", "loop"] = (
            ("loop" if self.device.type == "cpu" else "batched")
            if gradient_strategy == "auto"
            else gradient_strategy
        )
        self.counter = PassCounter()
        self.warnings_issued: list[str] = []
        self._warned_keys: set[str] = set()
        self._expected_channels = _first_conv_channels(model)
        self._num_outputs: int | None = None
        self._first_call_done = False
        self._session_depth = 0
        self._saved_modes: list[tuple[nn.Module, bool]] = []
        self._sweep_scores: Callable[[Tensor], Tensor] | None = None
        # Rows per pass within the memory budget; the planner asks this wrapper to measure.
        self.passes = PassPlanner(self._leaf_output_bytes, self.device, self.warn_once)
        if model.training:
            self.warn_once(
                "train-mode",
                "The model was in train mode; boundaryscope evaluates it in eval mode and "
                "restores train mode after each call (dropout and batch-norm statistics would "
                "otherwise make results noisy).",
            )

    def __repr__(self) -> str:
        return (
            f"Classifier({type(self.model).__name__}, bounds={self.bounds}, "
            f"preprocessing={self.preprocessing}, device={str(self.device)!r})"
        )

    # ------------------------------------------------------------------ mode handling
    @contextlib.contextmanager
    def session(self) -> Iterator[Classifier]:
        """Context in which the model stays in eval mode; re-entrant and cheap to nest.

        Attacks enter it once around their loop so that per-iteration calls do not walk the
        module tree each time. The modes seen on entry are restored on exit.
        """
        if self._session_depth == 0:
            self._saved_modes = [(m, m.training) for m in self.model.modules()]
            self.model.eval()
        self._session_depth += 1
        try:
            yield self
        finally:
            self._session_depth -= 1
            if self._session_depth == 0:
                for module, training in self._saved_modes:
                    module.training = training
                self._saved_modes = []

    # ------------------------------------------------------------------ validation
    def validate(self, x: Tensor, name: str = "x") -> Tensor:
        """Checks a batch of inputs and returns it on the classifier's device.

        The returned batch has the `working_dtype` for ``x.dtype`` (e.g. float16 images
        become float32 for a float32 model); results of attacks come back in that dtype.

        Raises:
            TypeError: `x` is not a floating-point tensor.
            ValueError: `x` has the wrong rank or shape, non-finite values, or values
                outside `bounds` (the message gives the min and max seen).
        """
        check_inputs(
            x, name, bounds=self.bounds, shape=self.input_shape, channels=self._expected_channels
        )
        return x.to(device=self.device, dtype=self.working_dtype(x.dtype))

    def working_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The dtype attacks compute in for inputs of `dtype`: the wider of it and the model's.

        float16 inputs to a float32 model are computed in float32, float32 inputs to a
        float64 model in float64, so no step loses precision to the narrower of the two
        (and tensors built from the model's outputs can be written into the inputs' buffers).
        """
        return torch.promote_types(dtype, self.dtype)

    # ------------------------------------------------------------------ forward passes
    def _forward(self, x: Tensor) -> Tensor:
        """Raw model output for inputs already on the right device (no validation)."""
        z = x.to(dtype=self.dtype)
        if self.preprocessing is not None:
            z = self.preprocessing.apply(z)
        self.counter.forward_calls += 1
        self.counter.forward_rows += int(x.shape[0])
        try:
            out = self.model(z)
        except RuntimeError as error:
            # The model's own error (out of memory, a shape mismatch, ...) keeps its type and
            # message; the note says where it happened.
            add_note(
                error,
                f"boundaryscope: raised by the model on a batch of shape {tuple(z.shape)} "
                f"({z.dtype}, {z.device}); a shape or channel mismatch means the inputs do not "
                "have the shape the model expects.",
            )
            raise
        if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"The model must return scores of shape (N, C) = ({x.shape[0]}, C); got {shape}."
            )
        if not self._first_call_done:
            self._first_call_done = True
            self._first_call_checks(x.detach(), out.detach())
        return out

    def _graph_forward(self, x_var: Tensor) -> Tensor:
        """`_forward` for inputs that require grad; refuses outputs without a graph."""
        out = self._forward(x_var)
        if not out.requires_grad:
            raise ValueError(
                "This needs input gradients, but the model's output does not depend on its "
                "input through autograd (no graph: torch.no_grad(), .detach() or a non-torch "
                "step inside forward). Make forward differentiable, or use a gradient-free "
                "attack (SPSA, random-line)."
            )
        return out

    def logits(self, x: Tensor, batch_size: int | None = None) -> Tensor:
        """Raw model outputs ``(N, C)`` for a validated batch ``x`` (no gradient).

        The forward passes run on chunks of `batch_size` samples (default: the classifier's).
        """
        return self._in_chunks(self._forward, self.validate(x), batch_size)

    def scores(self, x: Tensor, batch_size: int | None = None) -> Tensor:
        """Class scores ``(N, num_classes)``; a binary logit ``f`` becomes ``[0, f]``."""
        return self.expand_scores(self.logits(x, batch_size))

    def predict(self, x: Tensor, batch_size: int | None = None) -> Tensor:
        """Predicted labels ``(N,)`` (int64), in chunks of `batch_size` (default: the clf's)."""
        return self.predict_unchecked(self.validate(x), batch_size)

    def differentiable_scores(self, x: Tensor) -> Tensor:
        """Class scores ``(N, num_classes)`` with autograd enabled, for validated inputs.

        For attacks that need their own derivatives (e.g. Jacobian-vector products); call
        inside `session` so that the model stays in eval mode. For `x` that requires grad,
        a model whose output has no autograd graph is refused.
        """
        return self.expand_scores(self._graph_forward(x) if x.requires_grad else self._forward(x))

    def forward_scores(self, x: Tensor) -> Tensor:
        """`scores` for inner loops on inputs that already passed `validate` (no checks)."""
        with self.session(), torch.no_grad():
            rows = self.rows_per_pass(x, grad=False)
            return self.passes.in_blocks(
                lambda block: self.expand_scores(self._forward(block)), (x,), rows, grad=False
            )

    @contextlib.contextmanager
    def sweep(self) -> Iterator[Callable[[Tensor], Tensor]]:
        """Scores for long gradient-free sweeps (grids, dense path sampling), validated inputs.

        For a convolutional model on 4-D inputs the scores come from a channels-last *copy*
        of the model (the user's module is never converted): on this project's CPU that
        halves the time of a LeNet forward (1.3 s vs 2.6 s for 40,000 rows, measured). The
        copy is checked against the model on the first batch (same labels, scores within
        1e-4 relative) and dropped in favour of the model itself if it disagrees, cannot be
        copied or fails; models without ``Conv2d`` use the model directly.

        Re-entrant like `session`: a sweep opened inside another reuses the outer one's
        copy, so an analysis that opens one around its loop pays for one copy, not one per
        grid or path.

        Yields:
            ``scores(x) -> (N, num_classes)`` without gradients, counted like `forward_scores`.
        """
        if self._sweep_scores is not None:
            yield self._sweep_scores
            return
        with self.session():
            fast = _channels_last_copy(self.model)
            checked = fast is None

            def scores(x: Tensor) -> Tensor:
                nonlocal fast, checked
                if fast is None or x.ndim != 4:
                    return self.forward_scores(x)
                z = x.to(dtype=self.dtype)
                if self.preprocessing is not None:
                    z = self.preprocessing.apply(z)
                try:
                    with torch.no_grad():
                        out = fast(z.contiguous(memory_format=torch.channels_last))
                    out = self.expand_scores(out)
                except RuntimeError:
                    fast = None
                    return self.forward_scores(x)
                if not checked:
                    checked = True
                    reference = self.forward_scores(x)
                    same = torch.equal(out.argmax(1), reference.argmax(1)) and torch.allclose(
                        out, reference, rtol=1e-4, atol=1e-4 * float(reference.abs().max())
                    )
                    if not same:
                        fast = None
                        return reference
                self.counter.forward_calls += 1
                self.counter.forward_rows += int(x.shape[0])
                return out.contiguous()

            self._sweep_scores = scores
            try:
                yield scores
            finally:
                self._sweep_scores = None

    def predict_unchecked(
        self, x: Tensor, batch_size: int | None = None, *, invalid: int | None = None
    ) -> Tensor:
        """`predict` for inputs that already passed `validate` (no checks).

        The forward passes run on chunks of `batch_size` samples (default: the classifier's
        `batch_size`), which bounds memory on large inputs.

        Args:
            x: Validated inputs ``(N, *shape)``.
            batch_size: Rows per forward pass.
            invalid: If given, the label of rows whose scores are not all finite (attacks
                pass ``-1``: a NaN or ±inf output is no prediction, so never adversarial);
                ``None`` keeps ``argmax`` everywhere.
        """
        if invalid is None:
            return self._in_chunks(
                lambda chunk: self.forward_scores(chunk).argmax(dim=1), x, batch_size
            )
        return self._in_chunks(
            lambda chunk: finite_argmax(self.forward_scores(chunk), invalid), x, batch_size
        )

    def _in_chunks(
        self, fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int | None
    ) -> Tensor:
        """``fn`` on chunks of `batch_size` rows (default: the classifier's), concatenated.

        Runs in eval mode without gradients; memory is bounded by the chunk, not by ``N``
        (and by the memory budget, with `PassPlanner.in_blocks`' out-of-memory retries).
        """
        size = min(batch_size or self.batch_size, self.rows_per_pass(x, grad=False))
        with self.session(), torch.no_grad():
            return self.passes.in_blocks(fn, (x,), size, grad=False)

    @staticmethod
    def expand_scores(out: Tensor) -> Tensor:
        """Maps binary outputs ``(N, 1)`` to two-class scores ``[0, f]``; others unchanged.

        With this convention DeepFool's multi-class step on the two scores is exactly the
        binary Algorithm 1 (thesis §3.2.1): ``w' = ±∇f`` and ``f' = ±f``.
        """
        if out.shape[1] == 1:
            return torch.cat([torch.zeros_like(out), out], dim=1)
        return out

    @property
    def num_classes_known(self) -> bool:
        """Whether the classifier has been called, so that `num_classes` is known."""
        return self._num_outputs is not None

    @property
    def num_classes(self) -> int:
        """Number of classes (2 for a one-logit binary model); known after the first call."""
        if self._num_outputs is None:
            raise RuntimeError("num_classes is known after the first call to the classifier.")
        return max(self._num_outputs, 2)

    # ------------------------------------------------------------------ gradients
    def score_gradients(
        self, x: Tensor, reference: Tensor, others: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Values and input gradients of score differences ``f_k - f_ref`` for chosen classes.

        For each sample ``n`` and each column ``j`` of `others`, with ``k = others[n, j]``
        and ``r = reference[n]``:
        ``diff[n, j] = f_k(x_n) - f_r(x_n)`` and ``grad[n, j] = ∇_x (f_k - f_r)(x_n)``
        (thesis Alg. 2, lines 7–8). One forward pass; the ``K`` backward passes are
        batched (see `gradient_strategy`). No validation: for inner loops on inputs that
        already passed `validate`.

        Args:
            x: Inputs ``(N, *shape)``.
            reference: Reference classes ``(N,)`` (int64).
            others: Classes ``(N, K)`` (int64).

        Returns:
            ``(scores, diff, grad)`` with shapes ``(N, C)``, ``(N, K)``, ``(N, K, *shape)``;
            ``scores`` are the (expanded) class scores at `x`, detached.
        """
        k = others.shape[1]
        # A batched backward holds k graphs' worth of gradients per row; the loop holds one
        # graph and the k gradients it returns.
        per_row = max(k, 1) if self.gradient_strategy == "batched" else 1
        rows = self.rows_per_pass(x, grad=True, per_row=per_row, outputs=k)
        scores, diff, grad = self.passes.in_blocks(
            self._score_gradients, (x, reference, others), rows, grad=True
        )
        return scores, diff, grad

    def _score_gradients(
        self, x: Tensor, reference: Tensor, others: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """`score_gradients` in one pass."""
        n, k = others.shape
        with self.session(), torch.enable_grad():
            x_var = x.detach().requires_grad_(True)
            scores = self.expand_scores(self._graph_forward(x_var))
            diff = scores.gather(1, others) - scores.gather(1, reference[:, None])
            if k == 0:
                grad = x.new_zeros((n, 0, *x.shape[1:]))
            elif self.gradient_strategy == "batched":
                eye = torch.eye(k, dtype=diff.dtype, device=diff.device)
                cotangents = eye[:, None, :].expand(k, n, k)
                (grad,) = torch.autograd.grad(diff, x_var, cotangents, is_grads_batched=True)
                grad = grad.transpose(0, 1)
            else:
                columns = [
                    torch.autograd.grad(diff[:, j].sum(), x_var, retain_graph=j < k - 1)[0]
                    for j in range(k)
                ]
                grad = torch.stack(columns, dim=1)
        self.counter.backward_calls += k
        self.counter.backward_rows += n * k
        assert grad.shape == (n, k, *x.shape[1:])
        return scores.detach(), diff.detach(), grad.to(dtype=x.dtype)

    def value_and_gradient(
        self, x: Tensor, objective: Callable[[Tensor], Tensor]
    ) -> tuple[Tensor, Tensor]:
        """A per-sample objective of the class scores and its input gradient.

        Args:
            x: Inputs ``(N, *shape)`` that already passed `validate`.
            objective: Maps scores ``(N, C)`` (binary models expanded to ``[0, f]``) to one
                value per sample ``(N,)``; samples must not interact.

        Returns:
            ``(values (N,), grad (N, *shape))`` with ``grad[n] = ∇_x objective(x)[n]``.

        When the batch's graph does not fit the memory budget, the gradient is taken in two
        phases, exactly by the chain rule ``∇_x φ(f(x)) = J_f(x)ᵀ ∇_s φ(s)|_{s = f(x)}``:
        the scores of all rows without a graph, ``∇_s φ`` on them (the objective sees the
        whole batch, as it expects), then one backward per block of rows with that block's
        ``∇_s φ`` as cotangent (one more forward per block).
        """
        rows = self.rows_per_pass(x, grad=True)
        if x.shape[0] <= rows:
            return self._value_and_gradient(x, objective)
        scores = self.forward_scores(x).requires_grad_(True)
        with torch.enable_grad():
            values = objective(scores)
            (cotangent,) = torch.autograd.grad(values.sum(), scores)
        grad = self.passes.in_blocks(self._pullback, (x, cotangent), rows, grad=True)
        return values.detach(), grad

    def _value_and_gradient(
        self, x: Tensor, objective: Callable[[Tensor], Tensor]
    ) -> tuple[Tensor, Tensor]:
        """`value_and_gradient` in one pass."""
        with self.session(), torch.enable_grad():
            x_var = x.detach().requires_grad_(True)
            values = objective(self.expand_scores(self._graph_forward(x_var)))
            (grad,) = torch.autograd.grad(values.sum(), x_var)
        self.counter.backward_calls += 1
        self.counter.backward_rows += int(x.shape[0])
        return values.detach(), grad.to(dtype=x.dtype)

    def _pullback(self, x: Tensor, cotangent: Tensor) -> Tensor:
        """``J_f(x)ᵀ c`` per row: the input gradient of ``Σ_n c[n]·f(x_n)`` (one pass)."""
        with self.session(), torch.enable_grad():
            x_var = x.detach().requires_grad_(True)
            scores = self.expand_scores(self._graph_forward(x_var))
            (grad,) = torch.autograd.grad(scores, x_var, cotangent.to(scores.dtype))
        self.counter.backward_calls += 1
        self.counter.backward_rows += int(x.shape[0])
        return grad.to(dtype=x.dtype)

    # ------------------------------------------------------------------ memory
    def row_bytes(self, x: Tensor, *, grad: bool) -> int:
        """Memory one row of `x` needs in a pass of the model (`PassPlanner.row_bytes`).

        Measured once per input shape by one forward pass of one row (not counted in
        `counter`) with a hook on every leaf module.
        """
        return self.passes.row_bytes(x, grad=grad)

    def rows_per_pass(self, x: Tensor, *, grad: bool, per_row: int = 1, outputs: int = 0) -> int:
        """Rows of `x` one pass may take within the memory budget (`PassPlanner.rows_per_pass`)."""
        return self.passes.rows_per_pass(x, grad=grad, per_row=per_row, outputs=outputs)

    def _leaf_output_bytes(self, row: Tensor) -> list[int]:
        """Bytes of every tensor the leaf modules output for one input row."""
        sizes: list[int] = []

        def record(_module: nn.Module, _inputs: object, output: object) -> None:
            for tensor in _tensors_in(output):
                sizes.append(tensor.numel() * tensor.element_size())

        leaves = [m for m in self.model.modules() if next(m.children(), None) is None]
        handles = [m.register_forward_hook(record) for m in leaves]
        try:
            z = row.to(dtype=self.dtype)
            if self.preprocessing is not None:
                z = self.preprocessing.apply(z)
            with self.session(), torch.no_grad():
                self.model(z)
        except Exception:  # the pass that follows raises it, with its note
            return []
        finally:
            for handle in handles:
                handle.remove()
        return sizes

    def hessian_vector_product(
        self,
        x: Tensor,
        objective: Callable[[Tensor], Tensor],
        v: Tensor,
        mode: Literal["reverse", "forward"] = "reverse",
    ) -> Tensor:
        """Exact input-space Hessian-vector products ``∇²_x objective(x)[n] · v[n]``.

        ``reverse`` differentiates the gradient once more (double backward,
        ``∇_x <∇_x φ, v>``); ``forward`` pushes `v` forward through the gradient computation
        (``torch.func.jvp`` of ``torch.func.grad``). A piecewise-affine model (ReLU,
        max-pool) has a zero Hessian almost everywhere, which both modes return as zeros.

        Args:
            x: Inputs ``(N, *shape)`` that already passed `validate`.
            objective: Maps scores ``(N, C)`` to one value per sample ``(N,)``; samples
                must not interact.
            v: Directions ``(N, *shape)``, one per sample.
            mode: ``"reverse"`` (default) or ``"forward"``.

        Returns:
            ``(N, *shape)`` products, in the dtype of `x`.
        """
        if mode not in ("reverse", "forward"):
            raise ValueError(
                f"The 'mode' parameter must be 'reverse' or 'forward'. Got {mode!r} instead."
            )

        def total(z: Tensor) -> Tensor:
            return objective(self.expand_scores(self._forward(z))).sum()

        with self.session(), torch.enable_grad():
            x_var = x.detach().to(self.dtype).requires_grad_(True)
            v = v.detach().to(self.dtype)
            if mode == "forward":
                product = torch.func.jvp(torch.func.grad(total), (x_var,), (v,))[1]
            else:
                (grad,) = torch.autograd.grad(total(x_var), x_var, create_graph=True)
                if grad.requires_grad:
                    (product,) = torch.autograd.grad(grad, x_var, v, allow_unused=True)
                    product = torch.zeros_like(x_var) if product is None else product
                else:  # the gradient does not depend on x at all (an affine model)
                    product = torch.zeros_like(x_var)
        self.counter.backward_calls += 2
        self.counter.backward_rows += 2 * int(x.shape[0])
        return product.detach().to(dtype=x.dtype)

    def loss_gradient(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-entropy loss per sample and its input gradient (FGSM, thesis §3.2.3)."""
        return self.value_and_gradient(
            x, lambda scores: nn.functional.cross_entropy(scores, y, reduction="none")
        )

    # ------------------------------------------------------------------ warnings
    def _first_call_checks(self, x: Tensor, out: Tensor) -> None:
        """Records the number of outputs and warns about probabilities or randomness."""
        self._num_outputs = int(out.shape[1])
        if out.numel() and out.shape[1] > 1 and _looks_like_probabilities(out):
            self.warn_once(
                "probabilities",
                "The model outputs look like probabilities (in [0, 1], rows summing to 1). "
                "DeepFool and the margins of boundaryscope expect logits: remove the final "
                "softmax, or the boundary geometry will be distorted by saturation.",
            )
        if x.shape[0] > 0:
            probe = x[: min(8, x.shape[0])]
            with torch.no_grad():
                again = self._forward(probe)
            if not torch.allclose(again, out[: probe.shape[0]], rtol=1e-4, atol=1e-5):
                self.warn_once(
                    "stochastic",
                    "The model gives different outputs for the same input in eval mode; "
                    "randomised models make attacks and robustness numbers unreliable "
                    "(consider an expectation-over-transformation wrapper).",
                )

    def warn_once(self, key: str, message: str) -> None:
        """Issues `message` as a UserWarning the first time `key` is seen on this classifier.

        Every message is also kept in `warnings_issued` (the report shows them).
        """
        if key in self._warned_keys:
            return
        self._warned_keys.add(key)
        self.warnings_issued.append(message)
        warnings.warn(message, UserWarning, stacklevel=3)

    # ------------------------------------------------------------------ helpers
    def fingerprint(self) -> str:
        """SHA-256 of the model's weights and buffers, box and preprocessing (hex).

        Files fitted on one model (a detector) record it, so that they are never applied
        to another model without a word. Tensors are hashed in name order, by value.
        """
        digest = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        digest.update(repr(self.bounds).encode())
        digest.update(repr(self.preprocessing).encode())
        return digest.hexdigest()

    def clip(self, x: Tensor) -> Tensor:
        """Clips `x` to `bounds` (returns a new tensor)."""
        return x.clamp(self.bounds[0], self.bounds[1])


def finite_argmax(scores: Tensor, invalid: int = -1) -> Tensor:
    """``scores.argmax(1)``, with `invalid` for rows holding a NaN or ±inf score.

    ``argmax`` alone returns the position of a NaN, so a model that outputs NaN away from
    the data would look fooled there; such a row has no prediction at all.
    """
    labels = scores.argmax(dim=1)
    finite = torch.isfinite(scores).all(dim=1)
    return torch.where(finite, labels, torch.full_like(labels, invalid))


def _tensors_in(output: object) -> list[Tensor]:
    """The tensors in a module's output (a tensor, or a tuple/list/dict of them)."""
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, tuple | list):
        return [t for item in output for t in _tensors_in(item)]
    if isinstance(output, dict):
        return [t for item in output.values() for t in _tensors_in(item)]
    return []


def resolve_device(device: torch.device | str | None) -> torch.device:
    """`device` as a ``torch.device``; ``None`` means CUDA where available, else the CPU.

    Raises:
        ValueError: not a device name, or a CUDA device this machine does not have.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(
            f"device must be cpu, cuda, cuda:N or another torch device; got {device!r}."
        ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {str(device)!r}: CUDA is not available on this machine (use cpu)."
        )
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise ValueError(
            f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)."
        )
    return resolved


def check_classifier(clf: object, name: str = "clf") -> Classifier:
    """Returns `clf` if it is a `Classifier`; a bare ``nn.Module`` gets a message on wrapping it.

    Raises:
        TypeError: `clf` is not a `Classifier`.
    """
    if isinstance(clf, Classifier):
        return clf
    if isinstance(clf, nn.Module):
        raise TypeError(
            f"{name} must be a boundaryscope.Classifier; got the bare nn.Module "
            f"{type(clf).__name__}. Wrap it once: clf = boundaryscope.Classifier(model, "
            "bounds=(0, 1), preprocessing={'mean': ..., 'std': ...}) and pass clf."
        )
    raise TypeError(
        f"{name} must be a boundaryscope.Classifier wrapping your nn.Module; got "
        f"{type(clf).__name__}."
    )


def _looks_like_probabilities(out: Tensor) -> bool:
    """True when all outputs lie in [0, 1] and every row sums to 1."""
    in_unit = bool(((out >= 0) & (out <= 1)).all())
    return in_unit and bool(torch.allclose(out.sum(dim=1), torch.ones_like(out[:, 0]), atol=1e-3))


def _first_conv_channels(model: nn.Module) -> int | None:
    """Input channels of the model's first layer when it is a 2-D convolution."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return int(module.in_channels)
        if isinstance(module, nn.Linear):
            return None
    return None


def _channels_last_copy(model: nn.Module) -> nn.Module | None:
    """An eval-mode channels-last deep copy of a model with 2-D convolutions, else ``None``."""
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return None
    try:
        fast = copy.deepcopy(model)
    except Exception:  # any model that cannot be copied runs as it is
        return None
    fast.eval()
    fast.requires_grad_(False)
    return fast.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
