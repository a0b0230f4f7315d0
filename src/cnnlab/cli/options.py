"""The options every subcommand spells the same way.

``--out`` (where to write), ``--quiet`` / ``--verbose`` (less / more output), ``--offline``
(never download), ``--device`` (wherever a model runs) and ``--top`` (classes per image).
Old spellings (``--html``, ``--progress``, ``--no-progress``, ``--verbose 0|1|2``,
``--no-download``, evaluate's ``--top`` for confused pairs) keep working for this release
and print a one-line note on stderr; they are hidden from ``--help``.
"""

from __future__ import annotations

import argparse
import sys

from cnnlab.bounds import NON_NEGATIVE, PORT, SEED, Bounds

__all__ = ["NON_NEGATIVE", "PORT", "SEED", "Bounds", "bounded"]  # the ranges the subcommands' options use

QUIET, NORMAL, VERBOSE = 0, 1, 2


def note(old: str, new: str) -> None:
    print(f"cnnlab: note: {old} is deprecated, use {new} (the old spelling goes in the next release)",
          file=sys.stderr)


class Deprecated(argparse.Action):
    """An old spelling: stores what its replacement would, after a one-line note."""

    def __init__(self, option_strings, dest, *, new: str, nargs=None, const=None, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=nargs, const=const, help=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        note(option_string, self.new)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def deprecated(p: argparse.ArgumentParser, old: str, new: str, *, dest: str, const=None, **kwargs) -> None:
    """Accept ``old`` as a hidden alias of ``new``; a flag when ``const`` is given, else it takes a value."""
    if const is not None:
        kwargs.update(nargs=0, const=const)
    p.add_argument(old, dest=dest, action=Deprecated, new=new, **kwargs)


class _Levels(argparse.Action):
    """``--verbose`` alone means more output; ``--verbose 0|1|2`` is train's old spelling."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if values is not None:
            note(f"{option_string} {values}", {0: "--quiet", 1: "neither --quiet nor --verbose", 2: "--verbose"}[values])
        setattr(namespace, self.dest, VERBOSE if values is None else values)


def add_verbosity(p: argparse.ArgumentParser, *, quiet: str, verbose: str, default: int | None = NORMAL,
                  levels: bool = False) -> None:
    """``--quiet`` (args.verbosity 0) and ``--verbose`` (2); neither: ``default``."""
    p.add_argument("--quiet", "-q", dest="verbosity", action="store_const", const=QUIET, help=quiet)
    if levels:
        p.add_argument("--verbose", "-v", dest="verbosity", action=_Levels, nargs="?", type=int, choices=(0, 1, 2),
                       help=verbose)
    else:
        p.add_argument("--verbose", "-v", dest="verbosity", action="store_const", const=VERBOSE, help=verbose)
    p.set_defaults(verbosity=default)


def progress(args: argparse.Namespace) -> bool:
    """Progress bars: on a terminal by default; --quiet: never; --verbose: always."""
    return args.verbosity == VERBOSE or (args.verbosity == NORMAL and sys.stderr.isatty())


def bar(args: argparse.Namespace, items, **kwargs):
    """``items`` with a tqdm bar on stderr where ``progress(args)`` allows one, else as they are."""
    if not progress(args):
        return items
    from tqdm.auto import tqdm

    return tqdm(items, leave=False, **kwargs)


def say(args: argparse.Namespace, text: str) -> None:
    """An informational line (what was written, a note, a hint) on stdout, unless --quiet."""
    if getattr(args, "verbosity", NORMAL) != QUIET:
        print(text)


class HelpFormatter(argparse.HelpFormatter):
    """argparse's wrapping for one-paragraph texts; a text of several lines (the examples) kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def add_examples(p: argparse.ArgumentParser, *examples: str) -> None:
    """End ``p``'s --help with an "examples:" block (after any epilog it already has)."""
    block = "examples:\n" + "\n".join(f"  {line}" for line in examples)
    p.epilog = f"{p.epilog}\n{block}" if p.epilog else block
    if p.formatter_class is argparse.HelpFormatter:
        p.formatter_class = HelpFormatter


def add_offline(p: argparse.ArgumentParser) -> None:
    p.add_argument("--offline", action="store_true", help="never download: use only files already present")
    deprecated(p, "--no-download", "--offline", dest="offline", const=True)


def add_device(p: argparse.ArgumentParser, *, default: str | None = "auto") -> None:
    p.add_argument("--device", default=default,
                   help=f"auto (CUDA when present), cpu, cuda, cuda:1 (default {default or 'auto'})")


def add_fast(p: argparse.ArgumentParser) -> None:
    """``--fast auto|off``, as ``cnnlab train`` has it (cnnlab.fast; CNNLAB_FAST=0 also turns them off)."""
    p.add_argument("--fast", choices=("auto", "off"), default="auto",
                   help="auto (default): cnnlab's fast paths where they apply and prove themselves on this machine; "
                        "off: plain PyTorch layers only (`cnnlab doctor` lists them)")


def bounded(convert, bounds: Bounds | None = None, **ends):
    """An argparse type: ``convert`` the text, then refuse NaN, infinity and anything outside
    ``bounds`` (or ``Bounds(**ends)``: low/high inclusive, above/below exclusive), in one line."""
    bounds = bounds or Bounds(**ends)

    def check(text: str):
        value = convert(text)
        if not bounds.ok(value):
            raise argparse.ArgumentTypeError(f"must be {bounds.requirement(value)}, got {text!r}")
        return value

    check.__name__ = getattr(convert, "__name__", "number")  # argparse names the type in its messages
    check.bounds = bounds
    return check


def _default_bounds(convert) -> Bounds:
    """An option that states no range counts or sizes something: an int at least 1, a number above 0."""
    return Bounds(low=1) if convert is int else Bounds(above=0)


def number(text: str) -> int | float:
    """An int when it reads as one (a count, e.g. --val-size 5000), else a float (a fraction, 0.1)."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a count or a fraction, got {text!r}") from None


def check_numbers(parser: argparse.ArgumentParser) -> None:
    """Give every int/float option of ``parser`` and its subcommands a range check at parse time:
    the one its type states (``bounded``, or a setting's metadata), else ``_default_bounds``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                check_numbers(sub)
        elif (action.type is not None and getattr(action.type, "__name__", "") in ("int", "float", "number")
              and not hasattr(action.type, "bounds") and action.choices is None):  # choices say it all
            action.type = bounded(action.type, _default_bounds(action.type))
