"""A new user's first hour: their own model file and a class-ordered data file."""

from __future__ import annotations

import json
import subprocess
import textwrap

import numpy as np
import pytest

from tests.factories import RESNET_MODULE, cifar_resnet
from tests.subprocesses import BOUNDARYSCOPE, ENV

MODULE = textwrap.dedent(
    """
    import torch
    from torch import nn

    def factory():
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["mymodels:factory", "./mymodels.py:factory"])
def test_report_on_a_user_module_from_its_folder_and_class_ordered_data(tmp_path, spec):
    (tmp_path / "mymodels.py").write_text(MODULE)
    # Class-ordered: 40 images of class 0, then 40 of 1, then 40 of 2 (8×8 grey images).
    y = np.repeat(np.arange(3), 40)
    rng = np.random.default_rng(0)
    x = (rng.random((120, 1, 8, 8)) * 0.5 + y[:, None, None, None] / 4).astype(np.float32)
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    argv = ["report", "--model", spec, "--data", "npz:mine.npz", "--profile", "quick",
            "--sections", "accuracy,robustness,universal", "--out", "run"]  # fmt: skip
    # Run from the user's folder, as a user would: the module is found there.
    done = subprocess.run(
        [*BOUNDARYSCOPE, *argv], cwd=tmp_path, env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[3/3] universal done" in done.stderr  # progress lines although piped
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    accuracy = results["sections"]["accuracy"]
    # The stratified 80/20 split: 24 test images, 8 per class, never the first rows only.
    assert accuracy["n"] == 24
    assert [sum(row) for row in accuracy["confusion"]] == [8, 8, 8]
    universal = results["sections"]["universal"]
    assert universal["n_train"] <= 96 and universal["n_test"] == 24
    assert (tmp_path / "run" / "report.html").stat().st_size > 10_000


def _saved_user_model(tmp_path):
    """The user's module file and safetensors weights that differ from the factory's."""
    import torch
    from safetensors.torch import save_file

    (tmp_path / "mymodels.py").write_text(MODULE)
    namespace: dict = {}
    exec(MODULE, namespace)  # the same factory, to make weights the file will differ from
    net = namespace["factory"]()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(1.0)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(state, tmp_path / "w.safetensors", metadata={"bounds": "[0, 255]"})
    return state


def test_own_architecture_and_safetensors_weights_in_one_line(tmp_path, monkeypatch):
    """``--model ./net.py:factory --weights w.safetensors`` with --bounds/--mean/--std."""
    import torch

    from boundaryscope.cli import _build_parser, main
    from boundaryscope.cli.common import classifier, resolve_weights
    from boundaryscope.zoo import InputSpec, load_model

    state = _saved_user_model(tmp_path)
    monkeypatch.chdir(tmp_path)
    loaded = load_model("./mymodels.py:factory", weights="w.safetensors")
    for name, value in loaded.module.state_dict().items():
        assert torch.equal(value, state[name])
    assert loaded.bounds == (0.0, 255.0)  # recorded in the file's metadata, as JSON
    assert loaded.origin == {"factory": "./mymodels.py:factory"}
    stated = load_model(
        "./mymodels.py:factory", weights="w.safetensors", inputs=InputSpec(bounds=(0, 1))
    )
    assert stated.bounds == (0.0, 1.0)  # the user's word wins over the file's
    # A mean alone gets std 1 per channel (one std for three means would be refused).
    assert InputSpec(mean=(0.4, 0.5, 0.6)).preprocessing() == {
        "mean": [0.4, 0.5, 0.6], "std": [1.0, 1.0, 1.0], "axis": -3,
    }  # fmt: skip
    with pytest.raises(ValueError, match="positive, finite 'std'"):
        InputSpec(std=(0.0,))

    argv = ["attack", "deepfool", "--model", "./mymodels.py:factory", "--weights",
            "w.safetensors", "--bounds", "0,255", "--mean", "127.5", "--std", "64"]  # fmt: skip
    args = _build_parser().parse_args(argv)
    resolve_weights(args)
    assert (args.model, args.arch) == ("w.safetensors", "./mymodels.py:factory")
    clf = classifier(args)
    assert clf.bounds == (0.0, 255.0)
    assert clf.preprocessing is not None
    assert (clf.preprocessing.mean, clf.preprocessing.std) == ((127.5,), (64.0,))
    x = torch.full((1, 1, 8, 8), 127.5)
    expected = loaded.module((x - 127.5) / 64)
    torch.testing.assert_close(clf.logits(x), expected)

    # --weights with a zoo model is refused with the form that works.
    assert main(["attack", "deepfool", "--model", "zoo:lenet-mnist", "--weights", "w.pt"]) == 2
    # A bad --bounds is argparse's own one-line usage error.
    with pytest.raises(SystemExit):
        _build_parser().parse_args(["attack", "deepfool", "--bounds", "1,0"])


def test_safetensors_file_that_is_not_one_names_itself(tmp_path):
    from boundaryscope.zoo import load_model

    (tmp_path / "mymodels.py").write_text(MODULE)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=r"bad\.safetensors is not a safetensors weights file"):
        load_model(f"{tmp_path}/mymodels.py:factory", weights=tmp_path / "bad.safetensors")


def test_quick_report_end_to_end_on_a_cifar_shaped_batchnorm_resnet(tmp_path):
    """Every section of the quick report on a CIFAR-shaped BatchNorm ResNet, under a small
    memory budget (passes split), with the cost estimate printed first."""
    import torch

    (tmp_path / "cifarnet.py").write_text(RESNET_MODULE)
    net = cifar_resnet()
    x = torch.rand(40, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = net(x).argmax(1)  # model-labelled: every test image is correctly classified
    np.savez(tmp_path / "cifar.npz", x=x.numpy(), y=y.numpy())
    argv = ["report", "--model", "./cifarnet.py:factory", "--data", "npz:cifar.npz",
            "--profile", "quick", "--n", "2", "--memory-budget", "8M", "--out", "run"]  # fmt: skip
    done = subprocess.run(
        [*BOUNDARYSCOPE, *argv], cwd=tmp_path, env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "estimated on this model and machine" in done.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert len(results["sections"]) == 9
    assert results["sections"]["accuracy"]["accuracy"] == 1.0
    assert "memory budget 0.0078 GiB" in (tmp_path / "run" / "report.html").read_text()


def test_time_budget_shrinks_the_geometry_of_a_cifar_shaped_batchnorm_resnet(tmp_path, monkeypatch):
    """--time-budget on the default profile: the boundary section's own samples shrink to a
    quarter (4 → 2 gallery images, 50 → 12 training points) on a CIFAR-shaped BN ResNet."""
    import torch

    from boundaryscope.cli import main
    from boundaryscope.report import ANALYSES, cost

    (tmp_path / "cifarnet.py").write_text(RESNET_MODULE)
    net = cifar_resnet()
    x = torch.rand(120, 3, 32, 32, generator=torch.Generator().manual_seed(2))  # 24 test
    with torch.no_grad():
        y = net(x).argmax(1)
    np.savez(tmp_path / "cifar.npz", x=x.numpy(), y=y.numpy())
    # A second per row: nothing fits, so the plan is the smallest one, whatever the machine.
    slow = cost.PassTimes(forward=1.0, backward=1.0, rows=32)
    monkeypatch.setattr(cost, "measure_pass_times", lambda *args, **kwargs: slow)
    monkeypatch.chdir(tmp_path)
    argv = ["report", "--model", "./cifarnet.py:factory", "--data", "npz:cifar.npz",
            "--profile", "default", "--n", "40", "--sections", "accuracy,boundary",
            "--time-budget", "1s", "--out", "run"]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["meta"]["time_budget"]["scale"] == 0.25 and results["meta"]["n"] == 16
    boundary = results["sections"]["boundary"]
    assert boundary["settings"] == ANALYSES["boundary"].settings_record("default", 0.25)
    assert len(boundary["images"]) == 2 and boundary["config"]["n_train"] == 12
    assert boundary["summary"]["no_crossing"] == 0.0  # every normal still crosses


def test_data_that_does_not_match_the_model_is_said_before_the_nan_rows(
    tmp_path, monkeypatch, caplog
):
    """Labels the model never gives (another class order): a warning names what to check."""
    import torch

    from boundaryscope.cli import main

    (tmp_path / "mymodels.py").write_text(MODULE)
    namespace: dict = {}
    exec(MODULE, namespace)
    net = namespace["factory"]()
    x = torch.rand(30, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        predicted = net(x).argmax(1).numpy()
    monkeypatch.chdir(tmp_path)
    for name, labels in (("own", predicted), ("shifted", (predicted + 1) % 3)):
        np.savez(tmp_path / f"{name}.npz", x=x.numpy(), y=labels)
    argv = ["attack", "deepfool", "--model", "./mymodels.py:factory", "--n", "6"]
    with caplog.at_level("WARNING", logger="boundaryscope"):
        assert main([*argv, "--data", "npz:own.npz", "--out", "own"]) == 0
    assert "at chance" not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="boundaryscope"):
        assert main([*argv, "--data", "npz:shifted.npz", "--out", "shifted"]) == 0
    assert "clean accuracy 0.0% on 6 images of npz:shifted.npz is at chance" in caplog.text
    assert "class order" in caplog.text


def test_images_the_model_refuses_name_the_folder_options(tmp_path, capsys):
    """RGB 40×40 images for the grey 28×28 LeNet: the error says ',gray' and ',size=28'."""
    from PIL import Image

    from boundaryscope.cli import main

    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(3):
            pixels = (rng.random((40, 40, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / label / f"{i}.png")
    for spec in (f"folder:{tmp_path}", f"folder:{tmp_path},gray"):  # channels, then size
        for argv in (["attack", "deepfool"], ["report", "--profile", "quick"]):
            assert main([*argv, "--data", spec, "--out", str(tmp_path / "out")]) == 2
            err = capsys.readouterr().err
            assert f"The data {spec} holds images of shape" in err
            assert "',gray' for one channel, ',size=H[xW]' to resize" in err
    assert not (tmp_path / "out" / "results.json").exists()  # refused before any work
