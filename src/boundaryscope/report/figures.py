"""Figures drawn from analysis results only (never recomputed); each returns ``(fig, ax)``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

__all__ = [
    "confusion_matrix",
    "example_grid",
    "fooling_curves",
    "image_row",
    "label_graph",
    "lines",
    "noise_ratios",
    "norm_histograms",
    "roc_curves",
    "save",
    "spectral_bars",
    "spectrum_ends",
]


def save(fig: Figure, path: Path) -> str:
    """Writes `fig` as PNG (atomically) and closes it; returns the file name."""
    from boundaryscope._io import atomic_write

    atomic_write(
        path, lambda handle: fig.savefig(handle, format="png", dpi=110, bbox_inches="tight")
    )
    plt.close(fig)
    return path.name


def confusion_matrix(
    matrix: Sequence[Sequence[int]], classes: Sequence[str], ax: Axes | None = None
) -> tuple[Figure, Axes]:
    """Confusion matrix heat map (rows: true class, columns: predicted class)."""
    fig, ax = _figure(ax, (4.6, 4.0))
    data = np.asarray(matrix, dtype=float)
    image = ax.imshow(data, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), value in np.ndenumerate(data):
        if value:
            ax.text(
                j,
                i,
                f"{int(value)}",
                ha="center",
                va="center",
                fontsize=6,
                color="white" if value > data.max() / 2 else "black",
            )
    fig.colorbar(image, ax=ax, fraction=0.046)
    return fig, ax


def norm_histograms(
    norms: dict[str, Sequence[float]], ax: Axes | None = None
) -> tuple[Figure, Axes]:
    """Histograms of minimal-perturbation norms, one panel per norm name."""
    fig, axes = plt.subplots(1, len(norms), figsize=(4.2 * len(norms), 3.0), squeeze=False)
    for panel, (label, values) in zip(axes[0], norms.items(), strict=True):
        finite = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
        panel.hist(finite, bins=40, color="#3b6ea5")
        if finite.size:
            panel.axvline(np.median(finite), color="#c0392b", lw=1.2, label="median")
            panel.legend(fontsize=8)
        panel.set_xlabel(label)
        panel.set_ylabel("samples")
    return fig, axes[0][0]


def example_grid(
    originals: np.ndarray,
    perturbations: np.ndarray,
    adversarials: np.ndarray,
    titles: Sequence[tuple[str, str]],
) -> tuple[Figure, Axes]:
    """Rows: original, perturbation (rescaled to the full grey range), adversarial."""
    n = originals.shape[0]
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5.0), squeeze=False)
    for j in range(n):
        pert = perturbations[j]
        scale = np.abs(pert).max() or 1.0
        panels = [
            (originals[j], f"label {titles[j][0]}"),
            (0.5 + 0.5 * pert / scale, f"×{0.5 / scale:.1f}"),
            (adversarials[j], f"→ {titles[j][1]}"),
        ]
        for i, (image, title) in enumerate(panels):
            _show(axes[i][j], image)
            axes[i][j].set_title(title, fontsize=8)
    for i, name in enumerate(["original", "perturbation", "adversarial"]):
        axes[i][0].set_ylabel(name, fontsize=9)
    return fig, axes[0][0]


def fooling_curves(
    eps: Sequence[float],
    rates: Mapping[str, Sequence[float]],
    marker: float | None = None,
    xlabel: str = "ε (l∞)",
    ax: Axes | None = None,
) -> tuple[Figure, Axes]:
    """Fooling ratio against ε, one line per attack, optional vertical marker."""
    fig, ax = _figure(ax, (5.2, 3.4))
    for name, values in rates.items():
        ax.plot(eps, values, marker="o", ms=3, label=name)
    if marker is not None and np.isfinite(marker):
        ax.axvline(marker, color="#c0392b", ls="--", lw=1, label=f"ε = {marker:.3f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fooling ratio")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig, ax


def roc_curves(
    panels: Mapping[str, Mapping[str, Sequence[Sequence[float]]]],
) -> tuple[Figure, Axes]:
    """ROC curves: a panel per detector, a line per attack: ``{panel: {attack: [fpr, tpr]}}``."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels.items(), strict=True):
        for name, (fpr, tpr) in curves.items():
            if len(fpr):
                ax.plot(fpr, tpr, lw=1.2, label=name)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.6, ls="--", label="chance")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("false-positive rate (clean images flagged)")
        ax.set_ylabel("true-positive rate (perturbed images flagged)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return fig, axes[0][0]


def noise_ratios(
    ms: Sequence[int],
    d: int,
    ratios: Sequence[Sequence[float]],
    theorem1: Sequence[tuple[float, float]],
    corollary1: Sequence[tuple[float, float]],
    ax: Axes | None = None,
) -> tuple[Figure, Axes]:
    """Measured ``||r_S||/||r*||`` per subspace dimension against ``sqrt(d/m)`` and the bounds."""
    fig, ax = _figure(ax, (5.4, 3.6))
    scale = np.sqrt(d / np.asarray(ms, dtype=float))
    order = np.argsort(scale)
    ax.fill_between(
        scale[order],
        [corollary1[i][0] for i in order],
        [corollary1[i][1] for i in order],
        color="#f5d7a1",
        alpha=0.6,
        label="Corollary 1",
    )
    ax.fill_between(
        scale[order],
        [theorem1[i][0] for i in order],
        [theorem1[i][1] for i in order],
        color="#a9c7e8",
        alpha=0.8,
        label="Theorem 1",
    )
    ax.plot(scale[order], scale[order], "k--", lw=1, label="√(d/m)")
    for s_value, values in zip(scale, ratios, strict=True):
        jitter = s_value * (1 + 0.03 * np.random.default_rng(0).standard_normal(len(values)))
        ax.scatter(jitter, values, s=4, color="#3b6ea5", alpha=0.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):  # labelled minor ticks overlap on short log ranges
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("√(d/m)")
    ax.set_ylabel("‖r*_S‖ / ‖r*‖")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return fig, ax


def spectral_bars(
    bands: Sequence[int], zeta: Sequence[float], ax: Axes | None = None
) -> tuple[Figure, Axes]:
    """ζ per DCT band (thesis Fig. 3.11); the dashed line is a random subspace's ζ = 1."""
    fig, ax = _figure(ax, (5.4, 3.0))
    values = [v if np.isfinite(v) else np.nan for v in zeta]
    ax.bar([str(b) for b in bands], values, color="#3b6ea5")
    ax.axhline(1.0, color="#c0392b", ls="--", lw=1, label="random subspace")
    ax.set_xlabel("DCT band k (low → high frequency)")
    ax.set_ylabel("ζ")
    ax.legend(fontsize=8)
    return fig, ax


def image_row(images: Sequence[np.ndarray], titles: Sequence[str]) -> tuple[Figure, Axes]:
    """Images side by side, clipped to [0, 1] for display."""
    fig, axes = plt.subplots(1, len(images), figsize=(2.0 * len(images), 2.4), squeeze=False)
    for panel, image, title in zip(axes[0], images, titles, strict=True):
        _show(panel, image)
        panel.set_title(title, fontsize=8)
    return fig, axes[0][0]


def lines(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    xlabel: str,
    ylabel: str,
    log_y: bool = False,
    ax: Axes | None = None,
) -> tuple[Figure, Axes]:
    """One line per named series over a common x axis."""
    fig, ax = _figure(ax, (5.2, 3.4))
    for name, values in series.items():
        ax.plot(list(x)[: len(values)], values, marker="o", ms=2, label=name)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig, ax


def spectrum_ends(
    series: Mapping[str, Sequence[float]], xlabel: str, ylabel: str
) -> tuple[Figure, Axes]:
    """The k largest then the k smallest values of a spectrum, ranks 1…k, −k…−1, and 0."""
    length = len(next(iter(series.values())))
    k = length // 2
    fig, ax = lines(range(length), series, xlabel, ylabel)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(range(length), [*map(str, range(1, k + 1)), *map(str, range(-k, 0))])
    ax.tick_params(axis="x", labelsize=6)
    return fig, ax


def label_graph(
    edges: Sequence[Sequence[float]],
    classes: Sequence[str],
    ax: Axes | None = None,
) -> tuple[Figure, Axes]:
    """Dominant-label graph (thesis Fig. 4.7): classes on a circle, arrow i → j per edge.

    Args:
        edges: ``(i, j, share)`` triples; the arrow's width grows with ``share``.
        classes: Class names (node labels).
        ax: Axes to draw into (a new figure when ``None``).
    """
    fig, ax = _figure(ax, (4.2, 4.2))
    angles = np.linspace(0, 2 * np.pi, len(classes), endpoint=False) + np.pi / 2
    points = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    for i, j, share in edges:
        start, end = points[int(i)], points[int(j)]
        ax.annotate(
            "",
            xy=end,
            xytext=start,
            arrowprops={
                "arrowstyle": "-|>",
                "color": "#c0392b",
                "shrinkA": 12,
                "shrinkB": 12,
                "lw": 0.8 + 4 * float(share),
            },
        )
    ax.scatter(points[:, 0], points[:, 1], s=500, color="#a9c7e8", zorder=3)
    for (px, py), name in zip(points, classes, strict=True):
        ax.text(px, py, name, ha="center", va="center", fontsize=9, zorder=4)
    ax.set_xlim(-1.3, 1.3)
    ax.set_ylim(-1.3, 1.3)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def _figure(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax  # type: ignore[return-value]
    fig, new_ax = plt.subplots(figsize=size)
    return fig, new_ax


def _show(ax: Axes, image: Any) -> None:
    array = np.asarray(image, dtype=float)
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    ax.imshow(np.clip(array, 0, 1), cmap="gray" if array.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
