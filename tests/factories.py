"""User-style models: a factory for the ``package.module:factory`` spec tests, and the text
of a user's CIFAR-shaped BatchNorm ResNet file (written to disk by the report test, built in
process by the memory tests)."""

import textwrap
from typing import Any

from torch import nn

RESNET_MODULE = textwrap.dedent(
    """
    import torch
    from torch import nn
    from boundaryscope.zoo import build

    def factory():
        torch.manual_seed(0)
        net = build("resnet8", in_channels=3, image_size=32, width=8)
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = None
        net.train()
        with torch.no_grad():
            net(torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
        return net.eval()
    """
)


def cifar_resnet() -> Any:
    """The model of `RESNET_MODULE` (3×32×32, BatchNorm statistics of random images)."""
    namespace: dict[str, Any] = {}
    exec(RESNET_MODULE, namespace)
    return namespace["factory"]()


def small_net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 2))
