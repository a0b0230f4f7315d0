"""`cnnlab demo`: the whole story, on the real MNIST and on the offline fallback."""

from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.demo import choose_data


def _embedded_images(html: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(b))) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def test_demo_falls_back_to_bundled_digits_when_no_mnist(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "nothing"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr("cnnlab.data.sources.SYSTEM_DIR", tmp_path / "system", raising=False)
    # no network here: any download attempt fails, which is what the fallback is for
    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    code = main(["demo", "--out", str(tmp_path / "demo"), "--epochs", "3", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "MNIST is not available" in out and "bundled 8x8 digits" in out
    report = tmp_path / "demo" / "run" / "report.html"
    assert out.strip().splitlines()[-2] == f"open the report: {report}"
    assert out.strip().splitlines()[-1] == f"look inside the network, live: cnnlab lab {tmp_path / 'demo' / 'run'}"
    html = report.read_text()
    images = _embedded_images(html)
    assert len(images) >= 8 and all(min(im.size) > 0 and im.load() is not None for im in images)
    for name in ("filters-random.png", "filters-edges.png"):
        with Image.open(tmp_path / "demo" / name) as im:
            assert im.size[0] > 300


def test_demo_uses_real_mnist_when_found(datasets_root, monkeypatch):
    monkeypatch.setenv("CNNLAB_DATA", str(datasets_root))
    assert choose_data(print).data == "mnist"


@pytest.mark.parametrize("args", [["--epochs", "0"]])
def test_demo_rejects_bad_epochs(tmp_path, args, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), *args]) == 2
    assert "argument --epochs: must be at least 1, got '0'" in capsys.readouterr().err
