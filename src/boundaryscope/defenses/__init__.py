"""Making classifiers more robust: one training loop (thesis §3.3, §8) with pluggable objectives."""

from boundaryscope.defenses.training import (
    CURE,
    DeepFoolFinetune,
    FGSMFinetune,
    FitResult,
    Monitor,
    Objective,
    PerturbedSet,
    PGDTraining,
    Standard,
    TrainConfig,
    TrainHistory,
    accuracy,
    cure_penalty,
    cure_step_size,
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
