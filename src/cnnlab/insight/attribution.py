"""Attribution: which pixels made the network choose a class.

Every method takes a model that returns class scores (N, K), images (N, C, H, W) (a torch
tensor or float array, preprocessed as the model expects) and per-image targets, and
returns float32 maps (N, H, W) at the input's resolution. The score explained is the
model's raw output for the target class (the logit), as in Captum.

``targets``: one int for every image, a sequence of N ints (each image its own class),
``"predicted"`` (the model's top class for each image) or ``"actual"`` (``labels=``).
Work is batched: ``batch_size`` rows per forward/backward pass, Python loops run over
batches only. Gradients are taken with ``torch.autograd.grad`` on the sum of the selected
scores, so parameter gradients are neither computed nor stored, and the model is left as
it was (see ``cnnlab.insight.layers``).

Methods: Grad-CAM (Selvaraju et al. 2017), Grad-CAM++ (Chattopadhyay et al. 2018),
gradient saliency (Simonyan et al. 2014), SmoothGrad (Smilkov et al. 2017), integrated
gradients (Sundararajan et al. 2017) and occlusion (Zeiler & Fergus 2014).

Signs: Grad-CAM(++), saliency and SmoothGrad give maps >= 0; integrated gradients,
occlusion and ``saliency(signed=True)`` are signed (negative = evidence against the class):
:func:`is_signed` says which, so a renderer can use a diverging colormap centred on 0.

Parity: in float64 every method equals Captum (or the paper's formula) to 1e-5 (the tests).
In float32 the inputs run channels-last (faster convolutions on the CPU), which can round
differently from Captum's contiguous run and flip a ReLU/max-pool decision: saliency of a
SqueezeNet photo was seen 1.3e-2 (of its largest value) away from Captum's on one machine.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.insight.internals import layer_type
from cnnlab.insight.layers import captured_outputs, check_cam_layer, explaining, forward_logits, require_convs

__all__ = ["METHODS", "SIGNED_METHODS", "AllZeroMapWarning", "all_zero", "attribute", "cam_layers", "gradcam",
           "gradcam_maps", "gradcam_pp", "integrated_gradients", "is_signed", "layer_sweep", "occlusion", "saliency",
           "scores", "smoothgrad"]


# --------------------------------------------------------------------------- inputs


def _as_batch(model: nn.Module, images) -> torch.Tensor:
    """(N, C, H, W) or (C, H, W) tensor/array -> a detached (N, C, H, W) tensor in the model's dtype."""
    if isinstance(images, np.ndarray):
        if not np.issubdtype(images.dtype, np.floating):
            raise CnnlabError(f"images are {images.dtype}; pass float (N, C, H, W) preprocessed as the model "
                              "expects (a run's Run.preprocess does it for uint8 images)")
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor) or images.ndim not in (3, 4) or not images.is_floating_point():
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise CnnlabError(f"images must be a float tensor or array (N, C, H, W), got {got}")
    x = images.unsqueeze(0) if images.ndim == 3 else images
    if x.shape[0] == 0:
        raise CnnlabError("images is an empty batch; pass at least one image")
    param = next(model.parameters(), None)
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype)
    # Channels-last activations: oneDNN's convolutions run faster in that layout on the CPU
    # (SqueezeNet's Grad-CAM of one photo 1.6x); every copy made later keeps it.
    return x.detach().contiguous(memory_format=torch.channels_last)


def _target_spec(targets, n: int, labels) -> torch.Tensor | str:
    """'predicted', or an int64 tensor (n,) of classes (range checked once scores are known)."""
    if isinstance(targets, str):
        if targets == "predicted":
            return targets
        if targets != "actual":
            raise CnnlabError(f"target {targets!r} is not 'predicted', 'actual', a class index or one per image")
        if labels is None:
            raise CnnlabError("target 'actual' needs labels=; pass the true classes, or use 'predicted'")
        targets = labels
    t = torch.as_tensor(np.asarray(targets.cpu() if isinstance(targets, torch.Tensor) else targets))
    if t.is_floating_point() or t.dtype == torch.bool or t.ndim > 1:
        raise CnnlabError(f"targets {targets!r} are not class indices; give an int or one int per image")
    t = t.long().expand(n) if t.ndim == 0 else t.long()
    if len(t) != n:
        raise CnnlabError(f"{len(t)} targets for {n} images; give one target per image (or one int for all)")
    return t


def _targets(spec, logits: torch.Tensor) -> torch.Tensor:
    """The (n,) classes to explain for a batch whose scores are ``logits`` (n, K)."""
    if isinstance(spec, str):
        return logits.detach().argmax(1)
    k = logits.shape[1]
    bad = spec[(spec < 0) | (spec >= k)]
    if len(bad):
        raise CnnlabError(f"target {int(bad[0])} is out of range: the model has {k} classes (0..{k - 1})")
    return spec.to(logits.device).clone()  # a clone made here is a normal tensor even if the caller used inference_mode


def _selected_each(logits: torch.Tensor, spec) -> torch.Tensor:
    """Each row's score for its target class (n,)."""
    return logits.gather(1, _targets(spec, logits)[:, None])[:, 0]


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CnnlabError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size


def _predicted(model: nn.Module, x: torch.Tensor, spec, batch_size: int) -> torch.Tensor:
    """Resolve 'predicted' with a gradient-free pass (for methods that perturb the images);
    given classes are range-checked later, against the scores of their first batch."""
    if not isinstance(spec, str):
        return spec.to(x.device)
    return scores(model, x, batch_size=batch_size).argmax(1)


def _add_rows(total: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> None:
    """total[index[r]] += values[r] for every row r, as one matrix product (index_add_ is
    several times slower on the CPU, and slower still in float64)."""
    onehot = (index[None, :] == torch.arange(len(total), device=index.device)[:, None]).to(values.dtype)
    total.view(len(total), -1).addmm_(onehot, values.reshape(len(values), -1))


def _maps(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


# --------------------------------------------------------------------------- Grad-CAM


def _cam(act: torch.Tensor, grad: torch.Tensor | None, size, plus: bool) -> torch.Tensor:
    """Layer activations A and score gradients dS/dA (n, K, h, w) -> maps (n, H, W)."""
    if grad is None:  # the layer does not influence the score
        return act.new_zeros((act.shape[0], *size))
    if plus:
        # Chattopadhyay et al. 2018, eq. 19 with S = exp(score): the higher derivatives of
        # exp(score) are exp(score) * g**2 and exp(score) * g**3 for a piecewise-linear net, so
        # alpha = g^2 / (2 g^2 + sum(A) g^3) = 1 / (2 + sum(A) g) wherever g != 0. Only cells
        # with g > 0 count (the weights take relu(g)); there, on rectified activations
        # (sum(A) >= 0), the denominator is at least 2. On a layer whose activations can be
        # negative (a conv named explicitly) it can reach 0 or below: it is clamped to >= 1,
        # so alpha stays in (0, 1] and float32 cannot blow up a near-zero denominator.
        denom = (2 + act.sum((2, 3), keepdim=True) * grad).clamp(min=1)
        alpha = torch.where(grad > 0, 1 / denom, 0)
        # Their weights also carry exp(score), a positive constant per image that only
        # scales the map (and overflows float32 for scores above ~88): left out.
        weights = (alpha * grad.clamp(min=0)).sum((2, 3), keepdim=True)
    else:
        weights = grad.mean((2, 3), keepdim=True)  # (n, K, 1, 1): global-average-pooled gradients
    cam = (weights * act).sum(1, keepdim=True).clamp(min=0)  # (n, 1, h, w)
    return F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]


# Modules applied element by element after a convolution: the unit's output runs through them.
_ACTIVATIONS = ("ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish",
                "Hardswish", "Hardtanh", "Softplus", "Sigmoid", "Hardsigmoid", "Tanh")
_PASS_THROUGH = ("BatchNorm2d", "Dropout", "Dropout2d", "Identity", "MaxPool2d", "AvgPool2d")


def _kind(module: nn.Module) -> str | None:
    """'activation', 'pass' (BatchNorm, dropout, identity, pooling) or None, by class name (a run's
    torch.export program keeps its layers' original class names, see ``layer_type``)."""
    names = {layer_type(module)} | {t.__name__ for t in type(module).__mro__}
    if names & set(_ACTIVATIONS):
        return "activation"
    return "pass" if names & set(_PASS_THROUGH) else None


def _trace(model: nn.Module, x: torch.Tensor) -> tuple[list[tuple[str, object, object]], torch.Tensor]:
    """``(calls, scores)`` of one forward pass of ``x``: every submodule call in the order the
    calls finish (a block after its children) as ``(name, first input, output)``. Run it
    under ``explaining``; with grad enabled the outputs can be differentiated."""
    owner = threading.get_ident()
    calls: list[tuple[str, object, object]] = []

    def hook_for(name: str):
        def hook(module, inputs, output):
            if threading.get_ident() == owner:
                calls.append((name, inputs[0] if inputs else None, output))

        return hook

    handles = []
    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(hook_for(name)))
        logits = forward_logits(model, x)
    finally:
        for handle in handles:
            handle.remove()
    return calls, logits


def _is_map(t) -> bool:
    return isinstance(t, torch.Tensor) and t.ndim == 4


def _units(model: nn.Module, calls: list, convs: list[str]) -> tuple[dict[str, str], dict[str, int]]:
    """({conv: the module whose output is that conv's rectified unit}, {conv: the smaller
    pixel count of its map and its unit's}), for the convs that ran with (N, C, H, W) output,
    in the order they ran.
    The unit is:

    - the outermost block (a Fire module, a residual block, a stage) that ends with this conv
      (no other conv of it runs later) and keeps its spatial size, then inside it the last
      child with the very same output tensor, down to a module called once (a residual
      block's ReLU is called twice, so the block itself is the unit);
    - then the activations (through BatchNorm, dropout, pooling) that take that output next,
      one after the other (``conv -> ReLU``: the ReLU; ``conv -> pool -> BN -> ReLU``: the ReLU).
    """
    count: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, (name, _, _) in enumerate(calls):
        count[name] = count.get(name, 0) + 1
        first.setdefault(name, i)
    out = {name: calls[i][2] for name, i in first.items()}
    once = {name for name, c in count.items() if c == 1}
    ran = sorted((c for c in convs if c in once and _is_map(out[c])), key=first.__getitem__)
    modules = dict(model.named_modules())

    def last_conv_in(block: str) -> str | None:
        inside = [c for c in ran if c.startswith(block + ".")]
        return inside[-1] if inside else None

    def follow(name: str) -> str:
        """The last activation of the chain that takes ``name``'s output next (through
        BatchNorm, dropout or pooling), or ``name`` when no activation follows."""
        current, end = out[name], name
        for i, (other, given, result) in enumerate(calls[first[name] + 1:], first[name] + 1):
            if given is current and first[other] == i:  # a module's first call: what the hooks capture
                kind = _kind(modules[other])
                if kind is None:
                    break
                current = result
                if kind == "activation":
                    end = other
        return end

    units = {}
    for conv in ran:
        size = out[conv].shape[2:]
        unit, parts = conv, conv.split(".")
        for depth in range(len(parts) - 1, 0, -1):
            block = ".".join(parts[:depth])
            if block not in once or not _is_map(out[block]) or out[block].shape[2:] != size \
                    or last_conv_in(block) != conv:
                break
            unit = block
        while unit != conv:  # inside the block, down to the last child giving the same tensor
            same = [n for n, _ in modules[unit].named_children() if f"{unit}.{n}" in once
                    and out[f"{unit}.{n}"] is out[unit]]
            if not same:
                break
            unit = max((f"{unit}.{n}" for n in same), key=first.__getitem__)
        units[conv] = follow(unit)
    # a map's pixel count: the conv's and its unit's (pooling may shrink the unit's)
    return units, {c: min(out[c].shape[2] * out[c].shape[3], out[u].shape[2] * out[u].shape[3])
                   for c, u in units.items()}


def cam_layers(model: nn.Module, images, which: str = "auto") -> list[str]:
    """The layers Grad-CAM uses for ``layer="auto"`` (one name) or ``"sweep"`` (one per
    conv layer, in the order they run): the rectified output of each conv's unit, see
    :func:`gradcam`. ``images``: one batch the model takes (only the first image is run)."""
    convs = require_convs(model, "Grad-CAM")
    _check_which(which)
    x = _as_batch(model, images)
    with explaining(model), torch.no_grad():
        calls, _ = _trace(model, x[:1])
    return _choose(model, calls, convs, which)


def _check_which(which) -> None:
    if which not in ("auto", "sweep"):
        raise CnnlabError(f"which must be 'auto' or 'sweep', got {which!r}")


def _choose(model: nn.Module, calls: list, convs: list[str], which: str) -> list[str]:
    units, pixels = _units(model, calls, convs)
    if which == "sweep":
        sweep = list(dict.fromkeys(units[conv] for conv in units if pixels[conv] > 1))
        if sweep:
            return sweep
    for conv in reversed(list(units)):
        if pixels[conv] > 1:
            return [units[conv]]
    raise CnnlabError(f"no conv layer of {type(model).__name__} has an output map larger than 1x1 for these "
                      "images; Grad-CAM needs a spatial map, use saliency or ig instead")


def gradcam_maps(model: nn.Module, images, targets="predicted", *, layers=("auto",), labels=None,
                 batch_size: int = 128, plus: bool = False):
    """Grad-CAM(++) of several layers at once: ``({layer: (N, H, W) maps}, targets (N,),
    layer names used, scores (N, K))``; one forward and one backward pass per batch for all
    ``layers`` together. ``layers``: names or modules, or ``["auto"]`` (one layer, see
    :func:`gradcam`) or ``["sweep"]`` (every conv's unit, see :func:`cam_layers`)."""
    layers = [layers] if isinstance(layers, (str, nn.Module)) else list(layers)
    x = _as_batch(model, images)
    which = layers[0] if len(layers) == 1 and isinstance(layers[0], str) and layers[0] in ("auto", "sweep") else None
    convs = require_convs(model, "Grad-CAM") if which else []
    names = None if which else [check_cam_layer(model, name) for name in layers]
    spec = _target_spec(targets, len(x), labels)
    chunks: dict[str, list] = {}
    chosen, used, scores_ = names, [], []
    with explaining(model):
        for start in range(0, len(x), _check_batch_size(batch_size)):
            # The input asks for grad so that a frozen model (no parameter requires grad) still records a graph.
            xs = x[start:start + batch_size].clone().requires_grad_(True)
            if names is None:  # "auto"/"sweep": the units are found in the first batch's own pass
                calls, logits = _trace(model, xs)
                names = _choose(model, calls, convs, which)
                first: dict[str, torch.Tensor] = {}
                for name, _, out in calls:
                    first.setdefault(name, out[0] if isinstance(out, (tuple, list)) else out)
                store = {name: out for name, out in first.items() if name in set(names)}
            else:
                with captured_outputs(model, names) as store:
                    logits = forward_logits(model, xs)
            t = _targets(spec if isinstance(spec, str) else spec[start:start + batch_size], logits)
            if start == 0:
                chosen = _check_ran(names, store)
                _check_maps(model, chosen, store)
            grads = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), [store[n] for n in chosen],
                                        allow_unused=True)
            for name, grad in zip(chosen, grads, strict=True):
                chunks.setdefault(name, []).append(_cam(store[name].detach(), grad, tuple(x.shape[2:]), plus))
            used.append(t)
            scores_.append(logits.detach())
    return {n: _maps(torch.cat(c)) for n, c in chunks.items()}, torch.cat(used), chosen, torch.cat(scores_)


def _check_maps(model: nn.Module, names: list[str], store: dict) -> None:
    modules = dict(model.named_modules())
    for name in names:
        out = store[name]
        if not _is_map(out):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise CnnlabError(f"layer {name!r} ({layer_type(modules[name])}) gives {got}, not (N, C, H, W) feature "
                              f"maps; Grad-CAM needs a conv layer, its activation or a block: 'auto' picks one")


def _check_ran(names: list[str], store: dict) -> list[str]:
    """``names`` in the order their layers ran; CnnlabError for a layer that never ran."""
    missing = [n for n in names if n not in store]
    if missing:
        raise CnnlabError(f"layer(s) {missing} never ran in the forward pass; pick a layer the model uses")
    return [n for n in store if n in set(names)]


class AllZeroMapWarning(UserWarning):
    """Some Grad-CAM maps are all zero: no positive evidence for the class at that layer."""


def all_zero(maps: np.ndarray) -> np.ndarray:
    """(N,) bool: which maps (N, H, W) are zero everywhere (drawn, they are a flat wash)."""
    maps = np.asarray(maps)
    return ~np.any(maps != 0, axis=tuple(range(1, maps.ndim)))


def _warn_all_zero(maps: np.ndarray, layer: str, method: str) -> None:
    zero = int(all_zero(maps).sum())
    if zero:
        warnings.warn(f"{method}: {zero} of {len(maps)} maps at layer {layer} are all zero (no positive evidence "
                      "for the class there); try an earlier layer or another method", AllZeroMapWarning, stacklevel=3)


def scores(model: nn.Module, images, *, batch_size: int = 128) -> torch.Tensor:
    """The model's scores (N, K) for the images, in eval mode without gradients."""
    x = _as_batch(model, images)
    with explaining(model), torch.no_grad():
        return torch.cat([forward_logits(model, xs) for xs in x.split(_check_batch_size(batch_size))])


def gradcam(model: nn.Module, images, targets="predicted", *, layer="auto", labels=None,
            batch_size: int = 128) -> np.ndarray:
    """Grad-CAM maps (N, H, W) float32: ReLU of the layer's feature maps weighted by the
    spatial mean of the score's gradient, upsampled bilinearly to the input size (equal to
    Captum's ``LayerGradCam(relu_attributions=True)`` + ``LayerAttribution.interpolate`` on
    the same layer).

    ``layer``: a submodule (a ``named_modules()`` name, or the module object as Captum takes
    it) whose output is (N, C, H, W): a Conv2d, the activation after it, a block. ``"auto"``
    takes the last conv layer whose map is larger than 1x1 and explains its *rectified unit*
    (see :func:`cam_layers`): the activation after it (``conv -> ReLU``: the ReLU), or the
    block it ends (a Fire module's output, a residual block's output after the add and the
    ReLU). A conv's raw output (before its ReLU) is often negative everywhere the class has
    evidence, so its map would be all zero. A named layer is taken as it is.

    Issues an ``AllZeroMapWarning`` (one line) when some maps are still all zero.
    """
    maps, _, chosen, _ = gradcam_maps(model, images, targets, layers=[layer], labels=labels,
                                      batch_size=batch_size, plus=False)
    result = next(iter(maps.values()))
    _warn_all_zero(result, chosen[0], "Grad-CAM")
    return result


def gradcam_pp(model: nn.Module, images, targets="predicted", *, layer="auto", labels=None,
               batch_size: int = 128) -> np.ndarray:
    """Grad-CAM++ maps (N, H, W) float32: feature maps weighted by the closed-form
    alpha-weighted positive gradients of Chattopadhyay et al. (2018), with the denominator
    guarded (see ``_cam``); layers as :func:`gradcam`."""
    maps, _, chosen, _ = gradcam_maps(model, images, targets, layers=[layer], labels=labels,
                                      batch_size=batch_size, plus=True)
    result = next(iter(maps.values()))
    _warn_all_zero(result, chosen[0], "Grad-CAM++")
    return result


def layer_sweep(model: nn.Module, images, targets="predicted", *, labels=None, plus: bool = False,
                batch_size: int = 128) -> dict[str, np.ndarray]:
    """Grad-CAM (``plus=True``: Grad-CAM++) of every conv layer's rectified unit (see
    :func:`cam_layers`), in the order they run: ``{layer name: (N, H, W) float32}``, all from
    one forward and one backward pass per batch."""
    maps, _, _, _ = gradcam_maps(model, images, targets, layers=["sweep"], labels=labels,
                                 batch_size=batch_size, plus=plus)
    return maps


# --------------------------------------------------------------------------- input gradients


def _input_grads(model, x: torch.Tensor, spec, batch_size: int) -> torch.Tensor:
    """d score / d input (N, C, H, W) for ``x``, one forward + backward per batch."""
    grads = []
    with explaining(model):
        for start in range(0, len(x), _check_batch_size(batch_size)):
            xs = x[start:start + batch_size].clone().requires_grad_(True)
            logits = forward_logits(model, xs)
            t = _targets(spec if isinstance(spec, str) else spec[start:start + batch_size], logits)
            grads.append(torch.autograd.grad(logits.gather(1, t[:, None]).sum(), xs)[0])
    return torch.cat(grads)


def saliency(model: nn.Module, images, targets="predicted", *, labels=None, signed: bool = False,
             batch_size: int = 128) -> np.ndarray:
    """Gradient saliency (N, H, W) float32 (Simonyan et al. 2014): |d score / d pixel|, the
    maximum over colour channels; per channel it equals Captum's ``Saliency(abs=True)``.

    ``signed=True``: the gradient itself, summed over colour channels (how the score moves
    when the pixel gets brighter), a signed map (see :func:`is_signed`).
    """
    x = _as_batch(model, images)
    grads = _input_grads(model, x, _target_spec(targets, len(x), labels), batch_size)
    return _maps(grads.sum(1) if signed else grads.abs().amax(1))


def smoothgrad(model: nn.Module, images, targets="predicted", *, labels=None, samples: int = 25,
               noise: float = 0.15, seed: int = 0, batch_size: int = 128) -> np.ndarray:
    """SmoothGrad (N, H, W) float32 (Smilkov et al. 2017): the mean of |gradient| over
    ``samples`` noisy copies, maximum over channels. Unsigned: absolute gradients are
    averaged (the paper's choice for its figures), so it equals the mean of :func:`saliency`
    over the copies, not |mean gradient| (Captum's ``NoiseTunnel`` over ``Saliency(abs=True)``
    averages absolute gradients too, but its ``stdevs`` is one absolute number for all images).

    ``noise``: the noise's standard deviation as a fraction of *each image's* value range
    (max - min; they found 10-20% works best). Noise comes from a private generator seeded by
    ``seed`` and the same draws serve every image, so an image's map does not depend on its
    batch.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise CnnlabError(f"samples must be a positive int, got {samples!r}")
    if not isinstance(noise, (int, float)) or not 0 <= noise < 10:
        raise CnnlabError(f"noise must be a fraction of the image range like 0.15, got {noise!r}")
    x = _as_batch(model, images)
    t = _predicted(model, x, _target_spec(targets, len(x), labels), batch_size)
    gen = torch.Generator().manual_seed(int(seed))
    draws = torch.randn((samples, *x.shape[1:]), generator=gen, dtype=x.dtype).to(x.device)  # (S, C, H, W)
    sigma = noise * (x.amax((1, 2, 3)) - x.amin((1, 2, 3)))  # (N,)
    n = len(x)
    total = x.new_zeros(x.shape)  # contiguous, for _add_rows
    for start in range(0, samples * n, _check_batch_size(batch_size)):
        rows = torch.arange(start, min(start + batch_size, samples * n), device=x.device)
        k, i = rows // n, rows % n  # row = sample k of image i
        noisy = x[i] + sigma[i, None, None, None] * draws[k]
        _add_rows(total, i, _input_grads(model, noisy, t[i], len(rows)).abs())
    return _maps((total / samples).amax(1))


def _path_weights(steps: int, method: str, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Points alpha in [0, 1] and their quadrature weights for the path integral."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise CnnlabError(f"steps must be an int >= 2, got {steps!r}")
    if method == "gausslegendre":  # Captum's default: exact for polynomials of degree 2*steps - 1
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return torch.tensor(0.5 * (nodes + 1), dtype=dtype), torch.tensor(0.5 * weights, dtype=dtype)
    if method == "riemann_trapezoid":  # weights sum to 1; Captum's sum to 1 - 1/steps (its maps are (n-1)/n of these)
        w = torch.full((steps,), 1 / (steps - 1), dtype=dtype)
        w[0] = w[-1] = 0.5 / (steps - 1)
        return torch.linspace(0, 1, steps, dtype=dtype), w
    raise CnnlabError(f"method {method!r} is not 'gausslegendre' or 'riemann_trapezoid'")


def integrated_gradients(model: nn.Module, images, targets="predicted", *, labels=None, baseline=0.0,
                         steps: int = 50, method: str = "gausslegendre", batch_size: int = 128) -> np.ndarray:
    """Integrated gradients (N, H, W) float32: (x - baseline) times the path integral of the
    gradient from ``baseline`` to x, summed over channels (Sundararajan et al. 2017).

    ``baseline``: a number or an array broadcastable to the images, in the preprocessed
    space: 0 is black for images scaled to [0, 1], but after mean/std normalisation (ImageNet
    networks, a run trained with ``normalize``) 0 is the *mean colour*, not black. The maps
    sum to score(x) - score(baseline), up to the quadrature error. Signed: positive where a
    pixel raises the score, negative where it lowers it (see :func:`is_signed`).

    ``method``: ``"gausslegendre"`` (default) equals Captum's ``IntegratedGradients`` with
    the same steps and baseline. ``"riemann_trapezoid"`` uses the trapezoid rule's weights,
    which sum to 1; Captum's ``riemann_trapezoid`` weights sum to 1 - 1/steps, so its maps
    are exactly (steps - 1)/steps of these (cnnlab's are the correct quadrature).
    """
    x = _as_batch(model, images)
    t = _predicted(model, x, _target_spec(targets, len(x), labels), batch_size)
    try:
        base = torch.as_tensor(np.asarray(baseline.cpu() if isinstance(baseline, torch.Tensor) else baseline))
        base = base.to(device=x.device, dtype=x.dtype).expand_as(x)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise CnnlabError(f"baseline of shape {np.shape(baseline)} does not broadcast to the images "
                          f"{tuple(x.shape)}; give a number or an array of the images' shape") from exc
    alphas, weights = _path_weights(steps, method, x.dtype)
    alphas, weights = alphas.to(x.device), weights.to(x.device)
    n = len(x)
    total = x.new_zeros(x.shape)  # contiguous, for _add_rows
    for start in range(0, steps * n, _check_batch_size(batch_size)):
        rows = torch.arange(start, min(start + batch_size, steps * n), device=x.device)
        k, i = rows // n, rows % n  # row = path point k of image i
        a = alphas[k, None, None, None]
        grads = _input_grads(model, base[i] + a * (x[i] - base[i]), t[i], len(rows))
        _add_rows(total, i, grads * weights[k, None, None, None])
    return _maps(((x - base) * total).sum(1))


# --------------------------------------------------------------------------- occlusion


def _pair(value, name: str, limit: tuple[int, int]) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and 1 <= v <= m for v, m in zip(pair, limit, strict=True)):
        raise CnnlabError(f"{name} {value!r} must be a positive int or (rows, cols) no larger than the image {limit}")
    return pair


def _window_starts(size: int, window: int, stride: int) -> torch.Tensor:
    # As Captum: ceil((size - window) / stride) + 1 positions; the last window may hang over the edge.
    count = -(-(size - window) // stride) + 1
    return torch.arange(count) * stride


def occlusion(model: nn.Module, images, targets="predicted", *, labels=None, window=None, stride=None,
              baseline: float = 0.0, batch_size: int = 128) -> np.ndarray:
    """Occlusion (N, H, W) float32: how much the score drops when a ``window`` patch
    (all channels) is set to ``baseline``, averaged over the patches covering each pixel
    (Zeiler & Fergus 2014). Equals Captum's ``Occlusion`` with a window spanning the channels.
    Signed: negative where hiding a patch *raises* the score (see :func:`is_signed`).

    ``window``/``stride``: int or (rows, cols); default window a seventh of the shorter
    side, stride half the window. A stride larger than the window would leave pixels that no
    window covers (no value: NaN), so it is refused.
    """
    x = _as_batch(model, images)
    n, _, h, w = x.shape
    window = _pair(window if window is not None else max(1, min(h, w) // 7), "window", (h, w))
    stride = _pair(stride if stride is not None else tuple(max(1, v // 2) for v in window), "stride", (h, w))
    if stride[0] > window[0] or stride[1] > window[1]:
        raise CnnlabError(f"occlusion stride {stride} is larger than the window {window}: the pixels between "
                          "windows would get no value; use a stride no larger than the window")
    if not isinstance(baseline, (int, float)):
        raise CnnlabError(f"baseline must be a number for occlusion, got {type(baseline).__name__}")
    t = _predicted(model, x, _target_spec(targets, len(x), labels), batch_size)
    # Each window is a box: the product of a row band and a column band.
    rows_in = _bands(h, window[0], stride[0], x)  # (R, H): row band of each window row
    cols_in = _bands(w, window[1], stride[1], x)  # (Q, W)
    drops = _occlusion_drops(model, x, t, rows_in, cols_in, baseline, _check_batch_size(batch_size))  # (R, Q, N)
    total = torch.einsum("ay,abn,bx->nyx", rows_in, drops, cols_in)
    count = rows_in.sum(0)[:, None] * cols_in.sum(0)[None, :]  # windows covering each pixel
    return _maps(total / count)


def _bands(size: int, window: int, stride: int, x: torch.Tensor) -> torch.Tensor:
    starts = _window_starts(size, window, stride).to(x.device)[:, None]
    pos = torch.arange(size, device=x.device)[None, :]
    return ((pos >= starts) & (pos < starts + window)).to(x.dtype)


def _occlusion_drops(model, x, t, rows_in, cols_in, baseline, batch_size) -> torch.Tensor:
    """score(x) - score(x with window (a, b) set to baseline), as (R, Q, N)."""
    n, windows = len(x), len(rows_in) * len(cols_in)
    drops = []
    with explaining(model), torch.no_grad():
        full = torch.cat([_selected_each(forward_logits(model, c), tc)
                          for c, tc in zip(x.split(batch_size), t.split(batch_size), strict=True)])
        for start in range(0, windows * n, batch_size):
            rows = torch.arange(start, min(start + batch_size, windows * n), device=x.device)
            p, i = rows // n, rows % n  # row = window p of image i
            mask = (rows_in[p // len(cols_in), :, None] * cols_in[p % len(cols_in), None, :])[:, None]  # (rows, 1, H, W)
            occluded = x[i] * (1 - mask) + baseline * mask
            drops.append(full[i] - _selected_each(forward_logits(model, occluded), t[i]))
    return torch.cat(drops).view(len(rows_in), len(cols_in), n)


# --------------------------------------------------------------------------- by name

METHODS = {
    "gradcam": gradcam,
    "gradcam++": gradcam_pp,
    "saliency": saliency,
    "smoothgrad": smoothgrad,
    "ig": integrated_gradients,
    "occlusion": occlusion,
}


# Methods whose maps are signed (positive: evidence for the class; negative: against it).
# Draw them with a diverging colormap centred on 0, or show their positive part and say so.
SIGNED_METHODS = frozenset({"ig", "occlusion"})


def is_signed(method: str, **options) -> bool:
    """Whether ``method``'s maps (with these options) are signed: integrated gradients,
    occlusion and ``saliency(signed=True)``. Grad-CAM(++), saliency and SmoothGrad are >= 0."""
    if method not in METHODS:
        raise CnnlabError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return method in SIGNED_METHODS or (method == "saliency" and bool(options.get("signed", False)))


def attribute(model: nn.Module, images, targets="predicted", *, method: str = "gradcam", **options) -> np.ndarray:
    """Maps (N, H, W) from the method named ``method`` (a key of ``METHODS``)."""
    if method not in METHODS:
        raise CnnlabError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return METHODS[method](model, images, targets, **options)
