"""Geometry of the decision boundary: theory bounds, Hessian-vector products, curvature.

Submodules: `theory` (Theorems 1–5 in closed form: intervals, radii, Corollary 1, eqs. 5.9,
5.11, 8.4), `hessian` (batched
input-space Hessian-vector products, Lanczos), `curvature` (principal curvatures, shared
curved directions, S_c, loss curvature), `universality` (Theorems 3–4 measured: universal
directions and vectors from S_f or S_c), `sections`, `topology`, `refinement`.
"""

from boundaryscope.geometry.theory import (
    corollary1_interval,
    excluded_classes,
    flat_fooling_probability,
    theorem1_interval,
    theorem2_condition,
    theorem2_interval,
    theorem2_smallest_m,
    theorem3_radius,
    theorem4_radius,
    theorem5_bounds,
    theorem5_simplified_bounds,
    zeta1,
    zeta2,
)

__all__ = [
    "corollary1_interval",
    "excluded_classes",
    "flat_fooling_probability",
    "theorem1_interval",
    "theorem2_condition",
    "theorem2_interval",
    "theorem2_smallest_m",
    "theorem3_radius",
    "theorem4_radius",
    "theorem5_bounds",
    "theorem5_simplified_bounds",
    "zeta1",
    "zeta2",
]
