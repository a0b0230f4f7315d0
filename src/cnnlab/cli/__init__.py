"""The ``cnnlab`` command: parse arguments, call the library, present the result.

Each subcommand lives in its own module in this package and exposes
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.
Nothing here computes: it only dispatches and turns errors into one-line messages.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys

from cnnlab import fast
from cnnlab.errors import CnnlabError
from cnnlab.text import printable_streams

# Each command and the module that registers it, in the order `cnnlab --help` lists them.
COMMANDS = {
    "demo": "demo",
    "filter": "filter",
    "kernels": "filter",
    "data": "data",
    "models": "summary",
    "summary": "summary",
    "train": "train",
    "evaluate": "evaluate",
    "predict": "evaluate",
    "activations": "evaluate",
    "report": "report",
    "filters": "report",
    "classify": "classify",
    "explain": "explain",
    "features": "features",
    "embed": "embed",
    "lab": "lab",
    "export": "export",
    "doctor": "doctor",
}


class _BadUsage(SystemExit):
    """A command line argparse refused; already reported in one line."""


class _Parser(argparse.ArgumentParser):
    """argparse, with a refused command line reported in one line like every other error
    (``cnnlab train: error: argument --epochs: must be positive, got '0'``), not after a
    screenful of usage; ``--help`` still shows it."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise _BadUsage(2)


class _OneLineWarnings(logging.Handler):
    """The library's warnings (the ``cnnlab`` loggers, WARNING and up) on stderr in the command's
    own one-line form, ``cnnlab train: warning: ...``; its INFO lines stay silent, as for any
    library caller who has not asked for them. Under torchrun only rank 0 speaks."""

    def __init__(self, command: str) -> None:
        super().__init__(logging.WARNING)
        self.command = command

    def emit(self, record: logging.LogRecord) -> None:
        if os.environ.get("RANK", "0") != "0":
            return
        try:  # sys.stderr as it is now, not as it was when the handler was made
            print(f"cnnlab {self.command}: {record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)
        except Exception:  # logging's own rule: a handler never raises
            self.handleError(record)


@contextlib.contextmanager
def _library_warnings(command: str):
    handler = _OneLineWarnings(command)
    logger = logging.getLogger("cnnlab")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand, or only ``command``'s module when it is known.

    Registering one module instead of all keeps `cnnlab data info` from importing torch
    (about 1.5 s) for commands it does not run.
    """
    from cnnlab import __version__

    parser = _Parser(
        prog="cnnlab",
        description="Learn, train and look inside convolutional neural networks.",
    )
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    if command == "--version":  # answered before any subcommand: no need to import them (and torch)
        modules = []
    else:
        modules = [COMMANDS[command]] if command in COMMANDS else dict.fromkeys(COMMANDS.values())
    for name in modules:
        importlib.import_module(f"cnnlab.cli.{name}").register(sub)
    from cnnlab.cli.options import check_numbers

    check_numbers(parser)  # NaN, infinity, negatives and zero counts refused at parse time, in every command
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    printable_streams()  # file names that are not UTF-8 print as U+FFFD instead of a traceback
    parser = build_parser(argv[0] if argv else None)
    try:
        args = parser.parse_args(argv)
    except _BadUsage:
        return 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # Every command's tensors: no page faults on each reallocation (a fast path: cnnlab.fast.memory).
    fast.keep_freed_memory(getattr(args, "fast", "auto"))
    try:
        with _library_warnings(args.command):
            return int(args.func(args) or 0)
    except CnnlabError as exc:
        print(f"cnnlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print(f"cnnlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - swallow the flush at exit
        return 0
    except KeyboardInterrupt:
        print(f"cnnlab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
