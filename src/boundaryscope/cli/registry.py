"""The subcommand registry: adding a subcommand = one module + one `register_command`.

Like the report's analyses, each subcommand is a `Command` subclass in its own module of
`boundaryscope.cli`, owning its flags (`add_arguments`) and its work (`run`). The parser
is built from `COMMANDS` in registration order (the order of `COMMAND_MODULES`).
"""

from __future__ import annotations

import argparse
import importlib
from abc import ABC, abstractmethod
from typing import Any, TypeVar

__all__ = ["COMMANDS", "COMMAND_MODULES", "Command", "load_commands", "register_command"]

# Modules of `boundaryscope.cli` holding one subcommand each, in the order of `--help`.
COMMAND_MODULES = (
    "report",
    "evaluate",
    "attack",
    "curves",
    "noise",
    "universal",
    "train",
    "compare",
    "geometry",
    "detect",
    "verify",
    "models",
)


class Command(ABC):
    """One subcommand of ``boundaryscope``.

    Attributes:
        name: The subcommand (``boundaryscope NAME``).
        help: One line for ``boundaryscope --help``.
        description: Longer text for ``boundaryscope NAME --help`` (default: `help`).
        sharded: Whether it splits its images over torchrun processes
            (`boundaryscope.distributed`); the others refuse to run under torchrun.
    """

    name: str = "command"
    help: str = ""
    description: str | None = None
    sharded: bool = False

    @abstractmethod
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declares the subcommand's flags, each with its help text and default."""

    @abstractmethod
    def run(self, args: argparse.Namespace, world: Any) -> int:
        """Does the work; returns the exit status. `world` is the torchrun world."""


COMMANDS: dict[str, Command] = {}
CommandT = TypeVar("CommandT", bound=type[Command])


def register_command(cls: CommandT) -> CommandT:
    """Class decorator: registers one instance under ``cls.name``."""
    COMMANDS[cls.name] = cls()
    return cls


def load_commands() -> dict[str, Command]:
    """Imports every command module (which registers its command) and returns the commands.

    They come in `COMMAND_MODULES` order (each module is named after its command).
    """
    for module in COMMAND_MODULES:
        importlib.import_module(f"boundaryscope.cli.{module}")
    return {name: COMMANDS[name] for name in COMMAND_MODULES}
