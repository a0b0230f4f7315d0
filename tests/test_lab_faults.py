"""The lab never answers 500 to what a client sends: hostile parameters and bodies get a 4xx
with a JSON message, weights that overflowed give finite JSON that reports the non-finite
values, a busy port is one line; and a property-based test throws random paths, query strings
and bodies at every route."""

from __future__ import annotations

import json
import math
import shutil
import socket
import warnings
from urllib.parse import quote

import pytest
import torch

pytest.importorskip("starlette", reason="the lab needs the 'lab' extra: pip install 'cnnlab[lab]'")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx (the 'lab-test' extra)")

from cnnlab.lab.responses import finite  # noqa: E402
from cnnlab.lab.server import create_app  # noqa: E402
from cnnlab.lab.targets import RunTarget  # noqa: E402
from cnnlab.runs import directory as runs  # noqa: E402

with warnings.catch_warnings():  # starlette asks for httpx2 over httpx; the client works the same
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

N_TEST = 40
HUGE = "9" * 5000


@pytest.fixture(scope="module")
def lab_run(tiny_mnist_run, datasets_root, tmp_path_factory):
    """A copy of the shared tiny run (the embedding cache and history edits stay here)."""
    path = tmp_path_factory.mktemp("lab") / "run"
    shutil.copytree(tiny_mnist_run, path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNLAB_DATA", str(datasets_root))
        yield path


@pytest.fixture(scope="module")
def client(lab_run):
    with TestClient(create_app([RunTarget(lab_run, max_test=N_TEST)]), base_url="http://127.0.0.1",
                    raise_server_exceptions=False) as c:
        yield c


def _json_error(r, status) -> str:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    return r.json()["error"]


@pytest.mark.parametrize(("url", "params", "status", "words"), [
    ("/api/t/0/pick", {"seed": "-1"}, 400, "seed must be an integer from 0"),
    ("/api/t/0/pick", {"seed": HUGE}, 400, "seed must be an integer"),
    ("/api/t/0/pick", {"seed": "--5"}, 400, "seed must be an integer"),
    ("/api/t/0/cell", {"actual": HUGE[:4000], "predicted": "0"}, 400, "actual must be an integer"),
    ("/api/t/0/dot", {"input": "test:0", "layer": "0", "channel": "-1", "y": "0", "x": "0"}, 400, "channel"),
    ("/api/t/0/featurevis", {"layer": "0", "start": HUGE}, 400, "start must be an integer"),
    ("/api/t/0/attribution", {"input": "test:0", "target": HUGE}, 400, "target must be a class index"),
    (f"/api/t/{HUGE}/info", {}, 404, "no such page"),
    (f"/api/t/0/test/{HUGE}.png", {}, 404, "no such page"),
    ("/api/t/0/test/999999999.png", {}, 404, "test image 999999999 does not exist"),
    ("/api/nowhere", {}, 404, "no such page"),
])
def test_hostile_parameters_are_4xx_json(client, url, params, status, words):
    assert words in _json_error(client.get(url, params=params), status)


@pytest.mark.parametrize(("body", "words"), [
    ("[" * 100_000 + "]" * 100_000, "nests deeper"),
    ('{"input": "test:0", "kernel": ' + "[" * 40 + "1" + "]" * 40 + "}", "nests deeper"),
    ('{"input": "test:0", "padding": ' + HUGE + "}", "not JSON"),
    ('{"input": "test:0", "padding": ' + HUGE[:4000] + "}", "padding must be an integer from 0 to 64"),
    ("\xff\xfe", "not JSON"),
    ("NaN", "JSON object"),
])
def test_hostile_bodies_are_400_json(client, body, words):
    r = client.post("/api/t/0/playground", content=body.encode("utf-8", "surrogateescape"))
    assert words in _json_error(r, 400)


def test_a_content_length_of_thousands_of_digits_is_413(client):
    r = client.post("/api/t/0/upload", content=b"x", headers={"content-length": HUGE})
    assert "5000-digit number of bytes" in _json_error(r, 413)


def test_unknown_methods_are_json(client):
    assert "not allowed" in _json_error(client.get("/api/t/0/playground"), 405)


def test_finite_replaces_and_reports():
    content, paths, count = finite({"a": [1.0, math.inf, {"b": -math.inf}], "c": math.nan, "d": "x", "e": 2})
    assert content == {"a": [1.0, None, {"b": None}], "c": None, "d": "x", "e": 2}
    assert paths == ["a[1]", "a[2].b", "c"] and count == 3


def test_weights_that_overflowed_give_finite_json_that_says_so(lab_run, tmp_path):
    path = tmp_path / "overflow"
    shutil.copytree(lab_run, path)
    state = torch.load(path / "best.pt", weights_only=True)
    # Finite weights (a checkpoint holding inf is refused on load) whose activations overflow float32.
    runs.save_checkpoint(path / "best.pt", {**state, "0.weight": state["0.weight"] * 1e20,
                                            "3.weight": state["3.weight"] * 1e20})
    rows = runs.read_history(path / "history.csv")
    runs.write_history(path / "history.csv", [{**rows[0], "loss": math.inf}])
    with TestClient(create_app([RunTarget(path, max_test=N_TEST)]), base_url="http://127.0.0.1") as c:
        for url, params in [("/api/t/0/analyze", {"input": "test:3"}), ("/api/t/0/filters", {"layer": "0"}),
                            ("/api/t/0/dot", {"input": "test:3", "layer": "3", "channel": 0, "y": 1, "x": 1}),
                            ("/api/t/0/history", {}), ("/api/t/0/confusion", {})]:
            r = c.get(url, params=params)
            assert r.status_code == 200, (url, r.text[:300])
            # Strict: json.loads would accept NaN and Infinity, so any such constant is refused here (a
            # text search for "NaN" would also find it inside a base64 PNG).
            body = json.loads(r.text, parse_constant=lambda name, url=url: pytest.fail(f"{url} sent {name}"))
            if url.endswith(("analyze", "history")):
                assert int(r.headers["x-cnnlab-nonfinite"]) == body["nonfinite"]["count"] > 0, url
                assert body["nonfinite"]["paths"]


def test_a_busy_port_is_one_line_naming_it(lab_run, capsys):
    from cnnlab.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["lab", str(lab_run), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnlab") and err.count("\n") == 1 and f"port {port}" in err and "in use" in err
    assert main(["lab", str(lab_run), "--port", "70000"]) == 2
    assert "65535" in capsys.readouterr().err


# --------------------------------------------------------------------------- property-based

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

SEGMENTS = ["api", "t", "0", "1", "-1", "test", "0.png", "7.png", HUGE[:30], "..", "%2e%2e", "info", "draw", "upload",
            "sample", "analyze", "input.png", "map.png", "dot", "pick", "confusion", "cell", "playground", "history",
            "filters", "attribution", "embedding", "featurevis", "static", "index.html", "targets", ""]
KEYS = ["input", "layer", "channel", "y", "x", "seed", "kind", "actual", "predicted", "limit", "method", "target",
        "start", "kernel", "padding", "stride", "dilation"]
VALUES = st.one_of(
    st.sampled_from(["test:0", "test:39", "test:40", "test:-1", "0", "3", "9", "features.0", "random", "wrong",
                     "pca", "gradcam", "saliency", "predicted", "sobel-x", HUGE, "-" + HUGE[:20], "NaN", "1e309", ""]),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.text(max_size=20),
)
ENDPOINTS = ["info", "draw", "upload", "sample", "analyze", "input.png", "map.png", "dot", "test/0.png", "test/7.png",
             "pick", "confusion", "cell", "playground", "history", "filters", "attribution", "embedding", "featurevis"]
ROUTES = st.tuples(st.sampled_from(["0", "0", "0", "1", "00", HUGE[:12]]), st.sampled_from(ENDPOINTS)).map(
    lambda t: f"/api/t/{t[0]}/{t[1]}")
JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner,
                                                                                   max_size=4), max_leaves=12)


@hypothesis.settings(max_examples=120, deadline=None, derandomize=True,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture,
                                            hypothesis.HealthCheck.too_slow])
@hypothesis.given(
    method=st.sampled_from(["GET", "GET", "POST", "PUT"]),
    path=st.one_of(ROUTES, ROUTES, st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=6).map("/".join),
                   st.tuples(st.sampled_from(["/api/t/0/", "/api/t/"]),
                             st.text(max_size=12).map(lambda t: quote(t, safe="/%"))).map("".join)),
    query=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=5),
    body=st.one_of(st.none(), JSON.map(json.dumps), st.binary(max_size=64)),
)
def test_no_request_gets_a_5xx(client, method, path, query, body):
    url = "/" + path.lstrip("/")
    if url.startswith("/api/t/0/") and any(k in url for k in ("embedding", "featurevis")):
        query = {k: v for k, v in query.items() if k != "method"}  # pca only: t-SNE of each example is slow
    content = body.encode() if isinstance(body, str) else body
    r = client.request(method, url, params=query, content=content)
    assert r.status_code < 500, (method, url, query, body, r.text[:500])
    if r.status_code >= 400 and url.startswith("/api"):
        assert "error" in r.json()
