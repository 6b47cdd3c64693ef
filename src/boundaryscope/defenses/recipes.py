"""Named defences and the commands around them: train from scratch, fine-tune into a run.

`train_and_save` trains a zoo architecture (how the shipped weights were made);
`train_defense` fine-tunes a model spec with a named defence (`DEFENSES`) through the one
loop, `boundaryscope.defenses.training.fit`, and writes a run directory usable as
``--model DIR`` everywhere.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from boundaryscope._io import output_lock
from boundaryscope.classifier import Classifier, resolve_device
from boundaryscope.defenses.adversarial_training import (
    FGSMRS,
    NFGSM,
    TRADES,
    GradAlign,
    PGDTraining,
)
from boundaryscope.defenses.catalogue import (
    ACCURACY_BUDGET,
    DEFENSES,
    UNKNOWN_BASE_LR,
    UNKNOWN_BASE_OPTIMIZER,
    DefenseRecipe,
)
from boundaryscope.defenses.objectives import (
    CURE,
    DeepFoolFinetune,
    FGSMFinetune,
    Objective,
    Standard,
)
from boundaryscope.defenses.training import TrainConfig, accuracy, fit
from boundaryscope.defenses.watch import BEST, Monitor
from boundaryscope.metrics import CHANCE_MARGIN, chance_check

if TYPE_CHECKING:  # the zoo is imported where a model is loaded
    from boundaryscope.zoo import InputSpec

__all__ = [
    "DEFENSES",
    "DefenseRecipe",
    "chance_check",
    "defense_objective",
    "recipe_config",
    "train_and_save",
    "train_defense",
]


def train_and_save(
    arch: str,
    data: str,
    config: TrainConfig,
    out: str | Path,
    command: str | None = None,
    progress: bool | None = True,
) -> dict[str, object]:
    """Trains a zoo architecture on a data spec and writes ``out`` (.pt) plus a model card.

    The checkpoint holds ``state_dict``, ``arch``, ``arch_kwargs`` and ``bounds`` and is
    readable with ``torch.load(..., weights_only=True)``. The card (``out`` with suffix
    ``.json``) records the config, seed, test accuracy on the held-out split and the
    command that reproduces it.

    Returns:
        The model card.
    """
    from boundaryscope._io import dump_json, save_torch
    from boundaryscope.data import load_dataset
    from boundaryscope.zoo import build

    train_set = load_dataset(data, "train")
    test_set = load_dataset(data, "test")
    arch_kwargs = {
        "num_classes": len(train_set.classes),
        "in_channels": int(train_set.x.shape[1]),
        "image_size": int(train_set.x.shape[-1]),
    }
    torch.manual_seed(config.seed)
    model = build(arch, **arch_kwargs)
    result = fit(model, train_set.x, train_set.y, config, progress=progress)
    test_accuracy = accuracy(result.model, test_set.x, test_set.y)
    path = Path(out)
    save_torch(
        path,
        {
            "state_dict": result.model.state_dict(),
            "arch": arch,
            "arch_kwargs": arch_kwargs,
            "bounds": [0.0, 1.0],
        },
    )
    card: dict[str, object] = {
        "arch": arch,
        "arch_kwargs": arch_kwargs,
        "data": data,
        "bounds": [0.0, 1.0],
        "preprocessing": None,
        "config": asdict(config),
        "train_size": len(train_set),
        "test_size": len(test_set),
        "train_accuracy": result.history.accuracy[-1],
        "test_accuracy": test_accuracy,
        "watch": chance_check(test_accuracy, test_set.y),
        "torch_version": torch.__version__,
        "command": command,
    }
    dump_json(path.with_suffix(".json"), card)
    return card


# ---------------------------------------------------------------------- named defences
def defense_objective(
    name: str,
    *,
    eps: float | None = None,
    alpha: float = 2.0,
    steps: int = 10,
    beta: float | None = None,
    lam: float | None = None,
    h: float | None = None,
    ramp_epochs: float | None = None,
    xi: float = 0.3,
    seed: int = 0,
    box_width: float = 1.0,
) -> Objective:
    """The objective of a named defence (see `DEFENSES`).

    Args:
        name: A key of `DEFENSES`.
        eps: FGSM fine-tuning's step (default: the median l∞ minimal perturbation of the
            training images, `FGSMFinetune`) or the adversarial trainings' radius (default
            0.2 of the box width: Madry et al.'s 0.3 collapsed the shipped LeNet to a
            constant classifier when fine-tuned at lr 0.01, measured in
            benchmarks/robust_training.py).
        alpha: DeepFool magnification of ``deepfool-alpha``.
        steps: PGD-AT's and TRADES' inner iterations.
        beta: TRADES' ``β`` (default: `TRADES`' own).
        lam: CURE's ``λ`` (default 4) or GradAlign's (default 0.2).
        h: CURE's final ``h`` (l2, input units); default `CURE_H` of the box width.
        ramp_epochs: Epochs of CURE's ``h`` ramp (default 5, the seed's) or of PGD-AT's and
            TRADES' ε ramp (default 0: the full radius from the first step).
        xi: Radius of the universal pool.
        seed: Seed of the universal pool.
        box_width: ``hi − lo`` of the input box (scales the default radii and ``h``).
    """
    radius = eps if eps is not None else 0.2 * box_width
    factories: dict[str, Callable[[], Objective]] = {
        "standard": Standard,
        "deepfool": DeepFoolFinetune,
        "deepfool-alpha": lambda: DeepFoolFinetune(alpha=alpha),
        "fgsm": lambda: FGSMFinetune(eps=eps),
        "pgd": lambda: PGDTraining(eps=radius, steps=steps, eps_ramp_epochs=ramp_epochs or 0.0),
        "trades": lambda: TRADES(
            eps=radius,
            steps=steps,
            eps_ramp_epochs=ramp_epochs or 0.0,
            **({} if beta is None else {"beta": beta}),
        ),
        "fgsm-rs": lambda: FGSMRS(eps=radius, eps_ramp_epochs=ramp_epochs or 0.0),
        "n-fgsm": lambda: NFGSM(eps=radius, eps_ramp_epochs=ramp_epochs or 0.0),
        "gradalign": lambda: GradAlign(eps=radius, lam=GradAlign.lam if lam is None else lam),
        "cure": lambda: CURE(
            lam=4.0 if lam is None else lam,
            h=h if h is not None else CURE_H * box_width,
            ramp_epochs=5.0 if ramp_epochs is None else ramp_epochs,
        ),
    }
    if name == "universal":
        from boundaryscope.defenses.universal_pool import UniversalPool

        return UniversalPool(xi=xi, seed=seed)
    if name not in factories:
        raise ValueError(f"defense must be one of {sorted(DEFENSES)}; got {name!r}.")
    return factories[name]()


def train_defense(
    model: str,
    defense: str | Objective,
    out: str | Path,
    *,
    data: str = "mnist5k",
    arch: str | None = None,
    inputs: InputSpec | None = None,
    config: TrainConfig | None = None,
    overrides: Mapping[str, Any] | None = None,
    train_n: int | None = None,
    monitor_n: int = 500,
    monitor_eps: Sequence[float] = (),
    monitor_curvature_n: int = 0,
    monitor_fgsm: bool = False,
    resume: bool = False,
    device: str | None = None,
    command: str | None = None,
    progress: bool | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    **objective_options: Any,
) -> dict[str, Any]:
    """Fine-tunes a model spec with a named defence and writes a run directory.

    The directory holds ``checkpoint.pt`` (every epoch, for ``resume``), ``prepared.pt``
    (a perturbed training set, when the defence has one), ``model.pt`` (the defended
    model: ``state_dict`` with ``arch``/``arch_kwargs`` or ``factory``, ``bounds``,
    ``preprocessing``; readable with ``torch.load(..., weights_only=True)`` and usable as
    ``--model DIR`` everywhere) and ``train.json`` (the run card: settings, per-epoch
    history, cost, final test accuracy, the command).

    Args:
        model: Model spec of the network to defend (see `boundaryscope.zoo`).
        defense: A key of `DEFENSES`, or an `Objective`.
        out: Run directory.
        data: Data spec; the train split is trained on, the test split monitored.
        arch: Architecture of a bare weights file.
        inputs: Bounds and normalisation stated by the user (`boundaryscope.zoo.InputSpec`).
        config: Optimisation settings (default: the recipe's epochs, schedule and
            learning rate relative to the base model's).
        overrides: `TrainConfig` fields that replace those of `config` (or the recipe's).
        train_n: Train on the first `train_n` images of the (shuffled) train split only.
        monitor_n: Test images monitored per epoch (accuracy, ρ_adv).
        monitor_eps: l∞ budgets of a per-epoch PGD(20) robust accuracy.
        monitor_curvature_n: Monitored images whose loss curvature is tracked (Fig. 8.10).
        monitor_fgsm: Track FGSM's robustness estimate beside ρ_adv (Fig. 3.9).
        resume: Continue the run in `out`.
        device: ``cpu``, ``cuda``, … (default: CUDA when available).
        command: The command line, recorded in the card.
        progress: Progress bar (``None``: only on a terminal).
        on_epoch_end: Called as ``on_epoch_end(epoch, record)`` after each epoch's
            checkpoint (the command line prints a line per epoch when not on a terminal).
        **objective_options: Passed to `defense_objective`.

    Returns:
        The run card (also written to ``out/train.json``).
    """
    from boundaryscope._io import dump_json, save_torch
    from boundaryscope.data import load_dataset
    from boundaryscope.zoo import load_model

    loaded = load_model(model, arch=arch, inputs=inputs)
    run_device = resolve_device(device)
    clf = Classifier(
        loaded.module, bounds=loaded.bounds, preprocessing=loaded.preprocessing, device=run_device
    )
    recipe = DEFENSES["standard"]  # the schedule of a user-given objective
    if isinstance(defense, str):
        if defense not in DEFENSES:
            raise ValueError(f"defense must be one of {sorted(DEFENSES)}; got {defense!r}.")
        recipe = DEFENSES[defense]
        objective = defense_objective(
            defense, box_width=clf.bounds[1] - clf.bounds[0], **objective_options
        )
    else:
        objective = defense
    if config is None:
        config = recipe_config(recipe, loaded.card)
    config = _with_overrides(config, overrides or {})
    train = load_dataset(data, "train").subset(train_n)
    test = load_dataset(data, "test")
    monitored = test.subset(monitor_n)
    monitor = Monitor(
        monitored.x, monitored.y, pgd_eps=tuple(monitor_eps),
        curvature_n=monitor_curvature_n, fgsm_rho=monitor_fgsm,
    )  # fmt: skip
    directory = Path(out)
    with output_lock(directory):  # one run per directory, from the first epoch to the card
        start = time.perf_counter()
        result = fit(
            clf, train.x, train.y, config, objective=objective, monitor=monitor,
            run_dir=directory, resume=resume, progress=progress, on_epoch_end=on_epoch_end,
        )  # fmt: skip
        trained_clf = Classifier(result.model, bounds=clf.bounds, preprocessing=clf.preprocessing)
        test_accuracy = float(
            (trained_clf.predict(test.x, 500) == test.y.to(trained_clf.device)).float().mean()
        )
        # How the architecture is rebuilt comes from the loaded model itself (a zoo name or
        # the code the user named), never from the spec string: a run of a run is loadable.
        model_file = {
            **loaded.origin,
            "bounds": list(clf.bounds),
            "preprocessing": loaded.preprocessing,
        }
        state = {k: v.cpu() for k, v in result.model.state_dict().items()}
        save_torch(directory / "model.pt", {"state_dict": state, **model_file})
        if result.best_state is not None:  # loadable as --model DIR/best.pt
            save_torch(directory / BEST, {"state_dict": result.best_state, **model_file})
        card: dict[str, Any] = {
            **loaded.origin,
            "base_model": model,
            "defense": defense if isinstance(defense, str) else objective.name,
            "objective": objective.settings(),
            "config": asdict(config),
            "data": data,
            "bounds": list(clf.bounds),
            "preprocessing": loaded.preprocessing,
            "train_size": len(train),
            "test_size": len(test),
            "test_accuracy": test_accuracy,
            "base_test_accuracy": loaded.card.get("test_accuracy"),
            "history": result.history.records,
            "watch": _watch_summary(result.watch, test_accuracy, test.y),
            "preparation": result.preparation,
            "resumed_from": result.resumed_from,
            "seconds": time.perf_counter() - start,
            "torch_version": torch.__version__,
            "command": command,
        }
        dump_json(directory / "train.json", card)
    return card


# CURE's final h as a fraction of the box width; why not the seed's 1.5/255: docs/algorithms.md §10.
CURE_H = 1.0


def recipe_config(recipe: DefenseRecipe, card: Mapping[str, Any]) -> TrainConfig:
    """The optimisation settings a recipe fine-tunes a model with, given the model's card.

    Every recipe stops within `ACCURACY_BUDGET` of the model's monitored clean accuracy.
    A recipe with a fixed optimiser (CURE's Adam at 1e-3 → 1e-5) uses it. Otherwise a
    model whose card records an SGD training rate is fine-tuned with SGD at
    ``lr_factor`` times that rate (thesis §3.3); a model without one (a user's model) with
    Adam at `UNKNOWN_BASE_LR`, because a guessed SGD rate can destroy it.
    """
    schedule = TrainConfig(
        epochs=recipe.epochs, schedule=recipe.schedule, max_accuracy_drop=ACCURACY_BUDGET
    )
    if recipe.optimizer is not None and recipe.lr is not None:
        return dataclasses.replace(
            schedule, optimizer=recipe.optimizer, lr=recipe.lr, final_lr=recipe.final_lr
        )
    base = card.get("config", {}) if isinstance(card, Mapping) else {}
    base_lr = base.get("lr") if isinstance(base, Mapping) else None
    if isinstance(base_lr, int | float) and base.get("optimizer", "sgd") == "sgd" and base_lr > 0:
        return dataclasses.replace(schedule, lr=float(base_lr) * recipe.lr_factor)
    return dataclasses.replace(schedule, optimizer=UNKNOWN_BASE_OPTIMIZER, lr=UNKNOWN_BASE_LR)


def _with_overrides(config: TrainConfig, overrides: Mapping[str, Any]) -> TrainConfig:
    """`config` with the user's fields; a new ``lr`` drops a recipe's ``final_lr`` above it."""
    changed = dataclasses.replace(config, **{k: v for k, v in overrides.items() if k != "lr"})
    if "lr" in overrides:
        lr = float(overrides["lr"])
        changed = dataclasses.replace(changed, lr=lr, final_lr=min(changed.final_lr, lr))
    return changed


def _watch_summary(watch: dict[str, Any], accuracy: float, labels: torch.Tensor) -> dict[str, Any]:
    """The run's watch plus the chance check; ``at_chance`` only for a model the run broke.

    A model that was already at chance before the run (record 0 of the monitor) is not
    reported as destroyed by it.
    """
    check = chance_check(accuracy, labels)
    start = watch.get("start_test_accuracy")
    if start is not None and start <= check["chance_accuracy"] + CHANCE_MARGIN:
        check["at_chance"] = False
    return {**watch, **check}
