"""The named defences, as data: what ``--help`` lists without loading torch.

Each entry says what the defence is and how it fine-tunes by default; its objective is
built in `boundaryscope.defenses.recipes.defense_objective`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["DEFENSES", "DefenseRecipe"]


@dataclass(frozen=True)
class DefenseRecipe:
    """A named defence: its objective and the schedule it fine-tunes with by default.

    Attributes:
        summary: One line for ``--help`` and the run card.
        lr_factor: Learning rate as a multiple of the base model's own training rate (its
            card's ``config.lr``; 0.05 when unknown): §3.3 fine-tunes "with a 50%
            decreased learning rate".
        schedule: Learning-rate schedule.
        epochs: Default number of extra epochs.
    """

    summary: str
    lr_factor: float
    schedule: Literal["cosine", "constant"]
    epochs: int


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
    "cure": DefenseRecipe("CURE curvature regularisation (§8.4)", 0.2, "cosine", 5),
}
