"""boundaryscope: robustness of image classifiers through the geometry of their boundary.

Wrap any ``nn.Module`` in a `Classifier`, run attacks (``boundaryscope.attacks``) and
analyses, or ``boundaryscope report`` from the command line.

`Classifier` and `Preprocessing` are imported on first use (PEP 562), so that
``boundaryscope --version`` and ``--help`` answer without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from boundaryscope.classifier import Classifier, Preprocessing

__all__ = ["Classifier", "Preprocessing", "__version__"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("Classifier", "Preprocessing"):
        from boundaryscope import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module 'boundaryscope' has no attribute {name!r}")
