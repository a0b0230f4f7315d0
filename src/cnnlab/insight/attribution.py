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

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.insight.attribution_inputs import (
    _add_rows,
    _as_batch,
    _check_batch_size,
    _maps,
    _predicted,
    _target_spec,
    _targets,
    scores,
)
from cnnlab.insight.cam_layers import _choose, _is_map, _trace, cam_layers
from cnnlab.insight.internals import layer_type
from cnnlab.insight.layers import captured_outputs, check_cam_layer, explaining, forward_logits, require_convs
from cnnlab.insight.occlusion import occlusion

__all__ = ["METHODS", "SIGNED_METHODS", "AllZeroMapWarning", "all_zero", "attribute", "cam_layers", "gradcam",
           "gradcam_maps", "gradcam_pp", "integrated_gradients", "is_signed", "layer_sweep", "occlusion", "saliency",
           "scores", "smoothgrad"]


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
