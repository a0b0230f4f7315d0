"""Imports point one way: cli/lab -> report -> insight -> runs -> train -> models -> fast -> data -> scratch.

Every module under src/cnnlab is parsed with ``ast`` (nothing is imported, so this is fast
and sees imports inside functions and under ``if TYPE_CHECKING`` too: a lazy import is
still a dependency). The rule, per layer (the second part of the module name):

- scratch: the "from scratch" half, readable knowing only NumPy: from cnnlab only
  ``cnnlab.errors`` and ``cnnlab.files`` (and itself), and never torch;
- data: nothing from fast, models, train, insight, report, lab, cli, export;
- fast (the fast paths, beside and below the plain path): nothing from models, train, insight,
  report, lab, cli, export; and nothing outside ``cnnlab.fast`` imports its modules, only the
  package itself, whose functions are the one switch point (``cnnlab.fast.training_model``...);
- models: nothing from runs, train, insight, report, lab, cli, export;
- train: nothing from runs, insight, report, lab, cli, export (it trains; the run directory
  is ``cnnlab.runs``, above it);
- runs: nothing from insight, report, lab, cli, export;
- insight: nothing from report, lab, cli, export;
- report: renders, computes nothing: no torch, nothing from train, lab, cli, export, and
  from insight only the plain result types of ``cnnlab.insight.results`` (capitalised
  names, not ``collect_results``) and the NumPy helpers named in ``REPORT_MAY_USE``;
- only cli, lab, demo, reporting (and ``__main__``) import cli or lab.

Top-level helpers (errors, files, text, extras, cpu, bounds, precision, _moved) sit below everything and import no
layer; demo.py and reporting.py sit beside cli (they glue insight to report for it).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "cnnlab"

LAYERS = ("scratch", "data", "fast", "models", "train", "runs", "insight", "report", "lab", "export", "cli")
HELPERS = {"errors", "files", "text", "extras", "cpu", "bounds", "precision", "_moved"}

FORBIDDEN = {
    "data": {"fast", "models", "train", "runs", "insight", "report", "lab", "cli", "export"},
    "fast": {"models", "train", "runs", "insight", "report", "lab", "cli", "export"},
    "models": {"train", "runs", "insight", "report", "lab", "cli", "export"},
    "train": {"runs", "insight", "report", "lab", "cli", "export"},
    "runs": {"insight", "report", "lab", "cli", "export"},
    "insight": {"report", "lab", "cli", "export"},
    "report": {"train", "lab", "cli", "export"},
    "export": {"report", "lab", "cli"},
}
MAY_IMPORT_CLI_OR_LAB = {"cli", "lab", "demo", "reporting", "__main__"}

# report may call these insight functions: pure NumPy display transforms, no model, no torch.
REPORT_MAY_USE = {("cnnlab.insight.internals", "filter_images")}



def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _exists(dotted: str) -> bool:
    rel = Path(*dotted.split("."))
    return (SRC / rel).with_suffix(".py").is_file() or (SRC / rel / "__init__.py").is_file()


def _imports(path: Path) -> list[tuple[str, str | None, int]]:
    """(module, imported name or None, line) for every import in ``path``, relative ones resolved."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                head = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(head + ([node.module] if node.module else []))
            for alias in node.names:
                # `from cnnlab import files` imports the module cnnlab.files, not a name of cnnlab
                sub = f"{base}.{alias.name}"
                found.append((sub, None, node.lineno) if _exists(sub) else (base, alias.name, node.lineno))
    return found


def _layer(dotted: str) -> str | None:
    parts = dotted.split(".")
    return parts[1] if parts[0] == "cnnlab" and len(parts) > 1 else None


def _violation(importer: str, target: str, name: str | None) -> str | None:
    """Why importing ``target`` (``name`` from it) breaks the rule for ``importer``, or None."""
    mine, theirs = _layer(importer), _layer(target)
    top = target.split(".")[0]
    if mine == "scratch":
        if top == "torch":
            return "scratch never imports torch"
        if top == "cnnlab" and theirs not in {"scratch", "errors", "files"}:
            return "scratch imports only cnnlab.errors and cnnlab.files"
        return None
    if top == "torch" and mine == "report":
        return "report renders and computes nothing: no torch"
    if mine in HELPERS and theirs in LAYERS:
        return f"cnnlab.{mine} is a helper below every layer"
    if theirs == "fast" and mine != "fast" and target != "cnnlab.fast":
        return "outside cnnlab.fast, only the package itself (the switch point) is imported, not its modules"
    if theirs in {"cli", "lab"} and mine not in MAY_IMPORT_CLI_OR_LAB and mine != theirs:
        return "only cli, lab, demo and reporting import cli or lab"
    if theirs in FORBIDDEN.get(mine, ()):
        return f"{mine} may not import {theirs}"
    if mine == "report" and theirs == "insight":
        plain_type = target == "cnnlab.insight.results" and name is not None and name[:1].isupper()
        if not plain_type and (target, name) not in REPORT_MAY_USE:
            return "report imports from insight only the plain result types of cnnlab.insight.results"
    return None


def _all_violations() -> dict[tuple[str, str], str]:
    found = {}
    for path in sorted(PKG.rglob("*.py")):
        importer = _module_name(path)
        for target, name, line in _imports(path):
            why = _violation(importer, target, name)
            if why:
                found[(importer, target)] = f"{path.relative_to(SRC)}:{line} imports {target}" \
                                            f"{'.' + name if name else ''}: {why}"
    return found


def test_imports_point_one_way():
    found = _all_violations()  # no exceptions: fit knows only callbacks, the CLI attaches TensorBoard
    assert not found, "layering violations:\n" + "\n".join(sorted(found.values()))


def _module_graph() -> dict[str, set[str]]:
    """cnnlab module -> the cnnlab modules it imports (lazy and TYPE_CHECKING imports included)."""
    graph = {}
    for path in sorted(PKG.rglob("*.py")):
        importer, deps = _module_name(path), set()
        for target, _, _ in _imports(path):
            while target.startswith("cnnlab.") and not _exists(target):
                target = target.rpartition(".")[0]  # a name imported from a module: the module
            if target.startswith("cnnlab") and target != importer:
                deps.add(target)
        graph[importer] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan's algorithm, iterative)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_module_imports_itself_in_a_circle():
    assert _cycles(_module_graph()) == []


def test_no_two_packages_import_each_other():
    packages: dict[str, set[str]] = {}
    for importer, deps in _module_graph().items():
        mine = _layer(importer) or importer
        packages.setdefault(mine, set()).update(_layer(d) or d for d in deps if (_layer(d) or d) != mine)
    assert _cycles(packages) == []


def test_the_cycle_finder_finds_cycles():
    # A finder that never fires would pass every tree.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize(("importer", "target", "name", "expected"), [
    ("cnnlab.scratch.conv", "torch", None, "never imports torch"),
    ("cnnlab.scratch.images", "cnnlab.text", None, "only cnnlab.errors"),
    ("cnnlab.scratch.images", "cnnlab.files", None, None),
    ("cnnlab.models.pretrained", "cnnlab.runs.directory", None, "models may not import runs"),
    ("cnnlab.insight.embedding", "cnnlab.runs.directory", None, None),
    ("cnnlab.train.loop", "cnnlab.runs.directory", None, "train may not import runs"),
    ("cnnlab.runs.experiment", "cnnlab.insight.results", None, "runs may not import insight"),
    ("cnnlab.report.html", "cnnlab.insight.results", "Results", None),
    ("cnnlab.report.html", "cnnlab.insight.results", "collect_results", "plain result types"),
    ("cnnlab.report.plots", "cnnlab.insight.predictions", "evaluate_images", "plain result types"),
    ("cnnlab.report.plots", "torch", None, "no torch"),
    ("cnnlab.insight.predictions", "cnnlab.cli.options", None, "only cli, lab"),
    ("cnnlab.demo", "cnnlab.cli.options", None, None),
    ("cnnlab.files", "cnnlab.runs.directory", None, "helper below every layer"),
    ("cnnlab.train.session", "cnnlab.fast.view", None, "only the package itself"),
    ("cnnlab.train.session", "cnnlab.fast", "training_model", None),
    ("cnnlab.fast.view", "cnnlab.fast.native", None, None),
    ("cnnlab.fast.graph", "cnnlab.train.step", None, "fast may not import train"),
    ("cnnlab.data.stream", "cnnlab.fast", None, "data may not import fast"),
])
def test_the_rule_itself(importer, target, name, expected):
    # The checker must catch what it claims to (a checker that never fires passes every tree).
    why = _violation(importer, target, name)
    assert (why is None) if expected is None else (expected in why), why


def test_from_package_import_module_is_resolved():
    # `from cnnlab import files` in report/html.py is the module cnnlab.files, not a name of cnnlab.
    found = {(target, name) for target, name, _ in _imports(PKG / "report" / "html.py")}
    assert ("cnnlab.files", None) in found and ("cnnlab.insight.results", "Results") in found
    assert _module_name(PKG / "report" / "__init__.py") == "cnnlab.report"


def test_scratch_runs_without_torch():
    # What the parse cannot see: helpers that scratch imports must not pull torch in at run time.
    code = ("import sys; import cnnlab.scratch.conv, cnnlab.scratch.images, cnnlab.scratch.kernels; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
