"""cnnlab.fast.memory: freed activations stay in the process, so a training step costs no page faults."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cnnlab.fast.memory import keep_freed_memory

# A convolution whose output (51 MB) is above glibc's largest dynamic mmap threshold (32 MiB),
# in a fresh process (malloc settings are per process): prints whether the setting took
# effect and the page faults of the median step after warm-up. (A small CNN's step was
# flaky here: glibc's dynamic threshold sometimes learns its sizes and stops faulting.)
STEP = """
import resource, torch
from torch import nn
from cnnlab.fast.memory import keep_freed_memory
print(keep_freed_memory())
torch.manual_seed(0)
conv = nn.Conv2d(3, 64, 3, padding=1)
x = torch.rand(16, 3, 112, 112)
def step():
    with torch.no_grad():
        y = conv(x)  # 51 MB out: above glibc's largest mmap threshold (32 MiB)
        y.relu_()
for _ in range(3):
    step()
faults = []
for _ in range(15):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(sorted(faults)[len(faults) // 2])
"""


def _faults_per_step(malloc: str | None) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "CNNLAB_MALLOC"}
    if malloc:
        env["CNNLAB_MALLOC"] = malloc
    out = subprocess.run([sys.executable, "-c", STEP], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    enabled, faults = out.stdout.split()
    return enabled, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_a_large_activation_stops_page_faulting():
    enabled, kept = _faults_per_step(None)
    assert enabled == "True"
    enabled, default = _faults_per_step("default")  # the opt-out leaves glibc's defaults
    assert enabled == "False"
    # By default the output's pages are faulted in afresh every step (25,090 4 KiB pages here;
    # about 25 with transparent huge pages always on); kept, the median step faults none.
    assert default > 10 and kept < default / 4, (kept, default)


def test_the_setting_is_made_once_and_reported():
    first = keep_freed_memory()
    assert keep_freed_memory() is first and isinstance(first, bool)


def test_one_answer_for_the_memory_left():
    # A model's weights and a folder's decoded images are checked against the same figure.
    import cnnlab.cpu
    import cnnlab.data.stream as stream
    import cnnlab.models as models

    assert models.available_memory is cnnlab.cpu.available_memory is stream.available_memory
    assert 0 < cnnlab.cpu.available_memory() < 2**63
