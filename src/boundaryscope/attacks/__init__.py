"""Attacks: callables ``attack(clf, x, y=None) -> AttackResult`` (DESIGN.md).

`ATTACKS` maps registry names (used by the command line and the report) to classes.
"""

from boundaryscope.attacks.base import ATTACKS, Attack, AttackResult, RawAttack, register_attack
from boundaryscope.attacks.deepfool import DeepFool, Projector
from boundaryscope.attacks.gradient import (
    FGSM,
    EpsilonSearch,
    fgsm_fooling_curve,
    smallest_fooling_epsilon,
)

__all__ = [
    "ATTACKS",
    "FGSM",
    "Attack",
    "AttackResult",
    "DeepFool",
    "EpsilonSearch",
    "Projector",
    "RawAttack",
    "fgsm_fooling_curve",
    "register_attack",
    "smallest_fooling_epsilon",
]
