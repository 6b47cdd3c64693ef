"""The named defences, as data: what ``--help`` lists without loading torch.

Each entry says what the defence is and how it fine-tunes by default; its objective is
built in `boundaryscope.defenses.recipes.defense_objective`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["DEFENSES", "DefenseRecipe"]


# The fine-tuning rate when the base model's own training rate is unknown (a user's model
# without a card): Adam at CURE's paper's 1e-4 (thesis §8.4). A guessed SGD rate (0.05 × a
# factor) took a small BatchNorm CNN from 89.6% to 67.2% in 5 epochs of plain fine-tuning
# on 300 images; Adam at 1e-4 kept 88.2% (benchmarks/defense_collapse.py, shapes-bn).
UNKNOWN_BASE_OPTIMIZER: Literal["adam"] = "adam"
UNKNOWN_BASE_LR = 1e-4
# A named defence stops before the monitored clean accuracy falls more than 3 points below
# the model's own, keeping the epoch before (`TrainConfig.max_accuracy_drop`).
ACCURACY_BUDGET = 0.03


@dataclass(frozen=True)
class DefenseRecipe:
    """A named defence: its objective and the schedule it fine-tunes with by default.

    Attributes:
        summary: One line for ``--help`` and the run card.
        lr_factor: Learning rate as a multiple of the base model's own (SGD) training rate,
            from its card: §3.3 fine-tunes "with a 50% decreased learning rate". Without a
            card the run uses Adam at `UNKNOWN_BASE_LR`.
        schedule: Learning-rate schedule.
        epochs: Default number of extra epochs.
        optimizer: ``"adam"`` with `lr` fixes the optimiser and rate whatever the base
            model (CURE's paper recipe); ``None`` follows the rule above.
        lr: Fixed initial rate (with `optimizer`).
        final_lr: Where the cosine schedule ends.
    """

    summary: str
    lr_factor: float
    schedule: Literal["cosine", "constant"]
    epochs: int
    optimizer: Literal["sgd", "adam"] | None = None
    lr: float | None = None
    final_lr: float = 0.0


DEFENSES: dict[str, DefenseRecipe] = {
    "standard": DefenseRecipe(
        "extra epochs on clean data (Table 3.3's baseline)", 0.5, "constant", 5
    ),
    "deepfool": DefenseRecipe("fine-tune on DeepFool examples (§3.3)", 0.5, "constant", 5),
    "deepfool-alpha": DefenseRecipe(
        "fine-tune on DeepFool perturbations magnified by --alpha (Fig. 3.7)", 0.5, "constant", 5
    ),
    "fgsm": DefenseRecipe("fine-tune on FGSM examples (§3.3)", 0.5, "constant", 5),
    "universal": DefenseRecipe(
        "fine-tune on a pool of universal perturbations (§4.5)", 0.5, "constant", 5
    ),
    "pgd": DefenseRecipe("PGD adversarial training, Madry et al. (the baseline)", 0.2, "cosine", 5),
    "trades": DefenseRecipe("TRADES, Zhang et al. 2019 (β = 1)", 0.2, "cosine", 5),
    "fgsm-rs": DefenseRecipe(
        "FGSM with random start, Wong et al. 2020, with the catastrophic-overfitting check",
        0.2,
        "cosine",
        5,
    ),
    "n-fgsm": DefenseRecipe(
        "FGSM from noise of 2ε, unprojected, de Jorge et al. 2022, with the overfitting check",
        0.2,
        "cosine",
        5,
    ),
    "gradalign": DefenseRecipe(
        "FGSM with gradient alignment, Andriushchenko & Flammarion 2020 (λ = 0.2)",
        0.2,
        "cosine",
        5,
    ),
    # The seed's recipe (§8.4: Adam, 20 epochs, rate decayed 100×, h ramped over 5 epochs)
    # at 10× its initial rate: on the shipped LeNet (4,000 images) Adam 1e-4 → 1e-6 kept the
    # accuracy but raised PGD(20) accuracy at ε = 0.1 only from 77% to 82% (500 test images,
    # an exploratory run), 1e-3 → 1e-5 to 91% with clean accuracy 97.6% → 98.4%
    # (benchmarks/robust_training.py, run cure-seed).
    "cure": DefenseRecipe(
        "CURE curvature regularisation, the seed's recipe (§8.4: Adam, 20 epochs)",
        0.2,
        "cosine",
        20,
        optimizer="adam",
        lr=1e-3,
        final_lr=1e-5,
    ),
}
