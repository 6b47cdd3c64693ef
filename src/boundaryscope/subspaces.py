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
from typing import Literal

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
    """A random ``m``-dimensional subspace of ``R^d`` (thesis §5.3), dense or structured.

    ``structure="dense"``: the span of ``m`` i.i.d. Gaussian vectors, orthonormalised (QR) —
    a uniformly distributed subspace, as the theory assumes; it stores a ``(d, m)`` float64
    basis per subspace. ``"structured"``: the span of ``m`` columns of a randomised
    orthonormal transform, ``U = D Πᵀ Cᵀ E_J`` with ``D`` random signs, ``Π`` a random
    permutation, ``C`` the orthonormal DCT-II of length ``d`` (`scipy.fft.dct`) and ``J`` a
    random set of ``m`` coefficients; ``P_S g = U Uᵀ g`` costs two length-``d`` transforms
    and ``O(d)`` memory, however large ``m`` (randomised-Hadamard/DCT transforms of the
    Johnson–Lindenstrauss literature: a fixed vector keeps ``≈ m/d`` of its energy, which
    is what Theorem 1 needs). ``"auto"`` (default): dense when the basis takes at most
    64 MiB (every MNIST and CIFAR-sized case: the same subspaces as before), else
    structured (an ImageNet image at ``m = d/4`` would need 42 GB).

    With ``per_sample=True`` every sample gets its own subspace, drawn from a generator
    seeded with ``(seed, sample id)``, so a sample's subspace does not depend on the
    batch it is in; dense bases of recently seen samples are cached (``cache`` of them).

    Args:
        m: Dimension of the subspace (``m = 1``: random noise; ``m > 1``: semi-random).
        seed: Seed of the draw.
        per_sample: One subspace per sample instead of one for the batch.
        cache: Per-sample dense bases kept in memory.
        structure: ``"auto"``, ``"dense"`` or ``"structured"``.
    """

    DENSE_LIMIT = 64 << 20

    def __init__(
        self,
        m: int,
        seed: int = 0,
        per_sample: bool = False,
        cache: int = 512,
        structure: Literal["auto", "dense", "structured"] = "auto",
    ) -> None:
        if m < 1:
            raise ValueError(f"The 'm' parameter of RandomSubspace must be >= 1. Got {m!r}.")
        if structure not in ("auto", "dense", "structured"):
            raise ValueError(
                "The 'structure' parameter of RandomSubspace must be 'auto', 'dense' or "
                f"'structured'. Got {structure!r}."
            )
        self.m = m
        self.seed = seed
        self.per_sample = per_sample
        self.cache = cache
        self.structure = structure
        self._shared: Tensor | None = None
        self._bases: OrderedDict[int, Tensor] = OrderedDict()

    def __repr__(self) -> str:
        return (
            f"RandomSubspace(m={self.m}, seed={self.seed}, per_sample={self.per_sample}, "
            f"structure={self.structure!r})"
        )

    def dimension(self, shape: Sequence[int]) -> int:
        """``m``."""
        return self.m

    def is_structured(self, d: int) -> bool:
        """Whether subspaces of ``R^d`` are drawn structured (see the class docstring)."""
        if self.structure != "auto":
            return self.structure == "structured"
        return d * self.m * 8 > self.DENSE_LIMIT

    def _seed_of(self, sample: int | None) -> int:
        return self.seed if sample is None else self.seed * 1_000_003 + 7919 * (sample + 1)

    def basis(
        self,
        d: int,
        sample: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        """The orthonormal basis ``(d, m)``, shared or of one sample id.

        For a structured subspace the basis is built column by column from the transform
        (``d × m`` memory: for checks on small ``d``; projections never build it).
        """
        if self.m > d:
            raise ValueError(f"RandomSubspace needs m <= d; got m={self.m}, d={d}.")
        if self.is_structured(d):
            signs, permutation, chosen = self._transform(d, sample)
            coefficients = np.zeros((self.m, d))
            coefficients[np.arange(self.m), chosen.numpy()] = 1.0
            columns = _from_coefficients(torch.from_numpy(coefficients), signs, permutation)
            return columns.T.contiguous().to(device=device, dtype=dtype)
        generator = torch.Generator().manual_seed(self._seed_of(sample))
        gaussian = torch.randn(d, self.m, generator=generator, dtype=torch.float64)
        return _orthonormal(gaussian).to(device=device, dtype=dtype)

    def _transform(self, d: int, sample: int | None) -> tuple[Tensor, Tensor, Tensor]:
        """``(signs (d,), permutation (d,), chosen coefficients (m,))`` of a structured draw."""
        if self.m > d:
            raise ValueError(f"RandomSubspace needs m <= d; got m={self.m}, d={d}.")
        generator = torch.Generator().manual_seed(self._seed_of(sample))
        signs = torch.randint(0, 2, (d,), generator=generator, dtype=torch.float64) * 2 - 1
        permutation = torch.randperm(d, generator=generator)
        chosen = torch.randperm(d, generator=generator)[: self.m]
        return signs, permutation, chosen

    def __call__(self, g: Tensor, index: Tensor) -> Tensor:
        """``P_S g`` for the samples ``index``."""
        d = math.prod(g.shape[2:])
        if self.is_structured(d):
            samples = [None] * g.shape[0] if not self.per_sample else index.tolist()
            return torch.stack(
                [self._structured_projection(g[a], d, sample) for a, sample in enumerate(samples)]
            )
        if not self.per_sample:
            if self._shared is None or self._shared.shape[0] != d:
                self._shared = self.basis(d, None, g.dtype, g.device)
            return _project_onto(g, self._shared.to(g.dtype))
        bases = torch.stack([self._sample_basis(int(i), d, g) for i in index.tolist()])
        return _project_onto(g, bases)

    def _structured_projection(self, g: Tensor, d: int, sample: int | None) -> Tensor:
        """``U Uᵀ g`` for the ``(K, *shape)`` vectors of one sample, by two DCTs."""
        signs, permutation, chosen = self._transform(d, None if sample is None else int(sample))
        flat = g.reshape(g.shape[0], d).detach().to("cpu", torch.float64)
        coefficients = _to_coefficients(flat, signs, permutation)
        kept = torch.zeros_like(coefficients)
        kept[:, chosen] = coefficients[:, chosen]
        out = _from_coefficients(kept, signs, permutation)
        return out.to(device=g.device, dtype=g.dtype).view_as(g)

    def _sample_basis(self, sample: int, d: int, like: Tensor) -> Tensor:
        basis = self._bases.get(sample)
        if basis is None or basis.shape[0] != d:
            basis = self.basis(d, sample, like.dtype, like.device)
            self._bases[sample] = basis
            while len(self._bases) > self.cache:
                self._bases.popitem(last=False)
        return basis


def _to_coefficients(flat: Tensor, signs: Tensor, permutation: Tensor) -> Tensor:
    """``Uᵀ``-side transform ``C Π D v`` of rows ``v`` ``(K, d)`` (float64, CPU)."""
    mixed = (flat * signs)[:, permutation]
    return torch.from_numpy(scipy.fft.dct(mixed.numpy(), norm="ortho", axis=1))


def _from_coefficients(coefficients: Tensor, signs: Tensor, permutation: Tensor) -> Tensor:
    """The inverse, ``D Πᵀ Cᵀ c``, of rows ``c`` ``(K, d)`` (float64, CPU)."""
    mixed = torch.from_numpy(scipy.fft.idct(coefficients.numpy(), norm="ortho", axis=1))
    out = torch.empty_like(mixed)
    out[:, permutation] = mixed
    return out * signs


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
