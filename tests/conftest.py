from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from boundaryscope import Classifier
from boundaryscope.zoo import load_model

# Two threads like CI's machine, unless OMP_NUM_THREADS asks for another count (single-
# threaded runs must stay single-threaded).
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def seed() -> int:
    """Seed for randomised tests; CI may rotate it with BOUNDARYSCOPE_TEST_SEED."""
    return int(os.environ.get("BOUNDARYSCOPE_TEST_SEED", "0"))


def affine_model(d: int = 6, classes: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layer = nn.Linear(d, classes)
    return nn.Sequential(nn.Flatten(), layer).double().eval()


def tiny_mlp(d: int = 6, classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return (
        nn.Sequential(nn.Flatten(), nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, classes))
        .double()
        .eval()
    )


@pytest.fixture(scope="session")
def lenet_clf() -> Classifier:
    return Classifier(load_model("zoo:lenet-mnist").module)


def fashion_mnist_or_skip(split: str = "test"):
    """Fashion-MNIST from Debian's package, or a skip that says how to install it."""
    from boundaryscope.data import FASHION_MNIST_DIR, load_fashion_mnist

    if not (FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip(
            f"Fashion-MNIST is not installed ({FASHION_MNIST_DIR} is missing): "
            "apt-get install dataset-fashion-mnist (.ci/run does)"
        )
    return load_fashion_mnist(split)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def fashion_test():
    return fashion_mnist_or_skip("test")


@pytest.fixture(scope="session")
def mnist_test():
    from boundaryscope.data import load_mnist5k

    return load_mnist5k("test")
