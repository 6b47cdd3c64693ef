"""Making classifiers more robust: training (thesis §3.3, §8) and the universal defence (§4.5)."""

from boundaryscope.defenses.training import TrainConfig, TrainHistory, accuracy, fit
from boundaryscope.defenses.universal_finetune import UniversalFinetune, universal_finetune

__all__ = [
    "TrainConfig",
    "TrainHistory",
    "UniversalFinetune",
    "accuracy",
    "fit",
    "universal_finetune",
]
