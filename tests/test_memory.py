"""Bounded memory: the budget, passes split to fit it, out-of-memory retries, and the
memory-bounded paths (structured subspaces, blocked Krylov bases, detector chunks) against
the dense ones they replace."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from boundaryscope import Classifier, memory
from boundaryscope.attacks import DeepFool
from boundaryscope.defenses.detection import CurvatureDetector
from boundaryscope.geometry.curvature import (
    boundary_points,
    curvature_ratios,
    principal_curvatures,
    subspace_curvature,
)
from boundaryscope.subspaces import Basis, RandomSubspace
from tests.factories import cifar_resnet


@pytest.fixture(scope="module")
def resnet() -> Classifier:
    """A CIFAR-shaped BatchNorm ResNet (3×32×32), statistics from random images."""
    return Classifier(cifar_resnet())


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def test_sizes_and_precedence_of_the_budget(monkeypatch):
    assert memory.parse_size("512M") == 512 << 20
    assert memory.parse_size("4GiB") == 4 << 30
    assert memory.parse_size("1.5k") == 1536
    assert memory.parse_size(100) == 100
    for bad in ("lots", "-1G", "0", True):
        with pytest.raises(ValueError, match="memory size"):
            memory.parse_size(bad)  # type: ignore[arg-type]
    monkeypatch.setenv(memory.ENV_VARIABLE, "3M")
    assert memory.budget() == 3 << 20
    with memory.budget_limit("1M") as limit:
        assert limit == memory.budget() == 1 << 20  # explicit beats the environment
        assert memory.rows_within(1000) == 1048
        assert memory.rows_within(10 << 20) == 1  # never zero rows
        assert memory.rows_within(1000, at_most=7) == 7
        assert [(b.start, b.stop) for b in memory.row_blocks(2500, 1000)] == [
            (0, 1048),
            (1048, 2096),
            (2096, 2500),
        ]
    assert memory.budget() == 3 << 20
    monkeypatch.setenv(memory.ENV_VARIABLE, "plenty")
    with pytest.raises(ValueError, match=memory.ENV_VARIABLE):
        memory.budget()
    monkeypatch.delenv(memory.ENV_VARIABLE)
    assert 0 < memory.budget() <= 4 << 30


def test_row_bytes_are_measured_per_model_and_shape(resnet, images):
    grad_bytes = resnet.row_bytes(images, grad=True)
    forward_bytes = resnet.row_bytes(images, grad=False)
    # The first convolution alone outputs 8×32×32 float32 values per row.
    assert grad_bytes > 3 * 8 * 32 * 32 * 4
    assert forward_bytes < grad_bytes
    calls = resnet.counter.forward_calls
    assert resnet.row_bytes(images[:1], grad=True) == grad_bytes  # cached, no pass counted
    assert resnet.counter.forward_calls == calls
    with memory.budget_limit(3 * grad_bytes):
        assert resnet.rows_per_pass(images, grad=True) == 3
        assert resnet.rows_per_pass(images, grad=True, per_row=3) == 1


def test_split_passes_equal_one_pass(resnet, images):
    """Gradients, scores and labels under a budget of about one row equal the one-pass ones."""
    n = images.shape[0]
    reference = torch.zeros(n, dtype=torch.long)
    others = torch.arange(1, 6).repeat(n, 1)
    labels = torch.arange(n) % 10

    def everything() -> list[torch.Tensor]:
        scores, diff, grad = resnet.score_gradients(images, reference, others)
        loss, loss_grad = resnet.loss_gradient(images, labels)
        return [scores, diff, grad, loss, loss_grad, resnet.forward_scores(images)]

    rows_before = resnet.counter.backward_rows
    whole = everything()
    one_pass_rows = resnet.counter.backward_rows - rows_before
    with memory.budget_limit(resnet.row_bytes(images, grad=True) * 1.5):
        assert resnet.rows_per_pass(images, grad=True) == 1
        calls = resnet.counter.backward_calls
        split = everything()
        assert resnet.counter.backward_calls - calls > 2 * n  # really one row at a time
    for a, b in zip(whole, split, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert resnet.counter.backward_rows - rows_before == 2 * one_pass_rows


class _FailsAboveRows(nn.Module):
    """Raises the allocator's out-of-memory error for batches above `rows` rows."""

    def __init__(self, net: nn.Module, rows: int) -> None:
        super().__init__()
        self.net = net
        self.rows = rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.rows:
            raise RuntimeError(
                f"[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                f"memory: you tried to allocate {x.shape[0] << 30} bytes."
            )
        return self.net(x)


def test_out_of_memory_is_retried_with_smaller_passes(resnet, images):
    clf = Classifier(_FailsAboveRows(resnet.model, rows=2).eval())
    reference = torch.zeros(images.shape[0], dtype=torch.long)
    others = torch.arange(1, 4).repeat(images.shape[0], 1)
    expected = resnet.score_gradients(images, reference, others)
    got = clf.score_gradients(images, reference, others)
    for a, b in zip(expected, got, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(clf.forward_scores(images), resnet.forward_scores(images))
    assert any("Out of memory" in w for w in clf.warnings_issued)
    assert clf.rows_per_pass(images, grad=True) <= 2  # the size that worked is kept
    # Other errors of the model are not retried.
    broken = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(5, 2)))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        broken.forward_scores(images)


def test_pass_rows_caps_every_pass_on_top_of_the_budget(resnet, images):
    """A model that fails above 2 rows never fails under a cap of 2 (no retry, no warning)."""
    clf = Classifier(_FailsAboveRows(resnet.model, rows=2).eval())
    reference = torch.zeros(images.shape[0], dtype=torch.long)
    others = torch.arange(1, 4).repeat(images.shape[0], 1)
    memory.set_pass_rows(2)
    try:
        assert memory.pass_rows() == 2
        assert clf.rows_per_pass(images, grad=True) == 2
        got = clf.score_gradients(images, reference, others)
        scores = clf.forward_scores(images)
    finally:
        memory.set_pass_rows(None)
    assert not clf.warnings_issued
    for a, b in zip(resnet.score_gradients(images, reference, others), got, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scores, resnet.forward_scores(images))
    assert memory.pass_rows() is None and clf.rows_per_pass(images, grad=False) > 2
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="pass rows"):
            memory.set_pass_rows(bad)  # type: ignore[arg-type]


def test_pass_rows_flag_sets_the_cap(monkeypatch):
    import argparse

    from boundaryscope.cli.common import add_memory_arg, apply_memory_budget

    parser = argparse.ArgumentParser()
    add_memory_arg(parser)
    monkeypatch.setattr(memory, "_pass_rows", None)
    apply_memory_budget(parser.parse_args(["--pass-rows", "7"]))
    assert memory.pass_rows() == 7
    apply_memory_budget(parser.parse_args([]))
    assert memory.pass_rows() == 7  # nothing given: nothing changed
    with pytest.raises(SystemExit):
        parser.parse_args(["--pass-rows", "0"])


@pytest.mark.parametrize("per_sample", [False, True])
def test_structured_subspace_is_the_projection_onto_its_basis(per_sample):
    sub = RandomSubspace(30, seed=2, per_sample=per_sample, structure="structured")
    g = torch.randn(3, 4, 2, 10, 10, dtype=torch.float64)
    index = torch.tensor([5, 7, 9])
    projected = sub(g, index)
    for a in range(3):
        basis = sub.basis(200, int(index[a]) if per_sample else None, torch.float64)
        torch.testing.assert_close(basis.T @ basis, torch.eye(30, dtype=torch.float64))
        dense = (g[a].reshape(4, -1) @ basis) @ basis.T
        torch.testing.assert_close(projected[a].reshape(4, -1), dense)
    torch.testing.assert_close(sub(projected, index), projected)  # idempotent


def test_structured_subspaces_keep_the_theorys_energy_share():
    """A fixed vector keeps ≈ m/d of its energy in a structured subspace (Theorem 1's premise)."""
    d, m = 3 * 64 * 64, 3 * 64 * 64 // 8
    v = torch.zeros(1, 1, d, dtype=torch.float64)
    v[..., :50] = 1.0  # a sparse, spatially concentrated vector: the hard case for a DCT
    shares = []
    for sample in range(40):
        sub = RandomSubspace(m, seed=sample, structure="structured")
        shares.append(float(sub(v, torch.tensor([0])).norm() ** 2 / v.norm() ** 2))
    shares_t = torch.tensor(shares)
    assert abs(float(shares_t.mean()) - m / d) < 0.01
    assert float(shares_t.std()) < 0.05


def test_auto_structure_switches_only_above_the_dense_limit():
    assert not RandomSubspace(784).is_structured(784)  # MNIST: as before
    assert not RandomSubspace(3072 // 4).is_structured(3072)  # CIFAR: as before
    assert RandomSubspace(150528 // 4).is_structured(150528)  # ImageNet: 42 GB dense
    with pytest.raises(ValueError, match="structure"):
        RandomSubspace(4, structure="fast")  # type: ignore[arg-type]


def test_deepfool_in_a_structured_subspace_equals_deepfool_in_its_basis(resnet, images):
    structured = RandomSubspace(300, seed=1, structure="structured")
    explicit = Basis(structured.basis(3 * 32 * 32, None, torch.float64).T.reshape(300, 3, 32, 32))
    a = DeepFool(steps=20, subspace=structured)(resnet, images[:3])
    b = DeepFool(steps=20, subspace=explicit)(resnet, images[:3])
    assert a.success.tolist() == b.success.tolist()
    torch.testing.assert_close(a.perturbation, b.perturbation, rtol=1e-3, atol=1e-5)


def smooth_copy(net: nn.Module) -> nn.Module:
    """`net` with every ReLU replaced by a sharp softplus (same weights, same BatchNorm)."""
    smooth = copy.deepcopy(net)
    for module in list(smooth.modules()):
        for child_name, child in module.named_children():
            if isinstance(child, nn.ReLU):
                setattr(module, child_name, nn.Softplus(beta=20))
    assert not any(isinstance(m, nn.ReLU) for m in smooth.modules())
    return smooth


def test_curvature_under_a_tiny_budget_equals_the_unbounded_result():
    """Lanczos blocks, quadratic-form blocks and direction blocks change no number.

    The direction blocks of `curvature_ratios` draw the same numbers as one draw because
    torch fills normal samples in runs of 16 and ``d × samples`` is a multiple of 16 here.
    The ResNet's ReLUs are made smooth: on a piecewise-affine net a finite difference of
    gradients jumps wherever a unit switches inside ``±h v``, and a batch of another size
    rounds the convolutions differently in the last bit, enough to switch one there.
    """
    resnet = Classifier(smooth_copy(cifar_resnet()))
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    points = boundary_points(resnet, x, steps=20)
    basis = torch.linalg.qr(torch.randn(3072, 4, dtype=torch.float64))[0].T.float()

    def run() -> list[torch.Tensor]:
        pc = principal_curvatures(resnet, points, k=2, max_steps=12)
        ratios = curvature_ratios(resnet, points, basis.reshape(4, 3, 32, 32), samples=16)
        sc = subspace_curvature(resnet, points, basis.reshape(4, 3, 32, 32), [2, 4], samples=4)
        return [pc.curvatures, pc.directions, ratios, sc[2], sc[4]]

    whole = run()
    with memory.budget_limit(3 * 12 * 3072 * 8 + 1):  # one Krylov basis at a time
        split = run()
    # Unit directions of 3,072 entries (typically 0.018): rounding moves them by < 1e-4.
    for a, b in zip(whole, split, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_detector_defaults_to_the_top_nine_classes_and_chunks_by_budget(resnet, images):
    all_classes = CurvatureDetector(n_directions=3, candidates=None)
    default = CurvatureDetector(n_directions=3)
    assert default.candidates == 9
    classes, curvatures = all_classes.class_curvatures(resnet, images)
    torch.testing.assert_close(default.class_curvatures(resnet, images)[1], curvatures)
    with memory.budget_limit(4 * 9 * 3072 * 4 * 2):  # two images per chunk
        chunked_classes, chunked = default.class_curvatures(resnet, images)
    assert torch.equal(chunked_classes, classes)
    # Finite differences of float32 gradients: other batch compositions round differently.
    scale = float(curvatures.abs().max())
    torch.testing.assert_close(chunked, curvatures, rtol=1e-3, atol=1e-2 * scale)
    assert CurvatureDetector(candidates=3).hvps_per_image(1000) == 3 * 20
    assert CurvatureDetector(candidates=None).hvps_per_image(1000) == 999 * 20


def test_deepfool_under_a_tiny_budget_equals_the_unbounded_result(resnet, images):
    """Fewer active samples and one-row passes: the same perturbations, per image."""
    whole = DeepFool(steps=20)(resnet, images)
    with memory.budget_limit(resnet.row_bytes(images, grad=True) * 1.5):
        split = DeepFool(steps=20)(resnet, images)
    assert whole.success.tolist() == split.success.tolist()
    torch.testing.assert_close(split.norms, whole.norms, rtol=1e-4, atol=1e-6)
