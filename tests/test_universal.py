"""Universal perturbations (thesis Alg. 4) against constructed cases and the §6.3 theory."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from boundaryscope import Classifier
from boundaryscope.norms import lp_norm
from boundaryscope.universal import (
    diversity,
    dominant_label_graph,
    fooling_rate,
    transfer_matrix,
    universal_perturbation,
)


def linear_classifier(d: int, classes: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, classes, bias=False)).double().eval()


def points_at_unit_distance(net: nn.Module, n: int, d: int, seed: int = 0) -> torch.Tensor:
    """Points far from the origin moved along their normal to distance 1 from the boundary.

    Moving x by ``(||r*|| - 1)`` along its minimal perturbation ``r*`` brings the nearest
    boundary to distance 1 and no other boundary closer than that (§6.3 assumes
    ``||r(x)||_2 = 1``).
    """
    W = net[1].weight.detach()
    x = 100 * torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    f = x @ W.T
    k0 = f.argmax(dim=1)
    normals = W[None] - W[k0][:, None, :]  # (n, L, d): ∇(f_k - f_k0)
    distance = (f.gather(1, k0[:, None]) - f) / normals.norm(dim=2).clamp_min(1e-30)
    distance = distance.scatter(1, k0[:, None], math.inf)
    nearest = distance.argmin(dim=1)
    rows = torch.arange(n)
    unit = normals[rows, nearest] / normals[rows, nearest].norm(dim=1, keepdim=True)
    return x + (distance[rows, nearest] - 1)[:, None] * unit


def two_sided_fooling(clf: Classifier, x: torch.Tensor, v: torch.Tensor) -> float:
    """``P(k(x + v) != k(x) or k(x - v) != k(x))``, Theorem 3's criterion."""
    clean = clf.predict(x)
    fooled = (clf.predict(x + v) != clean) | (clf.predict(x - v) != clean)
    return float(fooled.double().mean())


def test_linear_classifier_is_fooled_at_the_sqrt_l_minus_1_radius():
    d, classes, delta = 100, 4, 0.2
    net = linear_classifier(d, classes)
    clf = Classifier(net, bounds=(-math.inf, math.inf))
    x = points_at_unit_distance(net, 300, d)
    # Theorem 3 with m = L - 1 (Remark 1): some ||v||_2 <= sqrt(e m / delta) fools a share
    # >= 1 - delta of the points with v or -v; random noise needs ~sqrt(d) instead.
    radius = math.sqrt(math.e * (classes - 1) / delta)
    generator = torch.Generator().manual_seed(1)
    noise = [torch.randn(d, dtype=torch.float64, generator=generator) for _ in range(10)]
    random_rate = sum(fooling_rate(clf, x, n / n.norm() * radius) for n in noise) / len(noise)
    for variant in ("paper", "minibatch"):
        result = universal_perturbation(
            clf, x, radius, p=2, delta=0.0, max_passes=3, seed=0, variant=variant
        )
        assert result.norm <= radius * (1 + 1e-9)
        # One-sided, the class v points into cannot be fooled; still far above random.
        assert max(result.history) > 5 * random_rate
    # The mini-batch variant fills the ball and meets Theorem 3's two-sided criterion;
    # the paper variant's one-image updates largely cancel on this toy (||v|| ~ radius/3).
    assert result.norm > 0.9 * radius
    assert two_sided_fooling(clf, x, result.v) >= 1 - delta


@pytest.mark.parametrize(("p", "xi"), [(math.inf, 0.1), (2.0, 2.0)])
@pytest.mark.parametrize("variant", ["paper", "minibatch"])
def test_norm_never_exceeds_xi(p, xi, variant, lenet_clf, mnist_test):
    result = universal_perturbation(
        lenet_clf, mnist_test.x[:40], xi, p=p, max_passes=2, variant=variant, batch_size=8, seed=0
    )
    assert result.norm <= xi * (1 + 1e-5)
    assert len(result.history) == result.passes
    assert result.fooling_rate == pytest.approx(
        fooling_rate(lenet_clf, mnist_test.x[:40], result.v)
    )


def test_only_converged_steps_are_accepted(lenet_clf, mnist_test):
    # With df_steps=1 no DeepFool run can finish in fewer than one step: nothing accepted.
    result = universal_perturbation(
        lenet_clf, mnist_test.x[:10], 0.2, max_passes=1, df_steps=1, delta=0.0
    )
    assert result.accepted == 0 and result.rejected > 0
    assert float(result.v.abs().max()) == 0.0


def test_fooling_rate_counts_prediction_changes_not_errors():
    net = nn.Sequential(nn.Linear(1, 2)).double().eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[-1.0], [1.0]]))  # class 1 iff x > 0
        net[0].bias.zero_()
    clf = Classifier(net, bounds=(-10, 10))
    x = torch.tensor([[-3.0], [-1.5], [-0.5], [0.5], [2.0]], dtype=torch.float64)
    v = torch.tensor([1.0], dtype=torch.float64)
    # Only -0.5 crosses 0; labels play no part (none are given).
    assert fooling_rate(clf, x, v) == pytest.approx(1 / 5)
    assert fooling_rate(clf, x, torch.tensor([2.0], dtype=torch.float64)) == pytest.approx(2 / 5)


def test_resume_gives_the_same_perturbation(tmp_path, lenet_clf, mnist_test):
    x = mnist_test.x[:30]
    whole = universal_perturbation(
        lenet_clf, x, 0.15, max_passes=3, delta=0.0, seed=4, variant="minibatch", batch_size=8
    )
    path = tmp_path / "state.pt"
    universal_perturbation(
        lenet_clf,
        x,
        0.15,
        max_passes=1,
        delta=0.0,
        seed=4,
        variant="minibatch",
        batch_size=8,
        checkpoint=path,
    )
    resumed = universal_perturbation(
        lenet_clf,
        x,
        0.15,
        max_passes=3,
        delta=0.0,
        seed=4,
        variant="minibatch",
        batch_size=8,
        resume=path,
    )
    torch.testing.assert_close(resumed.v, whole.v, atol=0, rtol=0)
    assert resumed.history == whole.history and resumed.passes == 3


def test_transfer_matrix_diagonal_is_own_fooling_rate(lenet_clf, mnist_test):
    from boundaryscope.zoo import load_model

    x = mnist_test.x[:30]
    fc = Classifier(load_model("zoo:fc500-150-10-mnist").module)
    models = {"lenet": lenet_clf, "fc": fc}
    vs = {
        name: universal_perturbation(clf, x, 0.2, max_passes=1, variant="minibatch").v
        for name, clf in models.items()
    }
    matrix = transfer_matrix(models, vs, x)
    for name, clf in models.items():
        assert matrix[name][name] == pytest.approx(fooling_rate(clf, x, vs[name]))
    assert set(matrix["lenet"]) == {"lenet", "fc"}


def test_dominant_label_graph_on_a_constructed_case():
    net = nn.Sequential(nn.Linear(2, 3)).double().eval()
    with torch.no_grad():  # class = argmax of (-x0, x0 - 5, x1)
        net[0].weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
        net[0].bias.copy_(torch.tensor([0.0, -5.0, 0.0]))
    clf = Classifier(net, bounds=(-100, 100))
    class0 = torch.tensor([[-2.0, -10.0], [-1.0, -10.0], [-3.0, -10.0]], dtype=torch.float64)
    class2 = torch.tensor([[0.0, 20.0], [1.0, 30.0]], dtype=torch.float64)
    x = torch.cat([class0, class2])
    v = torch.tensor([8.0, 0.0], dtype=torch.float64)  # pushes x0 up: class 0 → class 1
    graph = dominant_label_graph(clf, x, v)
    assert graph["edges"] == [(0, 1, 1.0)]
    assert graph["transitions"][2][2] == 2


def test_diversity_of_orthogonal_and_equal_vectors():
    vs = torch.eye(3, 5).view(3, 5)
    torch.testing.assert_close(diversity(vs), torch.eye(3, dtype=torch.float64))
    same = diversity(torch.stack([vs[0], 2 * vs[0]]))
    assert float(same[0, 1]) == pytest.approx(1.0)
    assert lp_norm(vs, 2).tolist() == [1.0, 1.0, 1.0]


def test_phase_transition_and_size(lenet_clf, mnist_test):
    from boundaryscope.universal import fooling_vs_size, phase_transition

    x = mnist_test.x[:40]
    v = universal_perturbation(lenet_clf, x, 6.0, p=2, max_passes=2, variant="minibatch").v
    norms = [0.0, 3.0, 6.0]
    curves = phase_transition(lenet_clf, x, v, norms, p=2)
    assert set(curves) == {
        "universal",
        "random",
        "single adversarial",
        "sum of adversarial",
        "dataset mean",
    }
    assert all(values[0] == 0.0 for values in curves.values())  # nothing moves at norm 0
    # At its own norm the universal perturbation beats a random direction (Fig. 4.9).
    assert curves["universal"][2] > curves["random"][2]
    rescaled = v / v.norm() * 6.0
    assert curves["universal"][2] == pytest.approx(fooling_rate(lenet_clf, x, rescaled), abs=1e-9)
    rates = fooling_vs_size(
        lenet_clf, x, mnist_test.x[40:80], [5, 20], 0.3, max_passes=1, variant="minibatch"
    )
    assert set(rates) == {5, 20} and all(0 <= r <= 1 for r in rates.values())


def test_one_deepfool_run_serves_phase_transition_and_flat_model():
    """The universal section runs DeepFool l2 once for both measures: the same numbers as
    each running its own, one DeepFool's passes fewer (CIFAR-shaped BatchNorm ResNet)."""
    from dataclasses import asdict

    from boundaryscope.attacks import DeepFool
    from boundaryscope.universal import flat_model, phase_transition
    from tests.factories import cifar_resnet

    clf = Classifier(cifar_resnet(), bounds=(0.0, 1.0))
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    v = 0.05 * torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(5))
    norms, ms = [0.0, 1.0, 2.0], [2, 4]

    def both(**shared: object) -> tuple[dict, dict, int]:
        before = clf.counter.backward_rows
        curves = phase_transition(clf, x, v, norms, seed=1, **shared)
        flat = asdict(flat_model(clf, x, 1.0, ms, draws=3, seed=1, **shared))
        return curves, flat, clf.counter.backward_rows - before

    own_curves, own_flat, own_rows = both()
    before = clf.counter.backward_rows
    deepfool = DeepFool(p=2)(clf, x)
    deepfool_rows = clf.counter.backward_rows - before
    curves, flat, rows = both(deepfool=deepfool)
    assert curves == own_curves and flat == own_flat
    assert rows == 0 and own_rows == 2 * deepfool_rows > 0  # DeepFool is their only gradient
    with pytest.raises(ValueError, match=r"deepfool must be DeepFool's l2 result on x"):
        phase_transition(clf, x[:3], v, norms, deepfool=deepfool)
    with pytest.raises(ValueError, match=r"got p=inf"):
        flat_model(clf, x, 1.0, ms, deepfool=DeepFool(p=math.inf)(clf, x))


def test_flat_model_on_a_linear_classifier():
    from boundaryscope.universal import flat_model

    d, classes = 60, 4
    net = linear_classifier(d, classes, seed=2)
    clf = Classifier(net, bounds=(-math.inf, math.inf))
    x = points_at_unit_distance(net, 80, d, seed=3)
    model = flat_model(clf, x, xi=3.0, ms=[classes - 1], draws=8)
    s = torch.tensor(model.singular_values)
    # The normals w_i - w_j of a linear classifier span L - 1 dimensions (Remark 1).
    assert float(s[classes - 1 :].max()) < 1e-8 * float(s[0])
    assert float(torch.tensor(model.random_singular_values)[classes - 1]) > 0.5
    # Random vectors of S_f fool far more than random directions of the same norm.
    assert model.fooling_rates[classes - 1] > 3 * model.random_fooling_rate


def test_flat_model_prediction_is_exact_for_two_classes_and_a_lower_bound_for_more(seed):
    """§6.3's flat model: exact for one hyperplane, a lower bound for a polytope region."""
    from boundaryscope.universal import flat_model

    d = 30
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(120, d, generator=g, dtype=torch.float64)
    binary = Classifier(linear_classifier(d, 2, seed=seed), bounds=(-math.inf, math.inf))
    model = flat_model(binary, x, xi=1.0, ms=[1], draws=400, seed=seed)
    assert 0.05 < model.predicted_rates[1] < 0.5
    assert abs(model.fooling_rates[1] - model.predicted_rates[1]) < 0.02
    four = Classifier(linear_classifier(d, 4, seed=seed), bounds=(-math.inf, math.inf))
    model = flat_model(four, x, xi=1.0, ms=[3], draws=100, seed=seed)
    assert model.fooling_rates[3] >= model.predicted_rates[3] - 0.05


def test_universal_finetune_on_a_copy(mnist_test):
    from boundaryscope.data import load_mnist5k
    from boundaryscope.defenses import TrainConfig, universal_finetune
    from boundaryscope.zoo import load_model

    model = load_model("zoo:lenet-mnist").module
    before = [p.clone() for p in model.parameters()]
    train = load_mnist5k("train")
    x, y = train.x[:160], train.y[:160]
    result = universal_finetune(
        model,
        x,
        y,
        mnist_test.x[:100],
        mnist_test.y[:100],
        xi=0.4,
        pool_size=2,
        pool_images=32,
        config=TrainConfig(epochs=1, lr=0.01, seed=0),
    )
    for old, new in zip(before, model.parameters(), strict=True):
        assert torch.equal(old, new)  # the user's network is untouched
    assert any(
        not torch.equal(a, b)
        for a, b in zip(model.parameters(), result.model.parameters(), strict=True)
    )
    assert 0.3 < result.perturbed_share < 0.7  # probability 1/2, minus unfoolable lines
    assert all(n <= 0.4 + 1e-6 for n in result.pool_norms) and len(result.pool_norms) == 2
    for value in (
        result.fooling_before,
        result.fooling_after,
        result.accuracy_before,
        result.accuracy_after,
    ):
        assert 0.0 <= value <= 1.0


def test_adaptive_magnitude_just_fools(lenet_clf, mnist_test):
    from boundaryscope.defenses.universal_pool import _perturbed_training_set

    x = mnist_test.x[:60]
    pool = [universal_perturbation(lenet_clf, x, 0.4, max_passes=1, variant="minibatch").v]
    out, share = _perturbed_training_set(lenet_clf, x, pool, 0.5, torch.Generator().manual_seed(0))
    changed = (out != x).flatten(1).any(dim=1)
    assert share == pytest.approx(float(changed.float().mean()))
    clean = lenet_clf.predict(x[changed])
    assert bool((lenet_clf.predict(out[changed]) != clean).all())  # each one fools


def test_universal_finetune_accepts_a_classifier_with_preprocessing(mnist_test):
    from boundaryscope.classifier import Classifier
    from boundaryscope.defenses import TrainConfig, universal_finetune
    from boundaryscope.zoo import load_model

    model = load_model("zoo:lenet-mnist").module
    # Identity preprocessing written as a normalisation: the numbers must match the bare
    # module's, which they can only if the Classifier (not just its module) is used.
    clf = Classifier(model, bounds=(0, 1), preprocessing={"mean": [0.0], "std": [1.0]})
    x, y = mnist_test.x[:48], mnist_test.y[:48]
    settings = dict(xi=0.4, pool_size=1, pool_images=16, config=TrainConfig(epochs=1, seed=0))
    wrapped = universal_finetune(clf, x, y, x[:24], y[:24], **settings)
    bare = universal_finetune(model, x, y, x[:24], y[:24], **settings)
    assert wrapped.accuracy_before == bare.accuracy_before
    assert wrapped.fooling_before == bare.fooling_before
    assert wrapped.model is not model
