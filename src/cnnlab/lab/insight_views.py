"""The Why, Map and feature-visualisation panels: thin views over cnnlab.insight.

Each answers 501 with a plain message when its insight module is not installed in this
checkout, so the rest of the lab works without it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cnnlab.lab.imaging import LabError


def _require(module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        raise LabError(501, f"{what} needs {module}, which this cnnlab does not have yet") from exc


ATTRIBUTION_LABELS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "saliency": "saliency",
                      "smoothgrad": "SmoothGrad", "ig": "integrated gradients", "occlusion": "occlusion"}


def attribution_view(target, item, method: str, class_param: str | None, layer: str) -> dict:
    """One attribution map of the input, as an RGBA heat map PNG to lay over it."""
    attribution = _require("cnnlab.insight.attribution", "the Why panel")
    from cnnlab.lab.imaging import colorize, png_b64

    if method not in attribution.METHODS:
        raise LabError(400, f"unknown method {method[:40]!r}; choose one of {', '.join(attribution.METHODS)}")
    model, classes = target.model, target.classes
    if class_param in (None, "", "predicted"):
        cls = int(attribution.scores(model, item.x).argmax(1)[0])
    else:
        try:
            cls = int(class_param)
        except ValueError:
            raise LabError(400, f"target must be a class index or 'predicted', got {class_param[:40]!r}") from None
        if not 0 <= cls < len(classes):
            raise LabError(400, f"target {cls} is not a class index 0..{len(classes) - 1}")
    where = ""
    if method in ("gradcam", "gradcam++"):
        maps, _, used, _ = attribution.gradcam_maps(model, item.x, [cls], layers=[layer or "auto"],
                                                    plus=method == "gradcam++")
        heat = maps[used[0]][0]
        where = f" at layer {used[0]}"
    else:
        heat = attribution.attribute(model, item.x, [cls], method=method)[0]
    return {"png": png_b64(colorize(heat, cmap="jet", alpha=True)), "class": cls, "class_name": classes[cls],
            "min": float(heat.min()), "max": float(heat.max()),
            "caption": f"{ATTRIBUTION_LABELS[method]} for class {classes[cls]}{where}"}


def routes(lab, api: str, locked, int_param) -> list:
    async def attribution(request: Request):
        target, item = lab.input_of(request)
        q = request.query_params
        body = await locked(target, attribution_view, target, item, q.get("method", "gradcam"), q.get("target"),
                            q.get("layer", "auto"))
        return JSONResponse({**body, "input": q.get("input")})

    async def embedding(request: Request):
        _require("cnnlab.insight.embedding", "the Map panel")
        raise LabError(501, "the embedding is not wired yet")

    async def featurevis(request: Request):
        _require("cnnlab.insight.featurevis", "feature visualisation")
        raise LabError(501, "feature visualisation is not wired yet")

    return [Route(f"{api}/attribution", attribution), Route(f"{api}/embedding", embedding),
            Route(f"{api}/featurevis", featurevis)]
