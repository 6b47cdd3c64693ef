"""Making classifiers more robust: one training loop (thesis §3.3, §8) with pluggable objectives.

Names are imported on first use (PEP 562): `boundaryscope.defenses.catalogue`, which
``boundaryscope train --help`` reads, must not load torch. No submodule may share a name
with a function exported here: importing it would rebind the package attribute to the
module (why `universal_finetune` lives in `universal_pool`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from boundaryscope.defenses.adversarial_training import (
        FGSMRS,
        NFGSM,
        TRADES,
        GradAlign,
        PGDTraining,
    )
    from boundaryscope.defenses.objectives import (
        CURE,
        DeepFoolFinetune,
        FGSMFinetune,
        Objective,
        PerturbedSet,
        Standard,
        cure_penalty,
        cure_step_size,
    )
    from boundaryscope.defenses.training import (
        FitResult,
        TrainConfig,
        TrainHistory,
        accuracy,
        fit,
        recalibrate_batchnorm,
    )
    from boundaryscope.defenses.universal_pool import (
        UniversalFinetune,
        UniversalPool,
        universal_finetune,
    )
    from boundaryscope.defenses.watch import Monitor, OverfittingCheck

_HOMES = {
    "CURE": "boundaryscope.defenses.objectives",
    "DeepFoolFinetune": "boundaryscope.defenses.objectives",
    "FGSMFinetune": "boundaryscope.defenses.objectives",
    "FGSMRS": "boundaryscope.defenses.adversarial_training",
    "GradAlign": "boundaryscope.defenses.adversarial_training",
    "NFGSM": "boundaryscope.defenses.adversarial_training",
    "FitResult": "boundaryscope.defenses.training",
    "Monitor": "boundaryscope.defenses.watch",
    "Objective": "boundaryscope.defenses.objectives",
    "OverfittingCheck": "boundaryscope.defenses.watch",
    "PGDTraining": "boundaryscope.defenses.adversarial_training",
    "PerturbedSet": "boundaryscope.defenses.objectives",
    "Standard": "boundaryscope.defenses.objectives",
    "TrainConfig": "boundaryscope.defenses.training",
    "TRADES": "boundaryscope.defenses.adversarial_training",
    "TrainHistory": "boundaryscope.defenses.training",
    "UniversalFinetune": "boundaryscope.defenses.universal_pool",
    "UniversalPool": "boundaryscope.defenses.universal_pool",
    "accuracy": "boundaryscope.defenses.training",
    "cure_penalty": "boundaryscope.defenses.objectives",
    "cure_step_size": "boundaryscope.defenses.objectives",
    "fit": "boundaryscope.defenses.training",
    "recalibrate_batchnorm": "boundaryscope.defenses.training",
    "universal_finetune": "boundaryscope.defenses.universal_pool",
}

__all__ = [
    "CURE",
    "FGSMRS",
    "NFGSM",
    "TRADES",
    "DeepFoolFinetune",
    "FGSMFinetune",
    "FitResult",
    "GradAlign",
    "Monitor",
    "Objective",
    "OverfittingCheck",
    "PGDTraining",
    "PerturbedSet",
    "Standard",
    "TrainConfig",
    "TrainHistory",
    "UniversalFinetune",
    "UniversalPool",
    "accuracy",
    "cure_penalty",
    "cure_step_size",
    "fit",
    "recalibrate_batchnorm",
    "universal_finetune",
]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'boundaryscope.defenses' has no attribute {name!r}")
