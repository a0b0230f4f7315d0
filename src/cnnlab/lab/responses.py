"""The lab's JSON: always finite, so always valid JSON.

Weights that overflowed in training give inf/NaN probabilities, activations or losses;
Starlette's ``JSONResponse`` refuses them (``allow_nan=False``) and the request ended in a
500. Here each non-finite number is sent as ``null`` and reported: a dict response gets
``"nonfinite": {"count": N, "paths": [...]}`` (the first few JSON paths, e.g.
``probs[3]``) and every response the header ``X-Cnnlab-Nonfinite: N``.
"""

from __future__ import annotations

import json
import math

from starlette.responses import JSONResponse as _StarletteJSON

MAX_PATHS = 8


def finite(content) -> tuple[object, list[str], int]:
    """(``content`` with each non-finite float replaced by None, the first paths replaced, how many)."""
    paths: list[str] = []
    count = 0

    def walk(value, path: str):
        nonlocal count
        if isinstance(value, float):
            if math.isfinite(value):
                return value
            count += 1
            if len(paths) < MAX_PATHS:
                paths.append(path or "$")
            return None
        if isinstance(value, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    return walk(content, ""), paths, count


class JSONResponse(_StarletteJSON):
    """Starlette's JSONResponse for content that may hold inf/NaN (see the module doc)."""

    def render(self, content) -> bytes:
        content, paths, count = finite(content)
        if count:
            if isinstance(content, dict):
                content = {**content, "nonfinite": {"count": count, "paths": paths}}
            self.nonfinite = count
        return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None,
                          separators=(",", ":")).encode("utf-8")

    def init_headers(self, headers=None) -> None:
        super().init_headers(headers)
        if getattr(self, "nonfinite", 0):
            self.raw_headers.append((b"x-cnnlab-nonfinite", str(self.nonfinite).encode("ascii")))
