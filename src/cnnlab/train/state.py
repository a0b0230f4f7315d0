"""The resumable state of a training: everything fit() needs to continue exactly where it
stopped (weights, optimiser, schedule, batch order, random streams, history, best epoch),
as saved in a run's last.pt, and putting it back."""

from __future__ import annotations

import torch


def snapshot(model, opt, sched, batches, aug_gen, history, best, cfg) -> dict:
    state = {
        "epoch": len(history.epochs),
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "batches": batches.state_dict(),
        "aug_rng": aug_gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "history": [dict(e) for e in history.epochs],
        "best": {k: v for k, v in best.items() if k != "weights"},
        "config": cfg.to_dict(),
    }
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


_FRESH = ("foreach", "fused", "capturable", "initial_lr", "momentum", "nesterov", "weight_decay", "betas")


def restore(state: dict, model, opt, sched, batches, aug_gen, history, best) -> int:
    model.load_state_dict(state["model"])
    # How the update runs (fused on CUDA, capturable for CUDA graphs, foreach on a CPU) is
    # this machine's choice, not the checkpoint's: a run saved on a GPU may resume on a CPU.
    # The hyperparameters are the config's: a resumed run may change them for the epochs left.
    kernels = [{k: g[k] for k in _FRESH if k in g} for g in opt.param_groups]
    opt.load_state_dict(state["optimizer"])
    for group, kernel in zip(opt.param_groups, kernels, strict=True):
        group.update(kernel)
        for p in group["params"]:  # fused/capturable kernels keep the step count beside the parameter
            step = opt.state.get(p, {}).get("step")
            want = p.device if group.get("fused") or group.get("capturable") else torch.device("cpu")
            if torch.is_tensor(step) and step.device != want:
                opt.state[p]["step"] = step.to(want, torch.float32)
    sched.load_state_dict(state["scheduler"])
    sched.base_lrs = [g["initial_lr"] for g in opt.param_groups]
    for group, base, factor in zip(opt.param_groups, sched.base_lrs, sched.lr_lambdas, strict=True):
        group["lr"] = base * factor(sched.last_epoch)  # what LambdaLR computes: the same value if nothing changed
    batches.load_state_dict(state["batches"])
    aug_gen.set_state(state["aug_rng"])
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    history.epochs[:] = [dict(e) for e in state["history"]]
    best.update(state["best"])
    return int(state["epoch"])
