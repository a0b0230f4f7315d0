"""Hand-written CPU kernels for the training view (``native.c``), built on first use with the
system's C compiler and called through ctypes.

Why by hand: on mnist-cnn's first and second pooled layers PyTorch's CPU kernels ran at an
order of magnitude above their floors (BENCHMARKS.md has the op clock): oneDNN's convolution with one input
channel, and the channels_last max-pool, each a separate pass over memory with its own
backward. Here a one-channel convolution, its 2×2 max-pool and the ReLU after it are one pass
that keeps the argmax as a byte, and the backward pass reads that byte instead of recomputing
the window; a 2×2 max-pool + ReLU of a channels_last map likewise. No library offers these
fusions on the CPU: Inductor's generated pooling ran 3× slower than eager (measured).

The kernels compute exactly what the PyTorch layers compute, ties included (the gradient goes
to the first maximum in max_pool2d's order), and in bf16 they round where autocast's
convolution rounds; tests/test_native.py compares them with PyTorch bit for bit.

Nothing depends on them: ``pool_conv`` and ``max_pool2`` return None where the kernels are not
available (no C compiler or OpenMP, another OS, a shape they do not take, ``CNNLAB_NATIVE=0``)
and the caller computes with PyTorch. ``status()`` says which and why. The built library is
cached per source, compiler, flags and CPU under ``cache_dir("native")``, since ``-march=native``
code must not run on another CPU; where ``CNNLAB_CPU_FEATURES`` stands in for the CPU's flags
the kernels are built for those instead (``-march=x86-64-v3`` for AVX2 + FMA), as CI's AVX2 leg does.

A cached library is loaded only after its size and SHA-256 match what was recorded when it
was built (a truncated file would kill the process with SIGBUS on load); a damaged or foreign
one is rebuilt once, and the build is bounded (``BUILD_TIMEOUT`` seconds): a compiler that
hangs or fails leaves the kernels off, with the reason in ``status()``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from cnnlab import cpu, files
from cnnlab.files import cache_dir

SOURCE = Path(__file__).with_name("native.c")
FLAGS = ("-O3", "-fopenmp", "-fPIC", "-shared", "-std=gnu11")
BUILD_TIMEOUT = 30  # seconds: the build takes ~0.3 s; a compiler that hangs must not stall training
MAX_KERNEL, MAX_COLUMNS = 7, 1024  # native.c's MAXK and MAXCOLS
CHANNELS_LAST = torch.channels_last
_P, _I = ctypes.c_void_p, ctypes.c_int
log = logging.getLogger(__name__)
_SIGNATURES = {"pool_conv_forward": [_P] * 5 + [_I] * 10, "pool_conv_backward": [_P] * 5 + [_I] * 9,
               "pool_forward": [_P] * 3 + [_I] * 6, "pool_backward": [_P] * 3 + [_I] * 5, "max_threads": []}


@functools.cache
def _loaded() -> tuple[ctypes.CDLL | None, str]:
    if os.environ.get("CNNLAB_NATIVE", "1") == "0":
        return None, "off (CNNLAB_NATIVE=0)"
    if sys.platform != "linux":
        return None, f"off (built only on Linux; this is {sys.platform})"
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        return None, "off (no C compiler: install gcc to build them)"
    if platform.machine() not in ("x86_64", "AMD64") and cpu.overridden():
        return None, f"off (CNNLAB_CPU_FEATURES is for x86-64; this is {platform.machine()})"
    lib, why = None, ""
    for attempt in range(2):  # a damaged cached library is rebuilt once
        try:
            lib = ctypes.CDLL(str(_build(compiler, rebuild=attempt > 0)))
            for name, argtypes in _SIGNATURES.items():
                fn = getattr(lib, name)
                fn.argtypes, fn.restype = argtypes, ctypes.c_int
            break
        except subprocess.TimeoutExpired:
            return _off(f"{compiler} did not finish building {SOURCE.name} within {BUILD_TIMEOUT} s")
        except (OSError, AttributeError, subprocess.SubprocessError) as exc:
            lib, why = None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if attempt == 0:
                log.warning("cnnlab's native kernels did not load (%s); building them again", why)
    if lib is None:
        return _off(why)
    if not _agrees(lib):
        return _off("the built kernels disagreed with PyTorch on a check, so they are not used")
    return lib, f"on ({compiler}, {_march()})"


def _off(why: str) -> tuple[None, str]:
    """A failure, not a choice: logged once, since the run then computes those layers with PyTorch."""
    log.warning("cnnlab's native kernels are off: %s; the training view computes those layers with PyTorch", why)
    return None, f"off ({why})"


def library() -> ctypes.CDLL | None:
    """The loaded kernels, built on the first call of the process; None where unavailable."""
    return _loaded()[0]


def status() -> str:
    """Whether the kernels are in use, and why not where they are not."""
    return _loaded()[1]


def _cpu_identity() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [line for line in f if line.startswith(("flags", "model name", "cpu family", "model\t"))]
        return platform.machine() + "".join(sorted(set(lines)))
    except OSError:
        return platform.machine()


def _march() -> str:
    """-march=native on the real CPU; for flags that stand in for it (CNNLAB_CPU_FEATURES),
    the x86-64 level they describe, so no instruction outside them is emitted."""
    if not cpu.overridden():
        return "-march=native"
    f = cpu.features()
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"} <= f:
        return "-march=x86-64-v4"
    if {"avx2", "fma", "bmi2"} <= f or {"avx2", "fma"} <= f:
        return "-march=x86-64-v3"
    return "-march=x86-64-v2" if "sse4_2" in f else "-march=x86-64"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _verified(target: Path) -> bool:
    """Whether ``target`` is the library this process's build recorded: same size and SHA-256."""
    record = target.with_suffix(".sha256")
    try:
        size, digest = record.read_text().split()
        return target.stat().st_size == int(size) and _digest(target) == digest
    except (OSError, ValueError):
        return False


def cached_library() -> Path | None:
    """Where the kernels for this source, compiler, flags and CPU are (or would be) cached."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    try:
        return _target(compiler) if compiler else None
    except (OSError, subprocess.SubprocessError):  # a compiler that does not run or answer
        return None


def _run_bounded(command: list[str]) -> subprocess.CompletedProcess:
    """``command``'s result, or TimeoutExpired after BUILD_TIMEOUT seconds with its whole process
    group killed: a compiler's own children (cc1, as) would otherwise keep the pipes open."""
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=BUILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def _target(compiler: str) -> Path:
    version = _run_bounded([compiler, "--version"]).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), compiler, version, " ".join(FLAGS), _march(),
                                    _cpu_identity()]).encode()).hexdigest()[:20]
    return cache_dir("native") / f"kernels-{key}.so"


def _build(compiler: str, rebuild: bool = False) -> Path:
    target = _target(compiler)
    if target.exists() and not rebuild:
        if _verified(target):
            return target
        log.warning("cnnlab's cached native kernels %s do not match the size and checksum recorded at build "
                    "time; building them again", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".kernels-", suffix=".so.tmp", dir=target.parent)
    os.close(fd)
    try:
        done = _run_bounded([compiler, *FLAGS, _march(), "-o", tmp, str(SOURCE)])
        if done.returncode != 0:
            raise OSError(f"{compiler} could not build {SOURCE.name}: {(done.stderr or done.stdout).strip()}")
        record = f"{Path(tmp).stat().st_size} {_digest(Path(tmp))}\n"
        # The record first, then the library, each atomically: a reader that sees the new
        # library sees its record; one that sees an old record with a new library rebuilds.
        files.write_text(target.with_suffix(".sha256"), record)
        os.replace(tmp, target)  # atomic: another process building the same key gets the same bytes
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def _agrees(lib: ctypes.CDLL) -> bool:
    """A check of the built library on integer data, where PyTorch's result is exact."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(-2, 3, (2, 1, 9, 8), generator=gen).float()
    w = torch.randint(-2, 3, (16, 1, 3, 3), generator=gen).float()
    b = torch.randint(-2, 3, (16,), generator=gen).float()
    with torch.no_grad(), torch.autocast("cpu", enabled=False):  # the first call may come under autocast
        want = F.relu(F.max_pool2d(F.conv2d(x, w, b, padding=1), 2))
        got = _pool_conv_call(lib, x, w, b, (1, 1), relu=True, bf16=False)[0]
    return torch.equal(got, want)


def _ptr(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def _check(rc: int) -> None:
    if rc != 0:  # the Python side checks every shape first, so this is a bug, not bad input
        raise RuntimeError("cnnlab's native kernel refused its arguments")


def _bf16_autocast() -> bool | None:
    """True under CPU bf16 autocast, False with autocast off, None under another autocast."""
    if not torch.is_autocast_enabled("cpu"):
        return False
    return True if torch.get_autocast_dtype("cpu") == torch.bfloat16 else None


def _usable(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.ndim == 4 and not torch.compiler.is_compiling() and library() is not None


# -- a one-channel convolution, 2×2 max-pool and optional ReLU --------------------------------------------------


def pool_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: tuple[int, int],
              relu: bool) -> torch.Tensor | None:
    """``max_pool2d(conv2d(x, weight, bias, padding=padding), 2)``, then ReLU if ``relu``, as a
    channels_last map; None where the kernel does not apply (compute it with PyTorch then).

    Applies to a float32 (N, 1, H, W) input that needs no gradient, a float32 weight with a kernel
    of at most 7×7, with autocast off or bf16."""
    bf16 = _bf16_autocast()
    if not (_usable(x) and bf16 is not None and x.shape[1] == 1 and x.dtype == torch.float32
            and not x.requires_grad and weight.dtype == torch.float32 and weight.device.type == "cpu"
            and weight.ndim == 4 and weight.shape[1] == 1
            and max(weight.shape[2:]) <= MAX_KERNEL and (bias is None or bias.dtype == torch.float32)):
        return None
    (kh, kw), (ph, pw) = weight.shape[2:], padding
    h, w = x.shape[2] + 2 * ph - kh + 1, x.shape[3] + 2 * pw - kw + 1
    if h < 2 or w < 2 or ph < 0 or pw < 0 or x.shape[3] + 2 * pw + 2 > MAX_COLUMNS:
        return None
    return _PoolConv.apply(x, weight, bias, (ph, pw), relu, bf16)


def _pool_conv_call(lib, x, weight, bias, padding, relu, bf16):
    n, _, h, w = x.shape
    c, _, kh, kw = weight.shape
    (ph, pw) = padding
    ho, wo = (h + 2 * ph - kh + 1) // 2, (w + 2 * pw - kw + 1) // 2
    rounded = (lambda t: t.detach().bfloat16().float()) if bf16 else (lambda t: t.detach().float())
    taps = rounded(weight).reshape(c, kh * kw).t().contiguous()  # (KH*KW, C)
    shift = rounded(bias).contiguous() if bias is not None else torch.zeros(c)
    x = x.detach().reshape(n, h, w).contiguous()
    out = torch.empty((n, c, ho, wo), dtype=torch.bfloat16 if bf16 else torch.float32, memory_format=CHANNELS_LAST)
    idx = torch.empty((n, ho, wo, c), dtype=torch.uint8)
    _check(lib.pool_conv_forward(_ptr(x), _ptr(taps), _ptr(shift), _ptr(out), _ptr(idx), n, h, w, c, kh, kw, ph, pw,
                                 int(relu), int(bf16)))
    return out, idx, x


class _PoolConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, padding, relu, bf16):
        out, idx, flat = _pool_conv_call(library(), x, weight, bias, padding, relu, bf16)
        ctx.save_for_backward(flat, idx)
        ctx.meta = (tuple(weight.shape), padding, bf16, bias is not None)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        flat, idx = ctx.saved_tensors
        (c, _, kh, kw), (ph, pw), bf16, has_bias = ctx.meta
        n, h, w = flat.shape
        grad = grad.to(torch.bfloat16 if bf16 else torch.float32).contiguous(memory_format=CHANNELS_LAST)
        lib = library()
        threads = max(1, lib.max_threads())
        dw, db = torch.zeros((threads, kh * kw, c)), torch.zeros((threads, c))
        _check(lib.pool_conv_backward(_ptr(flat), _ptr(grad), _ptr(idx), _ptr(dw), _ptr(db), n, h, w, c, kh, kw,
                                      ph, pw, int(bf16)))
        dw, db = dw.sum(0).t().reshape(c, 1, kh, kw), db.sum(0)
        if bf16:  # oneDNN's bf16 backward pass returns bf16 gradients, which autocast widens
            dw, db = dw.bfloat16().float(), db.bfloat16().float()
        return None, dw, db if has_bias else None, None, None, None


# -- a 2×2 max-pool and optional ReLU of a channels_last map ----------------------------------------------------


def max_pool2(x: torch.Tensor, relu: bool) -> torch.Tensor | None:
    """``max_pool2d(x, 2)``, then ReLU if ``relu``; None where the kernel does not apply: it
    takes a channels_last float32 or bfloat16 (N, C, H, W) map."""
    if not (_usable(x) and x.dtype in (torch.float32, torch.bfloat16) and x.shape[1] >= 1
            and x.shape[2] >= 2 and x.shape[3] >= 2 and x.is_contiguous(memory_format=CHANNELS_LAST)):
        return None
    return _MaxPool2.apply(x, relu)


class _MaxPool2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, relu):
        n, c, h, w = x.shape
        out = torch.empty((n, c, h // 2, w // 2), dtype=x.dtype, memory_format=CHANNELS_LAST)
        idx = torch.empty((n, h // 2, w // 2, c), dtype=torch.uint8)
        _check(library().pool_forward(_ptr(x), _ptr(out), _ptr(idx), n, h, w, c, int(relu),
                                      int(x.dtype == torch.bfloat16)))
        ctx.save_for_backward(idx)
        ctx.meta = (tuple(x.shape), x.dtype)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (idx,), ((n, c, h, w), dtype) = ctx.saved_tensors, ctx.meta
        grad = grad.to(dtype).contiguous(memory_format=CHANNELS_LAST)
        gin = torch.empty((n, c, h, w), dtype=dtype, memory_format=CHANNELS_LAST)
        if h % 2 or w % 2:  # the last row or column is in no window
            gin.zero_()
        _check(library().pool_backward(_ptr(grad), _ptr(idx), _ptr(gin), n, h, w, c, int(dtype == torch.bfloat16)))
        return gin, None
