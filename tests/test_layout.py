"""The tree is the table of contents: README's layout names every package, and no module
grows far past the ~400 lines the design allows."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "cnnlab"
MAX_LINES = 450  # DESIGN.md: "a module past ~400 lines is asking to be split"


def layout_block() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Layout", 1)[1]
    return re.search(r"```\n(src/cnnlab/.*?)```", section, re.S).group(1)


def test_readme_layout_lists_exactly_the_packages():
    listed = set(re.findall(r"^  ([a-z_]+)/ ", layout_block(), re.M))
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert listed == packages


def test_readme_layout_names_only_modules_that_exist():
    block = layout_block()
    named = set(re.findall(r"\b([a-z_]+\.py)\b", block))
    assert named and all((PACKAGE / name).is_file() for name in named), named
    top = {p.name for p in PACKAGE.glob("*.py") if p.name != "__main__.py"}
    assert top <= named, f"top-level modules missing from README's layout: {sorted(top - named)}"


def test_no_module_is_far_past_400_lines():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text(encoding="utf-8").splitlines())
             for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
