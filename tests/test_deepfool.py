"""DeepFool against closed forms (thesis eqs. 3.2, 3.8, 3.14) and its contracts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from boundaryscope import Classifier
from boundaryscope.attacks import DeepFool
from tests.conftest import affine_model

EXACT = {"box_aware": False, "refine_steps": 0, "min_step": 0.0}  # the paper, no step floor


def closed_form(W: np.ndarray, b: np.ndarray, x: np.ndarray, p: float) -> np.ndarray:
    """Minimal l_p perturbation of an affine classifier, by brute force over classes."""
    f = W @ x + b
    k0 = int(np.argmax(f))
    best, best_r = math.inf, None
    for k in range(len(b)):
        if k == k0:
            continue
        w = W[k] - W[k0]
        fk = f[k] - f[k0]
        if p == 2:
            dist = abs(fk) / np.linalg.norm(w)
            r = abs(fk) / np.dot(w, w) * w
        elif math.isinf(p):
            dist = abs(fk) / np.abs(w).sum()
            r = abs(fk) / np.abs(w).sum() * np.sign(w)
        else:  # p == 1: all mass on the largest |w_j|
            j = int(np.argmax(np.abs(w)))
            dist = abs(fk) / abs(w[j])
            r = np.zeros_like(w)
            r[j] = abs(fk) / w[j]
        if dist < best:
            best, best_r = dist, r
    return best_r


@pytest.mark.parametrize("p", [2.0, math.inf, 1.0])
@pytest.mark.parametrize("classes", [4, 7])
def test_exact_on_affine_multiclass(p, classes, seed):
    net = affine_model(d=6, classes=classes, seed=seed)
    W = net[1].weight.detach().numpy()
    b = net[1].bias.detach().numpy()
    clf = Classifier(net, bounds=(-100, 100))
    x = torch.randn(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    result = DeepFool(p=p, candidates=classes, **EXACT)(clf, x)
    assert bool(result.success.all())
    assert result.iterations.tolist() == [1] * 5
    for n in range(5):
        expected = closed_form(W, b, x[n].numpy(), p) * 1.02
        np.testing.assert_allclose(result.perturbation[n].numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("p", [1.5, 3.0])
def test_general_p_reaches_the_closed_form_distance(p):
    net = affine_model(d=5, classes=3, seed=1)
    W = net[1].weight.detach().numpy()
    b = net[1].bias.detach().numpy()
    clf = Classifier(net, bounds=(-100, 100))
    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    result = DeepFool(p=p, candidates=3, overshoot=0.0, **{**EXACT})(clf, x)
    q = p / (p - 1)
    for n in range(4):
        f = W @ x[n].numpy() + b
        k0 = int(np.argmax(f))
        expected = min(
            abs(f[k] - f[k0]) / np.linalg.norm(W[k] - W[k0], ord=q) for k in range(3) if k != k0
        )
        measured = np.linalg.norm(result.perturbation[n].numpy(), ord=p)
        assert measured == pytest.approx(expected, rel=1e-6)


def test_exact_on_affine_binary():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 1)).double().eval()
    w = net[1].weight.detach()[0]
    bias = net[1].bias.detach()[0]
    clf = Classifier(net, bounds=(-100, 100))
    x = torch.randn(8, 6, dtype=torch.float64)
    result = DeepFool(p=2, **EXACT)(clf, x)
    f = x @ w + bias
    expected = (-f / w.dot(w))[:, None] * w * 1.02  # thesis eq. 3.2 with overshoot
    torch.testing.assert_close(result.perturbation, expected, atol=1e-10, rtol=1e-8)
    assert bool(result.success.all())


def test_label_flips_and_bounds_on_lenet(lenet_clf, mnist_test):
    x, y = mnist_test.x[:40], mnist_test.y[:40]
    for p in (2, "inf"):
        result = DeepFool(p=p)(lenet_clf, x, y)
        assert bool(result.success.all())
        assert float(result.adversarial.min()) >= 0 and float(result.adversarial.max()) <= 1
        predicted = lenet_clf.predict(result.adversarial)
        assert bool((predicted != y).all())
        assert torch.equal(predicted, result.adversarial_label)


def test_refinement_never_increases_the_norm(lenet_clf, mnist_test):
    x = mnist_test.x[:30]
    plain = DeepFool(refine_steps=0)(lenet_clf, x)
    refined = DeepFool(refine_steps=10)(lenet_clf, x)
    assert bool(refined.success.all())
    assert bool((refined.norms <= plain.norms + 1e-6).all())


def test_batch_of_one_equals_in_batch(lenet_clf, mnist_test):
    x = mnist_test.x[:12]
    batch = DeepFool(batch_size=5)(lenet_clf, x)
    for i in (0, 7, 11):
        single = DeepFool()(lenet_clf, x[i : i + 1])
        torch.testing.assert_close(
            single.perturbation[0], batch.perturbation[i], atol=1e-5, rtol=1e-4
        )
        assert single.iterations[0] == batch.iterations[i]


def test_deterministic_and_no_mutation(lenet_clf, mnist_test):
    x = mnist_test.x[:16].clone()
    x_copy = x.clone()
    params = [p.clone() for p in lenet_clf.model.parameters()]
    first = DeepFool(p="inf")(lenet_clf, x)
    second = DeepFool(p="inf")(lenet_clf, x)
    assert torch.equal(first.adversarial, second.adversarial)
    assert torch.equal(x, x_copy)
    for before, after in zip(params, lenet_clf.model.parameters(), strict=True):
        assert torch.equal(before, after) and after.grad is None


def test_failures_are_reported(lenet_clf, mnist_test):
    x, y = mnist_test.x[:60], mnist_test.y[:60]
    result = DeepFool(steps=1, overshoot=0.0, **EXACT)(lenet_clf, x, y)
    failed = ~result.success
    assert int(failed.sum()) > 0
    assert bool(torch.isinf(result.norms[failed]).all())
    assert bool(torch.isfinite(result.norms[result.success]).all())


def test_identity_subspace_changes_nothing(lenet_clf, mnist_test):
    x = mnist_test.x[:10]
    plain = DeepFool()(lenet_clf, x)
    projected = DeepFool(subspace=lambda g, index: g.clone())(lenet_clf, x)
    torch.testing.assert_close(plain.adversarial, projected.adversarial)


def test_targeted_reaches_target(lenet_clf, mnist_test):
    x = mnist_test.x[:10]
    target = (lenet_clf.predict(x) + 3) % 10
    result = DeepFool()(lenet_clf, x, target=target)
    assert bool(result.success.all())
    assert torch.equal(result.adversarial_label, target)


def test_misclassified_samples_need_no_step(lenet_clf, mnist_test):
    x = mnist_test.x[:5]
    wrong = (lenet_clf.predict(x) + 1) % 10
    result = DeepFool()(lenet_clf, x, wrong)
    assert bool(result.success.all())
    assert result.iterations.tolist() == [0] * 5
    assert float(result.norms.max()) == 0.0


def test_dtype_preserved():
    net = affine_model(d=4, classes=3)
    clf = Classifier(net, bounds=(-100, 100))
    x = torch.randn(3, 4, dtype=torch.float64)
    assert DeepFool()(clf, x).adversarial.dtype == torch.float64


@pytest.mark.parametrize(
    "kwargs", [{"steps": 0}, {"candidates": 1}, {"overshoot": -1.0}, {"p": 0.5}]
)
def test_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError):
        DeepFool(**kwargs)
