"""The fast paths (cnnlab.fast): one switch, proven on this CPU, and out of a learner's way.

A user's network carrying anything a rewrite would bypass (hooks, pruning, parametrizations,
a subclassed layer) trains as given; ``fast="off"``, ``--fast off`` and ``CNNLAB_FAST=0`` turn
every fast path off; the run header, config.json and ``cnnlab doctor`` say what ran; an
AVX2-only CPU never gets bf16 by default; the native kernels' cache heals.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections import Counter

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, prune

from cnnlab import cpu, fast
from cnnlab.errors import CnnlabError
from cnnlab.models import build
from cnnlab.precision import bf16_note, resolve_precision
from cnnlab.train import fit

HAS_COMPILER = bool(os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc"))


@pytest.fixture(autouse=True)
def _fast_paths_allowed(monkeypatch):
    """These tests turn the switch themselves; CI's leg with CNNLAB_FAST=0 must not decide for them."""
    monkeypatch.delenv("CNNLAB_FAST", raising=False)


def digits(n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def count_hooks(model: nn.Module) -> Counter:
    calls: Counter = Counter()
    for name, m in model.named_modules():
        if name:
            m.register_forward_pre_hook(lambda mod, args, name=name: calls.update([f"pre {name}"]))
            m.register_forward_hook(lambda mod, args, out, name=name: calls.update([name]))
    return calls


def train(model: nn.Module, fast_setting: str, **kw) -> None:
    x, y = digits(96)
    fit(model, x, y, validation_data=digits(40, seed=1), epochs=2, batch_size=32, verbose=0, device="cpu",
        precision="fp32", fast=fast_setting, **kw)


def test_hooks_on_every_layer_fire_as_often_with_fast_paths_on_and_off():
    torch.manual_seed(0)
    base = build("mnist-cnn")
    assert fast.training_model(base, "cpu") is not base  # without hooks the view does take over
    counts = {}
    for setting in ("auto", "off"):
        model = copy.deepcopy(base)
        calls = count_hooks(model)
        assert fast.training_model(model, "cpu", setting) is model
        train(model, setting)
        counts[setting] = calls
    layers = [name for name, _ in base.named_modules() if name]
    # 2 epochs x 3 training batches + 2 x 1 validation batch, on every layer (the view fired only on 3 of 10)
    assert all(counts["auto"][name] == 8 and counts["auto"][f"pre {name}"] == 8 for name in layers), counts["auto"]
    assert counts["auto"] == counts["off"]


def test_a_pruned_model_trains_to_the_same_weights_both_ways_and_keeps_its_mask():
    trained = {}
    for setting in ("auto", "off"):
        torch.manual_seed(0)
        model = build("mnist-cnn")  # a pruned module cannot be deep-copied (its weight is computed)
        prune.l1_unstructured(model[0], "weight", amount=0.5)
        assert "pruning mask" in fast.why_as_given(model)
        torch.manual_seed(1)
        train(model, setting)
        trained[setting] = model
    for (name, a), (_, b) in zip(trained["auto"].state_dict().items(), trained["off"].state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    mask = trained["auto"][0].weight_mask
    assert (trained["auto"][0].weight[mask == 0] == 0).all() and (mask == 0).sum() == mask.numel() // 2


@pytest.mark.parametrize("dress, words", [
    (lambda m: m[0].register_forward_hook(lambda *a: None), "forward hooks"),
    (lambda m: m[0].register_full_backward_hook(lambda *a: None), "backward hooks"),
    (lambda m: parametrizations.spectral_norm(m[7]), "parametrizations"),
    (lambda m: nn.utils.spectral_norm(m[0]), "spectral norm"),
    (lambda m: prune.random_unstructured(m[7], "weight", 0.2), "pruning mask"),
])
def test_what_the_rewrite_would_bypass_is_named(dress, words):
    model = build("mnist-cnn")
    assert fast.why_as_given(model) is None
    dress(model)
    assert words in fast.why_as_given(model)
    assert fast.training_model(model, "cpu") is model
    assert "it runs as given" in fast.status("cpu", "auto", model)["training view"]


def test_a_subclassed_layer_keeps_its_own_forward():
    class Doubled(nn.ReLU):
        def forward(self, x):
            return 2 * super().forward(x)

    model = nn.Sequential(nn.Conv2d(1, 32, 3), Doubled(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 13 * 13, 10))
    assert "subclasses nn.ReLU" in fast.why_as_given(model)
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(fast.training_model(model, "cpu")(x), model(x))


def test_one_switch_turns_every_fast_path_off(monkeypatch):
    model = build("mnist-cnn")
    assert fast.training_model(model, "cpu", "off") is model
    assert set(fast.status("cpu", "off").values()) == {"off (--fast off)"}
    monkeypatch.setenv("CNNLAB_FAST", "0")
    assert not fast.enabled("auto") and fast.training_model(model, "cpu", "auto") is model
    assert set(fast.status("cpu").values()) == {"off (CNNLAB_FAST=0)"}
    with pytest.raises(CnnlabError, match="fast must be one of auto, off, got 'fastest'"):
        fast.enabled("fastest")


def test_a_cuda_run_never_asks_for_the_native_kernels(monkeypatch):
    from cnnlab.fast import native

    def refuse():
        raise AssertionError("the native kernels were asked for on a CUDA run")

    monkeypatch.setattr(native, "library", refuse)
    view = fast.training_model(build("mnist-cnn"), "cuda")
    assert not any(type(m).__name__ == "FusedPool" for m in view.modules())
    assert "on CPU tensors" in fast.status("cuda")["native kernels"]


def test_an_avx2_cpu_never_gets_bf16_by_default_and_an_explicit_one_is_warned(monkeypatch):
    monkeypatch.delenv("CNNLAB_CPU_BF16", raising=False)
    monkeypatch.setenv("CNNLAB_CPU_FEATURES", "avx2,fma")
    assert cpu.features() == {"avx2", "fma"} and not cpu.native_bf16() and not cpu.onednn_bf16()
    assert resolve_precision("auto", "cpu") == "fp32"
    assert "emulated" in bf16_note("bf16", "cpu") and "avx512_bf16" in bf16_note("bf16", "cpu")
    assert bf16_note("fp32", "cpu") is None and bf16_note("bf16", "cuda") is None
    monkeypatch.setenv("CNNLAB_CPU_FEATURES", "avx2,fma,avx512f,avx512bw,avx512vl,avx512dq,avx512_bf16")
    assert resolve_precision("auto", "cpu") == "bf16" and bf16_note("bf16", "cpu") is None


def test_the_run_header_and_config_json_say_which_fast_paths_ran(tmp_path, capsys, monkeypatch):
    from conftest import _shapes_images

    from cnnlab.cli import main

    photos = _shapes_images(tmp_path / "photos")  # 45 grey 10x10 images in three classes
    args = ["train", "--data", f"folder:{photos}", "--model", "conv4k3-relu,maxpool2,flatten,dense3",
            "--epochs", "1", "--batch-size", "8", "--no-report", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "on")]) == 0
    out = capsys.readouterr().out
    paths = json.loads((tmp_path / "on" / "config.json").read_text())["fast_paths"]
    assert paths["training view"] == "on" and "cuda graphs" in paths
    assert f"fast paths: {fast.summary(paths)}" in out
    assert main([*args, "--out", str(tmp_path / "off"), "--fast", "off"]) == 0
    config = json.loads((tmp_path / "off" / "config.json").read_text())
    assert config["train"]["fast"] == "off" and set(config["fast_paths"].values()) == {"off (--fast off)"}
    assert "training view off (--fast off)" in capsys.readouterr().out


def test_doctor_prints_what_a_bug_report_needs(capsys):
    from cnnlab.cli import main

    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for label in ("torch", "cpu flags", "native bf16", "threads", "C compiler", "fast: training view",
                  "fast: native kernels", "fast: cuda graphs", "cuda", "cache"):
        assert any(line.startswith(label + " ") for line in out.splitlines()), label
    assert main(["doctor", "--fast", "off", "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line.startswith("fast: ") and line.endswith("off (--fast off)") for line in lines)


# -- the native kernels' cache heals --------------------------------------------------------------------------

STATUS = ("import logging; logging.basicConfig(); from cnnlab.fast import native; "
          "native.BUILD_TIMEOUT = {timeout}; print(native.status())")


def _status(cache, timeout=30, **env) -> str:
    full = {**os.environ, "XDG_CACHE_HOME": str(cache), **env}
    done = subprocess.run([sys.executable, "-c", STATUS.format(timeout=timeout)], capture_output=True, text=True,
                          env=full, timeout=300)
    assert done.returncode == 0, done.stderr  # a damaged library must never kill the process (SIGBUS)
    return done.stdout.strip() + "\n" + done.stderr


needs_compiler = pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler: the native kernels are not built")


@needs_compiler
@pytest.mark.parametrize("damage", ["truncate", "foreign"])
def test_a_damaged_cached_library_is_rebuilt_once(tmp_path, damage):
    assert _status(tmp_path).startswith("on")
    (lib,) = (tmp_path / "cnnlab" / "native").glob("kernels-*.so")
    good = lib.read_bytes()
    lib.write_bytes(good[: len(good) // 3] if damage == "truncate" else bytes(reversed(good)))
    out = _status(tmp_path)
    assert out.startswith("on") and "building them again" in out
    assert lib.read_bytes() == good  # the same source, compiler and flags build the same bytes


@needs_compiler
def test_a_compiler_that_hangs_is_bounded_and_reported(tmp_path):
    slow = tmp_path / "slowcc"
    slow.write_text('#!/bin/sh\nif [ "$1" = "--version" ]; then echo slowcc 1; exit 0; fi\nexec sleep 60\n')
    slow.chmod(0o755)
    out = _status(tmp_path, timeout=2, CC=str(slow))
    assert out.startswith("off (") and "did not finish building native.c within 2 s" in out


@needs_compiler
def test_the_avx2_override_builds_kernels_without_avx512(tmp_path):
    out = _status(tmp_path, CNNLAB_CPU_FEATURES="avx2,fma")
    assert out.startswith("on") and "-march=x86-64-v3" in out



def test_with_fast_paths_off_no_cuda_graph_fallback_is_warned(monkeypatch, caplog):
    # Off is the user's choice, not a failure: no "could not record" warning for it.
    import logging
    from types import SimpleNamespace

    from cnnlab.train import session
    from cnnlab.train.config import TrainConfig

    fake = SimpleNamespace(cfg=TrainConfig(batch_size=4, epochs=1, fast="off"), device=torch.device("cuda"), feed=None,
                           phases=None, start_epoch=0, step=SimpleNamespace(x=torch.zeros(8), model=nn.Linear(1, 1)))
    with caplog.at_level(logging.WARNING, logger="cnnlab"):
        session.Session.maybe_graph(fake)
    assert caplog.records == [] and fake.step.model is not None


def test_the_switch_points_refuse_what_is_not_a_module_in_one_line():
    for call in (lambda: fast.training_model("mnist-cnn", "cpu"), lambda: fast.inference_model(None, "fp32", "cpu"),
                 lambda: fast.winograd_model(42)):
        with pytest.raises(CnnlabError, match="expected a torch nn.Module, got"):
            call()
