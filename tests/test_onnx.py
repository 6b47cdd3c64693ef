"""ONNX models (``--model PATH.onnx``, the optional extra): the same numbers as the torch model.

The models are exported here with torch's own exporter and read back through ``onnx2torch``;
every check compares with the torch module the file was exported from. ``onnx2torch``
imports torchvision for two detection operators (NMS, RoIAlign) that none of these models
use; where torchvision is not installed (this project's CPU machines have no build of it)
the `torchvision_or_stand_in` fixture puts a stand-in module in its place for the import.
"""

from __future__ import annotations

import json
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from boundaryscope import Classifier
from boundaryscope.attacks import DeepFool
from boundaryscope.zoo import FixedBatch, load_model

pytest.importorskip("onnx", reason="the optional extra boundaryscope[onnx] is not installed")


@pytest.fixture
def torchvision_or_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        ops = types.ModuleType("torchvision.ops")

        def unavailable(*args: object, **kwargs: object) -> None:
            raise NotImplementedError("torchvision is not installed")

        ops.nms = ops.roi_align = ops.box_convert = unavailable  # type: ignore[attr-defined]
        vision = types.ModuleType("torchvision")
        vision.ops = ops  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "torchvision", vision)
        monkeypatch.setitem(sys.modules, "torchvision.ops", ops)
    pytest.importorskip("onnx2torch", reason="the optional extra boundaryscope[onnx] is missing")


def cifar_bn_cnn(seed: int = 0) -> nn.Module:
    """A CIFAR-shaped BatchNorm CNN with non-trivial running statistics, in eval mode."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )
    with torch.no_grad():
        model(torch.rand(64, 3, 32, 32))  # running statistics from data, not (0, 1)
    return model.eval()


def export(model: nn.Module, path: Path, *, dynamic_batch: bool) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its deprecation
        torch.onnx.export(
            model,
            (torch.rand(1, 3, 32, 32),),
            str(path),
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "batch"}} if dynamic_batch else None,
        )
    return path


def exported_with_data(
    folder: Path, *, seed: int, images: int, relabel: bool = False
) -> tuple[nn.Module, Path, str]:
    """`cifar_bn_cnn` exported to ``net.onnx`` and an ``npz:`` data spec it labels.

    With `relabel`, every other label is moved to the next class (something to learn).
    """
    model = cifar_bn_cnn(seed=seed)
    path = export(model, folder / "net.onnx", dynamic_batch=True)
    x = torch.rand(images, 3, 32, 32, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        y = model(x).argmax(1)
    if relabel:
        y = (y + torch.arange(images) % 2) % 10
    np.savez(folder / "data.npz", x=x.numpy(), y=y.numpy())
    return model, path, f"npz:{folder / 'data.npz'}"


@pytest.mark.parametrize("dynamic_batch", [True, False])
def test_onnx_model_gives_the_torch_models_scores_and_gradients(
    tmp_path: Path, torchvision_or_stand_in: None, dynamic_batch: bool
) -> None:
    model = cifar_bn_cnn()
    path = export(model, tmp_path / "net.onnx", dynamic_batch=dynamic_batch)
    loaded = load_model(str(path))
    assert loaded.origin == {"onnx": str(path)} and not loaded.module.training
    # Exported for one row only: run in chunks of one, whatever the batch.
    assert isinstance(loaded.module, FixedBatch) != dynamic_batch
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ours, theirs = Classifier(loaded.module), Classifier(model)
    torch.testing.assert_close(ours.scores(x), theirs.scores(x), rtol=1e-5, atol=1e-5)
    _, grad = ours.value_and_gradient(x, lambda s: s[:, 3] - s[:, 1])
    _, expected = theirs.value_and_gradient(x, lambda s: s[:, 3] - s[:, 1])
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6)


def test_attack_command_on_an_onnx_model_matches_the_torch_model(
    tmp_path: Path, torchvision_or_stand_in: None
) -> None:
    from boundaryscope.cli import main
    from boundaryscope.cli.common import load_sample

    model, path, data = exported_with_data(tmp_path, seed=2, images=30)
    out = tmp_path / "run"
    argv = ["attack", "deepfool", "--model", str(path), "--data", data, "--n", "6"]
    assert main([*argv, "--out", str(out)]) == 0
    norms = json.loads((out / "attack.json").read_text())["norms"]
    test = load_sample(data, 6)  # the images the command attacked
    expected = DeepFool()(Classifier(model), test.x, test.y).norms
    assert len(norms) == 6
    np.testing.assert_allclose(norms, expected.numpy(), rtol=1e-3)


def test_fixed_batch_pads_the_last_chunk_and_drops_its_extra_rows() -> None:
    seen: list[int] = []

    class Rows(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.shape[0])
            return x.flatten(1).sum(1, keepdim=True)

    x = torch.arange(7.0).view(7, 1)
    out = FixedBatch(Rows(), 3)(x)
    assert seen == [3, 3, 3]  # never another batch size than the export's
    torch.testing.assert_close(out, x)


def test_missing_extra_or_bad_file_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_model(str(tmp_path / "absent.onnx"))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf")
    monkeypatch.setitem(sys.modules, "onnx2torch", None)  # the extra not installed
    with pytest.raises(ValueError, match=r"boundaryscope\[onnx\]"):
        load_model(str(junk))
    monkeypatch.undo()


def test_unreadable_onnx_file_names_the_file(tmp_path: Path, torchvision_or_stand_in: None) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match=r"junk\.onnx could not be converted"):
        load_model(str(junk))
    with pytest.raises(ValueError, match="records its own architecture"):
        load_model(str(junk), arch="lenet")


def test_a_model_trained_from_an_onnx_file_loads_back_with_its_new_weights(
    tmp_path: Path, torchvision_or_stand_in: None
) -> None:
    from boundaryscope.cli import main

    _, path, data = exported_with_data(tmp_path, seed=4, images=60, relabel=True)
    run = tmp_path / "run"
    argv = ["train", "--model", str(path), "--data", data]
    assert main([*argv, "--defense", "standard", "--epochs", "1", "--out", str(run)]) == 0
    trained = load_model(str(run))  # the run records the graph file: data, not code
    assert trained.origin == {"onnx": str(path)}
    before = load_model(str(path)).module.state_dict()
    after = trained.module.state_dict()
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the trained weights
    path.unlink()
    with pytest.raises(ValueError, match="pass its path as --arch"):
        load_model(str(run))
