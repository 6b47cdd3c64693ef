"""boundaryscope: robustness of image classifiers through the geometry of their boundary.

Wrap any ``nn.Module`` in a `Classifier`, run attacks (``boundaryscope.attacks``) and
analyses, or ``boundaryscope report`` from the command line.
"""

from boundaryscope.classifier import Classifier, Preprocessing

__all__ = ["Classifier", "Preprocessing", "__version__"]
__version__ = "0.1.0"
