"""One command-line vocabulary: every subcommand's --help is walked and the shared options
(--out, --quiet/--verbose, --offline, --device, --top) are checked where they belong; old
spellings still parse to the same thing, with a one-line note; `cnnlab --version`."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

import cnnlab
from cnnlab.cli import COMMANDS, build_parser, main

# Which shared options each command must have. A command not listed here (a new one) is
# still held to the rules every command follows (test_no_command_shows_an_old_spelling).
EXPECTED = {
    ("train",): {"--out", "--quiet", "--verbose", "--offline", "--device"},
    ("evaluate",): {"--quiet", "--verbose", "--device"},
    ("predict",): {"--out", "--top", "--device"},
    ("activations",): {"--out", "--device"},
    ("report",): {"--out", "--quiet", "--verbose", "--device"},
    ("filters",): {"--out"},
    ("classify",): {"--out", "--top", "--quiet", "--verbose", "--offline", "--device"},
    ("demo",): {"--out", "--quiet", "--verbose", "--device"},
    ("filter",): {"--out"},
    ("data", "info"): {"--offline", "--quiet", "--verbose"},
    ("data", "show"): {"--out", "--offline", "--quiet", "--verbose"},
    ("data", "fetch"): {"--quiet", "--verbose"},
    ("explain",): {"--out", "--offline", "--device"},
    ("features",): {"--out", "--offline", "--device"},
    ("embed",): {"--out", "--device"},
    ("lab",): {"--offline", "--device"},
}
OLD = ("--html", "--progress", "--no-progress", "--no-download")


def _commands() -> list[tuple[str, ...]]:
    """Every command and sub-action path, from cli.COMMANDS and the parsers' own subparsers."""
    paths = []

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if path:
            paths.append(path)
        for action in subs:
            for name, child in action.choices.items():
                walk(child, (*path, name))

    for command in COMMANDS:
        parser = build_parser(command)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        walk(sub.choices[command], (command,))
    return paths


COMMAND_PATHS = _commands()


def _help(path: tuple[str, ...], capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main([*path, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


def _options(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))


def test_every_expected_command_exists():
    assert set(EXPECTED) <= set(COMMAND_PATHS)


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=" ".join)
def test_no_command_shows_an_old_spelling(path, capsys):
    text = _help(path, capsys)
    shown = _options(text)
    assert not shown & set(OLD), f"{' '.join(path)} shows {shown & set(OLD)}"
    assert "--output" not in shown and "--dir" not in shown  # what a command writes goes to --out
    if "--top" in shown:  # classes per image, wherever it appears
        help_of_top = re.search(r"\n  --top\b.*?(?=\n  -|\n\n|\Z)", text, re.S).group()
        assert "class" in help_of_top, help_of_top


@pytest.mark.parametrize("path", list(EXPECTED), ids=" ".join)
def test_shared_options_are_where_they_belong(path, capsys):
    shown = _options(_help(path, capsys))
    assert EXPECTED[path] <= shown, f"{' '.join(path)} lacks {EXPECTED[path] - shown}"


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out == f"cnnlab {cnnlab.__version__}\n"
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == f"cnnlab {cnnlab.__version__}\n"


# (old spelling, its replacement): both parse to the same arguments; the old one says so.
RENAMED = [
    (["train", "--verbose", "0"], ["train", "--quiet"]),
    (["train", "--verbose", "2"], ["train", "--verbose"]),
    (["train", "--no-download"], ["train", "--offline"]),
    (["data", "info", "mnist", "--no-download"], ["data", "info", "mnist", "--offline"]),
    (["data", "show", "mnist", "--no-download"], ["data", "show", "mnist", "--offline"]),
    (["evaluate", "RUN", "--top", "3"], ["evaluate", "RUN", "--pairs", "3"]),
    (["evaluate", "RUN", "--progress"], ["evaluate", "RUN", "--verbose"]),
    (["report", "RUN", "--progress"], ["report", "RUN", "--verbose"]),
    (["filters", "RUN", "--html", "f.html"], ["filters", "RUN", "--out", "f.html"]),
    (["classify", "cat.png", "--no-progress"], ["classify", "cat.png", "--quiet"]),
    (["features", "RUN", "--top", "3", "--out", "g.png"], ["features", "RUN", "--examples", "3", "--out", "g.png"]),
]


@pytest.mark.parametrize("old,new", RENAMED, ids=[" ".join(o) for o, _ in RENAMED])
def test_old_spelling_still_works_with_a_note(old, new, capsys):
    then = vars(build_parser(old[0]).parse_args(old))
    err = capsys.readouterr().err
    now = vars(build_parser(new[0]).parse_args(new))
    assert then == now
    assert capsys.readouterr().err == ""
    assert err.count("\n") == 1 and err.startswith("cnnlab: note: ") and "deprecated, use --" in err
    assert [a for a in old if a.startswith("--")][0] in err


def test_old_spelling_in_a_real_command(tmp_path, capsys):
    """--no-download (now --offline) still stops before downloading, with the note first."""
    assert main(["data", "info", f"folder:{tmp_path / 'none'}", "--no-download"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnlab: note: --no-download is deprecated, use --offline")


def test_quiet_and_verbose_are_levels():
    def level(*argv):
        return build_parser("evaluate").parse_args(["evaluate", "RUN", *argv]).verbosity

    assert (level("--quiet"), level(), level("--verbose"), level("-q"), level("-v")) == (0, 1, 2, 0, 2)
    train = build_parser("train")
    assert train.parse_args(["train"]).verbosity is None  # train: not typed, the config decides
    assert train.parse_args(["train", "--verbose"]).verbosity == 2


def test_classify_offline_never_downloads(tmp_path, monkeypatch, capsys):
    from cnnlab.models import pretrained

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(url, timeout=None):
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(pretrained, "_urlopen", no_network)
    assert main(["classify", "grace_hopper", "--offline", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "squeezenet1_1-b8a52dc0.pth is not in" in err and "(--offline)" in err and err.count("\n") == 1
