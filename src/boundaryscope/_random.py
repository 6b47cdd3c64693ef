"""Per-image random streams: the draws an image gets depend on the seed and the image only.

Random attacks (SPSA, the random start of PGD, random noise and directions) draw from one
`torch.Generator` per image, seeded from the attack's seed and a hash of the image's bytes.
The numbers an image gets are therefore the same whatever the batch size, the order of the
images, the subset they were taken from or the process they run in (``torchrun`` shards),
which a single generator shared by a batch cannot give.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["draw_per_image", "image_generators"]


def image_generators(x: Tensor, seed: int) -> list[torch.Generator]:
    """One CPU generator per image of ``x`` ``(N, *shape)``, seeded by `seed` and its bytes."""
    rows = x.detach().to("cpu").contiguous().flatten(1).numpy()
    generators = []
    for row in rows:
        digest = hashlib.blake2b(row.tobytes(), digest_size=8, key=str(int(seed)).encode())
        generators.append(
            torch.Generator().manual_seed(int.from_bytes(digest.digest(), "big") >> 1)
        )
    return generators


def draw_per_image(
    generators: list[torch.Generator],
    draw: Callable[[torch.Generator], Tensor],
    like: Tensor,
    dim: int = 0,
) -> Tensor:
    """``draw(g)`` for each image's generator, stacked along `dim`, on ``like``'s device/dtype."""
    if not generators:
        return like.new_zeros((0, *like.shape[1:]))
    return torch.stack([draw(g) for g in generators], dim=dim).to(like.device, like.dtype)
