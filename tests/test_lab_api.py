"""cnnlab.lab's JSON endpoints with Starlette's test client, on a tiny MNIST run trained here.

Every number the lab shows is checked against an independent computation: the model's own
forward pass (predictions, activations, the conv output behind the dot product),
cnnlab.insight.predictions (confusion), torch's conv2d (the playground). The safety tests try
path traversal, foreign hosts and origins, oversize uploads, a decompression bomb and a
checkpoint that would run code.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

pytest.importorskip("starlette", reason="the lab needs the 'lab' extra: pip install 'cnnlab[lab]'")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx (the 'lab-test' extra)")

from cnnlab.insight.internals import activations  # noqa: E402
from cnnlab.insight.predictions import confusion_matrix, predict  # noqa: E402
from cnnlab.lab import arithmetic  # noqa: E402
from cnnlab.lab.server import create_app  # noqa: E402
from cnnlab.lab.targets import PretrainedTarget, RunTarget  # noqa: E402
from cnnlab.runs import directory as runs  # noqa: E402

with warnings.catch_warnings():  # starlette asks for httpx2 over httpx; the client works the same
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

N_TEST = 300


@pytest.fixture(scope="module")
def tiny_run(tiny_mnist_run, datasets_root):
    """The shared tiny MNIST run (conftest); its test set is found through CNNLAB_DATA."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNLAB_DATA", str(datasets_root))
        yield tiny_mnist_run


@pytest.fixture
def client(tiny_run):
    app = create_app([RunTarget(tiny_run, max_test=N_TEST)])
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


@pytest.fixture
def reference(tiny_run):
    """The run's model, test images and labels, loaded the plain cnnlab way."""
    run = runs.load_run(tiny_run)
    split = run.load_data().test
    return run, run.build_model(), split.images[:N_TEST], split.labels[:N_TEST]


def test_info_and_targets(client):
    assert client.get("/api/targets").json() == [{"id": 0, "name": f"{client.app.lab.targets[0].name}", "kind": "run"}]
    info = client.get("/api/t/0/info").json()
    assert info["model"] == "mnist-cnn" and info["input_shape"] == [28, 28, 1]
    assert info["classes"] == [str(i) for i in range(10)] and info["conv_layers"] == ["0", "3"]
    assert [layer["name"] for layer in info["layers"]] == [str(i) for i in range(10)]
    assert "sobel-x" in info["kernels"]
    assert info["has_test"] is True and info["umap"] == (importlib.util.find_spec("umap") is not None)


def test_analyze_matches_the_model(client, reference):
    run, model, images, labels = reference
    body = client.get("/api/t/0/analyze", params={"input": "test:7"}).json()
    x = run.preprocess(images[7:8])
    probs = predict(model, x, precision="fp32")[0]  # the lab shows fp32 values
    assert [p["index"] for p in body["prediction"]] == list(np.argsort(-probs, kind="stable")[:10])
    np.testing.assert_allclose([p["prob"] for p in body["prediction"]], np.sort(probs)[::-1], rtol=1e-5, atol=1e-7)
    assert body["label"] == {"index": int(labels[7]), "name": str(labels[7])}
    conv = next(layer for layer in body["layers"] if layer["name"] == "3")
    acts = activations(model, x, "3")[0]  # (64, 14, 14)
    assert conv["shape"] == list(acts.shape) and conv["shown"] == 64 and conv["tile"] == [14, 14]
    grid = np.asarray(Image.open(io.BytesIO(base64.b64decode(conv["atlas"]))))
    c = 9
    row, col = divmod(c, conv["cols"])
    tile = grid[row * 14:(row + 1) * 14, col * 14:(col + 1) * 14].astype(float)
    lo, hi = acts[c].min(), acts[c].max()
    np.testing.assert_allclose([conv["min"][c], conv["max"][c]], [lo, hi], rtol=1e-5)
    np.testing.assert_allclose(tile, np.clip((acts[c] - lo) * 255 / (hi - lo), 0, 255).astype(np.uint8), atol=1)
    last = body["layers"][-1]
    assert last["kind"] == "vector"
    np.testing.assert_allclose(torch.softmax(torch.tensor(last["values"]), 0).numpy(), probs, atol=1e-4)


def test_draw_predicts_like_the_same_test_image(client):
    from cnnlab.runs.directory import load_run

    target = client.app.lab.targets[0]
    image = target.test_input(11).image
    pixels = base64.b64encode(image[:, :, 0].tobytes()).decode()
    drawn = client.post("/api/t/0/draw", json={"pixels": pixels}).json()
    shown = client.get("/api/t/0/analyze", params={"input": "test:11"}).json()
    assert drawn["prediction"] == shown["prediction"] and len(drawn["layers"]) == 10
    again = client.get("/api/t/0/analyze", params={"input": drawn["input"]}).json()
    assert again["prediction"] == drawn["prediction"]
    assert load_run(target.path).input_shape == (28, 28, 1)
    for bad, words in [({"pixels": "AAAA"}, "784"), ({"pixels": "not base64!"}, "base64"), ({}, "784")]:
        r = client.post("/api/t/0/draw", json=bad)
        assert r.status_code == 400 and words in r.json()["error"]


@pytest.mark.parametrize(("layer", "channel", "y", "x"),
                         [("0", 3, 0, 0), ("0", 31, 13, 27), ("3", 5, 6, 9), ("3", 63, 13, 0)])
def test_dot_product_equals_the_models_value(client, reference, layer, channel, y, x):
    run, model, images, _ = reference
    d = client.get("/api/t/0/dot", params={"input": "test:3", "layer": layer, "channel": channel, "y": y, "x": x}).json()
    expected = activations(model, run.preprocess(images[3:4]), layer)[0, channel, y, x]
    assert d["torch"] == pytest.approx(float(expected), abs=1e-6)
    assert d["result"] == pytest.approx(float(expected), rel=1e-5, abs=1e-5)
    assert d["result"] == pytest.approx(sum(d["channel_sums"]) + d["bias"])
    assert len(d["channel_sums"]) == (1 if layer == "0" else 32)
    assert d["field"] == {"top": y - 1, "left": x - 1, "height": 3, "width": 3}  # padding 1, 3x3, stride 1
    top = d["detail"][0]
    assert np.sum(np.array(top["inputs"]) * np.array(top["weights"])) == pytest.approx(top["sum"])


@pytest.mark.parametrize("conv", [
    nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2),
    nn.Conv2d(4, 6, (3, 2), stride=(1, 2), padding="valid", groups=2),
    nn.Conv2d(4, 4, 3, padding="same", dilation=2, bias=False),
    nn.Conv2d(4, 2, 1),
])
def test_dot_product_strides_dilations_groups_padding(conv):
    torch.manual_seed(0)
    model = nn.Sequential(conv).eval()
    x = torch.randn(1, 4, 9, 10)
    out = model(x).detach()[0]
    for c, y, xx in [(0, 0, 0), (out.shape[0] - 1, out.shape[1] - 1, out.shape[2] - 1), (1, out.shape[1] // 2, 1)]:
        d = arithmetic.dot_product(model, x, "0", c, y, xx)
        assert d["result"] == pytest.approx(float(out[c, y, xx]), abs=1e-5)
        assert d["torch"] == pytest.approx(float(out[c, y, xx]))


def test_confusion_and_cells_match_insight(client, reference):
    run, model, images, labels = reference
    probs = predict(model, run.preprocess(images), precision="fp32")
    preds = probs.argmax(1)
    body = client.get("/api/t/0/confusion").json()
    assert body["matrix"] == confusion_matrix(labels, preds, 10).tolist() and body["n"] == N_TEST
    assert body["accuracy"] == pytest.approx(float((preds == labels).mean()))
    a, p = max(((a, p) for a in range(10) for p in range(10) if a != p), key=lambda ap: body["matrix"][ap[0]][ap[1]])
    cell = client.get("/api/t/0/cell", params={"actual": a, "predicted": p}).json()
    expected = set(np.flatnonzero((labels == a) & (preds == p)).tolist())
    assert {item["index"] for item in cell["items"]} == expected and cell["count"] == len(expected) > 0
    for item in cell["items"]:
        assert item["predicted_prob"] == pytest.approx(float(probs[item["index"], p]), rel=1e-5)
        assert item["actual_prob"] == pytest.approx(float(probs[item["index"], a]), rel=1e-5)
    wrong = client.get("/api/t/0/pick", params={"kind": "wrong", "seed": 3}).json()["input"]
    index = int(wrong.split(":")[1])
    assert preds[index] != labels[index]
    png = client.get(f"/api/t/0/test/{index}.png")
    assert png.headers["content-type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.content))), images[index][:, :, 0])


@pytest.mark.parametrize(("padding", "stride", "dilation"), [(0, 1, 1), (2, 3, 1), (1, 2, 2)])
def test_playground_equals_torch_conv2d(client, padding, stride, dilation):
    kernel = [[1, 0, -1], [2, 0, -2], [1, 0.5, -1]]
    body = {"input": "test:2", "kernel": kernel, "padding": padding, "stride": stride, "dilation": dilation}
    r = client.post("/api/t/0/playground", json=body).json()
    image = client.app.lab.targets[0].test_input(2).image[:, :, 0].astype(np.float64) / 255
    expected = F.conv2d(torch.tensor(image)[None, None], torch.tensor(kernel, dtype=torch.float64)[None, None],
                        padding=padding, stride=stride, dilation=dilation)[0, 0].numpy()
    assert r["output_shape"] == list(expected.shape)
    assert r["min"] == pytest.approx(expected.min()) and r["max"] == pytest.approx(expected.max())
    assert r["formula"][0].endswith(f"= {expected.shape[0]}") and f"(28 + 2·{padding}" in r["formula"][0]
    named = client.post("/api/t/0/playground", json={"input": "test:2", "kernel": "Sobel_X"}).json()
    assert named["label"] == "sobel-x" and named["output_shape"] == [26, 26]


@pytest.mark.parametrize(("body", "words"), [
    ({"kernel": "sobol"}, "did you mean"),
    ({"kernel": "brown"}, "colour kernel"),
    ({"kernel": [[1, 2], [3]]}, "rows"),
    ({"kernel": [[1] * 20]}, "1 to 15"),
    ({"kernel": "box-blur", "stride": 0}, "stride"),
    ({"kernel": "box-blur", "padding": True}, "padding"),
    ({"kernel": [[1] * 15] * 15, "dilation": 3}, "spans"),
])
def test_playground_refuses_bad_parameters(client, body, words):
    r = client.post("/api/t/0/playground", json={"input": "test:0", **body})
    assert r.status_code == 400 and words in r.json()["error"]


def test_history_grows_and_model_follows_new_weights(tiny_run, tmp_path):
    import shutil

    path = tmp_path / "live"
    shutil.copytree(tiny_run, path)
    app = create_app([RunTarget(path, max_test=20)])
    with TestClient(app, base_url="http://127.0.0.1") as c:
        first = c.get("/api/t/0/history").json()
        assert len(first["epochs"]) == 1 and first["total_epochs"] == 1 and first["finished"]
        before = c.get("/api/t/0/analyze", params={"input": "test:0"}).json()["prediction"]
        # What `cnnlab train` does after an epoch: rewrite history.csv and best.pt in place.
        rows = runs.read_history(path / "history.csv")
        runs.write_history(path / "history.csv", rows + [{**rows[0], "epoch": 2, "loss": 0.5}])
        state = torch.load(path / "best.pt", weights_only=True)
        runs.save_checkpoint(path / "best.pt", {k: v * 0 if k == "9.bias" else v for k, v in state.items()}
                             | {"9.weight": state["9.weight"] * 0})
        second = c.get("/api/t/0/history").json()
        assert [e["epoch"] for e in second["epochs"]] == [1, 2] and second["epochs"][1]["loss"] == 0.5
        after = c.get("/api/t/0/analyze", params={"input": "test:0"}).json()["prediction"]
        assert after != before and after[0]["prob"] == pytest.approx(0.1)  # zero logits: uniform


def test_training_states_are_told_apart(tiny_run, tmp_path):
    import shutil

    from cnnlab.runs import lock as runlock

    path = tmp_path / "states"
    path.mkdir()
    shutil.copy(tiny_run / "config.json", path)
    with TestClient(create_app([RunTarget(path)]), base_url="http://127.0.0.1") as c:
        def state():
            h = c.get("/api/t/0/history").json()
            return h["state"], h["message"]

        runlock.acquire(path)  # what `cnnlab train` holds for its whole life
        try:
            assert state()[0] == "training" and "no epoch finished yet" in state()[1]
            assert "training, no epoch finished yet" in c.get("/api/t/0/info").json()["waiting"]
            for name in ("best.pt", "last.pt", "history.csv"):
                shutil.copy(tiny_run / name, path)
            assert state() == ("training", state()[1]) and "1 of 1 epochs finished" in state()[1]
        finally:
            runlock.release(path)
        kind, message = state()  # the writer is gone and metrics.json was never written
        assert kind == "interrupted" and f"cnnlab train --resume {path.resolve()}" in message
        shutil.copy(tiny_run / "metrics.json", path)
        assert state() == ("finished", "finished: 1 epoch")
        shutil.rmtree(path)
        kind, message = state()
        assert kind == "deleted" and "run directory deleted" in message


def test_proc_locks_lines_are_read_right(tmp_path):
    import os

    from cnnlab.lab.runstate import _held_in_proc_locks

    lock = tmp_path / ".cnnlab.lock"
    lock.write_text("42\n")
    st = lock.stat()
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    assert _held_in_proc_locks(lock, f"1: FLOCK  ADVISORY  WRITE 42 {dev} 0 EOF")
    assert not _held_in_proc_locks(lock, f"1: POSIX  ADVISORY  WRITE 42 {dev} 0 EOF")
    assert not _held_in_proc_locks(lock, f"1: -> FLOCK  ADVISORY  WRITE 42 {dev} 0 EOF")
    assert not _held_in_proc_locks(lock, f"1: FLOCK  ADVISORY  WRITE 42 {dev}9 0 EOF")


def test_the_lock_probe_without_proc_locks(tmp_path, monkeypatch):
    import os

    from cnnlab.lab import runstate
    from cnnlab.runs import lock as runlock

    monkeypatch.setattr(runstate, "PROC_LOCKS", tmp_path / "no-proc-locks")  # as on a system without /proc/locks
    (tmp_path / "config.json").write_text("{}")
    runlock.acquire(tmp_path)
    try:
        assert runstate.writer(tmp_path) == str(os.getpid())
        assert runstate.run_state(tmp_path, 0, 3)["state"] == "training"
    finally:
        runlock.release(tmp_path)
    assert runstate.writer(tmp_path) is None and runstate.run_state(tmp_path, 0, 3)["state"] == "interrupted"
    runlock.acquire(tmp_path)  # the probe took nothing: the writer's lock is free to take again
    runlock.release(tmp_path)


def test_colour_kernels_only_for_colour_inputs_and_filters_carry_their_scale(client):
    assert "brown" not in client.get("/api/t/0/info").json()["kernels"]  # MNIST is grey
    f = client.get("/api/t/0/filters", params={"layer": "0"}).json()
    bar = np.asarray(Image.open(io.BytesIO(base64.b64decode(f["colorbar"]))))
    assert bar.shape == (1, 256) and bar[0, 0] == 0 and bar[0, -1] == 255 and f["min"] < 0 < f["max"]


def test_each_operation_is_explained_with_the_models_numbers(client, reference):
    run, model, images, _ = reference
    x = run.preprocess(images[0:1])
    outs = [x]
    with torch.no_grad():
        for module in model:
            outs.append(module(outs[-1]))
    body = client.get("/api/t/0/analyze", params={"input": "test:0"}).json()["softmax"]
    np.testing.assert_allclose(body["probs"], torch.softmax(outs[-1], 1)[0].numpy(), atol=1e-7)
    np.testing.assert_allclose(np.array(body["exp"]) / body["sum"], body["probs"], atol=1e-6)
    conv = client.get("/api/t/0/conv", params={"input": "test:0", "layer": "0", "channel": 1, "y": 0, "x": 9}).json()
    assert conv["reads_model_input"] and conv["detail"][0]["raw"][0] == [None, None, None]  # the top padding row
    assert conv["detail"][0]["raw"][1] == images[0, 0, 8:11, 0].tolist()
    np.testing.assert_allclose(conv["detail"][0]["products"],
                               np.array(conv["detail"][0]["inputs"]) * np.array(conv["detail"][0]["weights"]))
    assert conv["result"] == pytest.approx(float(outs[1][0, 1, 0, 9]), abs=1e-6)
    deep = client.get("/api/t/0/conv", params={"input": "test:0", "layer": "3", "channel": 0, "y": 3, "x": 3}).json()
    assert not deep["reads_model_input"] and "raw" not in deep["detail"][0]

    def unit(**q):
        return client.get("/api/t/0/unit", params={"input": "test:0", **q}).json()

    relu = unit(layer="1", channel=4, y=9, x=12)
    assert relu["kind"] == "relu" and relu["input"] == pytest.approx(float(outs[1][0, 4, 9, 12]), abs=1e-6)
    assert relu["value"] == pytest.approx(max(0.0, relu["input"]), abs=1e-7)
    pool = unit(layer="5", channel=7, y=3, x=2)
    window = outs[5][0, 7, 6:8, 4:6]
    assert pool["kind"] == "pool" and np.allclose(pool["window"], window.numpy())
    assert pool["value"] == pytest.approx(float(window.max())) and window[tuple(pool["winner"])] == window.max()
    dense = unit(layer="9", index=4)
    assert dense["kind"] == "dense" and dense["sum"] == pytest.approx(float(outs[-1][0, 4]), abs=1e-5)
    assert dense["sum"] == pytest.approx(sum(t["product"] for t in dense["top"]) + dense["rest"] + dense["bias"])
    flat = unit(layer="6", index=100)
    assert flat["kind"] == "flatten" and flat["from"] == [2, 0, 2]
    assert flat["value"] == pytest.approx(float(outs[6][0, 2, 0, 2]))
    assert client.get("/api/t/0/unit", params={"input": "test:0", "layer": "9", "index": 10}).status_code == 404
    assert client.get("/api/t/0/unit", params={"input": "test:0", "layer": "1"}).status_code == 400


# --------------------------------------------------------------------------- safety


@pytest.mark.parametrize("url", [
    "/api/t/0/test/../../config.json", "/static/../server.py", "/static/..%2f..%2fserver.py",
    "/api/t/1/info", "/api/t/-1/info", "/api/t/0/test/99999.png",
])
def test_no_path_reaches_the_file_system(client, url):
    r = client.get(url)
    assert r.status_code == 404
    assert b"mnist-cnn" not in r.content and b"import" not in r.content


@pytest.mark.parametrize("ref", ["../../etc/passwd", "/etc/passwd", "test:../1", "config.json", "0" * 16, "test:"])
def test_inputs_are_only_tokens_or_test_indices(client, ref):
    r = client.get("/api/t/0/analyze", params={"input": ref})
    assert r.status_code in (400, 404) and "error" in r.json()


@pytest.mark.parametrize("layer", ["../..", "/etc/passwd", "9", ""])
def test_unknown_layers_are_refused(client, layer):
    r = client.get("/api/t/0/dot", params={"input": "test:0", "layer": layer, "channel": 0, "y": 0, "x": 0})
    assert r.status_code == 404 and "error" in r.json()
    assert client.get("/api/t/0/filters", params={"layer": layer or "x"}).status_code == 404


def test_foreign_hosts_and_origins_are_refused_and_no_cors(client):
    assert client.get("/api/targets", headers={"host": "evil.example:8765"}).status_code == 403
    assert client.get("/api/targets", headers={"host": "LocalHost:8765"}).status_code == 200  # names ignore case
    r = client.get("/api/targets", headers={"origin": "http://evil.example"})
    assert r.status_code == 403
    ok = client.get("/api/targets", headers={"origin": "http://127.0.0.1"})
    assert ok.status_code == 200
    pre = client.options("/api/t/0/draw", headers={"origin": "http://evil.example",
                                                    "access-control-request-method": "POST"})
    for response in (ok, pre, r):
        assert not any(h.lower().startswith("access-control-") for h in response.headers)
    assert "default-src 'self'" in ok.headers["content-security-policy"]


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header announces width x height pixels, with (almost) no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_uploads_are_capped(client):
    bomb = client.post("/api/t/0/upload", content=_png_header_only(100_000, 100_000))
    assert bomb.status_code == 413 and "10,000,000,000 pixels" in bomb.json()["error"]
    big = client.post("/api/t/0/upload", content=b"\0" * (10 * 1024 * 1024 + 1))
    assert big.status_code == 413 and "limit" in big.json()["error"]
    junk = client.post("/api/t/0/upload", content=b"GIF89a not really")
    assert junk.status_code == 400 and "not an image" in junk.json()["error"]
    truncated = io.BytesIO()
    Image.new("L", (64, 64), 200).save(truncated, format="JPEG")
    cut = client.post("/api/t/0/upload", content=truncated.getvalue()[:200])
    assert cut.status_code == 400
    assert client.post("/api/t/0/upload", content=b"").status_code == 400


def test_decodes_are_capped_and_large_photos_reduced(monkeypatch):
    import threading
    import time as clock

    from cnnlab.lab import imaging

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (2000, 3000, 3), dtype=np.uint8)).save(
        buf, format="PNG", compress_level=0)
    data = buf.getvalue()
    real, active, most, lock = imaging._decode, [0], [0], threading.Lock()

    def spy(*args):  # the real decode, counted while it runs
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        try:
            clock.sleep(0.05)  # hold the slot long enough for the other threads to queue on it
            return real(*args)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(imaging, "_decode", spy)
    sizes = []
    threads = [threading.Thread(target=lambda: sizes.append(imaging.decode_upload(data).size)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == imaging.DECODE_SLOTS and sizes == [(1500, 1000)] * 6  # short side 2000 -> 1000


def test_upload_of_a_light_photo_is_inverted_and_predicted(client):
    buf = io.BytesIO()
    digit = np.full((120, 90), 250, np.uint8)
    digit[20:100, 40:50] = 10  # a dark "1" on white paper
    Image.fromarray(digit).save(buf, format="PNG")
    up = client.post("/api/t/0/upload", content=buf.getvalue()).json()
    assert "inverted" in up["note"] and "resized 90x120 -> 28x28" in up["note"]
    shown = np.asarray(Image.open(io.BytesIO(client.get("/api/t/0/input.png", params={"input": up["input"]}).content)))
    assert shown.shape == (28, 28) and shown[14, 14] > 200 and shown[0, 0] < 20


def test_a_run_before_its_first_epoch_says_it_is_waiting(tiny_run, tmp_path):
    import shutil

    path = tmp_path / "new"
    path.mkdir()
    shutil.copy(tiny_run / "config.json", path)
    with TestClient(create_app([RunTarget(path)]), base_url="http://127.0.0.1") as c:
        info = c.get("/api/t/0/info").json()
        assert "interrupted after 0" in info["waiting"] and info["layers"] == [] and info["classes"][3] == "3"
        assert c.get("/api/t/0/history").json()["epochs"] == []
        r = c.get("/api/t/0/analyze", params={"input": "test:0"})
        assert r.status_code == 409 and "no weights" in r.json()["error"]


def test_a_checkpoint_that_would_run_code_is_refused(tiny_run, tmp_path):
    import shutil

    path = tmp_path / "evil"
    shutil.copytree(tiny_run, path)
    marker = tmp_path / "ran"
    (path / "best.pt").unlink()

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"model": Evil()}, path / "last.pt")
    with TestClient(create_app([RunTarget(path)]), base_url="http://127.0.0.1") as c:
        r = c.get("/api/t/0/analyze", params={"input": "test:0"})
    assert r.status_code == 400 and "cannot read checkpoint" in r.json()["error"]
    assert not marker.exists()


def test_cat_photo_on_squeezenet(shared_dir, squeeze_weights):
    target = PretrainedTarget("squeezenet1_1", weights=squeeze_weights)
    with TestClient(create_app([target]), base_url="http://127.0.0.1") as c:
        assert c.get("/api/t/0/info").json()["has_test"] is False  # no errors panel, no map
        up = c.post("/api/t/0/upload", content=(shared_dir / "images" / "cat.jpg").read_bytes()).json()
        body = c.get("/api/t/0/analyze", params={"input": up["input"]}).json()
        assert body["prediction"][0]["name"] == "Egyptian_cat"
        assert {p["name"] for p in body["prediction"][:3]} == {"Egyptian_cat", "tabby", "tiger_cat"}
        from cnnlab.models.pretrained import classify

        expected = classify(str(shared_dir / "images" / "cat.jpg"), model=target.model, top=1)[0][0]
        assert body["prediction"][0]["prob"] == pytest.approx(expected[2], rel=1e-4)
        assert c.get("/api/t/0/confusion").status_code == 409
        assert json.loads(c.get("/api/t/0/history").content)["epochs"] == []
        where = {"input": up["input"], "layer": "features.0", "channel": 7, "y": 50, "x": 60}
        d = c.get("/api/t/0/dot", params=where).json()
        assert d["result"] == pytest.approx(d["torch"], abs=1e-4) and d["stride"] == [2, 2]
        # the first conv reads the photo: its raw pixels beside the normalised values it multiplies
        from cnnlab.models.pretrained import IMAGENET_MEAN, IMAGENET_STD

        step = c.get("/api/t/0/conv", params=where).json()
        assert step["reads_model_input"] and step["normalisation"] == {"mean": pytest.approx(list(IMAGENET_MEAN)),
                                                                       "std": pytest.approx(list(IMAGENET_STD))}
        for ch in step["detail"]:
            k = ch["in_channel"]
            expected = (np.array(ch["raw"], dtype=float) / 255 - IMAGENET_MEAN[k]) / IMAGENET_STD[k]
            np.testing.assert_allclose(ch["inputs"], expected, atol=1e-5)
        assert len(c.get("/api/t/0/analyze", params={"input": up["input"]}).json()["softmax"]["probs"]) == 1000


# --------------------------------------------------------------------------- the command


def test_cli_refuses_bad_arguments(tmp_path, monkeypatch, capsys):
    from cnnlab.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["lab"]) == 2 and "no run directories under ./runs" in capsys.readouterr().err
    assert main(["lab", str(tmp_path)]) == 2 and "not a run directory" in capsys.readouterr().err
    assert main(["lab", "--weights", "w.pth"]) == 2 and "needs --model" in capsys.readouterr().err


def test_cli_serves_discovered_runs_and_warns_off_loopback(tiny_run, tmp_path, monkeypatch, capsys):
    import shutil

    import uvicorn

    from cnnlab.cli import main

    shutil.copytree(tiny_run, tmp_path / "runs" / "demo" / "run")
    monkeypatch.chdir(tmp_path)
    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: served.append(self.config))
    assert main(["lab", "--port", "0"]) == 0
    out = capsys.readouterr()
    assert "[0] demo/run (run)" in out.out and "warning" not in out.err
    assert served[-1].host == "127.0.0.1" and served[-1].app.allowed_hosts is not None
    assert main(["lab", "runs/demo/run", "--host", "0.0.0.0", "--port", "0"]) == 0  # the CLI binds the port itself
    assert "warning: listening on 0.0.0.0" in capsys.readouterr().err
    assert served[-1].app.allowed_hosts == ("127.0.0.1", "localhost", "[::1]", "::1")  # still no DNS rebinding
    # Below, addresses this machine may not have (and port 8765, maybe taken): binding is tested above.
    monkeypatch.setattr("cnnlab.cli.lab.bind", lambda host, port: __import__("io").BytesIO())  # has close()
    threads = torch.get_num_threads()
    assert main(["lab", "runs/demo/run", "--host", "0.0.0.0", "--allow-host", "Lab.Local", "--threads", "1"]) == 0
    assert "lab.local" in capsys.readouterr().err
    app = served[-1].app
    assert app.allowed_hosts[-1] == "lab.local" and torch.get_num_threads() == 1
    torch.set_num_threads(threads)
    with TestClient(app, base_url="http://lab.local:8765") as c:
        assert c.get("/api/targets").status_code == 200
        assert c.get("/api/targets", headers={"host": "rebound.example:8765"}).status_code == 403
    assert main(["lab", "runs/demo/run", "--host", "192.168.1.5"]) == 0
    assert served[-1].app.allowed_hosts[-1] == "192.168.1.5"
    assert main(["lab", "runs/demo/run", "--allow-host", "a/b"]) == 2
    assert main(["lab", "runs/demo/run", "--threads", "0"]) == 2


# --------------------------------------------------------------------------- the Why panel


@pytest.mark.parametrize(("method", "layer"), [("gradcam", "auto"), ("gradcam", "0"), ("gradcam++", "auto"),
                                                ("saliency", "auto"), ("ig", "auto")])
def test_attribution_is_cnnlab_insights_map(client, reference, method, layer):
    from cnnlab.insight.attribution import attribute, gradcam_maps

    run, model, images, labels = reference
    x = run.preprocess(images[4:5])
    r = client.get("/api/t/0/attribution", params={"input": "test:4", "method": method, "layer": layer, "target": 3})
    body = r.json()
    assert r.status_code == 200 and body["class"] == 3 and body["class_name"] == "3"
    if method.startswith("gradcam"):
        maps, _, used, _ = gradcam_maps(model, x, [3], layers=[layer], plus=method == "gradcam++")
        expected = maps[used[0]][0]
        assert body["caption"].endswith(f"at layer {used[0]}") and used[0] == ("4" if layer == "auto" else layer)
    else:
        expected = attribute(model, x, [3], method=method)[0]
    rgba = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["png"]))))
    assert rgba.shape == (28, 28, 4)
    # Opacity is |value| over the map's largest |value|: 0 is transparent, whatever the map's minimum.
    m = np.abs(expected).max()
    np.testing.assert_allclose(rgba[:, :, 3], np.clip(np.abs(expected) * 255 / m, 0, 255).astype(np.uint8), atol=1)
    signed = bool(expected.min() < 0)
    assert body["signed"] is signed and body["cmap"] == ("RdBu_r" if signed else "cividis")
    assert (body["lo"], body["hi"]) == pytest.approx((-m, m) if signed else (0.0, m), rel=1e-5)
    bar = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["colorbar"]))))
    top = np.unravel_index(np.argmax(expected), expected.shape)
    np.testing.assert_array_equal(rgba[top][:3], bar[0, -1])  # the largest value wears the bar's top colour
    assert body["note"] == ""
    predicted = client.get("/api/t/0/attribution", params={"input": "test:4", "method": method}).json()
    assert predicted["class"] == int(predict(model, x, precision="fp32")[0].argmax())


def zero_gradcam(model, run, images) -> tuple[int, str, int]:
    """(test image, layer, class) whose Grad-CAM is 0 everywhere: no positive evidence there."""
    from cnnlab.insight.attribution import gradcam_maps

    for i in range(len(images)):
        x = run.preprocess(images[i:i + 1])
        for layer in ("3", "0"):
            for c in range(10):
                maps, _, used, _ = gradcam_maps(model, x, [c], layers=[layer])
                if not maps[used[0]][0].any():
                    return i, layer, c
    pytest.fail("no all-zero Grad-CAM map among the tiny run's test images (the search found none)")


def test_an_all_zero_map_is_transparent_and_says_why(client, reference):
    run, model, images, _ = reference
    i, layer, c = zero_gradcam(model, run, images[:40])
    body = client.get("/api/t/0/attribution",
                      params={"input": f"test:{i}", "method": "gradcam", "layer": layer, "target": c}).json()
    assert body["png"] is None and body["max"] == 0 and "no positive evidence" in body["note"]
    # and a map with evidence has no note
    other = client.get("/api/t/0/attribution", params={"input": f"test:{i}", "method": "saliency", "target": c}).json()
    assert other["png"] and other["note"] == ""


def test_a_constant_map_is_black_not_mid_grey():
    from cnnlab.lab.imaging import atlas, to_uint8

    maps = np.stack([np.zeros((3, 3)), np.arange(9.0).reshape(3, 3)]).astype(np.float32)  # a dead ReLU map, a ramp
    grid, cols, lo, hi = atlas(maps)
    assert cols == 2 and lo == [0.0, 0.0] and hi == [0.0, 8.0]
    assert not grid[:, :3].any() and grid[2, 5] == 255
    assert not to_uint8(np.full((2, 2), 0.7)).any()


def test_heat_overlay_of_undefined_and_signed_maps():
    from cnnlab.lab.imaging import heat_overlay

    nan = heat_overlay(np.full((4, 4), np.nan, dtype=np.float32))
    assert nan["png"] is None and "not defined" in nan["note"]
    signed = heat_overlay(np.array([[-2.0, 0.0], [1.0, 2.0]]))
    rgba = np.asarray(Image.open(io.BytesIO(base64.b64decode(signed["png"]))))
    assert signed["signed"] and (signed["lo"], signed["hi"]) == (-2.0, 2.0)
    assert rgba[0, 1, 3] == 0 and rgba[0, 0, 3] == rgba[1, 1, 3] == 255  # 0 transparent, |2| opaque
    assert rgba[0, 0, 2] > rgba[0, 0, 0] and rgba[1, 1, 0] > rgba[1, 1, 2]  # negative blue, positive red


@pytest.mark.parametrize(("params", "status", "words"), [
    ({"method": "lime"}, 400, "unknown method"), ({"target": "10"}, 400, "class index 0..9"),
    ({"target": "cat"}, 400, "class index"), ({"layer": "7"}, 400, "not (N, C, H, W) feature maps"),
])
def test_attribution_refuses_bad_parameters(client, params, status, words):
    r = client.get("/api/t/0/attribution", params={"input": "test:0", **params})
    assert r.status_code == status and words in r.json()["error"]


# --------------------------------------------------------------------------- Map and feature visualisation


def test_embedding_is_the_runs_cached_map(client, reference, tiny_run):
    from cnnlab.insight.embedding import run_embedding
    from cnnlab.lab.insight_views import EMBED_POINTS

    run, model, _, _ = reference
    body = client.get("/api/t/0/embedding", params={"method": "pca"}).json()
    assert (tiny_run / "embedding-pca.npz").is_file()
    emb = run_embedding(tiny_run, method="pca", limit=EMBED_POINTS["pca"])  # the cache the lab wrote
    assert [p["index"] for p in body["points"]] == emb.indices.tolist() and len(body["points"]) == 2000
    split = run.load_data().test
    some = emb.indices[:50]
    preds = predict(model, run.preprocess(split.images[some])).argmax(1)
    assert [p["pred"] for p in body["points"][:50]] == preds.tolist()
    assert [p["label"] for p in body["points"][:50]] == split.labels[some].tolist()
    xy = np.array([[p["x"], p["y"]] for p in body["points"]])
    assert xy.min() >= 0 and xy.max() <= 1 and np.isclose(np.ptp(xy, 0).max(), 1, atol=1e-3)
    wrong = sum(p["label"] != p["pred"] for p in body["points"])
    assert body["caption"].startswith(f"2000 test images, {wrong} predicted wrongly")
    r = client.get("/api/t/0/embedding", params={"method": "lda"})
    assert r.status_code == 400 and "pca" in r.json()["error"]


def test_feature_visualisation_is_cnnlab_insights(client, reference, monkeypatch):
    from cnnlab.insight.featurevis import visualize_channels
    from cnnlab.lab import insight_views

    monkeypatch.setattr(insight_views, "FEATVIS_STEPS", 6)  # the same code path, fewer optimiser steps
    monkeypatch.setattr(insight_views, "FEATVIS_CHANNELS", 3)
    _, model, _, _ = reference
    body = client.get("/api/t/0/featurevis", params={"layer": "3", "start": 62}).json()
    assert [im["channel"] for im in body["images"]] == [62, 63]
    expected = visualize_channels(model, layer="3", channels=[62, 63], size=(28, 28), steps=6, mean=None, std=None)
    for im, ref in zip(body["images"], expected, strict=True):
        got = np.asarray(Image.open(io.BytesIO(base64.b64decode(im["png"]))))
        np.testing.assert_array_equal(got, (np.clip(ref[:, :, 0], 0, 1) * 255).round().astype(np.uint8))
    assert client.get("/api/t/0/featurevis", params={"layer": "3", "start": 64}).status_code == 400
    assert client.get("/api/t/0/featurevis", params={"layer": "../3"}).status_code == 404


def test_lab_offline_never_downloads_the_pretrained_weights(tmp_path, monkeypatch, capsys):
    from cnnlab.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(*args, **kwargs):
        raise AssertionError("--offline tried to download")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    assert main(["lab", "--model", "vgg16", "--offline", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--weights" in err


def test_lab_device_option_places_the_models(tiny_run):
    import argparse

    from cnnlab.cli.lab import build_targets
    from cnnlab.errors import CnnlabError

    args = argparse.Namespace(runs=[tiny_run], model=None, weights=None, max_test=50, offline=True, device="cpu")
    (target,) = build_targets(args)
    assert next(target.model.parameters()).device.type == "cpu"
    with pytest.raises(CnnlabError, match="unknown device 'nope'"):
        build_targets(argparse.Namespace(**{**vars(args), "device": "nope"}))


def test_a_pretrained_target_has_no_test_set_and_says_so_in_one_answer():
    # Typed targets (cnnlab.lab.targets.Target / EvaluatedTarget): a pretrained network does not
    # pretend to have test-set methods that raise; the lab asks and answers 409 with the reason.
    from cnnlab.lab.imaging import LabError
    from cnnlab.lab.targets import PretrainedTarget, RunTarget, evaluated

    assert all(callable(getattr(RunTarget, m, None)) for m in ("evaluated_labels", "probs", "test_input"))
    assert not any(hasattr(PretrainedTarget, m) for m in ("evaluated_labels", "probs", "test_input", "test"))
    fake = PretrainedTarget.__new__(PretrainedTarget)
    fake.name = "squeezenet1_1"
    with pytest.raises(LabError, match="pretrained ImageNet network: the lab has no test set") as info:
        evaluated(fake)
    assert info.value.status == 409


def test_a_signed_method_is_drawn_diverging_even_when_no_value_is_negative():
    # The method decides (cnnlab.insight.attribution.is_signed), not the values it happened to give.
    from cnnlab.lab.imaging import heat_overlay

    positive = np.array([[0.0, 1.0], [2.0, 0.5]])
    assert heat_overlay(positive)["cmap"] == "cividis"
    drawn = heat_overlay(positive, signed=True)
    assert drawn["signed"] and drawn["cmap"] == "RdBu_r" and (drawn["lo"], drawn["hi"]) == (-2.0, 2.0)
    assert "for or against" in heat_overlay(np.zeros((2, 2)), signed=True)["note"]


def test_the_attribution_endpoint_draws_integrated_gradients_signed(client):
    r = client.get("/api/t/0/attribution", params={"input": "test:0", "method": "ig"})
    assert r.status_code == 200 and r.json()["signed"] and r.json()["cmap"] == "RdBu_r"
    r = client.get("/api/t/0/attribution", params={"input": "test:0", "method": "gradcam"})
    assert r.status_code == 200 and not r.json()["signed"] and r.json()["cmap"] == "cividis"
