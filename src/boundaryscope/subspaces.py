"""Orthogonal projectors onto subspaces of the input space, for subspace-constrained DeepFool.

Thesis §3.4.2 (Alg. 3, eqs. 3.15–3.20) and §5.3 (random and semi-random noise);
docs/algorithms.md §2. A projector is called as ``projector(g, index)`` on gradients ``g`` of
shape ``(A, K, *shape)`` belonging to samples ``index`` (``(A,)`` positions in the batch
being attacked) and returns ``P_S g`` with the same shape; ``project(x)`` does the same
for a plain batch ``(N, *shape)``. No
``d × d`` matrix is ever formed: projections go through an orthonormal basis ``B``
(``P_S g = B Bᵀ g``) or through the separable 2-D DCT.

- `Full`: the identity (``S = R^d``).
- `RandomSubspace`: span of ``m`` i.i.d. Gaussian vectors, orthonormalised — one subspace
  for the whole batch, or one per sample (as Table 5.1 draws them).
- `DCTBands`: a band of the orthonormal 2-D DCT basis, per channel (eq. 3.19).
- `Basis`: the span of any user vectors; `watermark_basis` renders words into one
  (Fig. 3.12).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import scipy.fft
import torch
from torch import Tensor

__all__ = [
    "Basis",
    "DCTBands",
    "Full",
    "RandomSubspace",
    "Subspace",
    "dct_matrix",
    "watermark_basis",
]


class Subspace:
    """Base class: ``P_S`` applied to the trailing ``shape`` dimensions of a batch."""

    def dimension(self, shape: Sequence[int]) -> int:
        """``m = dim S`` for inputs of the given per-sample shape."""
        raise NotImplementedError

    def __call__(self, g: Tensor, index: Tensor) -> Tensor:
        """Projects ``g`` of shape ``(A, K, *shape)``; ``index`` ``(A,)`` holds sample ids."""
        raise NotImplementedError

    def project(self, x: Tensor) -> Tensor:
        """``P_S x`` for a batch ``(N, *shape)`` (sample ids ``0 … N-1``)."""
        index = torch.arange(x.shape[0], device=x.device)
        return self(x.unsqueeze(1), index).squeeze(1)


class Full(Subspace):
    """The whole input space: the identity projector."""

    def dimension(self, shape: Sequence[int]) -> int:
        """``d``."""
        return math.prod(shape)

    def __call__(self, g: Tensor, index: Tensor) -> Tensor:
        """Returns ``g`` unchanged."""
        return g

    def __repr__(self) -> str:
        return "Full()"


def _project_onto(g: Tensor, basis: Tensor) -> Tensor:
    """``B Bᵀ g`` for ``g`` ``(A, K, *shape)``; ``basis`` ``(d, m)`` or ``(A, d, m)``."""
    flat = g.reshape(g.shape[0], g.shape[1], -1)  # (A, K, d)
    if basis.ndim == 2:
        return ((flat @ basis) @ basis.T).view_as(g)
    coefficients = torch.bmm(flat, basis)  # (A, K, m)
    return torch.bmm(coefficients, basis.transpose(1, 2)).view_as(g)


def _orthonormal(columns: Tensor) -> Tensor:
    """Orthonormal basis (QR) of the span of ``columns`` ``(..., d, m)``."""
    q, _ = torch.linalg.qr(columns, mode="reduced")
    return q


class RandomSubspace(Subspace):
    """Span of ``m`` i.i.d. Gaussian vectors of ``R^d``, orthonormalised (thesis §5.3).

    With ``per_sample=True`` every sample gets its own subspace, drawn from a generator
    seeded with ``(seed, sample id)``, so a sample's subspace does not depend on the
    batch it is in; bases of recently seen samples are cached (``cache`` of them).

    Args:
        m: Dimension of the subspace (``m = 1``: random noise; ``m > 1``: semi-random).
        seed: Seed of the draw.
        per_sample: One subspace per sample instead of one for the batch.
        cache: Per-sample bases kept in memory.
    """

    def __init__(self, m: int, seed: int = 0, per_sample: bool = False, cache: int = 512) -> None:
        if m < 1:
            raise ValueError(f"The 'm' parameter of RandomSubspace must be >= 1. Got {m!r}.")
        self.m = m
        self.seed = seed
        self.per_sample = per_sample
        self.cache = cache
        self._shared: Tensor | None = None
        self._bases: OrderedDict[int, Tensor] = OrderedDict()

    def __repr__(self) -> str:
        return f"RandomSubspace(m={self.m}, seed={self.seed}, per_sample={self.per_sample})"

    def dimension(self, shape: Sequence[int]) -> int:
        """``m``."""
        return self.m

    def basis(
        self,
        d: int,
        sample: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        """The orthonormal basis ``(d, m)``, shared or of one sample id."""
        if self.m > d:
            raise ValueError(f"RandomSubspace needs m <= d; got m={self.m}, d={d}.")
        seed = self.seed if sample is None else self.seed * 1_000_003 + 7919 * (sample + 1)
        generator = torch.Generator().manual_seed(seed)
        gaussian = torch.randn(d, self.m, generator=generator, dtype=torch.float64)
        return _orthonormal(gaussian).to(device=device, dtype=dtype)

    def __call__(self, g: Tensor, index: Tensor) -> Tensor:
        """``P_S g`` for the samples ``index``."""
        d = math.prod(g.shape[2:])
        if not self.per_sample:
            if self._shared is None or self._shared.shape[0] != d:
                self._shared = self.basis(d, None, g.dtype, g.device)
            return _project_onto(g, self._shared.to(g.dtype))
        bases = torch.stack([self._sample_basis(int(i), d, g) for i in index.tolist()])
        return _project_onto(g, bases)

    def _sample_basis(self, sample: int, d: int, like: Tensor) -> Tensor:
        basis = self._bases.get(sample)
        if basis is None or basis.shape[0] != d:
            basis = self.basis(d, sample, like.dtype, like.device)
            self._bases[sample] = basis
            while len(self._bases) > self.cache:
                self._bases.popitem(last=False)
        return basis


def dct_matrix(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Orthonormal DCT-II matrix ``C`` (``n × n``): ``dct(x) = C x``, ``C⁻¹ = Cᵀ``.

    Built by `scipy.fft.dct` of the identity (``norm="ortho"``), so it is scipy's transform.
    """
    return torch.from_numpy(scipy.fft.dct(np.eye(n), norm="ortho", axis=0)).to(dtype)


class DCTBands(Subspace):
    """A frequency band of the orthonormal 2-D DCT basis, applied per channel (eq. 3.19).

    ``S_k = span{s_ij : ⌊i/B⌋ = ⌊j/B⌋ = k}``: band ``k`` is the ``B × B`` block of DCT
    coefficients on the diagonal at ``(kB, kB)`` (low frequencies for small ``k``),
    repeated in every channel, so ``m = B² C`` (fewer for the last, truncated block). The
    seed uses ``B = 10`` on 224×224 images; `default_block` scales that to the image size.
    The projection is ``IDCT(mask ⊙ DCT(g))`` with the separable transform
    ``C_H g C_Wᵀ``, which runs on any device.

    Args:
        block: ``B``.
        band: ``k``.
    """

    def __init__(self, block: int, band: int) -> None:
        if block < 1 or band < 0:
            raise ValueError(f"DCTBands needs block >= 1 and band >= 0; got {block}, {band}.")
        self.block = block
        self.band = band

    def __repr__(self) -> str:
        return f"DCTBands(block={self.block}, band={self.band})"

    @staticmethod
    def default_block(height: int) -> int:
        """``B = round(10 H / 224)``, at least 2 (the seed's 10 at 224 pixels)."""
        return max(2, round(10 * height / 224))

    @staticmethod
    def count(height: int, width: int, block: int) -> int:
        """Number of bands for an image of this size."""
        return math.ceil(min(height, width) / block)

    def mask(self, height: int, width: int) -> Tensor:
        """Boolean ``(H, W)`` mask of the band's DCT coefficients."""
        i = torch.arange(height)[:, None] // self.block
        j = torch.arange(width)[None, :] // self.block
        return (i == self.band) & (j == self.band)

    def dimension(self, shape: Sequence[int]) -> int:
        """``m`` = band coefficients × channels."""
        channels = shape[0] if len(shape) == 3 else 1
        return int(self.mask(shape[-2], shape[-1]).sum()) * channels

    def __call__(self, g: Tensor, index: Tensor) -> Tensor:
        """``P_S g`` on the last two (spatial) dimensions."""
        height, width = g.shape[-2:]
        c_h = dct_matrix(height).to(g.device, g.dtype)
        c_w = dct_matrix(width).to(g.device, g.dtype)
        coefficients = c_h @ g @ c_w.T
        coefficients = coefficients * self.mask(height, width).to(g.device, g.dtype)
        return c_h.T @ coefficients @ c_w


class Basis(Subspace):
    """Span of user-given vectors (orthonormalised by QR).

    Args:
        vectors: ``(m, *shape)`` or ``(m, d)`` spanning vectors (linearly independent).
    """

    def __init__(self, vectors: Tensor) -> None:
        if vectors.ndim < 2 or vectors.shape[0] < 1:
            raise ValueError(
                f"Basis needs vectors of shape (m, *shape) with m >= 1; got {tuple(vectors.shape)}."
            )
        flat = vectors.detach().flatten(1).T.to(torch.float64)
        basis = _orthonormal(flat)
        rank = int(torch.linalg.matrix_rank(flat))
        if rank < flat.shape[1]:
            raise ValueError(
                f"Basis needs linearly independent vectors; got {flat.shape[1]} of rank {rank}."
            )
        self.vectors = vectors
        self.matrix = basis  # (d, m), orthonormal columns

    def __repr__(self) -> str:
        return f"Basis(m={self.matrix.shape[1]}, d={self.matrix.shape[0]})"

    def dimension(self, shape: Sequence[int]) -> int:
        """``m``."""
        return int(self.matrix.shape[1])

    def __call__(self, g: Tensor, index: Tensor) -> Tensor:
        """``B Bᵀ g``."""
        return _project_onto(g, self.matrix.to(g.device, g.dtype))


def watermark_basis(
    words: Sequence[str],
    shape: Sequence[int],
    count: int,
    seed: int = 0,
    scale_range: tuple[float, float] = (0.5, 1.5),
) -> Basis:
    """Span of randomly placed and scaled renderings of `words` (thesis Fig. 3.12).

    Each of the `count` vectors is one word, drawn with Pillow's default font at a random
    scale and position (fully inside the image), on a black background, repeated in every
    channel.

    Args:
        words: Words to render, used in turn.
        shape: Per-sample input shape ``(C, H, W)``.
        count: ``m``, the number of rendered vectors.
        seed: Seed of positions and scales.
        scale_range: Range of font scales relative to the default font.
    """
    from PIL import Image, ImageDraw, ImageFont

    channels, height, width = shape
    rng = np.random.default_rng(seed)
    images = []
    for k in range(count):
        word = words[k % len(words)]
        size = max(6, round(11 * rng.uniform(*scale_range)))
        font = ImageFont.load_default(size=size)
        left, top, right, bottom = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox(
            (0, 0), word, font=font
        )
        text_w, text_h = math.ceil(right - left), math.ceil(bottom - top)
        canvas = Image.new("L", (width, height), 0)
        x0 = int(rng.integers(0, max(1, width - text_w + 1))) - math.floor(left)
        y0 = int(rng.integers(0, max(1, height - text_h + 1))) - math.floor(top)
        ImageDraw.Draw(canvas).text((x0, y0), word, fill=255, font=font)
        array = np.asarray(canvas, dtype=np.float32) / 255.0
        images.append(np.repeat(array[None], channels, axis=0))
    return Basis(torch.from_numpy(np.stack(images)))
