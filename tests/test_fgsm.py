from __future__ import annotations

import math

import pytest
import torch

from boundaryscope import Classifier
from boundaryscope.attacks import FGSM, fgsm_fooling_curve, smallest_fooling_epsilon
from tests.conftest import affine_model


def test_fgsm_closed_form_on_affine():
    net = affine_model(d=5, classes=3, seed=3)
    W, b = net[1].weight.detach(), net[1].bias.detach()
    clf = Classifier(net, bounds=(-100, 100))
    x = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = clf.predict(x)
    eps = 0.3
    result = FGSM(eps=eps)(clf, x, y)
    # d CE / dx = W^T (softmax(Wx + b) - onehot(y))
    probs = torch.softmax(x @ W.T + b, dim=1)
    grad = (probs - torch.nn.functional.one_hot(y, 3).double()) @ W
    torch.testing.assert_close(result.perturbation, eps * grad.sign())
    l2 = FGSM(eps=eps, p=2)(clf, x, y)
    torch.testing.assert_close(l2.perturbation, eps * grad / grad.norm(dim=1, keepdim=True))


def test_smallest_fooling_epsilon_brackets_the_fraction(lenet_clf, mnist_test):
    x, y = mnist_test.x[:100], mnist_test.y[:100]
    search = smallest_fooling_epsilon(lenet_clf, x, y, fraction=0.5, tolerance=1e-3)
    assert math.isfinite(search.epsilon)
    below, at = fgsm_fooling_curve(lenet_clf, x, y, [search.epsilon - 2e-3, search.epsilon])
    assert at >= 0.5 > below
    assert search.fooling_rate == pytest.approx(at)


def test_unreachable_fraction_gives_inf():
    net = affine_model(d=3, classes=2)
    clf = Classifier(net, bounds=(0, 0.001))
    x = torch.full((4, 3), 0.0005, dtype=torch.float64)
    search = smallest_fooling_epsilon(clf, x, clf.predict(x), fraction=0.9)
    assert math.isinf(search.epsilon)
