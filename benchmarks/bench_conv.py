"""Speed of cnnlab.scratch.conv.correlate2d beside scipy.signal.correlate2d and the tutorial's loop.

    python benchmarks/bench_conv.py [--size 512] [--reps 21]

A 512x512 float64 image and a random 3x3 kernel (the issue's target: cnnlab at least as
fast as scipy, at least 200x faster than the loop). cnnlab and the peer run alternately,
one call each per repetition, after a warm-up; the table shows medians and the speed-up
(peer time / cnnlab time, > 1 means cnnlab is faster). The tutorial's pixel-by-pixel loop
is far too slow to run on the full image, so it is timed on a 64x64 crop and scaled by
the number of output pixels (the loop's cost is the same for every pixel).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import scipy.signal

from cnnlab.scratch.conv import correlate2d
from cnnlab.scratch.kernels import get_kernel

LOOP_CROP = 64  # side of the crop the tutorial's loop runs on


def tutorial_correlate(image, kernel):
    """The tutorials' loop ('valid' mode); the same reference as tests/test_conv.py."""
    kh, kw = kernel.shape[:2]
    out = np.zeros((image.shape[0] - kh + 1, image.shape[1] - kw + 1))
    for row in range(out.shape[0]):
        for col in range(out.shape[1]):
            out[row, col] = (image[row : row + kh, col : col + kw] * kernel).sum()
    return out


def scipy_colour(image, kernel, mode):
    """The plain reference for a colour kernel: one scipy correlation per channel, summed."""
    return sum(scipy.signal.correlate2d(image[..., c], kernel[..., c], mode) for c in range(image.shape[2]))


def alternate(ours, peer, reps):
    """Median seconds of ours() and peer(), called in turn so both see the same machine load."""
    ours(), peer()  # warm-up: first-touch allocations, caches
    ours_s, peer_s = [], []
    for _ in range(reps):
        for fn, times in ((ours, ours_s), (peer, peer_s)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(ours_s), statistics.median(peer_s)


def loop_seconds_per_pixel(image, kernel, reps):
    crop = image[:LOOP_CROP, :LOOP_CROP]
    pixels = (LOOP_CROP - kernel.shape[0] + 1) * (LOOP_CROP - kernel.shape[1] + 1)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        tutorial_correlate(crop, kernel)
        times.append(time.perf_counter() - start)
    return statistics.median(times) / pixels


def measure(size=512, reps=21):
    """Rows of (case, cnnlab seconds, peer name, peer seconds); checks results agree first."""
    rng = np.random.default_rng(0)
    grey = rng.random((size, size))  # (H, W) float64
    colour = rng.random((size, size, 3))  # (H, W, 3)
    kernel = rng.standard_normal((3, 3))
    brown = get_kernel("brown")  # (3, 3, 3)
    rows = []
    for mode, boundary in (("valid", "fill"), ("same", "fill"), ("full", "fill"), ("same", "symm")):
        np.testing.assert_allclose(correlate2d(grey, kernel, mode, boundary),
                                   scipy.signal.correlate2d(grey, kernel, mode, boundary), rtol=1e-12, atol=1e-12)
        ours, peer = alternate(lambda m=mode, b=boundary: correlate2d(grey, kernel, m, b),
                               lambda m=mode, b=boundary: scipy.signal.correlate2d(grey, kernel, m, b), reps)
        rows.append((f"grey {size}x{size}, 3x3, {mode}/{boundary}", ours, "scipy.signal.correlate2d", peer))

    np.testing.assert_allclose(correlate2d(colour, brown, "valid"), scipy_colour(colour, brown, "valid"),
                               rtol=1e-12, atol=1e-12)
    ours, peer = alternate(lambda: correlate2d(colour, brown, "valid"),
                           lambda: scipy_colour(colour, brown, "valid"), reps)
    rows.append((f"colour {size}x{size}x3, brown 3x3x3, valid", ours, "scipy per channel, summed", peer))

    # The loop, scaled from a crop; cnnlab's time for the same full image and mode is reused.
    outputs = (size - 2) ** 2
    loop_reps = max(3, reps // 7)
    grey_valid, colour_valid = rows[0][1], rows[-1][1]
    rows.append((f"grey {size}x{size}, 3x3, valid", grey_valid, f"tutorial loop (scaled from {LOOP_CROP}x{LOOP_CROP})",
                 loop_seconds_per_pixel(grey, kernel, loop_reps) * outputs))
    rows.append((f"colour {size}x{size}x3, brown, valid", colour_valid, "tutorial loop (scaled likewise)",
                 loop_seconds_per_pixel(colour, brown, loop_reps) * outputs))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (default 512)")
    parser.add_argument("--reps", type=int, default=21, help="timed repetitions per side (default 21)")
    args = parser.parse_args(argv)
    rows = measure(args.size, args.reps)
    print(f"numpy {np.__version__}, scipy {scipy.__version__}, {platform.processor() or platform.machine()}, "
          f"median of {args.reps} alternating reps")
    print(f"{'case':<38} {'cnnlab ms':>10}  {'peer':<38} {'peer ms':>10} {'speed-up':>9}")
    for case, ours, peer_name, peer in rows:
        print(f"{case:<38} {ours * 1e3:>10.2f}  {peer_name:<38} {peer * 1e3:>10.2f} {peer / ours:>8.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
