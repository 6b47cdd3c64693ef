"""``boundaryscope models``: the shipped models and the architectures ``--arch`` accepts."""

from __future__ import annotations

import argparse
from typing import Any

from boundaryscope.cli.registry import Command, register_command

__all__ = ["ModelsCommand"]


@register_command
class ModelsCommand(Command):
    """Lists ``zoo:`` models with their test accuracy, then the architectures."""

    name = "models"
    help = "list shipped models and architectures"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """No flags."""

    def run(self, args: argparse.Namespace, world: Any) -> int:
        """Prints one line per model, then the architecture names."""
        from boundaryscope.zoo import ARCHITECTURES, model_card, shipped_models

        for name in shipped_models():
            card = model_card(name)
            print(f"zoo:{name:24s} {card['arch']:14s} test accuracy {card['test_accuracy']:.4f}")
        print("architectures:", ", ".join(sorted(ARCHITECTURES)))
        return 0
