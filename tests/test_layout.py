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


def architecture_tree() -> str:
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    return re.search(r"```\n(src/cnnlab/\n.*?)```", doc.split("## The packages", 1)[1], re.S).group(1)


def test_the_architecture_doc_names_exactly_the_packages_and_readme_links_it():
    listed = set(re.findall(r"^  ([a-z_]+)/ ", architecture_tree(), re.M))
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert listed == packages
    assert "(docs/ARCHITECTURE.md)" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_architecture_doc_names_every_top_level_module_and_only_real_modules():
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    top = {p.name for p in PACKAGE.glob("*.py") if p.name != "__main__.py"}
    named = set(re.findall(r"`([a-z_]+\.py)`", doc))
    assert top <= named, f"top-level modules missing from docs/ARCHITECTURE.md: {sorted(top - named)}"
    dotted = set(re.findall(r"`(?:cnnlab\.)?((?:fast|train|runs|models|insight|lab|cli)\.[a-z_]+)[`(.]", doc))
    missing = {d for d in dotted if not ((PACKAGE / d.replace(".", "/")).with_suffix(".py").is_file()
                                         or (PACKAGE / d.split(".")[0] / "__init__.py").is_file()
                                         and d.split(".")[1] in _package_names(d.split(".")[0]))}
    assert not missing, f"docs/ARCHITECTURE.md names modules or functions that do not exist: {sorted(missing)}"


def _package_names(package: str) -> set[str]:
    import ast

    tree = ast.parse((PACKAGE / package / "__init__.py").read_text(encoding="utf-8"))
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


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
