"""A user-style model factory for the ``package.module:factory`` spec tests."""

from torch import nn


def small_net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 2))
