"""Report sections: every module here registers its analyses on import.

Adding a section = one module in this package with a `register_analysis` class; the
runner imports them all (`load_all`) and orders them by ``Analysis.order``.
"""

from __future__ import annotations

import importlib
import pkgutil

__all__ = ["load_all"]


def load_all() -> None:
    """Imports every section module of this package (registration happens on import)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
