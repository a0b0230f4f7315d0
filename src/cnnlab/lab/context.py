"""What every lab endpoint works with: the lab's state (its targets and inputs), the bounded
readers of a request (integers, bodies, JSON) and the lock each target's computations run under.

Its own module so the endpoints (``server``, ``steps``, ``insight_views``) all import it and
none imports another: they used to reach into ``server`` from inside functions, in a circle.
"""

from __future__ import annotations

import json
import re

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response

from cnnlab.errors import CnnlabError
from cnnlab.lab.imaging import MAX_UPLOAD_BYTES, LabError, png_bytes
from cnnlab.lab.store import InputStore
from cnnlab.lab.targets import Input


class Lab:
    """The state behind the app: the fixed list of targets and the in-memory inputs."""

    def __init__(self, targets: list) -> None:
        if not targets:
            raise CnnlabError("the lab needs at least one run directory or --model")
        self.targets = list(targets)
        self.inputs = InputStore()

    def target(self, request: Request):
        tid = request.path_params["tid"]
        if not 0 <= tid < len(self.targets):
            raise LabError(404, f"no target {tid}; the lab serves targets 0..{len(self.targets) - 1}")
        return tid, self.targets[tid]

    def input_of(self, request: Request, ref: str | None = None) -> tuple[object, Input]:
        tid, target = self.target(request)
        ref = request.query_params.get("input") if ref is None else ref
        return target, self.inputs.resolve(tid, target, ref)


MAX_INDEX = 2**31 - 1  # the largest index, channel, seed or count a query may name
MAX_JSON_DEPTH = 32
_INTEGER = re.compile(r"[+-]?[0-9]{1,12}")


class IndexConvertor(Convertor):
    """A path index of at most 9 digits: a longer one matches no route (404), never int('9' * 5000)."""

    regex = "[0-9]{1,9}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("cnnlab_index", IndexConvertor())


def int_param(request: Request, name: str, default: int | None = None, *, least: int = 0,
              most: int = MAX_INDEX) -> int:
    """The query parameter ``name`` as an integer from ``least`` to ``most`` (400 otherwise)."""
    raw = request.query_params.get(name)
    if raw is None:
        if default is None:
            raise LabError(400, f"missing query parameter {name!r}")
        return default
    if not _INTEGER.fullmatch(raw.strip()):
        raise LabError(400, f"{name} must be an integer from {least} to {most}, got {raw[:40]!r}")
    value = int(raw)
    if not least <= value <= most:
        raise LabError(400, f"{name} must be an integer from {least} to {most}, got {value}")
    return value


def _depth(value) -> int:
    """How deeply ``value`` (parsed JSON) nests lists and objects, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (list, dict)):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


async def read_body(request: Request, limit: int = MAX_UPLOAD_BYTES) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes: never buffered whole."""
    declared = request.headers.get("content-length")
    if declared and declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        size = f"{int(declared):,}" if len(declared) <= 18 else f"a {len(declared)}-digit number of"
        raise LabError(413, f"the upload is {size} bytes, more than the lab's limit of {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise LabError(413, f"the upload is more than the lab's limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limit: int = 1 << 20) -> dict:
    try:
        body = json.loads(await read_body(request, limit))
    except RecursionError:
        raise LabError(400, f"the request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of thousands of digits
        raise LabError(400, f"the request body is not JSON ({str(exc)[:120]})") from None
    if not isinstance(body, dict):
        raise LabError(400, "the request body must be a JSON object")
    if _depth(body) > MAX_JSON_DEPTH:
        raise LabError(400, f"the request body nests deeper than {MAX_JSON_DEPTH} levels")
    return body


def png(array: np.ndarray) -> Response:
    return Response(png_bytes(array), media_type="image/png")


def locked(target, fn, *args, **kwargs):
    """Run ``fn`` under the target's lock, in the thread pool."""

    def call():
        with target.lock:
            return fn(*args, **kwargs)

    return run_in_threadpool(call)


def lab_of(request: Request) -> Lab:
    return request.app.state.lab
