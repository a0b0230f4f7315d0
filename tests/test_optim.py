"""Learning-rate schedules against hand-computed values; optimisers by name."""

import math

import pytest
import torch

from cnnlab.errors import CnnlabError
from cnnlab.train.optim import lr_factor, make_optimizer


def test_keras_time_based_decay():
    f = lr_factor("constant", total_steps=100, steps_per_epoch=10, decay=1e-6)
    assert f(0) == 1.0
    assert f(1000) == pytest.approx(1 / (1 + 1e-3))


def test_step_cosine_onecycle_shapes():
    step = lr_factor("step", total_steps=100, steps_per_epoch=10, step_epochs=3, gamma=0.5)
    assert [step(t) for t in (0, 29, 30, 60)] == [1.0, 1.0, 0.5, 0.25]
    cos = lr_factor("cosine", total_steps=100, steps_per_epoch=10)
    assert cos(0) == 1.0 and cos(50) == pytest.approx(0.5) and cos(100) == pytest.approx(0.0, abs=1e-12)
    one = lr_factor("onecycle", total_steps=100, steps_per_epoch=10, warmup=0.2)
    assert one(0) == pytest.approx(0.1) and one(20) == 1.0 and one(60) == pytest.approx(0.5) and one(100) == 0.0


def test_schedule_drives_the_optimizer_lr():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = make_optimizer("sgd", [p], lr=0.01, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor("cosine", total_steps=4, steps_per_epoch=4))
    lrs = []
    for _ in range(4):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.01 * 0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(1, 5)])
    assert opt.param_groups[0]["nesterov"] is True


def test_bad_names_and_values():
    p = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(CnnlabError, match="unknown optimizer 'adamm'; choose one of adam, adamw, sgd, adadelta"):
        make_optimizer("adamm", p)
    with pytest.raises(CnnlabError, match="nesterov needs"):
        make_optimizer("adam", p, nesterov=True)
    with pytest.raises(CnnlabError, match="learning rate must be positive, got -1"):
        make_optimizer("sgd", p, lr=-1)
    with pytest.raises(CnnlabError, match="unknown schedule 'cosin'"):
        lr_factor("cosin", total_steps=1, steps_per_epoch=1)


@pytest.mark.parametrize("name,kwargs", [("adam", {"betas": (0.7, 0.9)}), ("adamw", {"weight_decay": 0.01}),
                                         ("sgd", {"momentum": 0.9, "nesterov": True})])
def test_cpu_optimizers_use_the_fused_kernel_and_match_the_reference(name, kwargs):
    """On the CPU make_optimizer picks torch's fused kernel (several times faster there) and
    its steps equal the plain per-parameter loop's (foreach=False) to rounding."""
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    opt = make_optimizer(name, a, lr=0.01, **kwargs)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[name]
    ref = cls(b, lr=0.01, foreach=False, **kwargs)
    assert opt.defaults.get("fused") is True
    for _ in range(4):
        grads = [torch.randn_like(p) for p in a]
        for p, q, g in zip(a, b, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


def test_param_groups_are_fused_too_and_adadelta_runs_foreach():
    groups = [{"params": [torch.nn.Parameter(torch.randn(3))], "lr": 0.1},
              {"params": [torch.nn.Parameter(torch.randn(2))], "lr": 0.01}]
    assert make_optimizer("adamw", groups, lr=0.1).defaults.get("fused") is True
    assert make_optimizer("adadelta", [torch.nn.Parameter(torch.randn(3))]).defaults.get("foreach") is True
