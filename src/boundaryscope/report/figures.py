"""Figures drawn from analysis results only (never recomputed); each returns ``(fig, ax)``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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
    "class_colours",
    "class_names",
    "confusion_matrix",
    "example_grid",
    "fooling_curves",
    "histogram",
    "image_row",
    "label_graph",
    "lines",
    "loss_surface",
    "loss_surfaces",
    "noise_ratios",
    "norm_histograms",
    "roc_curves",
    "save",
    "section_gallery",
    "spectral_bars",
    "spectrum_ends",
    "stitched_path",
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
    """Histograms of minimal-perturbation norms, one panel per norm name.

    The panel names are the x-axis labels, so they should carry the units.
    """
    fig, axes = plt.subplots(1, len(norms), figsize=(4.2 * len(norms), 3.0), squeeze=False)
    for panel, (label, values) in zip(axes[0], norms.items(), strict=True):
        finite = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
        panel.hist(finite, bins=40, color="#3b6ea5")
        if finite.size:
            panel.axvline(np.median(finite), color="#c0392b", lw=1.2, label="median")
            panel.legend(fontsize=8)
        panel.set_xlabel(label)
        panel.set_ylabel("images")
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
    # A log axis over 2..10 has a single decade tick: label each measured √(d/m) instead.
    ticks = sorted(set(scale.round(2)))
    ax.set_xticks(ticks, [f"{v:.3g}" for v in ticks])
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


def class_names(names: Sequence[str] | None, label_maps: Iterable[Any]) -> list[str]:
    """A name for every label up to the largest in `label_maps`: `names`, then numbers.

    The data's names may cover fewer classes than the model predicts (a 1,000-class model
    on an ``npz`` file whose labels stop at 697): labels beyond them are named by number.
    """
    highest = max((int(np.max(labels)) for labels in label_maps if np.size(labels)), default=0)
    known = list(names or [])
    return known + [str(i) for i in range(len(known), highest + 1)]


def class_colours(count: int) -> Any:
    """One fixed colour per class index (tab10 / tab20, else a sampled hsv)."""
    from matplotlib.colors import ListedColormap

    if count <= 20:
        base = plt.get_cmap("tab10" if count <= 10 else "tab20")
        return ListedColormap([base(i) for i in range(count)])
    return ListedColormap(plt.get_cmap("hsv")(np.linspace(0, 1, count, endpoint=False)))


def _label_map(
    ax: Axes, labels: np.ndarray, extent: tuple[float, float, float, float], colours: Any
) -> None:
    ax.imshow(
        labels,
        origin="lower",
        extent=extent,
        cmap=colours,
        vmin=-0.5,
        vmax=colours.N - 0.5,
        interpolation="nearest",
        aspect="auto",
    )


def _class_legend(fig: Figure, seen: set[int], classes: Sequence[str], colours: Any) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=colours(c), label=classes[c]) for c in sorted(seen)]
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=min(len(handles), 10),
        fontsize=8,
        title="predicted class",
        title_fontsize=8,
        bbox_to_anchor=(0.5, -0.02),
    )


def section_gallery(
    images: Sequence[Mapping[str, Any]],
    directions: Sequence[str],
    a: Sequence[float],
    b: Sequence[float],
    classes: Sequence[str],
) -> tuple[Figure, Axes]:
    """Normal cross-sections (thesis Fig. 5.5, 6.7): rows = images, columns = directions.

    Each panel is the label map on ``x + ||r|| (a n + b v)``; the black line is the boundary
    of the image's region, ○ the image, ★ its DeepFool point ``(a, b) = (1, 0)``.

    Args:
        images: Per image ``{"sections": [{"labels", "boundary", "direction"}...],
            "source", "radius"}`` (``boundaryscope.geometry.sections.sections_study``).
        directions: Column names.
        a: Normal coordinates (rows of ``labels``).
        b: Tangent coordinates (columns).
        classes: Class names by label.
    """
    colours = class_colours(len(classes))
    rows, cols = len(images), len(directions)
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.6 * cols, 2.3 * rows + 0.6), squeeze=False, sharex=True, sharey=True
    )
    extent = (b[0], b[-1], a[0], a[-1])
    seen: set[int] = set()
    for i, image in enumerate(images):
        for j, section in enumerate(image["sections"]):
            ax = axes[i][j]
            labels = np.asarray(section["labels"])
            seen.update(int(v) for v in np.unique(labels))
            _label_map(ax, labels, extent, colours)
            for line in section["boundary"]:
                points = np.asarray(line)
                ax.plot(points[:, 1], points[:, 0], color="black", lw=0.9)
            ax.plot([0], [0], "o", mfc="white", mec="black", ms=5)
            ax.plot([0], [1], "*", mfc="white", mec="black", ms=8)
            if i == 0:
                ax.set_title(section["direction"], fontsize=9)
            if j == 0:
                ax.set_ylabel(
                    f"{classes[image['source']]}, ‖r‖={image['radius']:.2f}\nn (units of ‖r(x)‖)",
                    fontsize=7,
                )
            if i == rows - 1:
                ax.set_xlabel("v (units of ‖r(x)‖)", fontsize=7)
            ax.tick_params(labelsize=6)
    _class_legend(fig, seen, classes, colours)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig, axes[0][0]


def loss_surface(
    a: Sequence[float], b: Sequence[float], negative_loss: Sequence[Sequence[float]]
) -> tuple[Figure, Axes]:
    """``−ℓ`` on a normal section as a surface (thesis Fig. 8.3); the image is the dot."""
    fig = plt.figure(figsize=(5.0, 3.8))
    ax = fig.add_subplot(projection="3d")
    grid_b, grid_a = np.meshgrid(np.asarray(b), np.asarray(a))
    z = np.asarray(negative_loss, dtype=float)
    ax.plot_surface(grid_b, grid_a, z, cmap="viridis", linewidth=0, antialiased=True)
    origin = np.unravel_index(
        np.argmin(np.hypot(grid_a, grid_b)), grid_a.shape
    )  # the grid point nearest the image
    ax.scatter([0], [0], [z[origin]], color="#1f77b4", s=30, depthshade=False)
    ax.set_xlabel("v (units of ‖r‖)", fontsize=7)
    ax.set_ylabel("n (units of ‖r‖)", fontsize=7)
    ax.set_zlabel("−loss", fontsize=7)
    ax.tick_params(labelsize=6)
    return fig, ax  # type: ignore[return-value]


def loss_surfaces(
    panels: Sequence[tuple[str, Sequence[float], Sequence[float], Sequence[Sequence[float]]]],
) -> Figure:
    """Several ``−ℓ`` surfaces side by side on one z scale (thesis Fig. 8.3, before/after).

    Each panel is ``(title, a, b, negative_loss)`` with axes in input units.
    """
    fig = plt.figure(figsize=(4.2 * len(panels), 3.8))
    values = [np.asarray(z, dtype=float) for _, _, _, z in panels]
    low = min(float(v.min()) for v in values)
    for i, ((title, a, b, _), z) in enumerate(zip(panels, values, strict=True)):
        ax = fig.add_subplot(1, len(panels), i + 1, projection="3d")
        grid_b, grid_a = np.meshgrid(np.asarray(b), np.asarray(a))
        ax.plot_surface(grid_b, grid_a, z, cmap="viridis", linewidth=0, antialiased=True)
        centre = np.unravel_index(np.argmin(np.hypot(grid_a, grid_b)), grid_a.shape)
        ax.scatter([0], [0], [z[centre]], color="#d62728", s=30, depthshade=False)
        ax.set_zlim(low, 0.0)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("v", fontsize=7)
        ax.set_ylabel("n", fontsize=7)
        ax.set_zlabel("−loss", fontsize=7)
        ax.tick_params(labelsize=6)
    return fig


def stitched_path(
    panels: Sequence[Mapping[str, Any]], classes: Sequence[str], label: int
) -> tuple[Figure, Axes]:
    """Classification regions along an Alg. 5 path (thesis Fig. 7.2, right).

    Panel ``i`` is the plane through anchor ``p_i`` spanned by ``r(x1)`` (vertical) and
    ``p_{i+1} − p_i`` (horizontal), both in units of ``||r(x1)||``; the white line is the
    path segment, dots the anchors. Panels are placed side by side with gaps and equal
    widths: their horizontal axes differ (each title gives its segment's length).

    Args:
        panels: ``{"a", "b", "labels", "end": [β, α]}`` per segment.
        classes: Class names.
        label: The path's class.
    """
    colours = class_colours(len(classes))
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(min(1.2 + 1.6 * len(panels), 14), 3.0),
        squeeze=False,
        sharey=True,
        gridspec_kw={"wspace": 0.08},
    )
    seen: set[int] = {label}
    for k, (ax, panel) in enumerate(zip(axes[0], panels, strict=True)):
        labels = np.asarray(panel["labels"])
        seen.update(int(v) for v in np.unique(labels))
        a, b = panel["a"], panel["b"]
        _label_map(ax, labels, (b[0], b[-1], a[0], a[-1]), colours)
        beta, alpha = panel["end"]
        ax.plot([0, beta], [0, alpha], color="white", lw=1.5)
        ax.plot([0, beta], [0, alpha], "o", mfc="white", mec="black", ms=4)
        ax.set_xticks([])
        start = "x1" if k == 0 else f"p{k}"
        end = "x2" if k == len(panels) - 1 else f"p{k + 1}"
        ax.set_title(f"{start}→{end}\n{float(b[-1]):.2g}‖r‖", fontsize=7)
    axes[0][0].set_ylabel("r(x1) (units of ‖r(x1)‖)", fontsize=7)
    _class_legend(fig, seen, classes, colours)
    fig.subplots_adjust(bottom=0.22)
    return fig, axes[0][0]


def histogram(
    values: Mapping[str, Sequence[float]], xlabel: str, bins: int = 30
) -> tuple[Figure, Axes]:
    """Overlaid histograms of named samples (non-finite values dropped)."""
    fig, ax = _figure(None, (5.2, 3.2))
    for name, series in values.items():
        finite = np.asarray([v for v in series if np.isfinite(v)], dtype=float)
        if finite.size:
            ax.hist(finite, bins=bins, alpha=0.6, label=f"{name} (n={finite.size})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("pairs")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # no finite value at all: nothing to name
        ax.legend(fontsize=8)
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
