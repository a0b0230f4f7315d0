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
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.insight.layers import captured_outputs, check_cam_layer, explaining, forward_logits, require_convs

__all__ = ["METHODS", "attribute", "gradcam", "gradcam_maps", "gradcam_pp", "integrated_gradients", "layer_sweep",
           "occlusion", "saliency", "scores", "smoothgrad"]


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
    if act.ndim != 4:
        raise CnnlabError(f"the layer's output has shape {tuple(act.shape)}, not (N, C, H, W) feature maps")
    if grad is None:  # the layer does not influence the score
        return act.new_zeros((act.shape[0], *size))
    if plus:
        # Chattopadhyay et al. 2018, eq. 19 with S = exp(score): the higher derivatives of
        # exp(score) are exp(score) * g**2 and exp(score) * g**3 for a piecewise-linear net.
        g2 = grad * grad
        denom = 2 * g2 + act.sum((2, 3), keepdim=True) * g2 * grad
        alpha = torch.where((grad != 0) & (denom != 0), g2 / torch.where(denom != 0, denom, 1), 0)
        # Their weights also carry exp(score), a positive constant per image that only
        # scales the map (and overflows float32 for scores above ~88): left out.
        weights = (alpha * grad.clamp(min=0)).sum((2, 3), keepdim=True)
    else:
        weights = grad.mean((2, 3), keepdim=True)  # (n, K, 1, 1): global-average-pooled gradients
    cam = (weights * act).sum(1, keepdim=True).clamp(min=0)  # (n, 1, h, w)
    return F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]


def _auto_layer(store: dict[str, torch.Tensor], model: nn.Module) -> str:
    """The last conv layer to run whose output map is larger than 1x1."""
    for name in reversed(list(store)):
        out = store[name]
        if out.ndim == 4 and out.shape[2] * out.shape[3] > 1:
            return name
    raise CnnlabError(f"no conv layer of {type(model).__name__} has an output map larger than 1x1 for these "
                      "images; Grad-CAM needs a spatial map, use saliency or ig instead")


def gradcam_maps(model: nn.Module, images, targets="predicted", *, layers=("auto",), labels=None,
                 batch_size: int = 128, plus: bool = False):
    """Grad-CAM(++) of several layers at once: ``({layer: (N, H, W) maps}, targets (N,),
    layer names used, scores (N, K))``; one forward and one backward pass per batch for all
    ``layers`` together (``["auto"]`` picks one, see :func:`gradcam`)."""
    convs = require_convs(model, "Grad-CAM")
    auto = list(layers) == ["auto"]
    names = convs if auto else [check_cam_layer(model, name) for name in layers]
    x = _as_batch(model, images)
    spec = _target_spec(targets, len(x), labels)
    chunks: dict[str, list] = {}
    chosen, used, scores_ = names, [], []
    with explaining(model), captured_outputs(model, names) as store:
        for start in range(0, len(x), _check_batch_size(batch_size)):
            store.clear()
            # The input asks for grad so that a frozen model (no parameter requires grad) still records a graph.
            logits = forward_logits(model, x[start:start + batch_size].clone().requires_grad_(True))
            t = _targets(spec if isinstance(spec, str) else spec[start:start + batch_size], logits)
            if start == 0:
                chosen = _check_ran([_auto_layer(store, model)] if auto else names, store)
            grads = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), [store[n] for n in chosen],
                                        allow_unused=True)
            for name, grad in zip(chosen, grads, strict=True):
                chunks.setdefault(name, []).append(_cam(store[name].detach(), grad, tuple(x.shape[2:]), plus))
            used.append(t)
            scores_.append(logits.detach())
    return {n: _maps(torch.cat(c)) for n, c in chunks.items()}, torch.cat(used), chosen, torch.cat(scores_)


def _check_ran(names: list[str], store: dict) -> list[str]:
    """``names`` in the order their layers ran; CnnlabError for a layer that never ran."""
    missing = [n for n in names if n not in store]
    if missing:
        raise CnnlabError(f"layer(s) {missing} never ran in the forward pass; pick a layer the model uses")
    return [n for n in store if n in set(names)]


def scores(model: nn.Module, images, *, batch_size: int = 128) -> torch.Tensor:
    """The model's scores (N, K) for the images, in eval mode without gradients."""
    x = _as_batch(model, images)
    with explaining(model), torch.no_grad():
        return torch.cat([forward_logits(model, xs) for xs in x.split(_check_batch_size(batch_size))])


def gradcam(model: nn.Module, images, targets="predicted", *, layer: str = "auto", labels=None,
            batch_size: int = 128) -> np.ndarray:
    """Grad-CAM maps (N, H, W) float32: ReLU of the layer's feature maps weighted by the
    spatial mean of the score's gradient, upsampled bilinearly to the input size (equal to
    Captum's ``LayerGradCam(relu_attributions=True)`` + ``LayerAttribution.interpolate``).

    ``layer``: a Conv2d (or a block holding one) by its ``named_modules()`` name, or
    ``"auto"``: the last conv layer whose output map is larger than 1x1.
    """
    maps, _, _, _ = gradcam_maps(model, images, targets, layers=[layer], labels=labels,
                                 batch_size=batch_size, plus=False)
    return next(iter(maps.values()))


def gradcam_pp(model: nn.Module, images, targets="predicted", *, layer: str = "auto", labels=None,
               batch_size: int = 128) -> np.ndarray:
    """Grad-CAM++ maps (N, H, W) float32: feature maps weighted by the closed-form
    alpha-weighted positive gradients of Chattopadhyay et al. (2018); see :func:`gradcam`."""
    maps, _, _, _ = gradcam_maps(model, images, targets, layers=[layer], labels=labels,
                                 batch_size=batch_size, plus=True)
    return next(iter(maps.values()))


def layer_sweep(model: nn.Module, images, targets="predicted", *, labels=None, plus: bool = False,
                batch_size: int = 128) -> dict[str, np.ndarray]:
    """Grad-CAM (``plus=True``: Grad-CAM++) of every Conv2d layer, in the order they run:
    ``{layer name: (N, H, W) float32}``, all from one forward and one backward pass per batch."""
    convs = require_convs(model, "Grad-CAM")
    maps, _, _, _ = gradcam_maps(model, images, targets, layers=convs, labels=labels,
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


def saliency(model: nn.Module, images, targets="predicted", *, labels=None, batch_size: int = 128) -> np.ndarray:
    """Gradient saliency (N, H, W) float32: |d score / d pixel|, the maximum over colour
    channels (Simonyan et al. 2014); per channel it equals Captum's ``Saliency(abs=True)``."""
    x = _as_batch(model, images)
    grads = _input_grads(model, x, _target_spec(targets, len(x), labels), batch_size)
    return _maps(grads.abs().amax(1))


def smoothgrad(model: nn.Module, images, targets="predicted", *, labels=None, samples: int = 25,
               noise: float = 0.15, seed: int = 0, batch_size: int = 128) -> np.ndarray:
    """SmoothGrad (N, H, W) float32: the mean of |gradient| over ``samples`` noisy copies,
    maximum over channels (Smilkov et al. 2017).

    ``noise``: the noise's standard deviation as a fraction of each image's value range
    (they found 10-20% works best). Noise comes from a private generator seeded by ``seed``
    and the same draws serve every image, so an image's map does not depend on its batch.
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
    if method == "riemann_trapezoid":  # weights sum to 1 (Captum's sum to 1 - 1/steps)
        w = torch.full((steps,), 1 / (steps - 1), dtype=dtype)
        w[0] = w[-1] = 0.5 / (steps - 1)
        return torch.linspace(0, 1, steps, dtype=dtype), w
    raise CnnlabError(f"method {method!r} is not 'gausslegendre' or 'riemann_trapezoid'")


def integrated_gradients(model: nn.Module, images, targets="predicted", *, labels=None, baseline=0.0,
                         steps: int = 50, method: str = "gausslegendre", batch_size: int = 128) -> np.ndarray:
    """Integrated gradients (N, H, W) float32: (x - baseline) times the path integral of the
    gradient from ``baseline`` to x, summed over channels (Sundararajan et al. 2017).

    ``baseline``: a number or an array broadcastable to the images (0 = black after
    preprocessing). The maps sum to score(x) - score(baseline), up to the quadrature error.
    Equals Captum's ``IntegratedGradients`` with the same steps, baseline and method.
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

    ``window``/``stride``: int or (rows, cols); default window a seventh of the shorter
    side, stride half the window.
    """
    x = _as_batch(model, images)
    n, _, h, w = x.shape
    window = _pair(window if window is not None else max(1, min(h, w) // 7), "window", (h, w))
    stride = _pair(stride if stride is not None else tuple(max(1, v // 2) for v in window), "stride", (h, w))
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


def attribute(model: nn.Module, images, targets="predicted", *, method: str = "gradcam", **options) -> np.ndarray:
    """Maps (N, H, W) from the method named ``method`` (a key of ``METHODS``)."""
    if method not in METHODS:
        raise CnnlabError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return METHODS[method](model, images, targets, **options)
