"""``boundaryscope compare``: models side by side before and after a defence (thesis Part III).

`compare_report` resolves model specs (a `boundaryscope train` run directory brings its
training history and its base model), runs `assess` on the same test images for each
(`compare_models`) and writes ``comparison.json``, figures and ``report.html``. The page
only renders the results: `render_comparison` reads them back, never recomputes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from boundaryscope._io import dump_json, from_jsonable, to_jsonable
from boundaryscope.classifier import Classifier, resolve_device
from boundaryscope.data import load_dataset
from boundaryscope.defenses.assessment import TRUSTED, AssessmentConfig, compare_models
from boundaryscope.report import figures
from boundaryscope.report.registry import Section, finite_median, format_number
from boundaryscope.report.runner import write_html
from boundaryscope.zoo import InputSpec, is_code_spec, load_model, read_run_card

__all__ = ["SETTINGS", "compare_report", "render_comparison"]

SETTINGS: dict[str, AssessmentConfig] = {
    "default": AssessmentConfig(),
    "full": AssessmentConfig(
        n=1000, spsa_n=500, spsa_steps=50, spsa_samples=64, curvature_n=100,
        evaluation="standard",
    ),
    "quick": AssessmentConfig(
        n=48, curve_points=3, pgd_steps=5, spsa_n=8, spsa_steps=3, spsa_samples=4,
        evaluation="quick",
        curvature_n=3, k=3, surface_resolution=9,
    ),
}  # fmt: skip
MASKING_POINTS = 0.05  # SPSA beating PGD by more than this flags gradient masking (§8.5.1)


def _resolve(specs: list[str]) -> list[str]:
    """One run directory alone is compared with the model it was trained from.

    The base model is read from the run card, which is data: a base that names code
    (``./net.py:factory``) is never imported from there — the user names it instead.
    """
    if len(specs) == 1:
        card = Path(specs[0]) / "train.json"
        if card.is_file():
            base = read_run_card(card).get("base_model")
            if base and is_code_spec(str(base)):
                raise ValueError(
                    f"{card} says its base model was your own code {str(base)[:200]!r}; "
                    "boundaryscope never imports code that a file names. Name both models "
                    f"yourself: compare {str(base)[:200]} {specs[0]} --arch {str(base)[:200]}"
                )
            if base:
                return [str(base), specs[0]]
    if not specs:
        raise ValueError("compare needs at least one model spec or run directory; got none.")
    return specs


def _label(spec: str, used: set[str]) -> str:
    label = Path(spec).name if Path(spec).is_dir() else spec
    while label in used:
        label += "'"
    used.add(label)
    return label


def compare_report(
    specs: list[str],
    out: str | Path,
    *,
    data: str = "mnist5k",
    arch: str | None = None,
    inputs: InputSpec | None = None,
    profile: str = "default",
    n: int | None = None,
    device: str | None = None,
    seed: int = 0,
    progress: bool | None = None,
    on_model_end: Callable[[str, float], None] | None = None,
) -> Path:
    """Assesses each model on the same test images and writes the comparison page.

    Args:
        specs: Model specs or run directories (one run directory alone is compared with
            its base model).
        out: Output directory (``comparison.json``, PNG figures, ``report.html``).
        data: Data spec; its test split is used.
        arch: Architecture for bare weights files.
        inputs: Bounds and normalisation stated by the user, for every model.
        profile: Sizes from `SETTINGS`.
        n: Test images (overrides the profile).
        device: ``cpu``, ``cuda``, … (default: CUDA when available).
        seed: Seed of the attacks' random draws.
        progress: Progress bars (``None``: only on a terminal).
        on_model_end: Called as ``on_model_end(label, seconds)`` after each model.

    Returns:
        The path of ``report.html``.
    """
    if profile not in SETTINGS:
        raise ValueError(f"profile must be one of {sorted(SETTINGS)}; got {profile!r}.")
    config = SETTINGS[profile]
    if n is not None:
        if n < 1:
            raise ValueError(f"n must be a positive number of test images; got {n}.")
        config = AssessmentConfig(**{**asdict(config), "n": n})
    run_device = resolve_device(device)
    specs = _resolve(list(specs))
    used: set[str] = set()
    models: dict[str, Classifier] = {}
    cards: dict[str, dict[str, Any]] = {}
    for spec in specs:  # every run card is checked before any model is loaded or measured
        if (Path(spec) / "train.json").is_file():
            read_run_card(Path(spec) / "train.json")
    for spec in specs:
        loaded = load_model(spec, arch=arch, inputs=inputs)
        label = _label(spec, used)
        models[label] = Classifier(
            loaded.module,
            bounds=loaded.bounds,
            preprocessing=loaded.preprocessing,
            device=run_device,
        )
        cards[label] = {"spec": spec, **_card_summary(loaded.card)}
    test = load_dataset(data, "test").subset(config.n)
    start = time.perf_counter()
    results = compare_models(
        models, test.x, test.y, config, seed=seed, progress=progress, on_model_end=on_model_end
    )
    payload = from_jsonable(
        to_jsonable(
            {
                "meta": {"models": specs, "data": data, "n": len(test), "seed": seed,
                         "profile": profile, "seconds": time.perf_counter() - start},
                "cards": cards,
                "models": results,
            }
        )
    )  # fmt: skip
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    dump_json(out_dir / "comparison.json", payload)
    sections = render_comparison(payload, out_dir)
    meta = {
        "model": " vs ".join(models),
        "data": data,
        "n": len(test),
        "profile": profile,
        "seed": seed,
    }
    return write_html(out_dir, meta, {}, sections, title="Defence comparison")


def _card_summary(card: dict[str, Any]) -> dict[str, Any]:
    """What the page shows about how a model was made (run cards carry a history)."""
    keys = ("defense", "objective", "config", "history", "preparation", "base_model", "seconds")
    return {k: card[k] for k in keys if k in card}


# ---------------------------------------------------------------------- rendering
def render_comparison(payload: dict[str, Any], out_dir: Path) -> list[Section]:
    """The comparison page's sections, drawn from `compare_report`'s JSON alone."""
    models: dict[str, dict[str, Any]] = payload["models"]
    cards: dict[str, dict[str, Any]] = payload.get("cards", {})
    sections = [
        _summary_section(models, cards),
        _robust_section(models, out_dir),
        _curvature_section(models, out_dir),
        _surface_section(models, out_dir),
    ]
    histories = {k: c["history"] for k, c in cards.items() if c.get("history")}
    if histories:
        sections.append(_history_section(histories, cards, out_dir))
    return sections


def _pct(value: Any) -> str:
    return format_number(None if value is None else 100 * float(value), ".1f")


def _training_cost(card: dict[str, Any]) -> tuple[str, str]:
    history = [r for r in card.get("history", []) if "backward_per_image" in r]
    if not history:
        return "—", "—"
    passes = float(np.mean([r["backward_per_image"] for r in history]))
    seconds = float(np.mean([r["seconds"] for r in history]))
    return f"{passes:.1f}", f"{seconds:.1f}"


def _summary_section(models: dict[str, Any], cards: dict[str, Any]) -> Section:
    header = ["", *models]
    rows = [
        ["defence", *[str(cards.get(m, {}).get("defense", "— (as given)")) for m in models]],
        ["clean accuracy (%)", *[_pct(r["clean_accuracy"]) for r in models.values()]],
        *[[f"robust accuracy, l∞ ε = {e} (%, trusted)",
           *[_pct(r["robust"][e].get(TRUSTED)) for r in models.values()]]
          for e in list(next(iter(models.values()))["robust"])[-1:]],
        ["ρ_adv, DeepFool l2", *[format_number(r["rho_adv_l2"], ".3f") for r in models.values()]],
        ["ρ_adv, DeepFool l∞", *[format_number(r["rho_adv_linf"], ".3f") for r in models.values()]],
        ["median ‖r‖₂ (input units)",
         *[format_number(r["median_norm_l2"], ".3f") for r in models.values()]],
        ["median ‖r‖∞ (input units)",
         *[format_number(r["median_norm_linf"], ".3f") for r in models.values()]],
        ["backward passes per training image per epoch",
         *[_training_cost(cards.get(m, {}))[0] for m in models]],
        ["training seconds per epoch", *[_training_cost(cards.get(m, {}))[1] for m in models]],
    ]  # fmt: skip
    n = next(iter(models.values()))["n"]
    return Section(
        title="Models compared",
        intro=(
            f"Every model is measured on the same {n} test images. ρ_adv is the mean ratio "
            "‖r(x)‖/‖x‖ of DeepFool's minimal perturbation over correctly classified images "
            "([[thesis, §3.2]]; Fig. 3.6 tracks it during DeepFool fine-tuning). Training cost "
            "counts backward passes through the network per training image (attacks and "
            "input gradients included; 1 for plain training) and is averaged over the "
            "run's epochs."
        ),
        tables=[("Summary", header, rows)],
    )


def _attack_label(name: str, first: dict[str, Any]) -> str:
    """Row label of an attack of the robust-accuracy table (the trusted one says what it ran)."""
    if name == TRUSTED:
        return f"trusted: {first.get('evaluation', {}).get('description', 'the evaluator')}"
    if name.startswith("pgd"):
        return f"{name} (upper bound)"
    return name


def _robust_section(models: dict[str, Any], out_dir: Path) -> Section:
    first = next(iter(models.values()))
    epsilons = [f"{e:g}" for e in first["epsilons"]]
    header = ["attack", *[f"{m}, ε = {e}" for e in epsilons for m in models]]
    attacks = list(first["robust"][epsilons[0]])
    rows = [
        [_attack_label(name, first),
         *[_pct(models[m]["robust"][e].get(name)) for e in epsilons for m in models]]
        for name in attacks
    ]  # fmt: skip
    pgd = next(name for name in attacks if name.startswith("pgd"))
    rows.append(
        ["FGSM − PGD gap (points)",
         *[format_number(100 * (models[m]["robust"][e]["fgsm"] - models[m]["robust"][e][pgd]),
                         ".1f") for e in epsilons for m in models]]
    )  # fmt: skip
    spsa_n = first["spsa"]["n"]
    rows.append(
        [f"SPSA (first {spsa_n} images)",
         *[_pct(models[m]["spsa"]["spsa"][i]) for i in range(len(epsilons)) for m in models]]
    )  # fmt: skip
    rows.append(
        [f"{pgd} (same {spsa_n} images)",
         *[_pct(models[m]["spsa"]["pgd"][i]) for i in range(len(epsilons)) for m in models]]
    )  # fmt: skip
    notes = []
    for m, result in models.items():
        spsa, pgd_same = result["spsa"]["spsa"], result["spsa"]["pgd"]
        for e, s, g in zip(epsilons, spsa, pgd_same, strict=True):
            if s < g - MASKING_POINTS:
                notes.append(
                    f"{m} at ε = {e}: gradient-free SPSA leaves {100 * s:.1f}% robust, "
                    f"{100 * (g - s):.1f} points below PGD — PGD's gradients may be masked, "
                    "trust the lower number ([[thesis, §8.5.1]])."
                )
    curves = {
        f"{m} — {name}": values
        for m, result in models.items()
        for name, values in result["curves"]["accuracy"].items()
        if name != "fgsm"
    }
    fig, ax = figures.lines(
        first["curves"]["epsilons"],
        {k: [100 * v for v in vals] for k, vals in curves.items()},
        "ε (l∞, input units)",
        "robust accuracy (%)",
    )
    ax.set_ylim(0, 100)
    figure = figures.save(fig, out_dir / "compare_accuracy_vs_eps.png")
    return Section(
        title="Robust accuracy",
        intro=(
            "Robust accuracy is the share of all test images that are correctly classified "
            "and not fooled within an l∞ budget ε (input units). l∞ DeepFool fools an image "
            "at ε when its minimal l∞ perturbation is at most ε; FGSM, PGD and SPSA are run "
            "at each ε. FGSM is one step, so it over-states robustness where the loss is "
            "curved; the FGSM − PGD gap shrinks once training has flattened the loss "
            "([[thesis, Table 8.1]]). SPSA needs no gradient: if it finds more adversarial "
            "examples than PGD, PGD's gradients are masked ([[thesis, §8.5.1]])."
        ),
        tables=[("Robust accuracy (%) per attack and budget", header, rows)],
        figures=[
            (
                figure,
                "Robust accuracy vs ε under PGD (the strongest here) and l∞ DeepFool, per "
                "model ([[thesis, Fig. 8.6]]).",
            )
        ],
        notes=notes,
    )


def _curvature_section(models: dict[str, Any], out_dir: Path) -> Section:
    profiles = {
        m: r["loss_curvature"]["relative_eigenvalues_mean"]
        for m, r in models.items()
        if r.get("loss_curvature")
    }
    if not profiles:
        return Section("Loss curvature", "No correctly classified image to measure at.")
    fig, ax = figures.spectrum_ends(profiles, "eigenvalue rank", "mean of λ_i(∇²ℓ(x)) / ‖∇ℓ(x)‖")
    ax.set_yscale("symlog", linthresh=1e-2)
    figure = figures.save(fig, out_dir / "compare_loss_curvature.png")

    rows = []
    for m, r in models.items():
        lc = r.get("loss_curvature") or {}
        if not lc:
            continue
        rows.append(
            [
                m,
                str(lc["n"]),
                format_number(finite_median(lc["loss"]), ".2g"),
                format_number(finite_median(lc["top_eigenvalue"]), ".3g"),
                format_number(finite_median(lc["relative_top"]), ".3g"),
                format_number(finite_median(lc["alignment"]), ".2f"),
                format_number(finite_median(lc["lower"]), ".3g"),
                format_number(finite_median(lc["upper"]), ".3g"),
                format_number(finite_median(lc["deepfool_l2"]), ".3g"),
                _pct(lc["lower_below_deepfool"]),
            ]
        )
    header = [
        "model",
        "images",
        "loss ℓ(x) (median)",
        "top eigenvalue ν (median)",
        "ν/‖∇ℓ‖ (median, 1/input units)",
        "alignment |gᵀu|/‖g‖ (median)",
        "Theorem 5 lower (median)",
        "Theorem 5 upper (median)",
        "DeepFool ‖r‖₂ (median)",
        "lower ≤ DeepFool (%)",
    ]
    return Section(
        title="Loss curvature and Theorem 5",
        intro=(
            "Extreme eigenvalues of the input Hessian of the loss ∇²ℓ(x) at correctly "
            "classified test images, by Lanczos on finite-difference Hessian-vector "
            "products ([[thesis, eq. 8.1, Fig. 8.2]]): adversarial training and CURE flatten "
            "the loss. The raw eigenvalues scale with the softmax's saturation: a very "
            "confident model has ℓ(x) near 1e-7 and a tiny Hessian however bent its "
            "boundary, so the figure and the ν/‖∇ℓ‖ column divide each image's eigenvalues "
            "by its gradient norm (the curvature of the loss's level set, 1/length), which "
            "compares models. Theorem 5 ([[thesis, §8.3]]) bounds the smallest perturbation "
            "that raises the loss to log 2 under a quadratic model; it is tighter the "
            "more the gradient g aligns with the top eigenvector u (seed: 0.43 before, "
            "0.90 after fine-tuning)."
        ),
        tables=[("Curvature, alignment and Theorem 5 (l2, input units)", header, rows)],
        figures=[
            (
                figure,
                "Mean over images of the k largest and k smallest eigenvalues, each divided "
                "by the image's gradient norm, per model.",
            )
        ],
    )


def _surface_section(models: dict[str, Any], out_dir: Path) -> Section:
    panels = [
        (m, r["surface"]) for m, r in models.items() if r.get("surface", {}).get("negative_loss")
    ]
    if not panels:
        return Section("Loss surface", "No image was correctly classified by every model.")
    fig = figures.loss_surfaces(
        [
            (f"{m} (‖r‖₂ = {s['distance']:.2f})", s["a"], s["b"], s["negative_loss"])
            for m, s in panels
        ]
    )
    figure = figures.save(fig, out_dir / "compare_loss_surface.png")
    first = panels[0][1]
    return Section(
        title="Loss surface on a normal section",
        intro=(
            f"−ℓ on the plane through test image #{first['index']} spanned by each model's "
            "own DeepFool normal n and a random direction v, over the same square "
            f"[−{first['radius']:.2f}, {first['radius']:.2f}]² (l2, input units) for every "
            "model ([[thesis, Fig. 8.3]]): a curved, cliff-like surface before, a flatter, "
            "almost linear one after adversarial training or CURE."
        ),
        figures=[(figure, "−loss over the plane; the image sits at the centre.")],
    )


def _history_section(
    histories: dict[str, list[dict[str, float]]], cards: dict[str, Any], out_dir: Path
) -> Section:
    figs = []
    for key, label in (("rho_adv", "ρ_adv (DeepFool l2)"), ("test_accuracy", "test accuracy")):
        series = {m: [float(r.get(key, math.nan)) for r in h] for m, h in histories.items()}
        epochs = range(max(len(v) for v in series.values()))
        fig, _ = figures.lines(epochs, series, "extra epoch", label)
        figs.append((figures.save(fig, out_dir / f"compare_history_{key}.png"), label))
    rows = []
    for m, history in histories.items():
        for record in history:
            rows.append(
                [
                    m,
                    str(int(record["epoch"])),
                    _pct(record.get("test_accuracy")),
                    format_number(record.get("rho_adv"), ".4f"),
                    format_number(record.get("loss"), ".4f"),
                    format_number(record.get("backward_per_image"), ".1f"),
                    format_number(record.get("seconds"), ".1f"),
                ]
            )
    header = ["run", "epoch", "test acc. (%)", "ρ_adv", "train loss", "backward/img", "s"]
    return Section(
        title="Training history",
        intro=(
            "Per-epoch record of each training run (epoch 0 is the model before "
            "training), measured on the run's monitored test images ([[thesis, Fig. 3.6]])."
        ),
        tables=[("History", header, rows)],
        figures=[(f, f"{label} per extra epoch.") for f, label in figs],
    )
