"""Making classifiers more robust: one training loop (thesis §3.3, §8) with pluggable objectives."""

from boundaryscope.defenses.objectives import (
    CURE,
    DeepFoolFinetune,
    FGSMFinetune,
    Objective,
    PerturbedSet,
    PGDTraining,
    Standard,
    cure_penalty,
    cure_step_size,
)
from boundaryscope.defenses.training import (
    FitResult,
    Monitor,
    TrainConfig,
    TrainHistory,
    accuracy,
    fit,
)
from boundaryscope.defenses.universal_finetune import (
    UniversalFinetune,
    UniversalPool,
    universal_finetune,
)

__all__ = [
    "CURE",
    "DeepFoolFinetune",
    "FGSMFinetune",
    "FitResult",
    "Monitor",
    "Objective",
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
    "universal_finetune",
]
