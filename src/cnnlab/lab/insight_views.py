"""The Why, Map and feature-visualisation panels: thin views over cnnlab.insight.

Each answers 501 with a plain message when its insight module is not installed in this
checkout, so the rest of the lab works without it.
"""

from __future__ import annotations

from starlette.requests import Request
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


def routes(lab, api: str, locked, int_param) -> list:
    async def attribution(request: Request):
        _require("cnnlab.insight.attribution", "the Why panel")
        raise LabError(501, "attribution is not wired yet")

    async def embedding(request: Request):
        _require("cnnlab.insight.embedding", "the Map panel")
        raise LabError(501, "the embedding is not wired yet")

    async def featurevis(request: Request):
        _require("cnnlab.insight.featurevis", "feature visualisation")
        raise LabError(501, "feature visualisation is not wired yet")

    return [Route(f"{api}/attribution", attribution), Route(f"{api}/embedding", embedding),
            Route(f"{api}/featurevis", featurevis)]
