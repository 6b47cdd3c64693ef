"""The bad-input battery: every public entry point, fed what users actually feed it.

Each call must either work (documented behaviour, checked) or raise a clear error that
names the argument; and after *every* call — failed or not — the inputs, the model's
parameters, their ``.grad`` and the train/eval mode of every module are unchanged.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from boundaryscope import Classifier
from boundaryscope import attacks as A
from boundaryscope.curves import balda_robustness, fooling_curves
from boundaryscope.defenses.detection import ConfidenceDetector, CurvatureDetector
from boundaryscope.geometry.curvature import (
    boundary_points,
    loss_curvature,
    principal_curvatures,
)
from boundaryscope.geometry.topology import RegionsConfig, convexity_probe, regions_study
from boundaryscope.noise_robustness import semi_random_robustness, spectral_robustness
from boundaryscope.universal import dominant_label_graph, fooling_rate, universal_perturbation

SHAPE = (1, 4, 4)


def mlp(dtype: torch.dtype = torch.float32, classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, classes))
    return net.to(dtype).eval()


def images(n: int = 6, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand((n, *SHAPE), generator=torch.Generator().manual_seed(1)).to(dtype)


# ------------------------------------------------------------------ the entry points
ATTACKS: dict[str, Callable[[], A.Attack]] = {
    "deepfool-l2": lambda: A.DeepFool(steps=10),
    "deepfool-linf": lambda: A.DeepFool(p="inf", steps=10),
    "fmn": lambda: A.FMN(steps=3),
    "fgsm": lambda: A.FGSM(eps=0.1),
    "pgd-linf": lambda: A.PGD(eps=0.1, steps=3),
    "pgd-l2": lambda: A.PGD(eps=0.5, p=2, steps=3),
    "bim": lambda: A.BIM(eps=0.1, steps=3),
    "spsa": lambda: A.SPSA(eps=0.1, steps=2, samples=4),
    "alg1": lambda: A.Algorithm1(eps=0.1),
    "alg2": lambda: A.Algorithm2(eps=0.1),
    "single-pixel": lambda: A.SinglePixel(),
    "lbfgs": lambda: A.LBFGS(search_steps=2, max_iter=10),
    "random": lambda: A.BernoulliNoise(eps=0.1),
    "random-direction": lambda: A.RandomDirection(eps=0.5),
    "random-line": lambda: A.RandomLineSearch(),
}
GRADIENT_FREE = {"random", "random-direction", "random-line", "spsa"}

# Analyses over a labelled batch; each returns something or raises.
ANALYSES: dict[str, Callable[[Classifier, torch.Tensor, torch.Tensor], Any]] = {
    "smallest_fooling_epsilon": lambda c, x, y: A.smallest_fooling_epsilon(c, x, y),
    "fgsm_fooling_curve": lambda c, x, y: A.fgsm_fooling_curve(c, x, y, [0.0, 0.1]),
    "fooling_curves": lambda c, x, y: fooling_curves(
        c, x, y, ["fgsm", "alg1", "pgd", "spsa", "deepfool-linf"], [0.0, 0.1], steps=2
    ),
    "balda_robustness": lambda c, x, y: balda_robustness(c, x, y),
    "semi_random_robustness": lambda c, x, y: semi_random_robustness(c, x, y, [4], steps=10),
    "spectral_robustness": lambda c, x, y: spectral_robustness(c, x, y, block=2, steps=10),
    "loss_curvature": lambda c, x, y: loss_curvature(c, x, y, k=2, max_steps=8),
}
# Analyses of images alone (no labels).
UNLABELLED: dict[str, Callable[[Classifier, torch.Tensor], Any]] = {
    "universal_perturbation": lambda c, x: universal_perturbation(c, x, 0.3, max_passes=1),
    "fooling_rate": lambda c, x: fooling_rate(c, x, torch.full(SHAPE, 0.1)),
    "dominant_label_graph": lambda c, x: dominant_label_graph(c, x, torch.full(SHAPE, 0.1)),
    # Boundary geometry (thesis Part II) and the defences built on it (Part III).
    "boundary_points": lambda c, x: boundary_points(c, x, steps=10),
    "principal_curvatures": lambda c, x: principal_curvatures(
        c, boundary_points(c, x, steps=10), k=2, max_steps=8
    ),
    "convexity_probe": lambda c, x: convexity_probe(c, x, ks=(2,), trials=4),
    "regions_study": lambda c, x: regions_study(
        c,
        x,
        # The random MLP gives one label to every image: no adversarial pairs (refused).
        RegionsConfig(pairs=2, scenarios=("natural", "noise"), ks=(2,), trials=4, max_depth=4),
        progress=False,
    ),
    "curvature_detector": lambda c, x: CurvatureDetector(2, 2).fit(c, x).score_samples(c, x),
    "confidence_detector": lambda c, x: ConfidenceDetector().fit(c, x).score_samples(c, x),
}


# ------------------------------------------------------------------ invariants
class Snapshot:
    """What no call may change: inputs, parameters, their grads, modes."""

    def __init__(self, model: nn.Module, *tensors: torch.Tensor) -> None:
        self.model = model
        self.tensors = [(t, t.clone()) for t in tensors]
        self.params = [(p, p.detach().clone(), p.grad) for p in model.parameters()]
        self.modes = [(m, m.training) for m in model.modules()]

    def check(self) -> None:
        for tensor, copy in self.tensors:
            assert torch.equal(tensor, copy) or (tensor.isnan() == copy.isnan()).all(), "mutated"
        for param, copy, grad in self.params:
            assert torch.equal(param.detach(), copy), "parameter changed"
            assert param.grad is grad, ".grad touched"
        for module, training in self.modes:
            assert module.training == training, "mode not restored"


def call_safely(snapshot: Snapshot, fn: Callable[[], Any]) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fn()
        finally:
            snapshot.check()


# ------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("model_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("x_dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_attack_runs_for_every_dtype_pair(name, model_dtype, x_dtype):
    model = mlp(model_dtype)
    clf = Classifier(model)
    x = images(dtype=x_dtype)
    snapshot = Snapshot(model, x)
    result = call_safely(snapshot, lambda: ATTACKS[name]()(clf, x))
    # Computed in the wider of the two dtypes, inside the box, success judged consistently.
    assert result.adversarial.dtype == torch.promote_types(x_dtype, model_dtype)
    assert float(result.adversarial.min()) >= 0 and float(result.adversarial.max()) <= 1
    assert torch.equal(result.success, result.adversarial_label != result.original_label)
    assert torch.isfinite(result.norms[result.success]).all()


@pytest.mark.parametrize("model_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("x_dtype", [torch.float16, torch.float64])
@pytest.mark.parametrize("name", sorted(ANALYSES) + sorted(UNLABELLED))
def test_every_analysis_runs_for_mixed_dtypes(name, model_dtype, x_dtype):
    model = mlp(model_dtype)
    clf = Classifier(model)
    x = images(dtype=x_dtype)
    y = clf.predict(x)
    snapshot = Snapshot(model, x, y)
    if name in ANALYSES:
        run = lambda: ANALYSES[name](clf, x, y)  # noqa: E731
    else:
        run = lambda: UNLABELLED[name](clf, x)  # noqa: E731
    assert call_safely(snapshot, run) is not None


# ------------------------------------------------------------------ bad images
BAD_IMAGES: dict[str, tuple[Callable[[], torch.Tensor], type[Exception], str]] = {
    "nan": (
        lambda: images().index_put_((torch.tensor([2]),), torch.tensor(math.nan)),
        ValueError,
        "finite",
    ),
    "inf": (
        lambda: images().index_put_((torch.tensor([0]),), torch.tensor(math.inf)),
        ValueError,
        "finite",
    ),
    "out of box": (lambda: images() * 3, ValueError, r"bounds \[0.0, 1.0\]"),
    "vector": (lambda: torch.rand(16), ValueError, r"batch of shape \(N"),
    "integers": (lambda: (images() * 255).to(torch.uint8), TypeError, "floating-point"),
    "list": (lambda: images().tolist(), TypeError, "torch.Tensor"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
@pytest.mark.parametrize("name", sorted(ATTACKS) + sorted(ANALYSES) + sorted(UNLABELLED))
def test_bad_images_give_clear_errors(name, case):
    make, error, match = BAD_IMAGES[case]
    model = mlp()
    clf = Classifier(model)
    y = torch.zeros(6, dtype=torch.int64)
    x = make()
    snapshot = Snapshot(model, *(t for t in (x,) if isinstance(t, torch.Tensor)))
    if name in ATTACKS:
        run = lambda: ATTACKS[name]()(clf, x, y)  # noqa: E731
    elif name in ANALYSES:
        run = lambda: ANALYSES[name](clf, x, y)  # noqa: E731
    else:
        run = lambda: UNLABELLED[name](clf, x)  # noqa: E731
    with pytest.raises(error, match=match):
        call_safely(snapshot, run)


def test_wrong_channels_name_the_expected_count():
    conv = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.LazyLinear(3)).eval()
    clf = Classifier(conv)
    with pytest.raises(ValueError, match="3 channel"):
        A.DeepFool()(clf, images())


# ------------------------------------------------------------------ batch sizes
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_empty_batch_gives_an_empty_result(name):
    clf = Classifier(mlp())
    result = ATTACKS[name]()(clf, images(0), torch.zeros(0, dtype=torch.int64))
    assert len(result) == 0 and result.adversarial.shape == (0, *SHAPE)
    assert math.isnan(result.success_rate)


@pytest.mark.parametrize("name", ["semi_random_robustness", "spectral_robustness"])
def test_analyses_that_need_images_say_so_on_an_empty_batch(name):
    clf = Classifier(mlp())
    with pytest.raises(ValueError, match="none of the 0"):
        ANALYSES[name](clf, images(0), torch.zeros(0, dtype=torch.int64))
    with pytest.raises(ValueError, match="at least one image"):
        universal_perturbation(clf, images(0), 0.3)
    assert math.isnan(fooling_rate(clf, images(0), torch.zeros(SHAPE)))


def test_empty_batch_summaries_are_nan_not_errors():
    clf = Classifier(mlp())
    empty, labels = images(0), torch.zeros(0, dtype=torch.int64)
    assert math.isnan(A.smallest_fooling_epsilon(clf, empty, labels).epsilon)
    assert math.isnan(balda_robustness(clf, empty, labels).rho1)
    assert fooling_curves(clf, empty, labels, ["fgsm"], [0.1]).n_correct == 0


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_batch_of_one(name):
    clf = Classifier(mlp())
    result = ATTACKS[name]()(clf, images(1))
    assert len(result) == 1


# ------------------------------------------------------------------ bad labels
BAD_LABELS: dict[str, tuple[Callable[[], Any], type[Exception], str]] = {
    "short": (lambda: torch.zeros(3, dtype=torch.int64), ValueError, r"shape \(6,\)"),
    "column": (lambda: torch.zeros(6, 1, dtype=torch.int64), ValueError, r"shape \(6,\)"),
    "float": (lambda: torch.zeros(6), TypeError, "integer tensor"),
    "range": (lambda: torch.full((6,), 7), ValueError, r"class indices in \[0, 2\]"),
    "negative": (lambda: torch.full((6,), -1), ValueError, r"class indices in \[0, 2\]"),
    "list": (lambda: [0] * 6, TypeError, "integer tensor"),
}


@pytest.mark.parametrize("case", sorted(BAD_LABELS))
@pytest.mark.parametrize("name", ["deepfool-l2", "pgd-linf", "spsa", *sorted(ANALYSES)])
def test_bad_labels_give_clear_errors(name, case):
    make, error, match = BAD_LABELS[case]
    model = mlp()
    clf = Classifier(model)
    x, y = images(), make()
    snapshot = Snapshot(model, x)
    fn = (
        (lambda: ATTACKS[name]()(clf, x, y))
        if name in ATTACKS
        else (lambda: ANALYSES[name](clf, x, y))
    )
    with pytest.raises(error, match=match):
        call_safely(snapshot, fn)


def test_noise_analyses_refuse_when_nothing_is_correctly_classified():
    clf = Classifier(mlp())
    x = images()
    wrong = (clf.predict(x) + 1) % 3
    with pytest.raises(ValueError, match="none of the 6"):
        semi_random_robustness(clf, x, wrong, [4])


# ------------------------------------------------------------------ bad perturbations/settings
@pytest.mark.parametrize(
    ("v", "error", "match"),
    [
        (torch.full(SHAPE, math.nan), ValueError, "finite"),
        (torch.zeros(3, 3), ValueError, "image shape"),
        ({"v": 1}, TypeError, "floating-point tensor"),
        (torch.zeros(SHAPE, dtype=torch.int64), TypeError, "floating-point tensor"),
    ],
)
def test_universal_evaluations_refuse_bad_perturbations(v, error, match):
    clf = Classifier(mlp())
    for fn in (fooling_rate, dominant_label_graph):
        with pytest.raises(error, match=match):
            fn(clf, images(), v)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: A.DeepFool(overshoot=math.nan), "finite overshoot"),
        (lambda: A.DeepFool(overshoot=-1), "finite overshoot"),
        (lambda: A.DeepFool(steps=0), "steps >= 1"),
        (lambda: A.DeepFool(p=0.5), "p must be"),
        (lambda: A.FGSM(eps=math.nan), "'eps'"),
        (lambda: A.PGD(eps=-1), "finite number >= 0"),
        (lambda: A.PGD(p=1), "p = 2 or inf"),
        (lambda: A.SPSA(delta=0), "delta > 0"),
        (lambda: A.FMN(gamma=1.5), "gamma"),
        (lambda: A.Algorithm1(eps=math.nan), "finite number >= 0"),
        (lambda: Classifier(mlp(), preprocessing={"mean": [0.5], "std": [math.nan]}), "finite"),
        (lambda: Classifier(mlp(), batch_size=0), "'batch_size'"),
        (lambda: universal_perturbation(Classifier(mlp()), images(), math.nan), "xi > 0"),
    ],
)
def test_bad_settings_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_fgsm_epsilon_search_terminates_without_a_box():
    clf = Classifier(mlp(), bounds=(-math.inf, math.inf))
    x = images()
    search = A.smallest_fooling_epsilon(clf, x, clf.predict(x))
    assert math.isfinite(search.epsilon) and search.fooling_rate >= 0.9
    # Close to the smallest: half of it does not reach the fraction.
    assert A.fgsm_fooling_curve(clf, x, clf.predict(x), [search.epsilon / 2])[0] < 0.9


# ------------------------------------------------------------------ degenerate models
class Raising(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(16, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        raise MemoryError("the model's own out-of-memory message")


class RaisingRuntime(Raising):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")


class NoGraph(Raising):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.layer(z.flatten(1))


class Stochastic(Raising):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layer(z.flatten(1)) + torch.randn(z.shape[0], 3)


class Probabilities(Raising):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layer(z.flatten(1)).softmax(dim=1)


def test_model_errors_keep_their_type_and_message():
    clf = Classifier(RaisingRuntime().eval())
    with pytest.raises(RuntimeError, match="CUDA out of memory") as info:
        A.DeepFool()(clf, images())
    assert any("raised by the model" in note for note in getattr(info.value, "__notes__", []))
    with pytest.raises(MemoryError, match="own out-of-memory"):
        Classifier(Raising().eval()).predict(images())


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_models_without_a_graph_need_gradient_free_attacks(name):
    model = NoGraph().eval()
    clf = Classifier(model)
    snapshot = Snapshot(model, images())
    if name in GRADIENT_FREE:
        assert len(call_safely(snapshot, lambda: ATTACKS[name]()(clf, images()))) == 6
    else:
        with pytest.raises(ValueError, match="needs input gradients"):
            call_safely(snapshot, lambda: ATTACKS[name]()(clf, images()))


def test_warnings_for_stochastic_and_probability_models():
    with pytest.warns(UserWarning, match="different outputs"):
        Classifier(Stochastic().eval()).predict(images())
    with pytest.warns(UserWarning, match="probabilities"):
        Classifier(Probabilities().eval()).predict(images())


def test_train_mode_models_are_evaluated_in_eval_mode_and_restored():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3)
    ).train()
    with pytest.warns(UserWarning, match="train mode"):
        clf = Classifier(model)
    x = images()
    stats = model[2].running_mean.clone()
    first = call_safely(Snapshot(model, x), lambda: A.DeepFool()(clf, x))
    again = A.DeepFool()(clf, x)
    assert torch.equal(first.adversarial, again.adversarial)  # deterministic: no dropout
    assert torch.equal(model[2].running_mean, stats)  # BN statistics untouched
    assert model.training


def test_one_logit_models_work_as_binary_classifiers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 1)).eval()
    clf = Classifier(model)
    for name in ("deepfool-l2", "fgsm", "pgd-linf", "fmn"):
        result = ATTACKS[name]()(clf, images())
        assert set(result.original_label.tolist()) <= {0, 1}


def test_bare_modules_are_told_to_wrap():
    for fn in (
        lambda: A.DeepFool()(mlp(), images()),
        lambda: fooling_rate(mlp(), images(), torch.zeros(SHAPE)),
        lambda: semi_random_robustness(mlp(), images(), torch.zeros(6, dtype=torch.int64), [4]),
    ):
        with pytest.raises(TypeError, match=r"wrap|Wrap"):
            fn()


# ------------------------------------------------------------------ memory and batching
def test_predictions_are_chunked_by_the_classifier_batch_size():
    rows = []

    class Recording(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(16, 3)

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            rows.append(z.shape[0])
            return self.layer(z.flatten(1))

    clf = Classifier(Recording().eval(), batch_size=4)
    x = images(10)
    labels = clf.predict(x)
    logits = clf.logits(x)
    assert max(rows) <= 4
    assert torch.equal(labels, logits.argmax(1))
    fooling_rate(clf, x, torch.zeros(SHAPE))
    dominant_label_graph(clf, x, torch.zeros(SHAPE))
    assert max(rows) <= 4


@pytest.mark.parametrize("name", ["spsa", "pgd-linf", "pgd-l2", "random", "random-direction"])
def test_random_attacks_do_not_depend_on_batch_size_or_order(name):
    clf = Classifier(mlp())
    x = images(7)
    whole = ATTACKS[name]()
    whole.batch_size = 7
    split = ATTACKS[name]()
    split.batch_size = 2
    a, b = whole(clf, x), split(clf, x)
    torch.testing.assert_close(a.adversarial, b.adversarial, rtol=0, atol=1e-6)
    order = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    c = whole(clf, x[order])
    torch.testing.assert_close(c.adversarial, a.adversarial[order], rtol=0, atol=1e-6)


# ------------------------------------------------------------------ property-based
finite_images = st.integers(1, 5).flatmap(
    lambda n: st.lists(
        st.floats(0, 1, allow_nan=False, width=32), min_size=n * 16, max_size=n * 16
    ).map(lambda v, n=n: torch.tensor(v).view(n, *SHAPE))
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=finite_images, name=st.sampled_from(sorted(ATTACKS)))
def test_any_image_in_the_box_gives_a_consistent_result(x, name):
    model = mlp()
    clf = Classifier(model)
    snapshot = Snapshot(model, x)
    result = call_safely(snapshot, lambda: ATTACKS[name]()(clf, x))
    assert result.adversarial.shape == x.shape
    assert float(result.adversarial.min()) >= 0 and float(result.adversarial.max()) <= 1
    assert torch.equal(clf.predict(result.adversarial), result.adversarial_label)
    assert torch.isinf(result.norms[~result.success]).all()


@settings(max_examples=15, deadline=None)
@given(
    x=finite_images,
    position=st.integers(0, 15),
    bad=st.sampled_from([math.nan, math.inf, -math.inf, 1.5, -0.5]),
)
def test_any_bad_value_anywhere_is_refused(x, position, bad):
    corrupted = x.clone()
    corrupted.view(x.shape[0], -1)[-1, position] = bad
    clf = Classifier(mlp())
    with pytest.raises(ValueError, match=r"finite|bounds"):
        A.DeepFool()(clf, corrupted)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=finite_images)
def test_any_image_gives_boundary_points_on_the_boundary_and_finite_curvatures(x):
    model = mlp(torch.float64)
    clf = Classifier(model)
    snapshot = Snapshot(model, x)
    points = call_safely(snapshot, lambda: boundary_points(clf, x.double(), steps=30))
    assert points.index.numel() <= x.shape[0]
    if points.index.numel() == 0:
        return
    # On F = 0 after the Newton snap: |F(z)| / ||∇F(z)|| (the first-order distance left to
    # the boundary) is a tiny fraction of the distance travelled.
    left = points.value.abs() / points.grad_norm
    assert (left <= 1e-3 * points.distance + 1e-9).all(), (left, points.distance)
    assert torch.allclose(points.normal.flatten(1).norm(dim=1), torch.ones(len(points)).double())
    curvatures = call_safely(
        snapshot, lambda: principal_curvatures(clf, points, k=2, method="exact", max_steps=16)
    )
    assert curvatures.curvatures.shape == (len(points), 4)
    assert torch.isfinite(curvatures.curvatures).all()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=finite_images)
def test_any_image_gets_a_finite_detector_score(x):
    model = mlp()
    clf = Classifier(model)
    fitted = CurvatureDetector(2, 2).fit(clf, images(8))
    snapshot = Snapshot(model, x)
    scores = call_safely(snapshot, lambda: fitted.score_samples(clf, x))
    assert scores.shape == (x.shape[0],) and torch.isfinite(scores).all()


# ------------------------------------------------------------------ the command line
@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    import numpy as np

    from boundaryscope.zoo import load_model

    root = tmp_path_factory.mktemp("bad")
    lenet = load_model("zoo:lenet-mnist").module
    (root / "garbage.pt").write_bytes(b"garbage, not a zip or a pickle")
    torch.save(lenet.state_dict(), root / "lenet.pt")
    torch.save(lenet, root / "pickled.pt")
    torch.save(torch.zeros(3, 3), root / "wrong_shape.pt")
    torch.save({"v": torch.zeros(1, 28, 28)}, root / "a_dict.pt")
    header = bytes([0, 0, 8, 3]) + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (root / "cut-images").write_bytes(header + bytes(100))
    np.savez(root / "ok.npz", x=np.zeros((4, 1, 28, 28), np.float32), y=np.arange(4))
    (root / "run").mkdir()
    (root / "run" / "results.json").write_text('{"meta": {"model": ')
    return root


CLI_ERRORS = [
    (["attack", "pgd", "--p", "1", "--eps", "0.1"], "supports p = 2 or inf"),
    (["attack", "spsa", "--p", "2", "--eps", "0.1"], "supports p = inf"),
    (["attack", "random", "--p", "2", "--eps", "0.1"], "supports p = inf"),
    (["attack", "lbfgs", "--p", "1"], "l2 norm only"),
    (["attack", "deepfool", "--n", "-995"], "--n: must be a positive integer"),
    (["report", "--n", "-1"], "--n: must be a positive integer"),
    (["report", "--n", "0"], "--n: must be a positive integer"),
    (["universal", "--n", "0"], "--n: must be a positive integer"),
    (["universal", "--p", "1"], "invalid choice"),
    (["attack", "deepfool", "--batch-size", "0"], "--batch-size: must be a positive"),
    (["attack", "fgsm", "--eps", "nan"], "--eps: must be a finite number"),
    (["attack", "deepfool", "--model", "{root}/garbage.pt", "--arch", "lenet"], "not a PyTorch"),
    (["attack", "deepfool", "--model", "{root}/lenet.pt", "--arch", "mlp"], "do not fit"),
    (["attack", "deepfool", "--model", "{root}/lenet.pt"], "pass --arch"),
    (["attack", "deepfool", "--model", "{root}/pickled.pt", "--arch", "lenet"], "pickled"),
    (["attack", "deepfool", "--model", "nosuchmod:factory"], "cannot import 'nosuchmod'"),
    (["attack", "deepfool", "--model", "{root}/none.py:factory"], "no such Python file"),
    (["attack", "deepfool", "--data", "idx:{root}/cut-images,{root}/cut-images"], "truncated"),
    (["attack", "deepfool", "--data", "npz:{root}/missing.npz"], "missing.npz"),
    (["universal", "--eval", "{root}/wrong_shape.pt"], "image shape"),
    (["universal", "--eval", "{root}/a_dict.pt"], "floating-point tensor"),
    (["universal", "--eval", "{root}/garbage.pt"], "not a saved tensor"),
    (["report", "--resume", "--sections", "robustness", "--out", "{root}/run"], "results.json"),
    (["noise", "--model", "zoo:nope"], "zoo model must be one of"),
    (["geometry", "curvature", "--k", "0"], "--k: must be a positive integer"),
]
if not torch.cuda.is_available():
    CLI_ERRORS.append((["attack", "deepfool", "--device", "cuda"], "CUDA is not available"))


@pytest.mark.parametrize(("argv", "message"), CLI_ERRORS, ids=lambda v: " ".join(v)[:40])
def test_cli_errors_are_one_line_with_status_2(argv, message, bad_files, capsys, tmp_path):
    from boundaryscope.cli import main

    argv = [a.replace("{root}", str(bad_files)) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert message in err.splitlines()[-1], err
    assert err.splitlines()[-1].startswith("boundaryscope")
    if argv[0] != "report":
        assert not (tmp_path / "out").exists()  # a failed run leaves no empty directory


def test_cli_debug_shows_the_traceback():
    from boundaryscope.cli import main

    with pytest.raises(ValueError, match="zoo model"):
        main(["--debug", "attack", "deepfool", "--model", "zoo:nope"])


def test_cli_budgeted_attacks_honour_p(tmp_path):
    import json

    from boundaryscope.cli import main

    out = tmp_path / "pgd"
    argv = ["attack", "pgd", "--p", "2", "--eps", "1.5", "--n", "8", "--steps", "5"]
    assert main([*argv, "--out", str(out)]) == 0
    payload = json.loads((out / "attack.json").read_text())
    assert payload["p"] == 2.0 and "p=2.0" in payload["attack"]
    norms = [float(v) for v in payload["norms"] if v != "inf"]
    assert norms and max(norms) <= 1.5 + 1e-4  # an l2 budget, not an l∞ one


@pytest.mark.parametrize(
    "name",
    [n for n, cls in sorted(A.ATTACKS.items()) if "eps" in inspect.signature(cls).parameters],
)
def test_every_budget_is_checked_with_a_message_that_names_it(name):
    """eps='8/255' (the command line's habit), negative, NaN, inf, a bool: refused by name."""
    attack = A.ATTACKS[name]
    with pytest.raises(TypeError, match=r"'eps' parameter of \w+ must be a number.*without quotes"):
        attack(eps="8/255")
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"'eps' parameter of \w+ must be a finite number"):
            attack(eps=bad)
    with pytest.raises(TypeError, match="must be a number"):
        attack(eps=True)
    assert attack(eps=torch.tensor(0.25)).eps == 0.25  # a one-element tensor is its value
    assert attack(eps=np.float32(0.5)).eps == 0.5
