"""Attacks: callables ``attack(clf, x, y=None) -> AttackResult`` (docs/design.md).

`ATTACKS` maps registry names (used by the command line and the report) to classes.
"""

from boundaryscope.attacks.apgd import APGD, APGDT, dlr_loss, dlr_targeted_loss
from boundaryscope.attacks.base import (
    ATTACKS,
    Attack,
    AttackResult,
    RawAttack,
    is_adversarial,
    register_attack,
    shrink_to_boundary,
)
from boundaryscope.attacks.convex import (
    Algorithm1,
    Algorithm2,
    SinglePixel,
    gnii_solution,
    infeasibility_bound,
    jacobian_column_norms,
    margin,
    regression_perturbation,
    top_singular_direction,
)
from boundaryscope.attacks.deepfool import DeepFool, Projector
from boundaryscope.attacks.fab import FABT
from boundaryscope.attacks.fmn import FMN
from boundaryscope.attacks.geometric import GeometricAttack, warp
from boundaryscope.attacks.gradient import (
    BIM,
    FGSM,
    PGD,
    EpsilonSearch,
    fgsm_fooling_curve,
    smallest_fooling_epsilon,
)
from boundaryscope.attacks.lbfgs import LBFGS
from boundaryscope.attacks.random_noise import (
    BernoulliNoise,
    RandomDirection,
    RandomLineSearch,
    line_search,
)
from boundaryscope.attacks.spsa import SPSA, spsa_gradient
from boundaryscope.attacks.square import Square

__all__ = [
    "APGD",
    "APGDT",
    "ATTACKS",
    "BIM",
    "FABT",
    "FGSM",
    "FMN",
    "LBFGS",
    "PGD",
    "SPSA",
    "Algorithm1",
    "Algorithm2",
    "Attack",
    "AttackResult",
    "BernoulliNoise",
    "DeepFool",
    "EpsilonSearch",
    "GeometricAttack",
    "Projector",
    "RandomDirection",
    "RandomLineSearch",
    "RawAttack",
    "SinglePixel",
    "Square",
    "dlr_loss",
    "dlr_targeted_loss",
    "fgsm_fooling_curve",
    "gnii_solution",
    "infeasibility_bound",
    "is_adversarial",
    "jacobian_column_norms",
    "line_search",
    "margin",
    "register_attack",
    "regression_perturbation",
    "shrink_to_boundary",
    "smallest_fooling_epsilon",
    "spsa_gradient",
    "top_singular_direction",
    "warp",
]
