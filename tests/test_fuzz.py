"""A short run of fuzz/fuzz_parsers.py: every parser meets a few dozen hostile files per run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_fuzzer():
    spec = importlib.util.spec_from_file_location("fuzz_parsers", ROOT / "fuzz" / "fuzz_parsers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FUZZ = load_fuzzer()


# The targets that need an optional extra (the plain install of CI's oldest-versions leg has none).
NEEDS = {"safetensors": "safetensors", "lab-routes": "starlette"}


@pytest.mark.parametrize("target", sorted(FUZZ.TARGETS))
def test_parsers_raise_only_cnnlab_errors(target):
    # One round of 25 inputs (seeded, so the same ones every run); the script runs longer.
    if target in NEEDS:
        pytest.importorskip(NEEDS[target])
    assert FUZZ.fuzz(target, seconds=0, chunk=25) == 25


def test_the_fuzzer_finds_a_planted_bug(monkeypatch):
    """A reader that lets a ValueError through is reported, so a clean run means something."""
    def fragile(path: Path) -> None:
        if path.read_bytes()[:1] == b"\0":
            raise ValueError("planted")

    monkeypatch.setitem(FUZZ.TARGETS, "planted", (fragile, lambda: [b"\0abc", b"xyz"]))
    with pytest.raises(ValueError, match="planted"):
        FUZZ.fuzz("planted", seconds=0, chunk=50)
