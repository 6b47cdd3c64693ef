from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from boundaryscope import Classifier
from boundaryscope.attacks import DeepFool
from boundaryscope.curves import (
    balda_robustness,
    budget_attack,
    epsilon_for_fooling,
    fooling_curves,
    fooling_ratio,
    parse_epsilons,
)
from tests.conftest import affine_model


def test_fooling_ratio_counts_only_correct_samples():
    success = torch.tensor([True, False, True, True])
    correct = torch.tensor([True, True, False, True])
    assert fooling_ratio(success, correct) == pytest.approx(2 / 3)


def test_epsilon_for_fooling_brute_force(seed):
    rng = np.random.default_rng(seed)
    norms = torch.tensor(rng.random(250))
    correct = torch.tensor(rng.random(250) > 0.1)
    eps = epsilon_for_fooling(norms, correct, 0.99)
    population = norms[correct]
    assert float((population <= eps).float().mean()) > 0.99
    smaller = population[population < eps]
    if smaller.numel():
        assert float((population <= smaller.max()).float().mean()) <= 0.99


def test_parse_epsilons():
    assert parse_epsilons("0:0.3:4") == pytest.approx([0, 0.1, 0.2, 0.3])
    assert parse_epsilons("0.1,0.5") == [0.1, 0.5]
    with pytest.raises(ValueError, match="start:stop:count"):
        parse_epsilons("0:1")


def test_budget_attack_names():
    assert budget_attack("alg1-7", 0.1).steps == 7
    with pytest.raises(ValueError, match="attack must be one of"):
        budget_attack("cw", 0.1)


def test_deepfool_curve_is_its_norm_distribution(lenet_clf, mnist_test):
    x, y = mnist_test.x[:40], mnist_test.y[:40]
    eps = [0.0, 0.1, 0.2, 0.4]
    curves = fooling_curves(lenet_clf, x, y, ["deepfool-linf", "random"], eps)
    correct = lenet_clf.predict(x) == y
    norms = DeepFool(p="inf")(lenet_clf, x, y).norms[correct]
    expected = [float((norms <= e).float().mean()) for e in eps]
    assert curves.ratios["deepfool-linf"] == pytest.approx(expected)
    assert curves.ratios["deepfool-linf"] == sorted(curves.ratios["deepfool-linf"])
    assert curves.n_correct == int(correct.sum())


def test_budget_curves_count_an_image_fooled_within_a_smaller_budget(lenet_clf, mnist_test):
    # Brute force: each ε attacked on every image, then "fooled at some budget ≤ ε" (the
    # perturbation found there lies within ε too). FGSM and PGD from zero are deterministic.
    x, y = mnist_test.x[:60], mnist_test.y[:60]
    eps = [0.2, 0.0, 0.05, 0.1, 0.3]  # unsorted on purpose
    curves = fooling_curves(lenet_clf, x, y, ["fgsm", "alg1"], eps, steps=5)
    correct = lenet_clf.predict(x) == y
    for name in ("fgsm", "alg1"):
        success = {e: budget_attack(name, e, steps=5)(lenet_clf, x, y).success for e in eps}
        expected = []
        for e in eps:
            within = torch.stack([success[s] for s in eps if s <= e]).any(dim=0)
            expected.append(fooling_ratio(within, correct))
        assert curves.ratios[name] == pytest.approx(expected), name
        ordered = [curves.ratios[name][eps.index(e)] for e in sorted(eps)]
        assert ordered == sorted(ordered) and ordered[0] == 0.0


def test_balda_measures_on_affine():
    net = affine_model(d=5, classes=2, seed=2)
    clf = Classifier(net, bounds=(-100, 100))
    x = torch.randn(10, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = clf.predict(x)
    measures = balda_robustness(clf, x, y, p=math.inf)
    w = net[1].weight.detach()
    scores = clf.scores(x)
    gap = (scores.gather(1, y[:, None]) - scores.gather(1, 1 - y[:, None])).squeeze(1)
    distance = gap / (w[0] - w[1]).abs().sum()  # exact l_inf distance of a 2-class affine model
    assert measures.rho2 == pytest.approx(float(distance.mean()), rel=1e-9)
    # DeepFool is exact on affine models; its 10 bisection steps over the scale of the
    # 1.02-overshot step end within 1.02 / 2^10 of the boundary. ||x||_inf normalises rho1.
    rho1 = float((distance / x.abs().amax(dim=1)).mean())
    assert rho1 <= measures.rho1 <= rho1 * (1 + 1.02 / 2**10)
