"""cnnlab.train.memory: freed activations stay in the process, so a training step costs no page faults."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cnnlab.train.memory import keep_freed_memory

# A small CNN's training step on the CPU, in a fresh process (malloc settings are per process):
# prints whether the setting took effect and the page faults of one step after warm-up.
STEP = """
import resource, torch
from torch import nn
from cnnlab.train.memory import keep_freed_memory
print(keep_freed_memory())
torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1),
                    nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 7 * 7, 10))
opt = torch.optim.Adam(net.parameters())
x, y = torch.rand(128, 1, 28, 28), torch.randint(0, 10, (128,))
def step():
    opt.zero_grad(); nn.functional.cross_entropy(net(x), y).backward(); opt.step()
for _ in range(3):
    step()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) // 10)
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
def test_a_training_step_stops_page_faulting():
    enabled, kept = _faults_per_step(None)
    assert enabled == "True"
    enabled, default = _faults_per_step("default")  # the opt-out leaves glibc's defaults
    assert enabled == "False"
    # By default the activations' pages are faulted in afresh every step (2,800-10,000 per step
    # here); kept, most runs fault none, some still a few hundred pages per step (up to 431).
    assert default > 1000 and kept < default / 2, (kept, default)


def test_the_setting_is_made_once_and_reported():
    first = keep_freed_memory()
    assert keep_freed_memory() is first and isinstance(first, bool)
