"""The ``cnnlab`` command: parse arguments, call the library, present the result.

Each subcommand lives in its own module in this package and exposes
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.
Nothing here computes: it only dispatches and turns errors into one-line messages.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cnnlab.errors import CnnlabError

# Subcommand modules, in the order `cnnlab --help` lists them. A module that is
# not written yet is simply skipped, so the command works while it grows.
COMMAND_MODULES = (
    "demo",
    "filter",
    "data",
    "summary",
    "train",
    "evaluate",
    "report",
    "classify",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnlab",
        description="Learn, train and look inside convolutional neural networks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"cnnlab.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"cnnlab.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CnnlabError as exc:
        print(f"cnnlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print(f"cnnlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cnnlab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
