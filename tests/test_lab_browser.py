"""The lab end to end in a real browser: Debian's headless Chromium driven by Playwright.

A lab server runs in a thread on a free loopback port with the tiny MNIST run (target 0)
and SqueezeNet with the shared ImageNet weights (target 1). Each test checks what the page
shows against the model itself, saves a screenshot of the panels it used into
``tests/artifacts/`` (git-ignored), and fails on any JavaScript error or console error.
``CNNLAB_DOCS_SCREENSHOT=1`` also rewrites the README's screenshot ``docs/lab.png``.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).parent / "artifacts"
DOCS = Path(__file__).resolve().parents[1] / "docs"

playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed "
                                     "(pip install 'cnnlab[lab-test]')")
# Each test drives a real browser (seconds each; the module ~1.5 minutes on 2 busy cores).
pytestmark = pytest.mark.slow

if not CHROMIUM.is_file():
    pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


class Server:
    """uvicorn serving the lab in a background thread on a free port."""

    def __init__(self, targets) -> None:
        import uvicorn

        from cnnlab.lab.server import create_app

        config = uvicorn.Config(create_app(targets), host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the lab server did not start")
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def run_dir(tiny_mnist_run, datasets_root):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNLAB_DATA", str(datasets_root))
        yield tiny_mnist_run


@pytest.fixture(scope="module")
def lab_url(run_dir, shared_dir):
    from cnnlab.lab.targets import PretrainedTarget, RunTarget

    weights = shared_dir / "models" / "squeezenet1_1-imagenet.pth"
    targets = [RunTarget(run_dir, max_test=300)]
    if weights.is_file():
        targets.append(PretrainedTarget("squeezenet1_1", weights=weights))
    with Server(targets) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh page; the test fails if the page logs a JavaScript or console error."""
    context = browser.new_context(viewport={"width": 1400, "height": 1800})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None)
    page.lab_errors = errors  # a test that provokes an error response removes the line it expects
    yield page
    context.close()
    assert errors == []


def wait_js(page, expression: str, timeout: float = 30.0) -> None:
    """Poll a JavaScript expression until it is true. (page.wait_for_function compiles its
    predicate with eval, which the lab's Content-Security-Policy rightly forbids.)"""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        page.wait_for_timeout(50)


def open_lab(page, url: str, target: int = 0) -> None:
    page.goto(f"{url}/?t={target}")
    page.wait_for_selector("body[data-ready='1']", timeout=60_000)


def shoot(page, *testids: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for testid in testids:
        page.get_by_test_id(testid).screenshot(path=str(ARTIFACTS / f"{testid}.png"))


def bars(page) -> list[tuple[str, float]]:
    items = page.locator("#bars li")
    return [(items.nth(i).get_attribute("data-class"), float(items.nth(i).get_attribute("data-prob")))
            for i in range(items.count())]


def model_and_input(url: str, run_dir: Path, ref: str):
    """The run's model and the image the page shows, fetched from the lab as PNG."""
    import urllib.request

    from cnnlab.runs.directory import load_run

    run = load_run(run_dir)
    with urllib.request.urlopen(f"{url}/api/t/0/input.png?input={ref}") as response:
        image = np.array(Image.open(io.BytesIO(response.read())))
    return run, run.build_model(), run.preprocess(image.reshape(1, 28, 28, 1))


def test_drawing_updates_the_prediction_live(page, lab_url, run_dir):
    from cnnlab.insight.predictions import predict

    open_lab(page, lab_url)
    before = bars(page)
    box = page.get_by_test_id("draw-canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.15)
    page.mouse.down()
    for t in np.linspace(0, 1, 12):  # a vertical stroke: a "1"
        page.mouse.move(box["x"] + box["width"] * (0.5 - 0.05 * t), box["y"] + box["height"] * (0.15 + 0.7 * t))
    page.mouse.up()
    wait_js(page, "document.body.dataset.input && !document.body.dataset.input.startsWith('test:')")
    wait_js(page, "document.getElementById('input-caption').textContent === 'your drawing'")
    wait_js(page, "document.body.dataset.drawing === 'idle'")  # the last stroke's prediction is shown
    after = bars(page)
    assert after != before
    ref = page.evaluate("document.body.dataset.input")
    _, model, x = model_and_input(lab_url, run_dir, ref)
    probs = predict(model, x, precision="fp32")[0]  # the lab computes in fp32
    assert after[0][0] == str(int(probs.argmax()))
    assert after[0][1] == pytest.approx(float(probs.max()), abs=1e-5)
    shoot(page, "input", "prediction")
    if os.environ.get("CNNLAB_DOCS_SCREENSHOT") == "1":  # the README's picture, written once and committed
        # One digit from pixels to probability: the drawing, the softmax written out, every layer's
        # maps with a convolution value explained step by step and its edges to its inputs.
        DOCS.mkdir(exist_ok=True)
        page.set_viewport_size({"width": 1400, "height": 1500})
        enlarge_and_click(page, "3", 5, 0.4, 0.55)
        page.get_by_test_id("conv-sum").wait_for()
        wait_js(page, "document.getElementById('columns').dataset.edges === '8'")
        page.evaluate("window.scrollTo(0, 0)")
        shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
        shot.resize((1050, 1125), Image.Resampling.LANCZOS).quantize(colors=256).save(DOCS / "lab.png", optimize=True)


def test_a_dropped_photo_becomes_the_input(page, lab_url):
    open_lab(page, lab_url)
    # A PNG of a dark "1" on white paper, made in the page and dropped onto it as a file.
    page.evaluate("""async () => {
      const c = document.createElement("canvas"); c.width = 40; c.height = 48;
      const g = c.getContext("2d"); g.fillStyle = "#fff"; g.fillRect(0, 0, 40, 48);
      g.fillStyle = "#000"; g.fillRect(17, 6, 6, 36);
      const blob = await new Promise((resolve) => c.toBlob(resolve, "image/png"));
      const files = new DataTransfer(); files.items.add(new File([blob], "one.png", { type: "image/png" }));
      document.body.dispatchEvent(new DragEvent("drop", { dataTransfer: files, bubbles: true, cancelable: true }));
    }""")
    wait_js(page, "document.getElementById('input-caption').textContent.startsWith('one.png')")
    assert "inverted" in page.locator("#input-caption").inner_text()
    ref = page.evaluate("document.body.dataset.input")
    assert not ref.startswith("test:")
    image = np.array(Image.open(io.BytesIO(page.request.get(f"{lab_url}/api/t/0/input.png?input={ref}").body())))
    assert image.shape == (28, 28) and image[14, 14] > 200 and image[1, 1] < 30  # white ink on black, as MNIST


def test_confusion_cell_lists_its_images_and_one_becomes_the_input(page, lab_url):
    open_lab(page, lab_url)
    page.wait_for_selector("#confusion-matrix button")
    cells = page.locator("#confusion-matrix button:not(.diag)")
    counts = [int(cells.nth(i).inner_text()) for i in range(cells.count())]
    best = int(np.argmax(counts))
    assert counts[best] > 0
    cells.nth(best).click()
    figures = page.locator("#cell-images button.thumb")
    figures.first.wait_for()
    assert figures.count() == min(counts[best], 60)
    ref = figures.first.get_attribute("data-input")
    figures.first.click()
    wait_js(page, f"document.body.dataset.input === '{ref}'")
    assert page.locator("#input-caption").inner_text().startswith(f"test image {ref[5:]}")
    shoot(page, "confusion")


def test_feature_map_pixel_shows_the_dot_product_of_the_model(page, lab_url, run_dir):
    from cnnlab.insight.internals import activations

    open_lab(page, lab_url)
    page.locator(".column[data-layer='3'] canvas[data-channel='5']").click()
    page.wait_for_selector("#enlarged[data-ready='1']")
    box = page.locator("#enlarged").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.55, box["y"] + box["height"] * 0.4)  # 14x14 map: row 5, col 7
    result = page.get_by_test_id("dot-result")
    result.wait_for(state="attached")  # kept for scripts; the page shows the same number as conv-sum
    _, model, x = model_and_input(lab_url, run_dir, "test:0")
    expected = float(activations(model, x, "3")[0, 5, 5, 7])
    assert float(result.get_attribute("data-value")) == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert float(page.get_by_test_id("dot-torch").get_attribute("data-value")) == pytest.approx(expected, abs=1e-6)
    assert "equal" in page.get_by_test_id("dot-product").inner_text()
    shoot(page, "overview", "dot-product")


def test_playground_filters_and_training_panels(page, lab_url):
    open_lab(page, lab_url)
    wait_js(page, "document.getElementById('pg-formula').textContent.includes('= 26')")
    page.locator("#pg-stride").fill("2")
    wait_js(page, "document.getElementById('pg-formula').textContent.includes('/ 2) + 1 = 13')")
    page.locator("#pg-kernel").select_option("laplacian-8")
    wait_js(page, "document.getElementById('pg-numbers').value.startsWith('-1 -1 -1')")
    page.wait_for_selector("#training-status[data-epochs='1']")
    assert page.locator("#filter-grid").evaluate("img => img.naturalWidth") > 0
    wait_js(page, "document.getElementById('attribution-panel').dataset.ready === 'test:0'")
    assert page.locator("#attr-caption").inner_text().startswith("Grad-CAM for class")
    page.locator("#attr-opacity").fill("0.25")
    assert page.locator("#attr-heat").evaluate("img => img.style.opacity") == "0.25"
    page.locator("#attr-method").select_option("saliency")
    wait_js(page, "document.getElementById('attr-caption').textContent.startsWith('saliency for class')")
    shoot(page, "playground", "filters", "training", "attribution", "embedding")


def test_training_curves_grow_without_reload(browser, run_dir, tmp_path):
    from cnnlab.lab.targets import RunTarget
    from cnnlab.runs import directory as runs
    from cnnlab.runs import lock as runlock

    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(run_dir / "config.json", live)  # `cnnlab train` has just started: no epoch yet
    runlock.acquire(live)  # and holds the run's lock, as it does for its whole life
    with Server([RunTarget(live, max_test=50)]) as url:
        context = browser.new_context()
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url)
        page.wait_for_selector("body[data-ready='waiting']")
        assert "training, no epoch finished yet" in page.locator("#status").inner_text()
        page.wait_for_selector("#training-status[data-epochs='0']")
        for name in ("best.pt", "last.pt", "history.csv"):  # the first epoch ends
            shutil.copy(run_dir / name, live)
        page.wait_for_selector("body[data-ready='1']", timeout=20_000)  # the page reloaded itself
        page.wait_for_selector("#training-status[data-epochs='1']")
        rows = runs.read_history(live / "history.csv")
        runs.write_history(live / "history.csv", rows + [{**rows[0], "epoch": 2, "loss": rows[0]["loss"] / 2}])
        page.wait_for_selector("#training-status[data-epochs='2']", timeout=10_000)
        assert "training: 2 of 1 epochs finished" in page.locator("#training-status").inner_text()
        context.close()
    runlock.release(live)
    assert errors == []


def test_cat_photo_upload_on_squeezenet(page, lab_url, shared_dir):
    cat = shared_dir / "images" / "cat.jpg"
    if page.request.get(f"{lab_url}/api/targets").json()[-1]["kind"] != "pretrained" or not cat.is_file():
        pytest.skip("the shared SqueezeNet weights or cat photo are absent")
    open_lab(page, lab_url, target=1)
    page.locator("#upload").set_input_files(str(cat))
    wait_js(page, "document.getElementById('input-caption').textContent.startsWith('cat.jpg')")
    top = bars(page)
    assert top[0][0] == "Egyptian_cat" and {name for name, _ in top[:3]} == {"Egyptian_cat", "tabby", "tiger_cat"}
    wait_js(page, "(document.getElementById('attribution-panel').dataset.ready || '') === document.body.dataset.input")
    assert page.locator("#attr-caption").inner_text().startswith("Grad-CAM for class Egyptian_cat at layer ")
    shoot(page, "prediction")
    # a deep network scrolls, its value-by-value layers collapsed until asked for
    relu = page.locator(".column.collapsed[data-layer='features.1']")
    assert relu.count() == 1 and relu.locator("canvas").count() == 0
    relu.locator("button").click()
    assert page.locator(".column[data-layer='features.1'] .maps canvas").count() == 64
    assert page.locator(".column.collapsed[data-layer='features.1']").count() == 0
    page.get_by_test_id("attribution").screenshot(path=str(ARTIFACTS / "attribution-squeezenet.png"))
    page.get_by_test_id("input").screenshot(path=str(ARTIFACTS / "input-squeezenet.png"))
    page.get_by_test_id("overview").screenshot(path=str(ARTIFACTS / "overview-squeezenet.png"))


def test_map_hover_and_click_and_feature_visualisation(page, lab_url, monkeypatch):
    from cnnlab.lab import insight_views

    monkeypatch.setattr(insight_views, "FEATVIS_STEPS", 6)  # same code path, fewer optimiser steps
    open_lab(page, lab_url)
    page.wait_for_selector("#embedding-panel[data-ready='pca']", timeout=60_000)
    points = page.request.get(f"{lab_url}/api/t/0/embedding?method=pca").json()["points"]
    p = next(q for q in points[len(points) // 2:] if q["index"] != 0)  # test:0 is the page's first input
    canvas = page.locator("#embed-canvas")
    box = canvas.bounding_box()
    x, y = box["x"] + (10 + p["x"] * 400) * box["width"] / 420, box["y"] + (10 + p["y"] * 400) * box["height"] / 420
    page.mouse.move(x, y)
    tip = page.locator("#embed-tip")
    tip.wait_for()
    assert tip.locator("img").count() == 1 and "→" in tip.inner_text()
    page.mouse.click(x, y)
    wait_js(page, "document.body.dataset.input.startsWith('test:') && document.body.dataset.input !== 'test:0'")
    chosen = int(page.evaluate("document.body.dataset.input")[5:])
    near = [q for q in points if (q["x"] - p["x"]) ** 2 + (q["y"] - p["y"]) ** 2 < (8 / 400) ** 2]
    assert chosen in {q["index"] for q in near}
    canvas.focus()  # the keyboard: arrows walk between points, Enter makes one the input
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")
    chosen = canvas.get_attribute("data-focused")
    assert tip.is_visible() and f"#{chosen}:" in tip.inner_text()
    page.keyboard.press("Enter")
    wait_js(page, f"document.body.dataset.input === 'test:{chosen}'")
    page.locator("#filter-layer").select_option("3")
    page.locator("#featvis-go").click()
    page.wait_for_selector("#filters-panel[data-featvis='3:0']", timeout=60_000)
    assert page.locator("#featvis img").count() == 8
    shoot(page, "embedding", "filters")


def test_training_states_while_a_real_cnnlab_train_writes(browser, datasets_root, tmp_path):
    """`cnnlab train` in a subprocess: the panel says training (no epoch yet, then epochs),
    interrupted with the resume command once it is stopped, and deleted once the folder is gone.
    (50 epochs asked for, so that even a fast machine is still training when it is stopped.)"""
    import signal
    import subprocess
    import sys

    from cnnlab.lab.targets import RunTarget

    out = tmp_path / "real"
    env = {**os.environ, "CNNLAB_DATA": str(datasets_root), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    log = tmp_path / "train.log"
    with log.open("wb") as sink:  # the child keeps its own descriptor; ours closes here
        proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "train", "--data", "mnist", "--model", "mnist-cnn",
                                 "--train-size", "6000", "--val-size", "100", "--epochs", "50", "--batch-size", "64",
                                 "--out", str(out), "--quiet", "--offline", "--no-report"], env=env,
                                stdout=subprocess.DEVNULL, stderr=sink)
    try:
        deadline = time.monotonic() + 60
        while not (out / "config.json").is_file():  # train writes config.json first, then trains
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        with Server([RunTarget(out, max_test=50)]) as url:
            context = browser.new_context()
            page = context.new_page()
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            status = page.locator("#training-status")
            page.wait_for_selector("#training-status[data-state='training']", timeout=30_000)
            first = status.inner_text()
            if not (out / "history.csv").is_file():  # the first epoch had not ended when the page looked
                assert "training, no epoch finished yet" in first and f"PID {proc.pid}" in first
            page.wait_for_selector("body[data-ready='1']", timeout=120_000)  # weights: the page reloaded itself
            wait_js(page, "/training: [0-9]+ of 50 epochs finished/.test("
                          "document.getElementById('training-status').textContent)", timeout=60)
            proc.send_signal(signal.SIGINT)  # Ctrl-C: finished epochs are kept, the lock is dropped
            proc.wait(timeout=60)
            page.wait_for_selector("#training-status[data-state='interrupted']", timeout=30_000)
            assert f"cnnlab train --resume {out.resolve()}" in status.inner_text()
            shutil.rmtree(out)
            page.wait_for_selector("#training-status[data-state='deleted']", timeout=30_000)
            assert "run directory deleted" in status.inner_text()
            context.close()
        assert errors == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_an_all_zero_attribution_map_is_transparent_with_a_note(page, lab_url, run_dir):
    from test_lab_api import zero_gradcam

    from cnnlab.runs.directory import load_run

    run = load_run(run_dir)
    i, layer, c = zero_gradcam(run.build_model(), run, run.load_data().test.images[:40])
    open_lab(page, lab_url)
    page.locator("#pick-index").fill(str(i))
    page.locator("#pick-go").click()
    wait_js(page, f"document.body.dataset.input === 'test:{i}'")
    page.locator("#attr-layer").select_option(layer)
    page.locator("#attr-class").select_option(str(c))
    note = page.get_by_test_id("attribution-note")
    note.wait_for(state="visible")
    assert "no positive evidence" in note.inner_text()
    assert page.locator("#attr-heat").is_hidden() and page.locator("#attr-scale").is_hidden()
    shoot(page, "attribution")
    page.locator("#attr-method").select_option("saliency")  # a map with evidence: drawn, with its scale
    wait_js(page, "document.getElementById('attr-caption').textContent.startsWith('saliency')")
    wait_js(page, "document.getElementById('attr-bar').naturalWidth === 256")  # the 256 colours of the scale
    assert page.locator("#attr-scale").is_visible() and page.locator("#attr-heat").is_visible()
    assert "magnitude (cividis)" in page.locator("#attr-scale").inner_text() and note.is_hidden()


def test_panels_that_do_not_apply_say_why(page, lab_url):
    open_lab(page, lab_url)
    assert page.locator("#confusion-panel[data-na]").count() == 0
    page.wait_for_selector("#embed-legend li")
    assert page.locator("#embed-legend li").count() == 11  # ten classes and the marks
    page.wait_for_selector("#filter-scale:not([hidden])")
    if page.request.get(f"{lab_url}/api/targets").json()[-1]["kind"] != "pretrained":
        pytest.skip("the shared SqueezeNet weights are absent")
    open_lab(page, lab_url, target=1)
    for panel in ("confusion-panel", "embedding-panel", "training-panel"):
        assert page.locator(f"#{panel} .na-note").is_visible()
        assert page.locator(f"#{panel} .na-note").count() == 1
    assert page.locator("#confusion-matrix").is_hidden() and page.locator("#loss-chart").is_hidden()
    assert page.get_by_test_id("draw-canvas").is_hidden()
    assert page.locator("#pg-kernel option[value='brown']").count() == 1  # a colour kernel for a colour model
    page.locator("#pg-stride").fill("99")  # out of range: the error, and the old output greyed out beside it
    wait_js(page, "document.getElementById('pg-error').textContent.includes('stride')")
    assert "stale" in page.locator("#pg-output").get_attribute("class")
    page.lab_errors[:] = [e for e in page.lab_errors if "status of 400" not in e]  # the refused stride


def layer_io(model, x) -> list:
    """Every layer's output of the Sequential mnist-cnn, computed here with plain PyTorch: [x, out0, out1, ...]."""
    import torch

    outs = [x]
    with torch.no_grad():
        for module in model:
            outs.append(module(outs[-1]))
    return outs


def enlarge_and_click(page, layer: str, channel: int, fy: float, fx: float) -> None:
    page.locator(f".column[data-layer='{layer}'] canvas[data-channel='{channel}']").click()
    wait_js(page, f"document.getElementById('enlarged').dataset.ready === '1' && "
                  f"document.getElementById('enlarged').dataset.layer === '{layer}'")
    box = page.locator("#enlarged").bounding_box()
    page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)


def test_convolution_step_by_step_equals_conv2d(page, lab_url, run_dir):
    import torch.nn.functional as F

    open_lab(page, lab_url)
    run, model, x = model_and_input(lab_url, run_dir, "test:0")
    outs = layer_io(model, x)
    conv = model[3]
    expected = F.conv2d(outs[3], conv.weight, conv.bias, stride=conv.stride, padding=conv.padding)[0, 5].detach()
    enlarge_and_click(page, "3", 5, 0.4, 0.55)  # the 14x14 map: row 5, col 7
    import re

    caption = page.locator("#enlarged-caption").inner_text()  # the map's grey scale, in numbers
    black, white = (float(v) for v in re.search(r"black (\S+), white (\S+) ", caption).groups())
    assert (black, white) == pytest.approx((float(expected.min()), float(expected.max())), abs=1e-3)
    total = page.get_by_test_id("conv-sum")
    wait_js(page, "document.querySelector('[data-testid=conv-sum]')?.dataset.x === '7'")
    assert float(total.get_attribute("data-value")) == pytest.approx(float(expected[5, 7]), abs=1e-5)
    for col in (8, 9, 10):  # each step slides the window one position along the row
        page.get_by_test_id("conv-step").click()
        wait_js(page, f"document.querySelector('[data-testid=conv-sum]').dataset.x === '{col}'")
        assert total.get_attribute("data-y") == "5"
        assert float(total.get_attribute("data-value")) == pytest.approx(float(expected[5, col]), abs=1e-5)
    page.locator("#enlarged").focus()
    page.keyboard.press("ArrowDown")  # the arrow keys move the window too
    wait_js(page, "document.querySelector('[data-testid=conv-sum]').dataset.y === '6'")
    assert float(total.get_attribute("data-value")) == pytest.approx(float(expected[6, 10]), abs=1e-5)
    # the running sum over the 32 input channels ends at the result less the bias
    sums = page.locator("#dot-product .sums").inner_text().strip().splitlines()
    assert len(sums) == 1 + 32
    assert float(sums[-1].split("→")[1]) == pytest.approx(float(expected[6, 10] - conv.bias.detach()[5]), abs=2e-4)
    page.get_by_test_id("conv-step").click()
    wait_js(page, "document.querySelector('[data-testid=conv-sum]').dataset.x === '11'")
    page.locator("#conv-play").click()  # play: the window slides on by itself ...
    wait_js(page, "['12', '13'].includes(document.querySelector('[data-testid=conv-sum]').dataset.x)")
    page.locator("#conv-play").click()  # ... until paused
    wait_js(page, "document.getElementById('conv-play').getAttribute('aria-pressed') === 'false'")
    page.wait_for_timeout(300)  # a step already asked for may still land
    stopped = total.get_attribute("data-x")
    page.wait_for_timeout(1500)  # two ticks of the animation's clock
    assert total.get_attribute("data-x") == stopped
    row, col = int(total.get_attribute("data-y")), int(stopped)  # past col 13 the window wraps to the next row
    assert float(total.get_attribute("data-value")) == pytest.approx(float(expected[row, col]), abs=1e-5)
    shoot(page, "dot-product")


def test_first_layer_shows_raw_pixels_and_every_product(page, lab_url, run_dir):
    open_lab(page, lab_url)
    run, model, x = model_and_input(lab_url, run_dir, "test:0")
    image = np.asarray(Image.open(io.BytesIO(page.request.get(f"{lab_url}/api/t/0/input.png?input=test:0").body())))
    ys, xs = np.nonzero(image[1:-1, 1:-1] > 100)  # a window with ink in its middle: numbers worth reading
    cy, cx = int(ys[len(ys) // 2]) + 1, int(xs[len(xs) // 2]) + 1
    enlarge_and_click(page, "0", 2, (cy + 0.5) / 28, (cx + 0.5) / 28)
    wait_js(page, f"document.querySelector('[data-testid=conv-sum]')?.dataset.x === '{cx}'")
    assert page.get_by_test_id("conv-sum").get_attribute("data-y") == str(cy)
    tables = page.locator("#dot-product .channel table")
    assert tables.count() == 4  # raw pixels, normalised input, kernel, products: each labelled
    captions = [tables.nth(i).locator("caption").inner_text() for i in range(4)]
    assert captions == ["raw pixels 0–255", "normalised input", "kernel weights", "products"]

    def cells(i):
        return np.array([[float(v) for v in row.split("\t")] for row in tables.nth(i).locator("tr").all_inner_texts()])

    window = x[0, 0, cy - 1:cy + 2, cx - 1:cx + 2].numpy()
    np.testing.assert_array_equal(cells(0), image[cy - 1:cy + 2, cx - 1:cx + 2])
    assert cells(0).max() > 100
    np.testing.assert_allclose(cells(1), window, atol=1e-3)
    w = model[0].weight[2, 0].detach().numpy()
    np.testing.assert_allclose(cells(2), w, atol=1e-3)
    np.testing.assert_allclose(cells(3), window * w, atol=1e-4)
    assert "normalised = raw ÷ 255" in page.get_by_test_id("dot-product").inner_text()


def test_relu_pool_dense_and_softmax_views_equal_the_model(page, lab_url, run_dir):
    import torch

    open_lab(page, lab_url)
    run, model, x = model_and_input(lab_url, run_dir, "test:0")
    outs = layer_io(model, x)
    enlarge_and_click(page, "1", 2, 0.5, 0.5)  # ReLU after conv 0, 28x28: row 14, col 14
    relu = page.get_by_test_id("relu-view")
    relu.wait_for()
    pre = float(outs[1][0, 2, 14, 14])
    assert float(relu.get_attribute("data-input")) == pytest.approx(pre, abs=1e-6)
    assert float(relu.get_attribute("data-value")) == pytest.approx(max(0.0, pre), abs=1e-6)
    assert "max(0, x)" in relu.inner_text()
    enlarge_and_click(page, "2", 2, 0.4, 0.4)  # max-pool, 14x14: row 5, col 5
    pool = page.get_by_test_id("pool-view")
    pool.wait_for()
    window = outs[2][0, 2, 10:12, 10:12]
    assert float(pool.get_attribute("data-value")) == pytest.approx(float(window.max()), abs=1e-6)
    wy, wx = (int(v) for v in pool.get_attribute("data-winner").split(","))
    assert float(window[wy, wx]) == float(window.max()) and "★" in pool.locator("td.winner").inner_text()
    column = page.locator(".column[data-layer='9'] canvas.vector")
    box = column.bounding_box()
    column.click(position={"x": box["width"] / 2, "y": box["height"] * 0.35})  # 10 values: #3
    dense = page.get_by_test_id("dense-view")
    dense.wait_for()
    assert float(dense.get_attribute("data-value")) == pytest.approx(float(outs[-1][0, 3]), abs=1e-5)
    assert float(dense.get_attribute("data-sum")) == pytest.approx(float(outs[-1][0, 3]), abs=1e-5)
    rows = page.get_by_test_id("softmax-row")
    assert rows.count() == 10
    probs = torch.softmax(outs[-1], dim=1)[0]
    for i in range(10):
        cls = int(rows.nth(i).get_attribute("data-class"))
        assert float(rows.nth(i).get_attribute("data-prob")) == pytest.approx(float(probs[cls]), abs=1e-6)
        assert float(rows.nth(i).get_attribute("data-logit")) == pytest.approx(float(outs[-1][0, cls]), abs=1e-5)
    assert page.get_by_test_id("softmax-view").is_visible()
    shoot(page, "prediction", "dot-product")


def test_a_stroke_sends_only_debounced_draw_requests(page, lab_url):
    open_lab(page, lab_url)
    wait_js(page, "document.getElementById('attribution-panel').dataset.ready === 'test:0'")
    requests = []
    page.on("request", lambda r: requests.append((r.method, r.url.split("?")[0].rsplit("/", 1)[-1])))
    box = page.get_by_test_id("draw-canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.15)
    page.mouse.down()
    moves = 20
    for t in np.linspace(0, 1, moves):
        page.mouse.move(box["x"] + box["width"] * (0.5 - 0.05 * t), box["y"] + box["height"] * (0.15 + 0.7 * t))
        page.wait_for_timeout(15)  # a hand's pace: a move every ~16 ms
    wait_js(page, "document.body.dataset.drawing === 'idle'")
    during = list(requests)
    # what is not recomputed mid-stroke is greyed out, not passed off as the drawing's
    assert "stale" in page.locator("#attr-heat").get_attribute("class")
    assert "stale" in page.locator("#pg-output").get_attribute("class")
    assert during and set(during) == {("POST", "draw")}  # mid-stroke: the prediction only, nothing else
    assert len(during) < moves  # debounced: fewer requests than moves
    page.mouse.up()
    wait_js(page, "document.body.dataset.drawing === 'idle' && "
                  "(document.getElementById('attribution-panel').dataset.ready || '') === document.body.dataset.input")
    after = requests[len(during):]
    wait_js(page, "!document.getElementById('attr-heat').classList.contains('stale')")
    assert after[0] == ("POST", "draw") and ("GET", "attribution") in after  # the stroke's end: every panel follows


# --------------------------------------------------------------------------- reach: keyboard, axe-core, a phone

AXE_VERSION = "4"


def axe_script() -> str:
    """axe-core's axe.min.js: $CNNLAB_AXE, else a cache folder, filled once with npm.

    Skips (with the reason) where neither is there and npm cannot fetch it: the page itself
    has no build step and never loads axe; only this test does."""
    import subprocess

    if os.environ.get("CNNLAB_AXE"):
        return Path(os.environ["CNNLAB_AXE"]).read_text()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cnnlab-test" / "axe-core"
    script = cache / "node_modules" / "axe-core" / "axe.min.js"
    if not script.is_file():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("axe-core is not cached and npm is absent: install Node's npm, or set CNNLAB_AXE=path/axe.min.js")
        cache.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([npm, "install", "--prefix", str(cache), f"axe-core@{AXE_VERSION}", "--no-audit",
                               "--no-fund", "--silent"], capture_output=True, text=True, timeout=300)
        if done.returncode != 0 or not script.is_file():
            pytest.skip(f"npm could not fetch axe-core (offline?): {done.stderr.strip()[-200:]}")
    return script.read_text()


def test_axe_core_finds_no_serious_or_critical_violation(browser, lab_url):
    source = axe_script()
    # axe is injected as an inline script, which the lab's CSP rightly forbids: only this context lets it in.
    context = browser.new_context(viewport={"width": 1400, "height": 1800}, bypass_csp=True)
    page = context.new_page()
    try:
        for target in (0, 1) if len(page.request.get(f"{lab_url}/api/targets").json()) > 1 else (0,):
            open_lab(page, lab_url, target)
            if target == 0:
                page.wait_for_selector("#confusion-matrix button")
                page.wait_for_selector("#embedding-panel[data-ready='pca']", timeout=60_000)
                enlarge_and_click(page, "3", 1, 0.5, 0.5)
                page.get_by_test_id("conv-sum").wait_for()
            page.add_script_tag(content=source)
            found = page.evaluate("""async () => {
              const r = await axe.run(document, { resultTypes: ["violations"] });
              return r.violations.filter((v) => v.impact === "serious" || v.impact === "critical")
                .map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(" | ")}`);
            }""")
            assert found == [], f"target {target}: {found}"
    finally:
        context.close()


def focus_by_tab(page, predicate: str, limit: int = 400, key: str = "Tab") -> None:
    """Press Tab (or ``key``) until the focused element satisfies the JavaScript ``predicate`` (on ``e``)."""
    for _ in range(limit):
        page.keyboard.press(key)
        if page.evaluate(f"(() => {{ const e = document.activeElement; return !!(e && ({predicate})); }})()"):
            return
    raise AssertionError(f"Tab never reached an element with {predicate}")


def test_keyboard_alone_reaches_an_upload_and_a_confusion_cell(page, lab_url, tmp_path):
    digit = tmp_path / "seven.png"
    canvas = np.zeros((28, 28), dtype=np.uint8)
    canvas[6:9, 6:22] = 255
    canvas[9:24, 18:21] = 255
    Image.fromarray(canvas).save(digit)
    open_lab(page, lab_url)
    page.wait_for_selector("#confusion-matrix button")
    focus_by_tab(page, "e.id === 'upload'")
    outline = page.evaluate("getComputedStyle(document.querySelector('label.upload')).outlineStyle")
    assert outline != "none"  # the focus is visible on the label around the picker
    for key in ("Space", "Enter", "Space"):  # on two loaded cores a key press can go unanswered: press again
        try:
            with page.expect_file_chooser(timeout=10_000) as chooser:
                page.keyboard.press(key)
            break
        except playwright_api.TimeoutError:
            assert page.evaluate("document.activeElement.id") == "upload"
    else:
        raise AssertionError("the focused upload control never opened a file chooser")
    chooser.value.set_files(str(digit))
    wait_js(page, "document.getElementById('input-caption').textContent.startsWith('seven.png')")
    # the skip link jumps past the matrix's hundred buttons
    focus_by_tab(page, "e.classList.contains('skip') && e.closest('#confusion-panel')")
    page.keyboard.press("Enter")
    wait_js(page, "document.activeElement.id === 'cell-caption'")
    # back into the matrix: a cell of wrong answers opens with Enter, and one of its images with Enter
    focus_by_tab(page, "e.closest && e.closest('#confusion-matrix') && e.dataset.actual !== e.dataset.predicted "
                       "&& e.textContent !== '0'", key="Shift+Tab")
    page.keyboard.press("Enter")
    page.wait_for_selector("#cell-images button.thumb")
    focus_by_tab(page, "e.classList.contains('thumb')", limit=150)
    ref = page.evaluate("document.activeElement.dataset.input")
    page.keyboard.press("Enter")
    wait_js(page, f"document.body.dataset.input === '{ref}'")
    # a map thumbnail and the enlarged map work from the keyboard too
    page.locator(".column[data-layer='3'] canvas[data-channel='0']").focus()
    page.keyboard.press("Enter")
    wait_js(page, "document.getElementById('enlarged').dataset.layer === '3'")
    page.locator("#enlarged").focus()
    page.keyboard.press("Enter")
    page.get_by_test_id("conv-sum").wait_for()


def test_no_sideways_scroll_on_a_390_pixel_phone(browser, lab_url):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    try:
        open_lab(page, lab_url)
        page.wait_for_selector("#confusion-matrix button")
        page.wait_for_selector("#embedding-panel[data-ready='pca']", timeout=60_000)
        enlarge_and_click(page, "3", 1, 0.5, 0.5)
        page.get_by_test_id("conv-sum").wait_for()
        wide = page.evaluate("""() => [document.documentElement.scrollWidth,
          [...document.querySelectorAll('body *')].filter((e) => e.getBoundingClientRect().right > 391
            && !e.closest('.scroll-x, .columns, .softmax-wrap, .sums, .filter-scroll'))
            .slice(0, 5).map((e) => e.id || e.className || e.tagName)]""")
        assert wide[0] <= 390, wide
        page.screenshot(path=str(ARTIFACTS / "phone-390.png"), full_page=False)
    finally:
        context.close()


def test_the_overview_fits_the_screen_with_class_names_and_edges(page, lab_url):
    open_lab(page, lab_url)
    assert page.evaluate("(() => { const c = document.getElementById('columns'); "
                         "return c.classList.contains('fit') && c.scrollWidth <= c.clientWidth + 1; })()")
    named = page.locator(".column[data-layer='9'] canvas.named")
    assert named.get_attribute("data-classes") == "|".join(map(str, range(10)))
    enlarge_and_click(page, "3", 5, 0.4, 0.55)
    page.get_by_test_id("conv-sum").wait_for()
    wait_js(page, "document.getElementById('columns').dataset.edges === '8'")  # the 8 largest of 32 input channels
    assert page.locator(".column[data-layer='2'] canvas.contrib").count() == 8
    assert page.locator("svg.edges line").count() == 8
    shoot(page, "overview")


def test_a_cifar_network_fits_the_screen_too(browser, datasets_root, tmp_path):
    import json

    import torch

    from cnnlab.lab.targets import RunTarget
    from cnnlab.models import build

    if not (datasets_root / "cifar10").is_dir():
        pytest.skip("the shared CIFAR-10 test set is absent")
    run = tmp_path / "cifar"  # cifar-cnn with untrained weights: the layout does not depend on them
    run.mkdir()
    torch.manual_seed(0)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (run / "config.json").write_text(json.dumps({"data": "cifar10", "model": "cifar-cnn", "input_shape": [32, 32, 3],
                                                 "num_classes": 10, "classes": classes, "mean": None, "std": None,
                                                 "train": {"epochs": 1, "seed": 0}}))
    torch.save(build("cifar-cnn", input_shape=(32, 32, 3), num_classes=10).state_dict(), run / "best.pt")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNLAB_DATA", str(datasets_root))
        with Server([RunTarget(run, max_test=20)]) as url:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            try:
                open_lab(page, url)
                assert page.evaluate("(() => { const c = document.getElementById('columns'); "
                                     "return c.classList.contains('fit') && c.scrollWidth <= c.clientWidth + 1; })()")
                assert page.locator("canvas.named").get_attribute("data-classes") == "|".join(classes)
                assert page.get_by_test_id("draw-canvas").is_hidden()  # a photo model: no digit drawing
                page.get_by_test_id("overview").screenshot(path=str(ARTIFACTS / "overview-cifar.png"))
            finally:
                context.close()
