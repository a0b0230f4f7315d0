"""Latency of `cnnlab lab` on loopback, beside the bare model call it wraps.

Three figures, each p50 and p95 (targets from the lab's issue in brackets):

1. a drawn digit -> prediction + every layer's activation maps on mnist-cnn (POST /draw),
   100 requests [p95 < 100 ms]; peer: the bare ``model(x)`` forward in this process;
2. Grad-CAM of an uploaded 224x224 photo on SqueezeNet (POST /upload, then GET
   /attribution), 100 rounds [p95 < 300 ms]; peer: ``cnnlab.insight.attribution.gradcam``
   of a ready tensor, called in this process;
3. the page's first load in headless Chromium (a fresh browser context each time, so no
   cache) until every panel has drawn its first input [< 1 s]; peer: fetching index.html alone;
4. (issue 26) the drawing's latency for each ``--threads`` count, on an idle machine and with
   another process spinning on one core [p95 < 50 ms busy]; ``cnnlab lab --threads`` defaults
   to the count that wins here;
5. (issue 26) memory: 16 concurrent uploads of a PNG just under the 40 MP cap, the server's
   resident memory before, at its peak and after [peak < +1 GB].

The server is uvicorn in a thread of this process, as `cnnlab lab` runs it; requests come
from one keep-alive HTTP client. The lab's request and its peer are timed in turns, so both
see the same load. Weights do not change the timings: without ``--run`` the
mnist-cnn run is written with untrained weights (its test set is found through
$CNNLAB_DATA), and without the shared SqueezeNet weights random ones are used.

Usage: python benchmarks/bench_lab.py [--requests 100] [--page-loads 30] [--run RUN_DIR] [--weights PATH]
       [--only draw,gradcam,page,threads,memory] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

CHROMIUM = "/usr/bin/chromium"


def percentiles(times: list[float]) -> tuple[float, float]:
    ms = sorted(t * 1000 for t in times)
    return statistics.median(ms), ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]


def row(name: str, lab: list[float], peer: list[float] | None, target_ms: float | None) -> None:
    p50, p95 = percentiles(lab)
    line = f"{name:<44} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms"
    if target_ms is not None:
        line += f"  (target p95 < {target_ms:.0f} ms: {'met' if p95 < target_ms else 'MISSED'})"
    if peer:
        q50, q95 = percentiles(peer)
        line += (f"\n{'  peer (no HTTP, no PNGs)':<44} p50 {q50:7.1f} ms  p95 {q95:7.1f} ms"
                 f"  -> lab/peer at p50 {p50 / q50:.1f}x")
    print(line, flush=True)


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def alternating(lab, peer, n: int) -> tuple[list[float], list[float]]:
    """Time ``lab`` and ``peer`` in turns, so both see the same load on a busy machine."""
    a, b = [], []
    for _ in range(n):
        a += timed(lab, 1)
        b += timed(peer, 1)
    return a, b


def make_run(folder: Path) -> Path:
    """An mnist-cnn run directory with untrained weights (timings do not depend on them)."""
    from cnnlab.models import build

    run = folder / "bench-run"
    run.mkdir()
    torch.manual_seed(0)
    model = build("mnist-cnn", input_shape=(28, 28, 1), num_classes=10)
    config = {"data": "mnist", "model": "mnist-cnn", "input_shape": [28, 28, 1], "num_classes": 10,
              "classes": [str(i) for i in range(10)], "mean": None, "std": None, "train": {"epochs": 1, "seed": 0}}
    (run / "config.json").write_text(json.dumps(config))
    torch.save(model.state_dict(), run / "best.pt")
    return run


def squeezenet_weights(arg: str | None, folder: Path) -> Path:
    shared = Path(os.environ.get("CNNLAB_SHARED", "../shared")) / "models" / "squeezenet1_1-imagenet.pth"
    if arg:
        return Path(arg)
    if shared.is_file():
        return shared
    from cnnlab.models import MODELS

    path = folder / "squeezenet-random.pth"
    torch.save(MODELS["squeezenet1_1"]().state_dict(), path)
    return path


class Server:
    def __init__(self, targets) -> None:
        import uvicorn

        from cnnlab.lab.server import create_app

        self.server = uvicorn.Server(uvicorn.Config(create_app(targets), host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def digit_pixels() -> str:
    import base64

    img = np.zeros((28, 28), np.uint8)
    img[5:23, 13:16] = 255  # a "1"
    img[5:8, 10:16] = 200
    return base64.b64encode(img.tobytes()).decode()


def bench_draw(client, target, n: int) -> None:
    pixels = digit_pixels()
    body = client.post("/api/t/0/draw", json={"pixels": pixels}).json()  # warm-up
    x = torch.rand(1, 1, 28, 28)
    model = target.model

    def bare():
        with torch.inference_mode():
            model(x)
    bare()
    lab, peer = alternating(lambda: client.post("/api/t/0/draw", json={"pixels": pixels}).raise_for_status(), bare, n)
    row(f"draw -> prediction + {len(body['layers'])} layers' maps (mnist-cnn)", lab, peer, 100)


def bench_gradcam(client, target, n: int) -> None:
    from PIL import Image

    cat = Path(os.environ.get("CNNLAB_SHARED", "../shared")) / "images" / "cat.jpg"
    photo = Image.open(cat).convert("RGB") if cat.is_file() else Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8))
    buf = io.BytesIO()
    photo.resize((224, 224)).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()

    def one():
        ref = client.post("/api/t/1/upload", content=data).json()["input"]
        r = client.get("/api/t/1/attribution", params={"input": ref, "method": "gradcam", "layer": "auto"})
        r.raise_for_status()

    probe = client.post("/api/t/1/upload", content=data).json()["input"]
    r = client.get("/api/t/1/attribution", params={"input": probe, "method": "gradcam", "layer": "auto"})
    if r.status_code == 501:
        print(f"{'Grad-CAM (SqueezeNet)':<44} skipped: {r.json()['error']}")
        return
    one()
    from cnnlab.insight.attribution import gradcam

    x = torch.rand(1, 3, 224, 224)

    def bare():
        with target.lock:
            gradcam(target.model, x, "predicted")
    lab, peer = alternating(one, bare, n)
    row("upload 224x224 JPEG + Grad-CAM (SqueezeNet)", lab, peer, 300)


def bench_page(url: str, n: int) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("page load: skipped (Playwright is not installed)")
        return
    if not Path(CHROMIUM).is_file():
        print(f"page load: skipped ({CHROMIUM} is not installed)")
        return
    import urllib.request

    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        times = []
        for i in range(n + 1):
            context = browser.new_context()  # no cache from the previous load
            page = context.new_page()
            t = time.perf_counter()
            page.goto(f"{url}/?t=0")
            page.wait_for_selector("body[data-ready='1']", timeout=60_000)
            elapsed = time.perf_counter() - t
            if i == 0:
                print(f"{'first page load on a fresh server':<44} {elapsed * 1000:7.1f} ms (model and test set loaded)")
            else:
                times.append(elapsed)
            context.close()
        browser.close()
    peer = timed(lambda: urllib.request.urlopen(f"{url}/").read(), n)
    row(f"page first load, cold browser cache ({n} loads)", times, peer, 1000)


class BusyCore:
    """Another process spinning on one core, as another user's job on a shared machine."""

    def __enter__(self):
        import subprocess

        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
        return self

    def __exit__(self, *exc) -> None:
        self.proc.kill()
        self.proc.wait()


def bench_threads(client, counts: list[int], n: int) -> None:
    """The drawing's latency per torch thread count, idle and with one core busy."""
    pixels = digit_pixels()
    before = torch.get_num_threads()

    def draw():
        client.post("/api/t/0/draw", json={"pixels": pixels}).raise_for_status()
    try:
        for busy in (False, True):
            with BusyCore() if busy else contextlib.nullcontext():
                for k in counts:
                    torch.set_num_threads(k)  # what `cnnlab lab --threads k` sets
                    draw()
                    row(f"draw, {k} thread(s), {'one core busy' if busy else 'idle'}", timed(draw, n), None,
                        50 if busy else 100)
    finally:
        torch.set_num_threads(before)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench_memory(client, uploads: int = 16) -> None:
    """``uploads`` concurrent uploads of a PNG just under the lab's pixel cap; resident memory
    of this process (the server runs in it) sampled every 10 ms."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from cnnlab.lab.imaging import MAX_UPLOAD_PIXELS

    w = 7300
    h = MAX_UPLOAD_PIXELS // w - 1  # 39.99 MP
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.dstack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) % 256)]).astype(np.uint8)  # compresses to a few MB
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=6)
    data = buf.getvalue()
    del img, yy, xx
    import gc

    gc.collect()
    base, peak, stop = rss_mb(), [0.0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.01)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.perf_counter()
    with ThreadPoolExecutor(uploads) as pool:
        codes = list(pool.map(lambda _: client.post("/api/t/0/upload", content=data).status_code, range(uploads)))
    elapsed = time.perf_counter() - t
    time.sleep(2)
    stop.set()
    sampler.join()
    after = rss_mb()
    print(f"{uploads} concurrent uploads of a {w}x{h} PNG ({len(data) / 2**20:.1f} MB, statuses {sorted(set(codes))}) "
          f"in {elapsed:.1f} s: RSS {base:.0f} MB before, peak {peak[0]:.0f} MB (+{peak[0] - base:.0f} MB; "
          f"target < +1024: {'met' if peak[0] - base < 1024 else 'MISSED'}), {after:.0f} MB 2 s after", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=100)
    p.add_argument("--page-loads", type=int, default=30)
    p.add_argument("--run", help="an mnist-cnn run directory (default: one with untrained weights)")
    p.add_argument("--weights", help="SqueezeNet 1.1 weights (default: the shared file, else random)")
    p.add_argument("--only", default="page,draw,gradcam,threads,memory", help="which figures, comma-separated")
    p.add_argument("--threads", default="1,2", help="torch thread counts for the threads figure")
    args = p.parse_args(argv)
    only = set(args.only.split(","))
    import httpx

    from cnnlab.lab.targets import PretrainedTarget, RunTarget

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else make_run(Path(tmp))
        targets = [RunTarget(run), PretrainedTarget("squeezenet1_1", weights=squeezenet_weights(args.weights, Path(tmp)))]
        with Server(targets) as url:
            if "page" in only:
                bench_page(url, args.page_loads)
            with httpx.Client(base_url=url, timeout=120) as client:
                if "draw" in only:
                    bench_draw(client, targets[0], args.requests)
                if "gradcam" in only:
                    bench_gradcam(client, targets[1], args.requests)
                if "threads" in only:
                    bench_threads(client, [int(k) for k in args.threads.split(",")], args.requests)
                if "memory" in only:
                    bench_memory(client)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
