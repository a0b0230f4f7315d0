"""A run's configuration as a TOML file: ``cnnlab train --config FILE`` and ``--print-config``.

The file has one section per configuration class, ``[run]`` (RunConfig: data, model, ...),
``[hyperparams]`` and ``[runtime]``, with the fields' own names. A setting that is unset
(None, e.g. ``lr`` meaning the optimiser's default) is written as a comment, since TOML
has no null. What ``to_toml`` writes, ``read_config`` reads back to the same RunConfig.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
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

MAX_CONFIG_BYTES = 1 << 20
SECTIONS = {"run": RunConfig, "hyperparams": Hyperparams, "runtime": Runtime}


def read_config(path) -> dict:
    """The settings in a TOML file, checked, as ``with_overrides`` keyword arguments."""
    path = Path(path)
    text = _read_text(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CnnlabError(f"{path} is not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise CnnlabError(f"{path} nests arrays or tables too deeply to be a cnnlab config") from None
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


def _read_text(path: Path) -> str:
    """The text of a config file: a regular file of at most MAX_CONFIG_BYTES of UTF-8 (so that
    ``--config /dev/zero`` or a FIFO cannot exhaust memory or hang)."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise CnnlabError(f"config {path} is not a regular file; give a .toml file (e.g. from --print-config)")
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise CnnlabError(f"config file {path} does not exist; write one with --print-config > {path}") from None
    except OSError as exc:
        raise CnnlabError(f"cannot read config {path} ({exc.strerror or type(exc).__name__})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise CnnlabError(f"config {path} is over {MAX_CONFIG_BYTES // 2**20} MB; a cnnlab config is a few lines "
                          "of TOML: is it the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CnnlabError(f"config {path} is not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None


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
        if any(0xD800 <= ord(ch) <= 0xDFFF for ch in value):  # a file name's non-UTF-8 bytes (surrogateescape)
            raise CnnlabError(f"{value!r} holds bytes that are not UTF-8, which a TOML file cannot hold; "
                              "rename the file or folder")
        # A JSON string is a TOML basic string, except that TOML also forbids a raw DEL (U+007F).
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
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
