"""The allowed range of a number, said once and checked everywhere it arrives.

A setting's bounds live in its field metadata (``cnnlab.train.config.setting(low=...)``) and an
option's in its argparse type (``cnnlab.cli.options.bounded``); both use this one class, so
``__post_init__``, the command line and ``--config`` files refuse the same values with the
same words. Below every layer: NumPy-free, torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Bounds:
    """``low <= x <= high`` and ``above < x < below``, each end optional; always finite."""

    low: float | None = None
    high: float | None = None
    above: float | None = None
    below: float | None = None

    def ok(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return ((self.low is None or value >= self.low) and (self.high is None or value <= self.high)
                and (self.above is None or value > self.above) and (self.below is None or value < self.below))

    def describe(self) -> str:
        """``at least 1``, ``>= 0``, ``in [0, 1)``, ``in 0..65535``, ``> 0``, ``in (0, 1]``."""
        lo = (f"[{_n(self.low)}" if self.low is not None else f"({_n(self.above)}" if self.above is not None else None)
        hi = (f"{_n(self.high)}]" if self.high is not None else f"{_n(self.below)})" if self.below is not None else None)
        if lo and hi:
            if self.low is not None and self.high is not None and float(self.low).is_integer() \
                    and float(self.high).is_integer():
                return f"in {_n(self.low)}..{_n(self.high)}"
            return f"in {lo}, {hi}"
        if self.low is not None:
            return f"at least {_n(self.low)}" if self.low >= 1 else f">= {_n(self.low)}"
        if self.above is not None:
            return f"> {_n(self.above)}"
        if hi:
            return f"<= {_n(self.high)}" if self.high is not None else f"< {_n(self.below)}"
        return "a finite number"

    def requirement(self, value) -> str:
        """What ``value`` fails: ``in [0, 1)``, or ``a finite number > 0`` for NaN and infinity."""
        values = value if isinstance(value, tuple) else (value,)
        finite = all(not isinstance(v, float) or math.isfinite(v) for v in values)
        return self.describe() if finite else f"a finite number {self.describe()}"

    def message(self, name: str, value) -> str:
        """``NAME must be in [0, 1), got 2.0``."""
        return f"{name} must be {self.requirement(value)}, got {value!r}"


def _n(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


COUNT = Bounds(low=1)  # sizes and counts: at least one
NON_NEGATIVE = Bounds(low=0)
FRACTION = Bounds(low=0, below=1)  # [0, 1)
SEED = Bounds(low=0, high=2**32 - 1)  # numpy's generators take seeds in [0, 2**32)
PORT = Bounds(low=0, high=65535)  # 0: the OS picks a free port
