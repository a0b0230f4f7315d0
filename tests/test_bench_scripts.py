"""Helper scripts in benchmarks/ that feed peers: what they write is what the peer reads."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.data.dataset import Dataset, Split

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_airbench_data_writes_the_peer_format(tmp_path):
    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8), np.array([0, 1, 2, 3, 4, 9]))
    test = Split(rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), np.array([5, 6, 7, 8]))
    classes = tuple(f"c{i}" for i in range(10))
    ds = Dataset(name="cifar10", train=split, test=test, classes=classes)
    train_pt, test_pt = _module("airbench_data").write_airbench_data(tmp_path, dataset=ds)
    assert (train_pt, test_pt) == (tmp_path / "cifar10" / "train.pt", tmp_path / "cifar10" / "test.pt")
    data = torch.load(train_pt, weights_only=True)  # no pickled objects beyond tensors and strings
    assert data["images"].dtype == torch.uint8 and data["images"].shape == (6, 32, 32, 3)
    assert data["labels"].dtype == torch.int64 and data["labels"].tolist() == [0, 1, 2, 3, 4, 9]
    assert data["classes"] == list(classes)
    assert torch.equal(data["images"], torch.from_numpy(split.images))
    # as the peer turns them into its NCHW input
    assert (data["images"].float() / 255).permute(0, 3, 1, 2).shape == (6, 3, 32, 32)
    assert torch.load(test_pt, weights_only=True)["labels"].tolist() == [5, 6, 7, 8]


def test_profile_wall_split_times_a_real_training_step():
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(512, 3))
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(8, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    split = _module("bench_profile").wall_split(model, x, y, steps=2)
    assert all(split[k] > 0 for k in ("forward", "backward", "optimizer"))
    # the training view's layers: conv + pool as one (and the ReLU with them where cnnlab's
    # native kernels are built), flatten + linear as one; each layer's forward is inside the whole
    from cnnlab.fast import native
    want = (["0:PooledConv", "1:ChannelsLastLinear"] if native.library() is not None
            else ["0:PooledConv", "1:ReLU", "2:ChannelsLastLinear"])
    assert [name for name, _ in split["layers"]] == want
    assert 0 < sum(ms for _, ms in split["layers"]) <= split["forward"]
    # the steps trained the user's parameters (the training view shares them)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    with pytest.raises(ValueError, match="steps must be at least 1, got 0"):
        _module("bench_profile").wall_split(model, x, y, steps=0)


def test_profile_op_clock_times_and_counts_each_op_of_a_step():
    from torch import nn

    bench = _module("bench_profile")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    x, y = torch.randn(8, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    rows, per_step = bench.op_clock(model, x, y, steps=2)
    by_op = {r["op"]: r for r in rows}
    # the forward convolution's FLOPs, counted: 2 * N * out_channels * in_channels * 3 * 3 * H * W
    conv = next(r for r in rows if r["op"] == "aten.convolution" and r["shape"] == (8, 3, 8, 8))
    assert conv["flops"] == 2 * 8 * 4 * 3 * 9 * 64 and conv["calls"] == 1
    assert conv["bytes"] > 0 and "aten.convolution_backward" in by_op
    assert rows == sorted(rows, key=lambda r: r["ms"], reverse=True)
    assert 0 < sum(r["ms"] for r in rows) <= per_step
    with pytest.raises(ValueError, match="steps must be at least 1, got 0"):
        bench.op_clock(model, x, y, steps=0)


def test_profile_memory_floor_uses_the_rate_of_a_copy_as_large():
    bench = _module("bench_profile")
    rates = {1 << 20: 100e9, 1 << 30: 10e9}
    assert bench.memory_floor(2 << 20, rates) == pytest.approx((2 << 20) / 100e9)  # a 1 MiB copy moves 2 MiB
    assert bench.memory_floor(3 << 20, rates) == pytest.approx((3 << 20) / 10e9)
    assert bench.memory_floor(4 << 30, rates) == pytest.approx((4 << 30) / 10e9)  # beyond the largest: its rate
