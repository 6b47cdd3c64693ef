from __future__ import annotations

import pytest
import torch

from boundaryscope.defenses import accuracy
from boundaryscope.zoo import ARCHITECTURES, build, load_model, model_card, shipped_models


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_forward_shapes(arch):
    mnist = arch in ("lenet", "lenet-smooth", "fc500-150-10", "resnet8")
    net = build(arch).eval()
    x = torch.rand(2, 1, 28, 28) if mnist else torch.rand(2, 3, 32, 32)
    if arch == "mlp":  # 8×8 digits by default
        x = torch.rand(2, 1, 8, 8)
    classes = 1000 if arch == "resnet50" else 10  # ImageNet's by default
    assert net(x).shape == (2, classes)


def test_resnet50_has_the_imagenet_layout():
    net = build("resnet50").eval()
    # torchvision's resnet50() has 25,557,032 parameters: the same layout, block for block.
    assert sum(p.numel() for p in net.parameters()) == 25_557_032
    assert net(torch.rand(1, 3, 224, 224)).shape == (1, 1000)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 53


@pytest.mark.parametrize("name", ["lenet-mnist", "fc500-150-10-mnist", "lenet-smooth-mnist"])
def test_shipped_weights_match_their_card(name, mnist_test):
    card = model_card(name)
    model = load_model(f"zoo:{name}").module
    measured = accuracy(model, mnist_test.x, mnist_test.y)
    assert measured == pytest.approx(card["test_accuracy"], abs=1e-9)
    assert "boundaryscope train" in card["command"] and card["config"]["seed"] == 0
    if name == "lenet-mnist":
        assert measured >= 0.96


@pytest.mark.parametrize("name", ["lenet-fashion", "resnet8-fashion", "lenet-smooth-fashion"])
def test_shipped_fashion_weights_match_their_card(name, fashion_test):
    card = model_card(name)
    model = load_model(f"zoo:{name}").module
    # All 10,000 test images, as the card measured them on the official split.
    assert accuracy(model, fashion_test.x, fashion_test.y) == pytest.approx(
        card["test_accuracy"], abs=1e-9
    )
    assert card["data"] == "fashion-mnist" and card["train_size"] == 60_000
    assert "boundaryscope train" in card["command"] and card["config"]["seed"] == 0
    assert card["test_accuracy"] >= 0.88  # LeNets reach 0.89-0.92 on Fashion-MNIST


def test_shipped_digits_mlp_matches_its_card():
    from boundaryscope.data import load_digits

    card = model_card("mlp-digits")
    test = load_digits("test")
    model = load_model("zoo:mlp-digits").module
    assert accuracy(model, test.x, test.y) == pytest.approx(card["test_accuracy"], abs=1e-9)
    assert [m.out_features for m in model if isinstance(m, torch.nn.Linear)] == [32, 32, 10]


def test_resnet8_is_the_small_batchnorm_resnet():
    net = build("resnet8")
    assert sum(p.numel() for p in net.parameters()) == 77_754  # the docstring's 78 k
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 9  # 7 + 2 shortcuts
    assert build("resnet8", in_channels=3, image_size=32).eval()(
        torch.rand(2, 3, 32, 32)
    ).shape == (
        2,
        10,
    )


def test_default_data_follows_the_card(tmp_path, caplog):
    from boundaryscope.zoo import default_data

    assert default_data("zoo:lenet-mnist") == "mnist5k"
    assert default_data("zoo:mlp-digits") == "digits"
    assert default_data("./net.py:factory") == "mnist5k"  # code is never asked
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.json").write_text('{"data": "fashion-mnist"}')
    assert default_data(str(run)) == "fashion-mnist"
    # A path a card names is not opened for the user: mnist5k, with a warning.
    (run / "train.json").write_text('{"data": "npz:/somewhere/else.npz"}')
    assert default_data(str(run)) == "mnist5k"
    assert "pass it with --data" in caplog.text


def test_shipped_list():
    assert {"lenet-mnist", "fc500-150-10-mnist"} <= set(shipped_models())


def test_specs_file_and_factory(tmp_path):
    net = build("fc500-150-10")
    torch.save(net.state_dict(), tmp_path / "w.pt")
    loaded = load_model(str(tmp_path / "w.pt"), arch="fc500-150-10")
    for a, b in zip(net.parameters(), loaded.module.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="--arch"):
        load_model(str(tmp_path / "w.pt"))
    factory = load_model("tests.factories:small_net")
    assert factory.module(torch.rand(1, 4)).shape == (1, 2)
    with pytest.raises(ValueError, match="model spec must be"):
        load_model("not-a-spec")
    with pytest.raises(ValueError, match="zoo model must be one of") as refused:
        load_model("zoo:alexnet")
    assert "did you mean" not in str(refused.value)  # nothing close: no guess
    with pytest.raises(ValueError, match=r"'lenet-smooth' instead \(did you mean 'lenet-smooth"):
        load_model("zoo:lenet-smooth")
