"""Feature visualisation: the image a conv channel or an output class responds to most.

Activation maximisation from noise (Erhan et al. 2009) gives high-frequency, adversarial-looking
noise when pixels are optimised directly. Two tricks from Olah, Mordvintsev and Schubert,
*Feature Visualization* (Distill, 2017) and their Lucid library make the images readable:

- **A decorrelated parameterisation.** The optimiser does not move pixels but the Fourier
  spectrum of the image, each frequency scaled by 1/frequency, so a gradient step moves
  coarse structure as readily as fine detail (natural images have a ~1/f spectrum). For RGB
  the three channels are mixed by the Cholesky factor of ImageNet's colour covariance, so
  the optimiser works on decorrelated colours; a sigmoid then maps to [0, 1] and the model's
  own normalisation ``(x - mean) / std`` is applied.
- **Gradients through dead ReLUs.** While optimising, a ReLU whose gradient would be zero
  for a whole image passes it on anyway (Lucid's redirected ReLU), so a channel after a ReLU
  that the starting noise does not excite still gets a direction to grow in.
- **Transformation robustness.** Every step sees each image randomly jittered, scaled and
  rotated (one ``affine_grid``/``grid_sample``), so only patterns that survive small
  transforms can grow.

Every random draw comes from a private ``torch.Generator`` seeded with ``seed``: the same
call gives the same image bit for bit on the CPU, and the global RNG is left alone. The model
is never changed: parameters' ``requires_grad``, every module's train/eval flag and its hooks
are restored, also when the call fails.

Images are returned as float32 ``(K, H, W, C)`` in [0, 1], one per channel or class asked for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.insight.featurevis_image import Setup, init_param, random_affine, spectrum_scale, to_image
from cnnlab.insight.internals import get_layer
from cnnlab.insight.stream_images import image_batches

__all__ = ["ChannelVisuals", "frozen_model", "last_conv_layer", "run_channel_visuals", "top_examples",
           "visualize_channels", "visualize_class"]

# --------------------------------------------------------------------------- model state


@contextlib.contextmanager
def frozen_model(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode with no parameter requiring grad; on exit (also after an
    exception) every parameter's ``requires_grad`` and every module's training flag are as
    before. Gradients then flow to the input only and no ``.grad`` is touched."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]  # submodules may be in mixed modes
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        model.eval()
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


class _RedirectedReLU(torch.autograd.Function):
    """ReLU whose backward pass does not go silent on a dead unit (Lucid's ``redirected_relu_grad``).

    A channel after a ReLU that is 0 everywhere for the starting noise gets no gradient at
    all, and its visualisation stays grey. For an image whose ordinary ReLU gradient is all
    zero, the gradient is passed through anyway, except where it would push an already
    negative input lower."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        zero = torch.zeros_like(grad)
        relu_grad = torch.where(x < 0, zero, grad)
        redirected = torch.where((x < 0) & (grad > 0), zero, grad)  # descent on grad > 0 lowers x
        through = relu_grad.reshape(len(grad), -1).norm(dim=1) > 0  # (B,): did anything get through?
        return torch.where(through.view(-1, *[1] * (grad.ndim - 1)), relu_grad, redirected)


@contextlib.contextmanager
def _redirected_relus(model: nn.Module) -> Iterator[None]:
    """Every (not in-place) ``nn.ReLU`` of ``model`` computes :class:`_RedirectedReLU` inside the block."""
    def hook(module, inputs, output):
        x = inputs[0]
        return _RedirectedReLU.apply(x) if x.ndim >= 2 and torch.is_grad_enabled() else output

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU) and not m.inplace]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class _Done(Exception):
    """Raised from a hook: the layer we need has run, the rest of the forward pass is wasted."""


def _layer_output(model: nn.Module, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module``'s (first) output for input ``x``, stopping the forward pass there."""
    caught: list[torch.Tensor] = []

    def hook(mod, inputs, output):
        caught.append(output[0] if isinstance(output, (tuple, list)) else output)
        raise _Done

    handle = module.register_forward_hook(hook)
    try:
        model(x)
    except _Done:
        pass
    finally:
        handle.remove()
    if not caught:
        raise CnnlabError("the layer never ran in the forward pass; pick a layer the model uses")
    return caught[0]


def _forward(model: nn.Module, x: torch.Tensor, module: nn.Module | None) -> torch.Tensor:
    """The layer's output (or the model's when ``module`` is None); a shape mismatch inside the
    model becomes a one-line error naming the input size."""
    try:
        return model(x) if module is None else _layer_output(model, module, x)
    except RuntimeError as exc:
        raise CnnlabError(f"the model cannot take a {tuple(x.shape[1:])} (C, H, W) input "
                          f"({str(exc).splitlines()[0][:160]}); pass size=(H, W) and in_channels "
                          "matching what it was built for") from exc


def _unit_scores(out: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """Mean activation of channel ``units[b]`` of image b: out (B, C, ...) -> (B,)."""
    picked = out[torch.arange(len(units), device=out.device), units.to(out.device)]  # (B, ...)
    return picked.reshape(len(units), -1).mean(1)


def _check_units(units: Sequence[int], available: int, what: str) -> None:
    bad = [u for u in units if not 0 <= u < available]
    if bad:
        raise CnnlabError(f"{what} {bad[0]} is out of range: this has {available} ({what}s 0..{available - 1})")


def _as_units(values, what: str) -> list[int]:
    items = [values] if isinstance(values, (int, np.integer)) else list(values) if values is not None else []
    if not items or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in items):
        raise CnnlabError(f"{what} must be an int or a non-empty list of ints, got {values!r}")
    return [int(v) for v in items]


# --------------------------------------------------------------------------- optimisation


def _optimise(model: nn.Module, setup: Setup, module: nn.Module | None, units: list[int], seed: int,
              what: str, progress: bool = False) -> np.ndarray:
    """Maximise the mean activation of ``units[b]`` (a channel of ``module``, or a logit when
    ``module`` is None) for each image b; returns (B, H, W, C) float32 in [0, 1]."""
    device = next(model.parameters(), torch.empty(0)).device
    gen = torch.Generator().manual_seed(seed)
    param = init_param(setup, len(units), gen).to(device).requires_grad_(True)
    scale = spectrum_scale(*setup.size).to(device) if setup.fourier else None
    targets = torch.tensor(units)
    opt = torch.optim.Adam([param], lr=setup.lr)
    mean, std = setup.mean.to(device), setup.std.to(device)
    steps = range(setup.steps)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=f"{len(units)} {what}{'es' if what == 'class' else 's'}", unit="step", leave=False)
    for step in steps:
        image = to_image(param, setup, scale)
        if setup.robust:
            image = random_affine(image, setup, gen)
        out = _forward(model, (image - mean) / std, module)
        if step == 0:
            _check_output(out, units, what)
        loss = -_unit_scores(out, targets).sum()  # images are independent: one backward for all
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = to_image(param, setup, scale)  # (B, C, H, W)
    return final.permute(0, 2, 3, 1).float().cpu().numpy().copy()


def _check_output(out: torch.Tensor, units: list[int], what: str) -> None:
    if what == "class" and out.ndim != 2:
        raise CnnlabError(f"the model returns shape {tuple(out.shape)}, not (N, classes) scores; "
                          "visualise a layer's channels instead")
    if out.ndim < 2:
        raise CnnlabError(f"the layer's output has shape {tuple(out.shape)}: no channel axis to visualise")
    _check_units(units, out.shape[1], what)


def _setup(model: nn.Module, *, size, steps, lr, mean, std, in_channels, robust, fourier, jitter) -> Setup:
    if not isinstance(model, nn.Module):
        raise CnnlabError(f"model must be a torch nn.Module, got {type(model).__name__}")
    hw = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(hw) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 4 for v in hw):
        raise CnnlabError(f"size must be an int >= 4 or an (H, W) pair of them, got {size!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise CnnlabError(f"steps must be a positive int, got {steps!r}")
    if in_channels is None:
        first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is None:
            raise CnnlabError(f"{type(model).__name__} has no Conv2d layer to read the input channels from; "
                              "pass in_channels=")
        in_channels = first.in_channels
    c = int(in_channels)
    stats = [torch.as_tensor(v if v is not None else d, dtype=torch.float32).reshape(-1) for v, d in
             ((mean, 0.0), (std, 1.0))]
    if any(t.numel() not in (1, c) for t in stats):
        raise CnnlabError(f"mean and std need 1 or {c} values (one per input channel), got {mean!r} and {std!r}")
    jitter = max(1, round(min(hw) / 16)) if jitter is None else int(jitter)  # Lucid: 8 px at 128
    return Setup(size=(int(hw[0]), int(hw[1])), channels_in=c, steps=steps, lr=float(lr),
                  mean=stats[0].reshape(1, -1, 1, 1), std=stats[1].reshape(1, -1, 1, 1), robust=bool(robust),
                  fourier=bool(fourier), jitter=jitter)


def visualize_channels(model: nn.Module, *, layer: str | int, channels, steps: int = 256, size=128, seed: int = 0,
                       mean=None, std=None, lr: float = 0.05, in_channels: int | None = None, robust: bool = True,
                       fourier: bool = True, jitter: int | None = None, progress: bool = False) -> np.ndarray:
    """What each channel of ``layer`` responds to: float32 ``(K, H, W, C)`` images in [0, 1].

    ``layer``: a name (``"features.3"``) or index (see ``cnnlab.insight.internals.get_layer``);
    ``channels``: an int or a list of K ints. The objective is the mean activation of the
    channel over its whole map (Lucid's ``channel`` objective), maximised with Adam (``lr``)
    for ``steps`` steps from seeded noise. ``size``: an int or ``(H, W)``: what the model
    takes (28 for an MNIST net). ``mean``/``std``: the model's input normalisation, applied
    to the [0, 1] image. ``in_channels`` defaults to the first conv layer's. ``robust=False``
    turns off the random transforms, ``fourier=False`` optimises pixels directly (both for
    comparison); ``jitter`` in pixels defaults to size/16. ``progress``: a tqdm bar of the steps.
    """
    units = _as_units(channels, "channel")
    name, module = get_layer(model, layer)
    setup = _setup(model, size=size, steps=steps, lr=lr, mean=mean, std=std, in_channels=in_channels,
                   robust=robust, fourier=fourier, jitter=jitter)
    with frozen_model(model), _redirected_relus(model):
        return _optimise(model, setup, module, units, seed, "channel", progress)


def visualize_class(model: nn.Module, *, target, steps: int = 256, size=128, seed: int = 0, mean=None, std=None,
                    lr: float = 0.05, in_channels: int | None = None, robust: bool = True, fourier: bool = True,
                    jitter: int | None = None, progress: bool = False) -> np.ndarray:
    """What each output class ``target`` (an int or a list of K ints) looks like to the
    model: float32 ``(K, H, W, C)`` images in [0, 1] maximising that class's score (the
    model's output before any softmax, as Lucid does). Options as :func:`visualize_channels`."""
    units = _as_units(target, "class")
    setup = _setup(model, size=size, steps=steps, lr=lr, mean=mean, std=std, in_channels=in_channels,
                   robust=robust, fourier=fourier, jitter=jitter)
    with frozen_model(model), _redirected_relus(model):
        return _optimise(model, setup, None, units, seed, "class", progress)


# --------------------------------------------------------------------------- dataset examples


def top_examples(model: nn.Module, images, *, layer: str | int, channels, k: int = 9, batch_size: int = 256,
                 preprocess: Callable | None = None) -> np.ndarray:
    """Indices ``(K, k)`` int64 of the ``k`` images whose mean activation of each channel is
    highest, highest first. ``images``: a float tensor ``(N, C, H, W)`` as the model takes it,
    or anything ``preprocess`` turns into one a batch at a time (uint8 (N, H, W, C) with
    ``Run.preprocess``, or a streamed split's ``StreamImages``, decoded a batch at a time).

    One forward pass per batch of ``batch_size`` images scores every channel at once; the model
    runs in eval mode under ``torch.inference_mode`` and stops at ``layer``.
    """
    units = _as_units(channels, "channel")
    if preprocess is None and not (isinstance(images, torch.Tensor) and images.ndim == 4
                                   and images.is_floating_point()):
        got = f"{images.dtype} {tuple(images.shape)}" if hasattr(images, "shape") else type(images).__name__
        raise CnnlabError(f"images must be a float tensor (N, C, H, W) as the model takes it (or pass "
                          f"preprocess=), got {got}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(images):
        raise CnnlabError(f"k must be an int in 1..{len(images)} (the number of images), got {k!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CnnlabError(f"batch_size must be a positive int, got {batch_size!r}")
    _, module = get_layer(model, layer)
    device = next(model.parameters(), torch.empty(0)).device
    wanted = torch.tensor(units)
    scores = []
    with frozen_model(model), torch.inference_mode():
        for batch in image_batches(images, batch_size):  # a streamed split: decoded batch by batch
            x = preprocess(batch) if preprocess is not None else batch
            out = _forward(model, x.to(device), module)  # (B, C', ...)
            if not scores:
                _check_output(out, units, "channel")
            scores.append(out[:, wanted.to(out.device)].reshape(len(out), len(units), -1).float().mean(2).cpu())
    top = torch.cat(scores).T.topk(k, dim=1).indices  # (K, k)
    return top.numpy().astype(np.int64)


# --------------------------------------------------------------------------- a trained run


@dataclass(frozen=True, eq=False)
class ChannelVisuals:
    """Feature visualisations of ``channels`` of ``layer``: ``images`` (K, H, W, C) in [0, 1],
    ``top`` (K, k) indices of the examples that activate each most and ``examples`` those
    images, uint8 (K, k, H, W, C) (both None without data)."""

    layer: str
    channels: list[int]
    images: np.ndarray
    top: np.ndarray | None = None
    examples: np.ndarray | None = None


def last_conv_layer(model: nn.Module) -> str:
    """The name of the model's last ``nn.Conv2d`` (its most abstract feature maps)."""
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise CnnlabError(f"{type(model).__name__} has no Conv2d layer whose channels could be visualised")
    return convs[-1]


def run_channel_visuals(run, model: nn.Module, *, layer: str | int | None = None, channels=None, steps: int = 128,
                        seed: int = 0, images=None, k: int = 6, progress: bool = False) -> ChannelVisuals:
    """Visualise ``channels`` (default: the first 8) of ``layer`` (default: the last conv
    layer) of a run's ``model`` at the run's input size and normalisation; with ``images``
    (uint8 (N, H, W, C), e.g. the test split, or a streamed one's ``StreamImages``: one pass batch by
    batch, then only the top examples decoded) also find each channel's top ``k`` examples."""
    name = last_conv_layer(model) if layer is None else get_layer(model, layer)[0]
    if channels is None:
        out_channels = getattr(dict(model.named_modules())[name], "out_channels", 8)
        channels = list(range(min(8, out_channels)))
    h, w, c = run.input_shape
    visuals = visualize_channels(model, layer=name, channels=channels, steps=steps, size=(h, w), seed=seed,
                                 mean=run.config.get("mean"), std=run.config.get("std"), in_channels=c,
                                 progress=progress)
    top = examples = None
    if images is not None and len(images):
        top = top_examples(model, images, layer=name, channels=channels, k=min(k, len(images)),
                           preprocess=run.preprocess)
        picked = np.asarray(images[top.reshape(-1)])  # a streamed split decodes only these
        examples = picked.reshape(*top.shape, *picked.shape[1:])  # (K, k, H, W, C)
    return ChannelVisuals(layer=name, channels=_as_units(channels, "channel"), images=visuals, top=top,
                          examples=examples)
