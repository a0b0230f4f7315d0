"""The Why, Map and feature-visualisation panels: thin views over cnnlab.insight (imported
when a panel is first used, so the server starts without loading them)."""

from __future__ import annotations

import copy

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from cnnlab.lab.context import int_param, lab_of, locked
from cnnlab.lab.imaging import LabError
from cnnlab.lab.responses import JSONResponse

ATTRIBUTION_LABELS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "saliency": "saliency",
                      "smoothgrad": "SmoothGrad", "ig": "integrated gradients", "occlusion": "occlusion"}


def _class_index(class_param: str | None, n_classes: int) -> int | None:
    if class_param in (None, "", "predicted"):
        return None
    try:
        cls = int(class_param)
    except ValueError:
        raise LabError(400, f"target must be a class index or 'predicted', got {class_param[:40]!r}") from None
    if not 0 <= cls < n_classes:
        raise LabError(400, f"target {cls} is not a class index 0..{n_classes - 1}")
    return cls


def attribution_view(target, item, method: str, class_param: str | None, layer: str) -> dict:
    """One attribution map of the input, as an RGBA heat map PNG to lay over it."""
    from cnnlab.insight import attribution
    from cnnlab.lab.imaging import heat_overlay

    if method not in attribution.METHODS:
        raise LabError(400, f"unknown method {method[:40]!r}; choose one of {', '.join(attribution.METHODS)}")
    model, classes = target.model, target.classes
    cls = _class_index(class_param, len(classes))  # None: the predicted class
    where = ""
    if method in ("gradcam", "gradcam++"):
        # gradcam_maps reports the class it explained: no extra forward pass for "predicted".
        maps, used_classes, used, _ = attribution.gradcam_maps(
            model, item.x, "predicted" if cls is None else [cls], layers=[layer or "auto"], plus=method == "gradcam++")
        heat, cls = maps[used[0]][0], int(used_classes[0])
        where = f" at layer {used[0]}"
    else:
        if cls is None:
            cls = int(attribution.scores(model, item.x).argmax(1)[0])
        heat = attribution.attribute(model, item.x, [cls], method=method)[0]
    overlay = heat_overlay(heat, signed=attribution.is_signed(method))  # the method decides, not the values
    finite = heat[np.isfinite(heat)]
    return {**overlay, "class": cls, "class_name": classes[cls],
            "min": float(finite.min()) if finite.size else None, "max": float(finite.max()) if finite.size else None,
            "caption": f"{ATTRIBUTION_LABELS[method]} for class {classes[cls]}{where}"}


# A seeded subset of the test set: t-SNE of all 10,000 MNIST test images takes minutes on 2 cores.
EMBED_POINTS = {"pca": 2000, "tsne": 1000, "umap": 1000}
FEATVIS_CHANNELS = 8
FEATVIS_STEPS = 96
# An ImageNet network costs ~100x more per step: fewer channels, steps and pixels (112, not
# 224) keep one click to seconds on a CPU (about a minute per channel at 128 px, 96 steps,
# on 2 busy cores).
PRETRAINED_FEATVIS = {"channels": 4, "steps": 48, "size": 112}


def embedding_view(target, method: str) -> dict:
    """The run's test-set map, cached in the run directory by cnnlab.insight.embedding."""
    from cnnlab.insight import embedding
    if target.kind != "run":
        raise LabError(409, f"{target.name} is a pretrained network: the lab has no test set to map for it")
    if method not in embedding.METHODS:
        raise LabError(400, f"method {method[:40]!r} is not one of {', '.join(embedding.METHODS)}")
    target.model  # noqa: B018 - raises 409 while the run has no weights yet
    n, limit = len(target.test[1]), EMBED_POINTS[method]
    with target.slow_lock:  # run_embedding loads its own copy of the network and caches the map
        emb = embedding.run_embedding(target.path, method=method, limit=limit if n > limit else None)
    xy = emb.coords.astype(np.float64)
    lo, span = xy.min(0), np.maximum(np.ptp(xy, 0), 1e-12)
    xy = (xy - lo) / span.max()  # one scale for both axes: distances stay honest
    xy += (1 - xy.max(0)) / 2  # centred in the unit square
    points = [{"index": int(i), "x": round(float(x), 4), "y": round(float(1 - y), 4), "label": int(lab_), "pred": int(p)}
              for i, (x, y), lab_, p in zip(emb.indices, xy, emb.labels, emb.predictions, strict=True)]
    wrong = int(np.sum(emb.wrong))
    return {"method": method, "points": points,
            "caption": f"{len(points)} test images, {wrong} predicted wrongly (crosses); penultimate layer, "
                       f"{method.upper() if method == 'pca' else method}"}


def featurevis_view(target, layer: str, start: int) -> dict:
    """Inputs optimised to excite channels start..start+7 of a conv layer (cnnlab.insight.featurevis)."""
    from torch import nn

    from cnnlab.insight import featurevis

    with target.lock:
        model = copy.deepcopy(target.model)  # optimising freezes the network for seconds: not the shared one
        stamp = getattr(target, "_stamp", None)
    modules = dict(model.named_modules())
    if not isinstance(modules.get(layer), nn.Conv2d):
        convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
        raise LabError(404, f"no conv layer {layer[:60]!r}; pick one of {convs}")
    count = modules[layer].out_channels
    if not 0 <= start < count:
        raise LabError(400, f"start must be a channel 0..{count - 1} of {layer}, got {start}")
    per_click = PRETRAINED_FEATVIS["channels"] if target.kind == "pretrained" else FEATVIS_CHANNELS
    channels = list(range(start, min(count, start + per_click)))
    key = (layer, start, stamp)
    with target.slow_lock:
        if key not in target.featurevis_cache:
            target.featurevis_cache[key] = _visualize(featurevis, target, model, layer, channels)
    steps = PRETRAINED_FEATVIS["steps"] if target.kind == "pretrained" else FEATVIS_STEPS
    return {"layer": layer, "images": target.featurevis_cache[key], "next": (channels[-1] + 1) % count,
            "caption": f"{layer}: inputs optimised to excite channels {channels[0]}-{channels[-1]} of {count} "
                       f"({steps} steps)"}


def _visualize(featurevis, target, model, layer: str, channels: list[int]) -> list[dict]:
    from cnnlab.lab.imaging import png_b64

    h, w, _ = target.input_shape
    size, steps = (h, w), FEATVIS_STEPS
    if target.kind == "pretrained":
        size, steps = PRETRAINED_FEATVIS["size"], PRETRAINED_FEATVIS["steps"]
    images = featurevis.visualize_channels(model, layer=layer, channels=channels, size=size, steps=steps,
                                           **target_normalisation(target))
    return [{"channel": c, "png": png_b64((np.clip(im, 0, 1) * 255).round().astype(np.uint8))}
            for c, im in zip(channels, images, strict=True)]


def target_normalisation(target) -> dict:
    if target.kind == "pretrained":
        from cnnlab.models.pretrained import IMAGENET_MEAN, IMAGENET_STD

        return {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    cfg = target.run.config
    return {"mean": cfg.get("mean"), "std": cfg.get("std")}


async def attribution(request: Request):

    target, item = lab_of(request).input_of(request)
    q = request.query_params
    body = await locked(target, attribution_view, target, item, q.get("method", "gradcam"), q.get("target"),
                        q.get("layer", "auto"))
    return JSONResponse({**body, "input": q.get("input")})


# Both take seconds to minutes: they run on their own copy of the network under their own
# lock (slow_lock), so the other panels keep answering meanwhile.


async def embedding(request: Request):

    _, target = lab_of(request).target(request)
    method = request.query_params.get("method", "pca")
    return JSONResponse(await run_in_threadpool(embedding_view, target, method))


async def featurevis(request: Request):

    _, target = lab_of(request).target(request)
    layer, start = request.query_params.get("layer", ""), int_param(request, "start", 0)
    return JSONResponse(await run_in_threadpool(featurevis_view, target, layer, start))


def routes(api: str) -> list:
    return [Route(f"{api}/attribution", attribution), Route(f"{api}/embedding", embedding),
            Route(f"{api}/featurevis", featurevis)]
