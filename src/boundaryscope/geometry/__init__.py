"""Geometry of the decision boundary: theory bounds, Hessian-vector products, curvature.

Submodules: `theory` (Theorem 1, Corollary 1, Theorem 5 bounds), `hessian` (batched
input-space Hessian-vector products, Lanczos), `curvature` (principal curvatures, shared
curved directions, S_c, loss curvature).
"""

from boundaryscope.geometry.theory import (
    corollary1_interval,
    theorem1_interval,
    theorem5_bounds,
    zeta1,
    zeta2,
)

__all__ = [
    "corollary1_interval",
    "theorem1_interval",
    "theorem5_bounds",
    "zeta1",
    "zeta2",
]
