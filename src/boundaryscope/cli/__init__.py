"""``boundaryscope`` command line: parses arguments and calls the library, nothing more.

One module per subcommand (`boundaryscope.cli.registry`); this module builds the parser
from the registry and runs the chosen command with one error style: a line on stderr,
exit status 2, no traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from boundaryscope.cli.common import apply_memory_budget, resolve_data, resolve_weights
from boundaryscope.cli.registry import COMMANDS, Command, load_commands

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    from boundaryscope import __version__

    parser = argparse.ArgumentParser(
        prog="boundaryscope",
        description="Measure, explain and improve the robustness of image classifiers.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of an error instead of a one-line message",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in load_commands().values():
        sub = commands.add_parser(
            command.name, help=command.help, description=command.description or command.help
        )
        command.add_arguments(sub)
    return parser


def _world(args: argparse.Namespace) -> Any:
    """The torchrun world (one process without torchrun); GPUs are assigned per process."""
    from boundaryscope import distributed

    world = distributed.setup()
    gpu = distributed.device(world)
    if gpu is not None and getattr(args, "device", None) is None:
        args.device = str(gpu)
    return world


def _run(command: Command, args: argparse.Namespace) -> int:
    """Runs `command`: sharded ones in the torchrun world, the others in one process."""
    from boundaryscope import distributed

    if not command.sharded:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            sharded = sorted(name for name, c in COMMANDS.items() if c.sharded)
            raise ValueError(
                f"{command.name} does not run under torchrun yet; the sharded commands are "
                f"{', '.join(sharded)} (universal with --eval or --variant minibatch)."
            )
        return command.run(args, distributed.World())
    world = _world(args)
    status = command.run(args, world)
    # Without this, a process that exits while another still talks to it can abort gloo.
    distributed.teardown(world)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``boundaryscope`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _build_parser().parse_args(argv)
    except SystemExit as done:  # --help, or argparse's one-line usage error (status 2)
        return int(done.code or 0)
    args.argv = argv  # `train` records the command that reproduces its model
    resolve_data(args)
    apply_memory_budget(args)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        resolve_weights(args)
        with _warnings_as_log_lines(args.debug):
            return _run(COMMANDS[args.command], args)
    except KeyboardInterrupt:
        print(f"boundaryscope {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            raise
        print(f"boundaryscope {args.command}: error: {_one_line(error)}", file=sys.stderr)
        if not isinstance(error, ValueError | TypeError | OSError):
            print(
                "(an unexpected error: run again with --debug for the traceback)", file=sys.stderr
            )
        return 2


@contextlib.contextmanager
def _warnings_as_log_lines(debug: bool) -> Iterator[None]:
    """The library's warnings as one ``WARNING boundaryscope: …`` line each, as the logs.

    Python's own form names the library's file and repeats its source line, which tells a
    user of the command nothing; ``--debug`` keeps it. Restored on exit (`main` may run
    in-process).
    """
    with warnings.catch_warnings():
        if not debug:
            logger = logging.getLogger("boundaryscope")

            def show(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
                kind = "" if issubclass(category, UserWarning) else f"{category.__name__}: "
                logger.warning("%s%s", kind, message)

            warnings.showwarning = show
        yield


def _one_line(error: BaseException) -> str:
    """The error's message and notes on one line; its type where the message is terse."""
    text = " ".join(str(error).split())
    notes = " ".join(" ".join(n.split()) for n in getattr(error, "__notes__", []))
    if not isinstance(error, ValueError | TypeError | OSError) or not text:
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return f"{text} {notes}".strip()


if __name__ == "__main__":
    sys.exit(main())
