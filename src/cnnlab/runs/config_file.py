"""A run's configuration as a TOML file: ``cnnlab train --config FILE`` and ``--print-config``.

The file has one section per configuration class, ``[run]`` (RunConfig: data, model, ...),
``[hyperparams]`` and ``[runtime]``, with the fields' own names. A setting that is unset
(None, e.g. ``lr`` meaning the optimiser's default) is written as a comment, since TOML
has no null. What ``to_toml`` writes, ``read_config`` reads back to the same RunConfig.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from pathlib import Path

from cnnlab.data.transforms import Augment
from cnnlab.errors import CnnlabError
from cnnlab.train.config import Hyperparams, RunConfig, Runtime, coerce, get, settings, with_overrides

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as a package (declared in pyproject.toml)
    import tomli as tomllib

SECTIONS = {"run": RunConfig, "hyperparams": Hyperparams, "runtime": Runtime}


def read_config(path) -> dict:
    """The settings in a TOML file, checked, as ``with_overrides`` keyword arguments."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise CnnlabError(f"{path} is not valid TOML: {exc}") from None
    out: dict = {}
    allowed = ", ".join(f"[{s}]" for s in SECTIONS)
    for section, table in doc.items():
        if not isinstance(table, dict):
            raise CnnlabError(f"{path}: key {section!r} is outside a section{_home(section)}; sections: {allowed}")
        if section not in SECTIONS:
            raise CnnlabError(f"{path}: unknown section [{section}]; allowed sections: {allowed}")
        out.update(_read_section(path, section, table))
    try:
        with_overrides(RunConfig(), **out)  # choices and ranges (e.g. optimizer = "adamm"), with the file named
    except CnnlabError as exc:
        raise CnnlabError(f"{path}: {exc}") from None
    return out


def _read_section(path: Path, section: str, table: dict) -> dict:
    cls = SECTIONS[section]
    hints = typing.get_type_hints(cls)
    names = [f.name for f in settings(cls)]
    out = {}
    for key, value in table.items():
        if key not in names:
            raise CnnlabError(f"{path}: unknown key {section}.{key}{_home(key)}; allowed in [{section}]: {', '.join(names)}")
        try:
            out[key] = coerce(key, hints[key], value)
        except CnnlabError as exc:
            raise CnnlabError(f"{path}: {section}.{exc}") from None
    return out


def _home(key: str) -> str:
    """' (it belongs in [hyperparams])' when a known setting sits in the wrong place."""
    for section, cls in SECTIONS.items():
        if key in {f.name for f in settings(cls)}:
            return f" (it belongs in [{section}])"
    return ""


def to_toml(cfg: RunConfig, *, header: str = "", derived: dict[str, str] | None = None) -> str:
    """``cfg`` as the TOML that ``read_config`` reads back to it.

    ``derived`` names settings to leave out, as comments saying how the run derives them.

    Written by hand because the standard library reads TOML (tomllib) but cannot write it,
    and these values are few and simple: strings, numbers, booleans and short lists.
    """
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for section, cls in SECTIONS.items():
        lines += ["", f"[{section}]"]
        for f in settings(cls):
            value = get(cfg, f.name)
            if f.name in (derived or {}):
                lines.append(f"# {f.name}: {derived[f.name]}")
            elif value is None:
                lines.append(f"# {f.name}: unset ({f.metadata['help']})")
            else:
                lines.append(f"{f.name} = {_value(value)}")
    return "\n".join(lines).lstrip("\n") + "\n"


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # Python's shortest round-trip form is valid TOML (1e-06, 0.001, inf)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Augment):
        return _value(augment_text(value))
    raise TypeError(f"cannot write {value!r} as TOML")


def augment_text(aug: Augment) -> str:
    """The ``--augment`` spelling of ``aug`` ("none" when it does nothing); Augment.parse reads it back."""
    parts = []
    for f in dataclasses.fields(aug):
        value = getattr(aug, f.name)
        if isinstance(value, bool):
            parts += [f.name.replace("_", "-")] if value else []
        elif value:
            parts.append(f"{f.name}={value!r}")
    return ",".join(parts) or "none"
