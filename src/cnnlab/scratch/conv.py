"""2-D correlation, convolution and pooling written in plain NumPy.

This is the "from scratch" half of cnnlab: no torch, no scipy, readable by someone who
knows NumPy. What a CNN layer calls "convolution" is *correlation*: slide the kernel over
the image and at every position add up ``kernel * patch``. True convolution flips the
kernel first (``convolve2d``); the two agree for symmetric kernels.

Array layouts (channels last, like matplotlib and Pillow, unlike torch):

- image: ``(H, W)`` grey, or ``(H, W, C)`` colour.
- kernel: ``(kh, kw)`` for a grey image, ``(kh, kw, C)`` for a colour image. A colour
  kernel sums over the channels, so one kernel always gives one map ``(H', W')``.
- bank of F kernels: an array with one more leading axis, ``(F, kh, kw)`` or
  ``(F, kh, kw, C)``, or a list of F kernels; it gives F maps stacked last ``(H', W', F)``.

Output size per axis is the textbook formula in :func:`output_size`, with the padding that
``mode`` implies (SciPy's meanings) plus any explicit ``padding``:

- ``valid``: no padding, output = n - k + 1 (for stride 1, dilation 1);
- ``same``: pad k - 1 in all, output = n. An odd kernel gets (k - 1) / 2 on each side. An
  even one has two middle taps; as in SciPy, correlation puts output pixel (r, c) under
  tap (k - 1) // 2 (pad (k - 1) // 2 before, k // 2 after) and convolution, which flips
  the kernel, the other way round (k // 2 before, (k - 1) // 2 after);
- ``full``: pad k - 1 on each side, output = n + k - 1.

How it is fast without a loop over pixels: the loop runs over the kernel's kh * kw taps
instead. For tap (i, j) the pixels it touches, for every output position at once, form
one strided slice of the padded image, so ``out += kernel[i, j] * slice`` does the work
of the tutorial's double loop over output pixels in a single vectorised operation.
"""

from __future__ import annotations

import numbers

import numpy as np

from cnnlab.errors import CnnlabError

__all__ = [
    "BOUNDARIES",
    "MODES",
    "avg_pool2d",
    "convolve2d",
    "correlate2d",
    "max_pool2d",
    "output_size",
]

MODES = ("valid", "same", "full")
BOUNDARIES = ("fill", "wrap", "symm")
# SciPy's boundary names -> np.pad's mode names (same meanings; tests check it).
_NP_PAD_MODE = {"fill": "constant", "wrap": "wrap", "symm": "symmetric"}


def output_size(n: int, k: int, padding: int = 0, stride: int = 1, dilation: int = 1) -> int:
    """Output length along one axis: ``floor((n + 2p - d(k - 1) - 1) / s) + 1``.

    ``n`` input length, ``k`` kernel length, ``padding`` added on *each* side, ``stride``
    step between outputs, ``dilation`` spacing between kernel taps (a dilated kernel spans
    ``d(k - 1) + 1`` pixels). Raises CnnlabError if the kernel does not fit.
    """
    _check_int("n", n, 1)
    _check_int("k", k, 1)
    _check_int("padding", padding, 0)
    _check_int("stride", stride, 1)
    _check_int("dilation", dilation, 1)
    span = dilation * (k - 1) + 1
    if n + 2 * padding < span:
        raise CnnlabError(
            f"a kernel of size {k} with dilation {dilation} spans {span} pixels, more than the "
            f"input's {n} plus padding {padding} on each side; use a smaller kernel or more padding"
        )
    return (n + 2 * padding - span) // stride + 1


def correlate2d(
    in1, in2, mode: str = "full", boundary: str = "fill", fillvalue: float = 0, *,
    stride=1, dilation=1, padding=0,
) -> np.ndarray:
    """Cross-correlate image ``in1`` with kernel (or bank) ``in2``: what CNN layers compute.

    ``mode``, ``boundary`` and ``fillvalue`` mean what they mean in
    ``scipy.signal.correlate2d`` (same defaults): boundary ``fill`` pads with ``fillvalue``,
    ``wrap`` wraps around, ``symm`` mirrors including the edge pixel. Keyword-only:
    ``stride`` and ``dilation`` (int or ``(rows, cols)`` pair, >= 1) as in
    ``torch.nn.functional.conv2d``, and ``padding`` (int or pair, >= 0) added on each side
    on top of what ``mode`` adds (torch's ``padding=p`` is ``mode="valid", padding=p``).

    Layouts are in the module docstring: one kernel gives ``(H', W')``, a bank of F gives
    ``(H', W', F)``. The result is float32 when both inputs are float32, else float64.
    """
    return _filter(in1, in2, mode, boundary, fillvalue, stride, dilation, padding, flip=False)


def convolve2d(
    in1, in2, mode: str = "full", boundary: str = "fill", fillvalue: float = 0, *,
    stride=1, dilation=1, padding=0,
) -> np.ndarray:
    """Convolve: correlate with the kernel flipped left-right and upside-down.

    Same arguments and layouts as :func:`correlate2d` (and as ``scipy.signal.convolve2d``);
    only the spatial axes are flipped, never the channels or the bank axis.
    """
    return _filter(in1, in2, mode, boundary, fillvalue, stride, dilation, padding, flip=True)


def max_pool2d(image, size=2, *, stride=None) -> np.ndarray:
    """Largest value in each ``size`` window (int or pair), ``stride`` defaulting to ``size``.

    ``(H, W)`` -> ``(H', W')``, ``(H, W, C)`` -> ``(H', W', C)``, each channel on its own, no
    padding, partial windows at the edge dropped (torch's ``max_pool2d`` defaults). Keeps the
    input's dtype.
    """
    _, _, taps = _pool_taps(image, size, stride)
    out = next(taps)[2].copy()  # (H', W'[, C])
    for _, _, window in taps:
        np.maximum(out, window, out=out)
    return out


def avg_pool2d(image, size=2, *, stride=None) -> np.ndarray:
    """Mean of each ``size`` window; arguments and layouts as :func:`max_pool2d`.

    Returns float32 for a float32 input, else float64.
    """
    x, (kh, kw), taps = _pool_taps(image, size, stride)
    out = next(taps)[2].astype(np.float32 if x.dtype == np.float32 else np.float64)  # (H', W'[, C])
    for _, _, window in taps:
        out += window
    out /= kh * kw
    return out


# --- the engine ------------------------------------------------------------------------


def _filter(in1, in2, mode, boundary, fillvalue, stride, dilation, padding, *, flip):
    image = _as_image(in1, "image")  # (H, W) or (H, W, C)
    weights, is_bank = _as_weights(in2, image)  # (kh, kw, C, F)
    if flip:
        weights = weights[::-1, ::-1]
    if boundary not in BOUNDARIES:
        raise CnnlabError(f"boundary must be one of {', '.join(map(repr, BOUNDARIES))}; got {boundary!r}")
    if not isinstance(fillvalue, numbers.Real):
        raise CnnlabError(f"fillvalue must be a real number; got {fillvalue!r}")
    stride = _pair("stride", stride, 1)
    dilation = _pair("dilation", dilation, 1)
    pad = _padding(mode, weights.shape[:2], dilation, _pair("padding", padding, 0), image.shape[:2], flip=flip)
    # output_size takes equal padding on both sides; an uneven pair adds its difference to n.
    out_shape = tuple(output_size(n + abs(b - a), k, min(b, a), s, d) for n, k, (b, a), s, d in
                      zip(image.shape[:2], weights.shape[:2], pad, stride, dilation, strict=True))

    dtype = np.float32 if image.dtype == weights.dtype == np.float32 else np.float64
    x = image.astype(dtype, copy=False)
    if pad != ((0, 0), (0, 0)):
        widths = pad + ((0, 0),) * (x.ndim - 2)
        extra = {"constant_values": fillvalue} if boundary == "fill" else {}
        x = np.pad(x, widths, mode=_NP_PAD_MODE[boundary], **extra)  # (H + top + bottom, W + left + right[, C])
    out = _sum_of_taps(x, weights.astype(dtype, copy=False), out_shape, stride, dilation)  # (H', W', F)
    return out if is_bank else out[:, :, 0]


def _padding(mode, kernel_hw, dilation, padding, image_hw, *, flip):
    """((top, bottom), (left, right)): what ``mode`` implies plus the explicit padding."""
    if mode not in MODES:
        raise CnnlabError(f"mode must be one of {', '.join(map(repr, MODES))}; got {mode!r}")
    spans = tuple(d * (k - 1) + 1 for k, d in zip(kernel_hw, dilation, strict=True))  # dilated size
    if mode == "valid" and padding == (0, 0) and (spans[0] > image_hw[0] or spans[1] > image_hw[1]):
        raise CnnlabError(f"kernel of shape {tuple(kernel_hw)} (spanning {spans} pixels with dilation "
                          f"{dilation}) is larger than the image {tuple(image_hw)} in mode='valid'; "
                          "use mode='same' or 'full', or a smaller kernel")
    pads = []
    for span, extra in zip(spans, padding, strict=True):
        if mode == "valid":
            before = after = 0
        elif mode == "full":
            before = after = span - 1
        else:  # same: span - 1 in all; SciPy's extra pixel for an even span goes where full's cut is
            before, after = (span - 1) // 2, span // 2
            if flip:  # convolution's kernel is flipped, so its centre is on the other side
                before, after = after, before
        pads.append((before + extra, after + extra))
    return tuple(pads)


def _taps(x, kh, kw, out_shape, stride, dilation):
    """For each kernel tap (i, j): the pixels it touches, for every output position at once.

    x is (Hp, Wp[, C]), already padded; yields (i, j, window) with window (H', W'[, C]), a
    strided view (no copy): rows i*dh, i*dh + sh, ... and columns j*dw, j*dw + sw, ...
    """
    (out_h, out_w), (sh, sw), (dh, dw) = out_shape, stride, dilation
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            yield i, j, x[r0 : r0 + (out_h - 1) * sh + 1 : sh, c0 : c0 + (out_w - 1) * sw + 1 : sw]


def _sum_of_taps(x, weights, out_shape, stride, dilation):
    """Correlate an already padded image ``x`` with ``weights`` (kh, kw, C, F), no padding.

    x is (Hp, Wp) for a grey image or (Hp, Wp, C) for colour; returns (H', W', F).
    """
    kh, kw, _, n_filters = weights.shape
    taps = _taps(x, kh, kw, out_shape, stride, dilation)
    if x.ndim == 2 and n_filters == 1:
        # Grey image, one kernel: the common case. Scalar weight times slice, in place: the
        # first tap starts the sum and one scratch array serves the rest (~20% faster than
        # adding onto zeros with fresh temporaries).
        w = weights[:, :, 0, 0]
        i, j, window = next(taps)
        out = window * w[i, j]  # (H', W')
        scratch = np.empty_like(out)
        for i, j, window in taps:
            np.multiply(window, w[i, j], out=scratch)
            out += scratch
        return out[:, :, None]
    out = np.zeros((*out_shape, n_filters), dtype=x.dtype)  # (H', W', F)
    for i, j, window in taps:
        if x.ndim == 2:  # grey image, bank: (H', W', 1) * (F,) -> (H', W', F)
            out += window[:, :, None] * weights[i, j, 0]
        elif n_filters == 1:  # colour, one kernel: sum over channels, (H', W', C) @ (C,) -> (H', W')
            out[:, :, 0] += window @ weights[i, j, :, 0]
        else:  # colour bank: (H', W', C) @ (C, F) -> (H', W', F)
            out += window @ weights[i, j]
    return out


# --- validation at the boundary --------------------------------------------------------


def _as_image(value, name):
    """A real-valued, NaN-free (H, W) or (H, W, C) array."""
    x = np.asarray(value)
    if x.dtype.kind not in "biuf":
        raise CnnlabError(f"{name} must hold real numbers; got dtype {x.dtype}")
    if x.ndim not in (2, 3):
        raise CnnlabError(f"{name} must be 2-D (H, W) or 3-D (H, W, C); got shape {x.shape}")
    if x.size == 0:
        raise CnnlabError(f"{name} is empty (shape {x.shape}); give at least one pixel")
    _check_no_nan(x, name)
    return x


def _as_weights(value, image):
    """Kernel or bank -> ((kh, kw, C, F) array, is_bank); C is 1 for a grey image."""
    try:
        k = np.asarray(value)
    except ValueError as exc:  # a list of kernels of different shapes
        shapes = sorted({np.shape(item) for item in value})
        raise CnnlabError(f"kernels in a bank must share one shape; got shapes {shapes}") from exc
    if k.dtype.kind not in "biuf":
        raise CnnlabError(f"kernel must hold real numbers; got dtype {k.dtype}")
    layouts = "(kh, kw) or a bank (F, kh, kw)" if image.ndim == 2 else "(kh, kw, C) or a bank (F, kh, kw, C)"
    if k.ndim not in (image.ndim, image.ndim + 1):
        raise CnnlabError(
            f"kernel of shape {k.shape} does not fit an image of shape {image.shape}; "
            f"give a kernel {layouts}"
        )
    if k.size == 0:
        raise CnnlabError(f"kernel is empty (shape {k.shape}); give at least one tap")
    _check_no_nan(k, "kernel")
    is_bank = k.ndim == image.ndim + 1
    if not is_bank:
        k = k[None]  # one kernel = a bank of one: (1, kh, kw[, C])
    if image.ndim == 2:
        k = k[..., None]  # grey = one channel: (F, kh, kw, 1)
    elif k.shape[-1] != image.shape[-1]:
        raise CnnlabError(
            f"kernel has {k.shape[-1]} channels (shape {k.shape[1:]}) but the image has "
            f"{image.shape[-1]} (shape {image.shape}); give a kernel (kh, kw, {image.shape[-1]})"
        )
    return k.transpose(1, 2, 3, 0), is_bank  # (F, kh, kw, C) -> (kh, kw, C, F)


def _check_no_nan(x, name):
    # Summing is cheaper than isnan().any(): a finite sum proves there is no NaN.
    if x.dtype.kind == "f" and not np.isfinite(x.sum()) and np.isnan(x).any():
        where = tuple(int(i) for i in np.argwhere(np.isnan(x))[0])
        raise CnnlabError(f"{name} contains NaN (first at index {where}); replace it, e.g. np.nan_to_num({name})")


def _check_int(name, value, least):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise CnnlabError(f"{name} must be an integer >= {least}; got {value!r}")


def _pair(name, value, least):
    """An int or a pair of ints, each >= least -> (rows, cols)."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    ok = len(pair) == 2 and all(
        not isinstance(v, bool) and isinstance(v, numbers.Integral) and v >= least for v in pair
    )
    if not ok:
        raise CnnlabError(f"{name} must be an integer >= {least} or a pair of them; got {value!r}")
    return int(pair[0]), int(pair[1])


def _pool_taps(image, size, stride):
    """Validated image, size pair, and the _taps of that window moved by stride (no padding)."""
    x = _as_image(image, "image")
    size = _pair("size", size, 1)
    stride = size if stride is None else _pair("stride", stride, 1)
    if size[0] > x.shape[0] or size[1] > x.shape[1]:
        raise CnnlabError(f"pooling size {size} is larger than the image {x.shape[:2]}; use a smaller size")
    out_shape = (output_size(x.shape[0], size[0], 0, stride[0]), output_size(x.shape[1], size[1], 0, stride[1]))
    return x, size, _taps(x, *size, out_shape, stride, (1, 1))
