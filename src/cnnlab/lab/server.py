"""The lab's ASGI app (Starlette): JSON endpoints, PNG images, the static page.

Every request names its target by its index in the fixed list given at start
(``/api/t/0/...``) and its input by ``test:<index>`` or a token from the InputStore: no
request parameter ever becomes a file path. Computation runs in the thread pool so the
event loop keeps serving; each target's lock keeps two requests off one model at a time.

The lab never answers 500 to what a client sends: path indices have at most 9 digits (a
longer one is a 404), query integers are parsed with bounds, JSON bodies are refused past
1 MB or 32 levels of nesting, unknown routes and methods answer JSON, and every JSON
response is finite (``cnnlab.lab.responses``).
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cnnlab.errors import CnnlabError
from cnnlab.lab import analysis, insight_views, steps
from cnnlab.lab.compute import overview
from cnnlab.lab.context import Lab, int_param, lab_of, locked, png, read_body, read_json
from cnnlab.lab.imaging import LabError, decode_upload
from cnnlab.lab.responses import JSONResponse
from cnnlab.lab.targets import Input, evaluated

STATIC = Path(__file__).with_name("static")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


# --------------------------------------------------------------------------- endpoints


async def targets(request: Request):
    return JSONResponse([{"id": i, "name": t.name, "kind": t.kind} for i, t in enumerate(lab_of(request).targets)])


async def info(request: Request):
    _, target = lab_of(request).target(request)
    return JSONResponse(await locked(target, analysis.info, target))


async def draw(request: Request):
    tid, target = lab_of(request).target(request)
    body = await read_json(request)
    h, w, c = target.input_shape
    try:
        pixels = np.frombuffer(base64.b64decode(body.get("pixels", ""), validate=True), dtype=np.uint8)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise LabError(400, "pixels must be base64 of H*W grey bytes") from exc
    if pixels.size != h * w:
        raise LabError(400, f"a drawing for this model has {h}x{w} = {h * w} grey pixels, got {pixels.size}")
    image = np.repeat(pixels.reshape(h, w, 1), c, axis=2)  # grey strokes fill every channel
    item = Input(image, target.preprocess(image), note="drawn")
    token = lab_of(request).inputs.add(tid, item)
    result = await locked(target, overview, target.model, item.x, target.classes)
    return JSONResponse({"input": token, **result, "label": None, "note": item.note})


async def upload(request: Request):
    tid, target = lab_of(request).target(request)
    data = await read_body(request)

    def decode():
        return target.from_pil(decode_upload(data))

    item = await run_in_threadpool(decode)
    return JSONResponse({"input": lab_of(request).inputs.add(tid, item), "note": item.note})


async def sample(request: Request):
    from cnnlab.models.pretrained import open_image

    tid, target = lab_of(request).target(request)
    item = await run_in_threadpool(lambda: target.from_pil(open_image("grace_hopper")))
    return JSONResponse({"input": lab_of(request).inputs.add(tid, item), "note": "Grace Hopper (matplotlib's sample)"})


async def analyze(request: Request):
    target, item = lab_of(request).input_of(request)
    result = await locked(target, overview, target.model, item.x, target.classes)
    label = None if item.label is None else {"index": item.label, "name": target.classes[item.label]}
    return JSONResponse({**result, "label": label, "note": item.note})


async def input_png(request: Request):
    _, item = lab_of(request).input_of(request)
    return png(item.image)


async def map_png(request: Request):
    target, item = lab_of(request).input_of(request)
    return png(await locked(target, analysis.map_image, target, item, request.query_params.get("layer", ""),
                            int_param(request, "channel")))


async def dot(request: Request):
    from cnnlab.lab.arithmetic import dot_product

    target, item = lab_of(request).input_of(request)
    args = [int_param(request, k) for k in ("channel", "y", "x")]
    return JSONResponse(await locked(target, dot_product, target.model, item.x,
                                     request.query_params.get("layer", ""), *args))


async def test_png(request: Request):
    _, target = lab_of(request).target(request)
    return png((await locked(target, evaluated(target).test_input, request.path_params["index"])).image)


async def pick(request: Request):
    _, target = lab_of(request).target(request)
    kind = request.query_params.get("kind", "random")
    return JSONResponse(await run_in_threadpool(analysis.pick, target, kind, int_param(request, "seed", 0)))


async def confusion(request: Request):
    _, target = lab_of(request).target(request)
    return JSONResponse(await run_in_threadpool(analysis.confusion, target))


async def cell(request: Request):
    _, target = lab_of(request).target(request)
    return JSONResponse(await run_in_threadpool(analysis.cell, target, int_param(request, "actual"),
                                     int_param(request, "predicted"), int_param(request, "limit", 60)))


async def playground(request: Request):
    from cnnlab.lab.arithmetic import playground as run_playground

    body = await read_json(request)
    target, item = lab_of(request).input_of(request, str(body.get("input", "")))
    return JSONResponse(await run_in_threadpool(
        run_playground, item.image, body.get("kernel", "sobel-x"), padding=body.get("padding", 0),
        stride=body.get("stride", 1), dilation=body.get("dilation", 1)))


async def history(request: Request):
    _, target = lab_of(request).target(request)
    return JSONResponse(await run_in_threadpool(target.history))


async def filters(request: Request):
    _, target = lab_of(request).target(request)
    return JSONResponse(await locked(target, analysis.filters_view, target, request.query_params.get("layer")))


async def index(request: Request):
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


def build_routes() -> list:
    api = "/api/t/{tid:cnnlab_index}"
    return [
        Route("/", index),
        Route("/api/targets", targets),
        Route(f"{api}/info", info),
        Route(f"{api}/draw", draw, methods=["POST"]),
        Route(f"{api}/upload", upload, methods=["POST"]),
        Route(f"{api}/sample", sample, methods=["POST"]),
        Route(f"{api}/analyze", analyze),
        Route(f"{api}/input.png", input_png),
        Route(f"{api}/map.png", map_png),
        Route(f"{api}/dot", dot),
        Route(f"{api}/test/{{index:cnnlab_index}}.png", test_png),
        Route(f"{api}/pick", pick),
        Route(f"{api}/confusion", confusion),
        Route(f"{api}/cell", cell),
        Route(f"{api}/playground", playground, methods=["POST"]),
        Route(f"{api}/history", history),
        Route(f"{api}/filters", filters),
        *insight_views.routes(api),
        *steps.routes(api),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


# --------------------------------------------------------------------------- safety


class Guard:
    """ASGI middleware: refuse foreign Host headers (DNS rebinding) and cross-origin requests,
    and send headers that keep the page to its own origin."""

    def __init__(self, app, *, allowed_hosts: tuple[str, ...] | None) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts  # None: any (the user chose to listen beyond loopback)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        hostname = (host.rsplit(":", 1)[0] if not host.endswith("]") else host).lower()  # DNS names ignore case
        if self.allowed_hosts is not None and hostname not in self.allowed_hosts:
            return await error_response(403, f"host {host!r} is not this lab's address")(scope, receive, send)
        origin = headers.get("origin")
        if origin is not None and origin not in (f"http://{host}", f"https://{host}"):
            return await error_response(403, "cross-origin requests are refused")(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *SECURITY_HEADERS]
            await send(message)

        return await self.app(scope, receive, send_with_headers)


SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
     b"connect-src 'self'; frame-ancestors 'none'"),
]


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def lab_error(request: Request, exc: LabError):
    return error_response(exc.status, exc.message)


async def cnnlab_error(request: Request, exc: CnnlabError):
    return error_response(400, str(exc))


async def http_error(request: Request, exc: HTTPException):
    """An unknown route (404) or method (405) answers JSON too."""
    what = {404: f"no such page or endpoint: {request.url.path[:80]}",
            405: f"{request.method} is not allowed here"}.get(exc.status_code, str(exc.detail)[:200])
    return JSONResponse({"error": what}, status_code=exc.status_code, headers=exc.headers)


def create_app(targets: list, *, allowed_hosts: tuple[str, ...] | None = LOOPBACK_HOSTS) -> Guard:
    """The lab's ASGI app over a fixed list of targets (see ``cnnlab.lab.targets``).

    ``allowed_hosts``: the Host headers served (the loopback names by default; None: any).
    """
    lab = Lab(targets)
    app = Starlette(routes=build_routes(),
                    exception_handlers={LabError: lab_error, CnnlabError: cnnlab_error,
                                        HTTPException: http_error})
    app.state.lab = lab
    guard = Guard(app, allowed_hosts=allowed_hosts)
    guard.lab = lab
    return guard
