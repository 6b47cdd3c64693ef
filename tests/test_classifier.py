from __future__ import annotations

import pytest
import torch
from torch import nn

from boundaryscope import Classifier
from tests.conftest import affine_model, tiny_mlp


def finite_difference_grad(fn, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    grad = torch.zeros_like(x)
    flat = x.flatten()
    for i in range(flat.numel()):
        plus, minus = flat.clone(), flat.clone()
        plus[i] += h
        minus[i] -= h
        grad.view(-1)[i] = (fn(plus.view_as(x)) - fn(minus.view_as(x))) / (2 * h)
    return grad


@pytest.mark.parametrize("strategy", ["batched", "loop"])
@pytest.mark.parametrize("preprocessing", [None, {"mean": [0.3], "std": [0.7], "axis": -3}])
def test_score_gradients_match_finite_differences(strategy, preprocessing, seed):
    net = tiny_mlp(d=6, classes=3, seed=seed)
    clf = Classifier(net, bounds=(0, 1), preprocessing=preprocessing, gradient_strategy=strategy)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 1, 2, 3, generator=gen, dtype=torch.float64)
    reference = torch.tensor([0, 2])
    others = torch.tensor([[1, 2], [0, 1]])
    _scores, diff, grad = clf.score_gradients(x, reference, others)
    assert grad.shape == (2, 2, 1, 2, 3)
    for n in range(2):
        for j in range(2):

            def f(z, n=n, j=j):
                out = net(clf.preprocessing.apply(z) if clf.preprocessing else z)
                return (out[0, others[n, j]] - out[0, reference[n]]).item()

            expected = finite_difference_grad(f, x[n : n + 1])[0]
            torch.testing.assert_close(grad[n, j], expected, atol=1e-7, rtol=1e-6)
            assert diff[n, j].item() == pytest.approx(f(x[n : n + 1]), abs=1e-12)


def test_strategies_agree_on_conv_net(lenet_clf, mnist_test):
    x = mnist_test.x[:5]
    ref = lenet_clf.predict(x)
    others = torch.stack([torch.arange(10)[torch.arange(10) != r][:4] for r in ref])
    batched = Classifier(lenet_clf.model, gradient_strategy="batched")
    _, d1, g1 = lenet_clf.score_gradients(x, ref, others)
    _, d2, g2 = batched.score_gradients(x, ref, others)
    torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(d1, d2)


def test_loss_gradient_matches_finite_differences():
    net = tiny_mlp()
    clf = Classifier(net)
    x = torch.rand(1, 6, dtype=torch.float64)
    y = torch.tensor([1])
    _loss, grad = clf.loss_gradient(x, y)
    expected = finite_difference_grad(lambda z: nn.functional.cross_entropy(net(z), y).item(), x)
    torch.testing.assert_close(grad, expected, atol=1e-7, rtol=1e-6)


def test_eval_mode_restored_and_nothing_mutated():
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    net.train()
    with pytest.warns(UserWarning, match="train mode"):
        clf = Classifier(net)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.rand(4, 6)
    x_copy = x.clone()
    seen_modes = []
    net[2].register_forward_hook(lambda m, i, o: seen_modes.append(m.training))
    clf.predict(x)
    clf.score_gradients(x, torch.zeros(4, dtype=torch.long), torch.ones(4, 1, dtype=torch.long))
    clf.loss_gradient(x, torch.zeros(4, dtype=torch.long))
    assert seen_modes and not any(seen_modes)
    assert net.training and all(m.training for m in net.modules())
    torch.testing.assert_close(x, x_copy)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k])
    assert all(p.grad is None for p in net.parameters())


def test_binary_model_has_two_classes():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3, 1)).eval()
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, 0.0, 0.0]]))
        net[1].bias.fill_(-0.5)
    clf = Classifier(net)
    x = torch.tensor([[0.2, 0.0, 0.0], [0.9, 0.0, 0.0]])
    assert clf.predict(x).tolist() == [0, 1]
    assert clf.num_classes == 2
    torch.testing.assert_close(clf.scores(x)[:, 1], torch.tensor([-0.3, 0.4]))


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.tensor([[0.5, float("nan"), 0.1, 0.2, 0.3, 0.4]]), "finite"),
        (torch.tensor([[0.5, 1.7, -0.42, 0.2, 0.3, 0.4]]), r"min -0\.42, max 1\.7"),
        (torch.rand(6), r"batch of shape \(N, \*input_shape\)"),
    ],
)
def test_input_validation_errors(x, message):
    clf = Classifier(affine_model().float())
    with pytest.raises(ValueError, match=message):
        clf.predict(x)


def test_integer_input_is_rejected():
    clf = Classifier(affine_model().float())
    with pytest.raises(TypeError, match="floating-point"):
        clf.predict(torch.zeros(1, 6, dtype=torch.uint8))


def test_wrong_channels_and_shape():
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()).eval()
    with pytest.raises(ValueError, match="3 channel"):
        Classifier(conv).predict(torch.rand(2, 1, 8, 8))
    clf = Classifier(affine_model().float(), input_shape=(6,))
    with pytest.raises(ValueError, match=r"shape \(N, 6\)"):
        clf.predict(torch.rand(2, 7))


def test_model_output_must_be_2d():
    net = nn.Sequential(nn.Linear(6, 3), nn.Unflatten(1, (3, 1))).eval()
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        Classifier(net).predict(torch.rand(2, 6))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="'bounds'"):
        Classifier(affine_model(), bounds=(1, 0))
    with pytest.raises(ValueError, match="'preprocessing'"):
        Classifier(affine_model(), preprocessing={"mean": [0.5]})
    with pytest.raises(ValueError, match="positive, finite 'std'"):
        Classifier(affine_model(), preprocessing={"mean": [0.5], "std": [0.0]})
    with pytest.raises(TypeError, match="'model'"):
        Classifier(lambda x: x)  # type: ignore[arg-type]


def test_probability_warning_once():
    net = nn.Sequential(nn.Linear(6, 3), nn.Softmax(dim=1)).eval()
    clf = Classifier(net)
    with pytest.warns(UserWarning, match="probabilities"):
        clf.predict(torch.rand(4, 6))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf.predict(torch.rand(4, 6))
    assert len(clf.warnings_issued) == 1


class Noisy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 3)

    def forward(self, x):
        return self.linear(x) + torch.randn(x.shape[0], 3)


def test_stochastic_warning():
    with pytest.warns(UserWarning, match="different outputs"):
        Classifier(Noisy().eval()).predict(torch.rand(4, 6))


def test_preprocessing_is_applied_inside():
    net = affine_model().float()
    clf = Classifier(net, preprocessing={"mean": 0.5, "std": 0.25, "axis": -1})
    x = torch.rand(3, 6)
    torch.testing.assert_close(clf.logits(x), net((x - 0.5) / 0.25))
