"""Reference architectures of the seeds (thesis §3.2.3, Table 3.1; §6–7 for ResNet-18).

All take images in NCHW and return logits. Sizes follow the MatConvNet models the seeds
used where the thesis names them; exact filter counts are documented per factory.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from torch import Tensor, nn

__all__ = [
    "ARCHITECTURES",
    "fc500_150_10",
    "lenet",
    "lenet_cifar",
    "lenet_smooth",
    "mlp",
    "nin",
    "resnet8",
    "resnet18",
    "resnet50",
]


def fc500_150_10(num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> nn.Module:
    """FC500-150-10: two hidden fully connected layers of 500 and 150 ReLU units."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * image_size * image_size, 500),
        nn.ReLU(),
        nn.Linear(500, 150),
        nn.ReLU(),
        nn.Linear(150, num_classes),
    )


def mlp(
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 8,
    hidden: tuple[int, ...] = (32, 32),
) -> nn.Module:
    """A small fully connected ReLU network, 64-32-32-10 on 8×8 digits by default.

    Small enough for `boundaryscope.verify` to compute its exact minimal perturbations by
    mixed-integer programming, so it is the ground truth for the attacks' optimality.
    """
    widths = [in_channels * image_size * image_size, *hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for w_in, w_out in itertools.pairwise(widths):
        layers += [nn.Linear(w_in, w_out), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], num_classes))
    return nn.Sequential(*layers)


def lenet(
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    activation: Callable[[], nn.Module] = nn.ReLU,
    pool: Callable[[int], nn.Module] = nn.MaxPool2d,
) -> nn.Module:
    """LeNet for MNIST: conv5×5(20)-pool-conv5×5(50)-pool-FC500-FC (MatConvNet's mnist net).

    `activation` and `pool` build the nonlinearities (ReLU and 2×2 max-pool by default;
    `lenet_smooth` swaps in softplus and average pooling, same parameter layout).
    """
    side = ((image_size - 4) // 2 - 4) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, 20, 5),
        activation(),
        pool(2),
        nn.Conv2d(20, 50, 5),
        activation(),
        pool(2),
        nn.Flatten(),
        nn.Linear(50 * side * side, 500),
        activation(),
        nn.Linear(500, num_classes),
    )


def lenet_smooth(num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> nn.Module:
    """LeNet with softplus activations and average pooling: a twice-differentiable reference.

    ReLU and max-pool networks are piecewise affine, so their exact input Hessian is zero
    almost everywhere and boundary curvature can only be measured by finite differences
    (thesis §8.2, footnote 3). This variant has the layer sizes of `lenet` but a smooth
    forward map, so exact (double-backward) and finite-difference curvature can be compared
    on a real network (`boundaryscope.geometry.hessian`).
    """
    return lenet(num_classes, in_channels, image_size, nn.Softplus, nn.AvgPool2d)


def lenet_cifar(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """Three-layer LeNet for CIFAR-10: three conv5×5(32, 32, 64)+pool blocks, FC64, FC."""
    side = image_size // 8
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * side * side, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


def _mlpconv(c_in: int, widths: tuple[int, int, int], kernel: int) -> list[nn.Module]:
    """One mlpconv block: a k×k convolution followed by two 1×1 convolutions, all ReLU."""
    c1, c2, c3 = widths
    return [
        nn.Conv2d(c_in, c1, kernel, padding=kernel // 2),
        nn.ReLU(),
        nn.Conv2d(c1, c2, 1),
        nn.ReLU(),
        nn.Conv2d(c2, c3, 1),
        nn.ReLU(),
    ]


def nin(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """Network-in-Network (Lin et al.) for CIFAR: mlpconv 192-160-96, 192-192-192, 192-192-C.

    The last block ends without ReLU so that its globally averaged output are logits.
    """
    del image_size  # global average pooling makes the net size-agnostic
    last = _mlpconv(192, (192, 192, num_classes), 3)[:-1]
    return nn.Sequential(
        *_mlpconv(in_channels, (192, 160, 96), 5),
        nn.MaxPool2d(3, stride=2, padding=1),
        *_mlpconv(96, (192, 192, 192), 5),
        nn.AvgPool2d(3, stride=2, padding=1),
        *last,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
    """The residual branch: identity, or a strided 1×1 convolution where the shape changes."""
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))


class _Residual(nn.Module):
    """``relu(body(x) + shortcut(x))``."""

    def __init__(self, body: nn.Module, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = body
        self.shortcut = _shortcut(c_in, c_out, stride)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))  # type: ignore[no-any-return]


def _basic_block(c_in: int, c_out: int, stride: int) -> nn.Module:
    """Two 3×3 convolutions (ResNet-18/34)."""
    body = nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
        nn.BatchNorm2d(c_out),
    )
    return _Residual(body, c_in, c_out, stride)


def _bottleneck(c_in: int, width: int, stride: int) -> nn.Module:
    """1×1 → 3×3 (strided) → 1×1 to ``4 × width`` channels (ResNet-50, torchvision's v1.5)."""
    c_out = 4 * width
    body = nn.Sequential(
        nn.Conv2d(c_in, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
    )  # fmt: skip
    return _Residual(body, c_in, c_out, stride)


def resnet8(
    num_classes: int = 10, in_channels: int = 1, image_size: int = 28, width: int = 16
) -> nn.Module:
    """ResNet-8 (He et al. 2016, §4.2's CIFAR family 6n + 2, n = 1): a small BatchNorm ResNet.

    The kind of residual CNN users bring, cheap enough to train on 60,000 images on a CPU.

    3×3 stem of `width` channels, then one basic block per stage at `width`, 2·`width`,
    4·`width` channels (strides 1, 2, 2), global average pooling, a linear layer: 78 k
    parameters at the default width.
    """
    del image_size  # global pooling: any size of at least 4×4 works
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
    ]
    c_in = width
    for c_out, stride in [(width, 1), (2 * width, 2), (4 * width, 2)]:
        layers.append(_basic_block(c_in, c_out, stride))
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)


def resnet18(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """ResNet-18, CIFAR variant (3×3 stem, no max-pool; He et al.), blocks [2, 2, 2, 2]."""
    del image_size
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
    ]
    c_in = 64
    for c_out, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        layers += [_basic_block(c_in, c_out, stride), _basic_block(c_out, c_out, 1)]
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)


def resnet50(num_classes: int = 1000, in_channels: int = 3, image_size: int = 224) -> nn.Module:
    """ResNet-50, ImageNet layout (7×7 stride-2 stem, max-pool, bottlenecks [3, 4, 6, 3]).

    The shape users bring at ImageNet scale (25.6 M parameters at 1,000 classes, as
    torchvision's); no weights ship with it.
    """
    del image_size
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]  # fmt: skip
    c_in = 64
    for width, blocks, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
        for i in range(blocks):
            layers.append(_bottleneck(c_in, width, stride if i == 0 else 1))
            c_in = 4 * width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "fc500-150-10": fc500_150_10,
    "lenet": lenet,
    "lenet-cifar": lenet_cifar,
    "lenet-smooth": lenet_smooth,
    "mlp": mlp,
    "nin": nin,
    "resnet8": resnet8,
    "resnet18": resnet18,
    "resnet50": resnet50,
}
