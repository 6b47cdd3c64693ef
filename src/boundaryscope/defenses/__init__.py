"""Making classifiers more robust: training (thesis §3.3, §8) and, later, detection (§7.5)."""

from boundaryscope.defenses.training import TrainConfig, TrainHistory, accuracy, fit

__all__ = ["TrainConfig", "TrainHistory", "accuracy", "fit"]
