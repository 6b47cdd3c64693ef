"""Geometry of the decision boundary: theory bounds (and, later, curvature and sections)."""

from boundaryscope.geometry.theory import (
    corollary1_interval,
    theorem1_interval,
    zeta1,
    zeta2,
)

__all__ = ["corollary1_interval", "theorem1_interval", "zeta1", "zeta2"]
