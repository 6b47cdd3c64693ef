"""One battery over every registered attack."""

from __future__ import annotations

import json

import pytest
import torch

from boundaryscope import Classifier
from boundaryscope.attacks import ATTACKS, AttackResult

SETTINGS = {
    "deepfool": {},
    "fmn": {"steps": 10},
    "fgsm": {"eps": 0.3},
    "alg1": {"eps": 0.2, "steps": 3},
    "alg2": {"eps": 0.2},
    "single-pixel": {"eps": 1.0},
    "pgd": {"eps": 0.2, "steps": 5},
    "bim": {"eps": 0.2, "steps": 5},
    "lbfgs": {"search_steps": 2, "max_iter": 15},
    "spsa": {"eps": 0.2, "steps": 3, "samples": 8},
    "random": {"eps": 0.3},
    "random-direction": {"eps": 3.0},
    "random-line": {"bisection_steps": 20},
    "apgd-ce": {"eps": 0.2, "steps": 5},
    "apgd-t": {"eps": 0.2, "steps": 5, "targets": 2},
    "fab-t": {"steps": 5, "targets": 2},
    "square": {"eps": 0.2, "queries": 30},
    "geometric": {"steps": 5, "grid": 16, "bisect_steps": 8},
}
# Attacks whose randomness is drawn per batch: a sample's result depends on its batch.
BATCH_DEPENDENT = {"spsa"}


@pytest.fixture(params=sorted(ATTACKS))
def attack(request):
    return ATTACKS[request.param](**SETTINGS.get(request.param, {}))


def test_registry_is_covered():
    assert set(SETTINGS) == set(ATTACKS)


def test_conformance(attack, lenet_clf, mnist_test):
    x, y = mnist_test.x[:8], mnist_test.y[:8]
    result = attack(lenet_clf, x, y)
    assert isinstance(result, AttackResult) and len(result) == 8
    lo, hi = lenet_clf.bounds
    assert float(result.adversarial.min()) >= lo and float(result.adversarial.max()) <= hi
    assert torch.equal(result.success, lenet_clf.predict(result.adversarial) != y)
    torch.testing.assert_close(result.perturbation, result.adversarial - x)
    # y=None means the model's own prediction.
    own = attack(lenet_clf, x)
    assert torch.equal(own.original_label, lenet_clf.predict(x))
    # Batch of one, determinism.
    single = attack(lenet_clf, x[:1], y[:1])
    assert single.adversarial.shape == (1, *x.shape[1:])
    if attack.name not in BATCH_DEPENDENT:
        torch.testing.assert_close(
            single.adversarial[0], result.adversarial[0], atol=1e-5, rtol=1e-4
        )
    again = attack(lenet_clf, x, y)
    assert torch.equal(again.adversarial, result.adversarial)
    # JSON round trip.
    restored = AttackResult.from_dict(json.loads(json.dumps(result.to_dict())))
    torch.testing.assert_close(restored.adversarial, result.adversarial)
    assert torch.equal(restored.success, result.success)
    assert torch.equal(restored.norms.isinf(), result.norms.isinf())
    # The repr names the class and round-trips the hyperparameters.
    rebuilt = eval(repr(attack), {type(attack).__name__: type(attack), "inf": float("inf")})
    assert repr(rebuilt) == repr(attack)


@pytest.mark.parametrize("name", ["deepfool", "fgsm", "pgd"])
def test_given_labels_save_the_clean_pass(name, lenet_clf, mnist_test):
    """With labels given, no pass labels the clean batch: exactly N forward rows fewer.

    A classifier never called before learns its number of classes from one row, and the
    results equal those of the unlabelled call.
    """
    x = mnist_test.x[:8]
    y = lenet_clf.predict(x)
    attack = ATTACKS[name](**SETTINGS.get(name, {}))
    unlabelled = attack(Classifier(lenet_clf.model), x)
    labelled = attack(Classifier(lenet_clf.model), x, y)  # the one-row probe
    assert torch.equal(unlabelled.original_label, y)
    torch.testing.assert_close(labelled.adversarial, unlabelled.adversarial)
    rows = {}
    for given in (False, True):
        warm = Classifier(lenet_clf.model)
        warm.predict(x)
        warm.counter.reset()
        attack(warm, x, y if given else None)
        rows[given] = warm.counter.forward_rows
    assert rows[False] - rows[True] == len(x)
