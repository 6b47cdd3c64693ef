from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from boundaryscope.data import (
    load_cifar10,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_idx,
    load_image_folder,
    load_mnist5k,
    load_npz,
    split_dataset,
)


def check(ds, n, shape):
    assert len(ds) == n
    assert ds.x.shape == (n, *shape)
    assert ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64
    assert float(ds.x.min()) >= 0 and float(ds.x.max()) <= 1


def test_mnist5k_stratified_split(mnist_test):
    train = load_mnist5k("train")
    check(train, 4000, (1, 28, 28))
    check(mnist_test, 1000, (1, 28, 28))
    assert torch.bincount(mnist_test.y).tolist() == [100] * 10
    assert torch.bincount(train.y).tolist() == [400] * 10
    # Shuffled, not class-ordered, and disjoint from the training split.
    assert len(set(mnist_test.y[:50].tolist())) > 5
    train_rows = {row.tobytes() for row in train.x.flatten(1).numpy()}
    test_rows = {row.tobytes() for row in mnist_test.x.flatten(1).numpy()}
    assert not train_rows & test_rows
    assert torch.equal(load_mnist5k("test").y, mnist_test.y)  # fixed permutation


def test_digits():
    train, test = load_digits("train"), load_digits("test")
    check(train, len(train), (1, 8, 8))
    assert len(train) + len(test) == 1797
    assert abs(len(test) - 360) < 10


def test_npz_uint8_nhwc_and_float(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(5, 6, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", x=images, y=np.arange(5))
    ds = load_npz(tmp_path / "a.npz")
    check(ds, 5, (3, 6, 6))
    np.testing.assert_allclose(ds.x[1, 2].numpy(), images[1, :, :, 2] / 255, rtol=1e-6)
    np.savez(tmp_path / "b.npz", x=np.full((2, 1, 4, 4), 0.5, np.float32), y=[0, 1])
    check(load_dataset(f"npz:{tmp_path / 'b.npz'}", "all"), 2, (1, 4, 4))
    np.savez(tmp_path / "c.npz", x=np.full((2, 4, 4), 3.0), y=[0, 1])
    with pytest.raises(ValueError, match=r"uint8 or floats in \[0, 1\]"):
        load_npz(tmp_path / "c.npz")
    with pytest.raises(ValueError, match="must contain arrays"):
        load_npz(tmp_path / "c.npz", x_key="images")


def test_image_folder(tmp_path):
    for label, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        for i in range(3):
            array = np.full((5, 7, 3), 40 * label + i, dtype=np.uint8)
            Image.fromarray(array).save(tmp_path / name / f"{i}.png")
    ds = load_image_folder(tmp_path)
    check(ds, 6, (3, 5, 7))
    assert ds.classes == ("cat", "dog")
    assert ds.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert float(ds.x[4, 0, 0, 0]) == pytest.approx(41 / 255)
    grey = load_image_folder(tmp_path, size=(4, 4), mode="L")
    check(grey, 6, (1, 4, 4))
    # The same from a data spec, as every command takes it; options follow the directory.
    spec = load_dataset(f"folder:{tmp_path},size=4,gray", "all")
    assert torch.equal(spec.x, grey.x) and torch.equal(spec.y, grey.y)
    check(load_dataset(f"folder:{tmp_path},size=4x6", "all"), 6, (3, 4, 6))
    with pytest.raises(ValueError, match="size must be H or HxW"):
        load_dataset(f"folder:{tmp_path},size=0", "all")


def test_cifar10_batches(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
    with (tmp_path / "test_batch").open("wb") as handle:
        pickle.dump({b"data": data, b"labels": [3, 1, 4, 1]}, handle)
    with (tmp_path / "batches.meta").open("wb") as handle:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, handle)
    ds = load_cifar10(tmp_path, "test")
    check(ds, 4, (3, 32, 32))
    assert ds.y.tolist() == [3, 1, 4, 1]
    assert ds.classes[3] == "c3"
    np.testing.assert_allclose(ds.x[2].numpy().reshape(-1), data[2] / 255, rtol=1e-6)


def test_cifar_loader_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    with (tmp_path / "test_batch").open("wb") as handle:
        pickle.dump({b"data": Evil(), b"labels": []}, handle)
    with pytest.raises(pickle.UnpicklingError, match="only arrays"):
        load_cifar10(tmp_path)


def write_idx(path, array, gz=False):
    codes = {np.uint8: 0x08}
    header = struct.pack(">BBBB", 0, 0, codes[array.dtype.type], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)


@pytest.mark.parametrize("gz", [False, True])
def test_idx(tmp_path, gz):
    images = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
    write_idx(tmp_path / "img", images, gz)
    write_idx(tmp_path / "lab", np.array([7, 0, 2], dtype=np.uint8), gz)
    ds = load_dataset(f"idx:{tmp_path / 'img'},{tmp_path / 'lab'}", "all")
    check(ds, 3, (1, 4, 4))
    assert ds.y.tolist() == [7, 0, 2]
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX"):
        load_idx(tmp_path / "bad", tmp_path / "lab")


def _write_fashion(root, n_train=6, n_test=4):
    """The four Fashion-MNIST files (gzip IDX) with tiny random contents."""
    rng = np.random.default_rng(0)
    root.mkdir(exist_ok=True)
    arrays = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images, gz=True)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels, gz=True)
        arrays[split] = (images, labels)
    return arrays


def test_fashion_mnist_from_a_directory(tmp_path):
    arrays = _write_fashion(tmp_path / "fm")
    for split in ("train", "test"):
        ds = load_dataset(f"fashion-mnist:{tmp_path / 'fm'}", split)
        images, labels = arrays[split]
        check(ds, len(labels), (1, 28, 28))
        # Values and order exactly as in the files (the official split is used as is).
        assert torch.equal(ds.x[:, 0], torch.from_numpy(images / 255.0).float())
        assert ds.y.tolist() == labels.tolist()
        assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
        assert ds.name == f"fashion-mnist-{split}"
    both = load_fashion_mnist("all", tmp_path / "fm")
    assert len(both) == 10 and both.y[:6].tolist() == arrays["train"][1].tolist()


def test_fashion_mnist_absent_names_the_package(tmp_path, monkeypatch):
    import boundaryscope.data as data_module

    monkeypatch.setattr(data_module, "FASHION_MNIST_DIR", tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte\[\.gz\] in"):
        load_dataset(f"fashion-mnist:{tmp_path}")
    (tmp_path / "fm").mkdir()
    write_idx(tmp_path / "fm" / "t10k-images-idx3-ubyte", np.zeros((2, 8, 8), np.uint8))
    write_idx(tmp_path / "fm" / "t10k-labels-idx1-ubyte", np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        load_fashion_mnist("test", tmp_path / "fm")


def test_fashion_mnist_package():
    from tests.conftest import fashion_mnist_or_skip

    train, test = fashion_mnist_or_skip("train"), fashion_mnist_or_skip("test")
    assert (len(train), len(test)) == (60_000, 10_000)
    assert torch.bincount(train.y).tolist() == [6000] * 10
    assert torch.bincount(test.y).tolist() == [1000] * 10
    # Not ordered by class: the first 100 test images cover every class.
    assert len(test.y[:100].unique()) == 10


def test_unknown_spec():
    with pytest.raises(ValueError, match="data spec must be one of"):
        load_dataset("imagenet")


def class_ordered_npz(path, per_class=(30, 20, 10)):
    """A class-ordered file, the case where "the first n rows" is a wrong sample."""
    y = np.concatenate([np.full(n, c) for c, n in enumerate(per_class)])
    x = np.random.default_rng(0).integers(0, 256, size=(len(y), 4, 4), dtype=np.uint8)
    x[:, 0, 0] = np.arange(len(y))  # every image distinct
    np.savez(path, x=x, y=y)
    return x, y


def rows(ds):
    return {r.tobytes() for r in ds.x.flatten(1).numpy()}


@pytest.mark.parametrize("kind", ["npz", "idx", "folder"])
def test_user_data_gets_a_stratified_disjoint_seeded_split(tmp_path, kind):
    x, y = class_ordered_npz(tmp_path / "d.npz")
    if kind == "npz":
        spec = f"npz:{tmp_path / 'd.npz'}"
    elif kind == "idx":
        write_idx(tmp_path / "img", x)
        write_idx(tmp_path / "lab", y.astype(np.uint8))
        spec = f"idx:{tmp_path / 'img'},{tmp_path / 'lab'}"
    else:
        for i, (image, label) in enumerate(zip(x, y, strict=True)):
            (tmp_path / "f" / f"c{label}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).convert("L").save(tmp_path / "f" / f"c{label}" / f"{i:03d}.png")
        spec = f"folder:{tmp_path / 'f'}"
    train, test = load_dataset(spec, "train"), load_dataset(spec, "test")
    everything = load_dataset(spec, "all")
    assert len(everything) == 60
    assert torch.bincount(test.y).tolist() == [6, 4, 2]  # 20% of each class
    assert torch.bincount(train.y).tolist() == [24, 16, 8]
    assert not rows(train) & rows(test)
    assert rows(train) | rows(test) == rows(everything)
    assert len(set(test.y[:6].tolist())) > 1  # shuffled, not class-ordered
    again = load_dataset(spec, "test")
    assert torch.equal(again.x, test.x)  # same seed, same split
    other = load_dataset(spec, "test", seed=1)
    assert rows(other) != rows(test)


def test_npz_and_folder_keep_their_own_split(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "s.npz",
        x_train=rng.random((7, 1, 4, 4)),
        y_train=np.arange(7) % 2,
        x_test=rng.random((3, 1, 4, 4)),
        y_test=np.array([1, 0, 1]),
    )
    spec = f"npz:{tmp_path / 's.npz'}"
    assert len(load_dataset(spec, "train")) == 7
    assert load_dataset(spec, "test").y.tolist() == [1, 0, 1]
    assert len(load_dataset(spec, "all")) == 10
    for split, count in (("train", 4), ("test", 2)):
        for c in ("a", "b"):
            (tmp_path / "f" / split / c).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(np.full((4, 4), i, np.uint8)).save(
                    tmp_path / "f" / split / c / f"{i}.png"
                )
    assert len(load_dataset(f"folder:{tmp_path / 'f'}", "test")) == 4
    assert len(load_dataset(f"folder:{tmp_path / 'f'}", "train")) == 8


def test_split_dataset_arguments(mnist_test):
    with pytest.raises(ValueError, match="split must be"):
        split_dataset(mnist_test, "validation")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="test_fraction"):
        split_dataset(mnist_test, "test", test_fraction=1.0)


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.array([0, 1.7, 2, 1]), "non-integral"),
        (np.array([[0], [1], [2], [1]]), r"shape \(4, 1\).*reshape"),
        (np.eye(4)[[0, 1, 2, 1]], "one-hot"),
        (np.array([0, -1, 2, 1]), ">= 0"),
        (np.array([0, 1, 2]), "4 images but 3 labels"),
        (np.array(["a", "b", "c", "d"]), "must be integers"),
    ],
)
def test_bad_labels_are_refused_not_coerced(tmp_path, labels, match):
    np.savez(tmp_path / "l.npz", x=np.zeros((4, 1, 2, 2), np.float32), y=labels)
    with pytest.raises(ValueError, match=match) as info:
        load_npz(tmp_path / "l.npz")
    assert "l.npz" in str(info.value)


def test_integral_float_labels_are_accepted(tmp_path):
    np.savez(tmp_path / "l.npz", x=np.zeros((3, 1, 2, 2), np.float32), y=np.array([0.0, 2.0, 1.0]))
    assert load_npz(tmp_path / "l.npz").y.tolist() == [0, 2, 1]


def test_bad_images_and_files_are_refused(tmp_path):
    x = np.zeros((2, 1, 2, 2), np.float32)
    x[0, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=[0, 1])
    with pytest.raises(ValueError, match=r"finite.*1 NaN"):
        load_npz(tmp_path / "nan.npz")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match=r"garbage.npz is not a readable .npz"):
        load_dataset(f"npz:{tmp_path / 'garbage.npz'}")
    with pytest.raises(FileNotFoundError, match=r"missing.npz"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")
    with (tmp_path / "test_batch").open("wb") as handle:
        pickle.dump(
            {b"data": np.random.default_rng(0).random((2, 3072)), b"labels": [0, 1]}, handle
        )
    with pytest.raises(ValueError, match="uint8 rows of 3072"):
        load_cifar10(tmp_path)


def test_idx_files_swapped_or_truncated(tmp_path):
    images = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
    write_idx(tmp_path / "img", images)
    write_idx(tmp_path / "lab", np.array([7, 0, 2], dtype=np.uint8))
    with pytest.raises(ValueError, match="swapped"):
        load_idx(tmp_path / "img", tmp_path / "img")
    with pytest.raises(ValueError, match="swapped"):
        load_idx(tmp_path / "lab", tmp_path / "lab")
    (tmp_path / "cut").write_bytes((tmp_path / "img").read_bytes()[:30])
    with pytest.raises(ValueError, match=r"cut.*truncated"):
        load_idx(tmp_path / "cut", tmp_path / "lab")
    (tmp_path / "cut2").write_bytes((tmp_path / "img").read_bytes()[:9])
    with pytest.raises(ValueError, match="cut2 is truncated"):
        load_idx(tmp_path / "cut2", tmp_path / "lab")
