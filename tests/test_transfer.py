"""Per-image transferability of minimal perturbations (boundaryscope.transfer)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from boundaryscope import Classifier
from boundaryscope.attacks import FGSM, DeepFool
from boundaryscope.transfer import transfer_scale, transferability
from boundaryscope.universal import transfer_matrix, universal_perturbation
from tests.conftest import affine_model


def _closed_form_scale(net: nn.Module, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """First label change of an affine model along x + t r (module doc of transfer.py)."""
    layer = net[1]
    f = layer(x.flatten(1))
    slope = r.flatten(1) @ layer.weight.T  # d f_k / dt
    label = f.argmax(1)
    f_top = f.gather(1, label[:, None])
    s_top = slope.gather(1, label[:, None])
    rate = slope - s_top  # growth of f_k - f_ŷ along t
    gap = f_top - f  # >= 0
    t = torch.where(rate > 0, gap / rate, torch.full_like(gap, math.inf))
    t[torch.arange(len(x)), label] = math.inf
    return t.min(1).values


def test_transfer_scale_is_the_closed_form_on_affine_models(seed):
    source = affine_model(d=6, classes=4, seed=seed)
    target = affine_model(d=6, classes=4, seed=seed + 1)
    torch.manual_seed(seed)
    x = torch.randn(40, 6, dtype=torch.float64)
    src = Classifier(source, bounds=(-100, 100))
    tgt = Classifier(target, bounds=(-100, 100))
    r = DeepFool(p=2)(src, x).perturbation
    expected = _closed_form_scale(target, x, r)
    within = expected <= 8.0
    assert within.sum() >= 10 and (~within).sum() >= 1  # both cases are exercised
    measured = transfer_scale(tgt, x, r, t_max=8.0)
    torch.testing.assert_close(measured[within], expected[within], rtol=1e-6, atol=1e-9)
    assert torch.isinf(measured[~within]).all()


def test_transferability_on_affine_models(seed):
    source = affine_model(d=6, classes=4, seed=seed)
    target = affine_model(d=6, classes=4, seed=seed + 1)
    torch.manual_seed(seed + 7)
    x = torch.randn(30, 6, dtype=torch.float64)
    src = Classifier(source, bounds=(-100, 100))
    tgt = Classifier(target, bounds=(-100, 100))
    result = transferability(src, tgt, x, t_max=8.0)
    r = DeepFool(p=2)(src, x).perturbation
    expected = _closed_form_scale(target, x, r)
    ok = ~torch.isnan(result.scale)
    assert ok.all()  # DeepFool is exact on affine models: every image is attacked
    # Fooled at t = 1 exactly where the first change comes at t <= 1 (convex clean region).
    assert torch.equal(result.fooled, expected <= 1)
    torch.testing.assert_close(result.source_norm, r.flatten(1).norm(dim=1))
    # Carried to itself, a minimal perturbation needs just its own length (its overshoot).
    self_result = transferability(src, src, x, t_max=8.0)
    assert self_result.fooled.all()
    assert float(self_result.scale.max()) <= 1.0 and float(self_result.scale.min()) > 0.95
    summary = result.to_dict()
    assert summary["transfer_rate"] == pytest.approx(float((expected <= 1).double().mean()))
    assert summary["source_successes"] == 30


def test_transferability_marks_source_failures():
    net = affine_model(d=4, classes=3)
    src = Classifier(net, bounds=(-100, 100))
    x = torch.randn(5, 4, dtype=torch.float64)
    result = transferability(src, src, x, attack=FGSM(eps=1e-9))  # too small to fool
    assert torch.isnan(result.scale).all() and not result.fooled.any()
    assert math.isnan(result.to_dict()["transfer_rate"])


def test_transfer_refuses_mismatched_inputs():
    net = affine_model(d=4, classes=3)
    a, b = Classifier(net, bounds=(-100, 100)), Classifier(net, bounds=(0, 1))
    x = torch.rand(3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="share their input bounds"):
        transferability(a, b, x)
    with pytest.raises(ValueError, match="r must have the shape of x"):
        transfer_scale(a, x, torch.zeros(3, 5, dtype=torch.float64))


def test_transfer_matrix_against_a_brute_force_loop(seed):
    """Table 4.2's matrix: one image, one model, one prediction at a time."""
    torch.manual_seed(seed)
    nets = [
        nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)).double().eval()
        for _ in range(3)
    ]
    models = {f"m{i}": Classifier(net) for i, net in enumerate(nets)}
    x = torch.rand(25, 1, 3, 4, dtype=torch.float64)
    vs = {
        name: universal_perturbation(clf, x, 0.6, p=math.inf, max_passes=1, seed=seed).v
        for name, clf in models.items()
    }
    matrix = transfer_matrix(models, vs, x)
    for source, v in vs.items():
        for target, net in zip(models, nets, strict=True):
            changed = 0
            for image in x:
                clean = int(net(image[None]).argmax())
                moved = int(net((image + v).clamp(0, 1)[None]).argmax())
                changed += clean != moved
            assert matrix[source][target] == pytest.approx(changed / len(x), abs=1e-12)
    assert any(matrix[s][t] != matrix[s][s] for s in vs for t in models)  # not all equal


@pytest.mark.parametrize("kind", ["batchnorm", "cifar"])
def test_transferability_on_batchnorm_and_cifar_shaped_models(kind, seed):
    from boundaryscope.zoo import build

    torch.manual_seed(seed)
    if kind == "batchnorm":
        a = build("resnet8", num_classes=10, in_channels=1, image_size=28)
        b = build("resnet8", num_classes=10, in_channels=1, image_size=28, width=8)
        x = torch.rand(6, 1, 28, 28)
    else:
        a = build("lenet-cifar")
        b = build("resnet8", in_channels=3, image_size=32, width=8)
        x = torch.rand(6, 3, 32, 32)
    for net in (a, b):  # non-trivial BatchNorm statistics
        net.train()
        with torch.no_grad():
            net(torch.rand(32, *x.shape[1:]))
        net.eval()
    src, tgt = Classifier(a), Classifier(b)
    result = transferability(src, tgt, x, t_max=50.0)
    ok = ~torch.isnan(result.scale)
    assert ok.any()
    finite = ok & torch.isfinite(result.scale)
    # Each reported t* changes the target's label, and (grid + bisection) a point just
    # before it does not.
    r = DeepFool(p=2)(src, x).perturbation
    for i in torch.nonzero(finite).flatten().tolist():
        t = float(result.scale[i])
        clean = tgt.predict(x[i : i + 1])
        assert tgt.predict(tgt.clip(x[i : i + 1] + t * r[i : i + 1])) != clean
        assert tgt.predict(tgt.clip(x[i : i + 1] + (t - 1e-3) * r[i : i + 1])) == clean
