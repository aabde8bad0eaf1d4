"""A value axis zoomed to the data, for charts whose differences are small next to their level.

Retention of several recommenders often differs by 0.02 around 0.4: on a 0-1 axis those bars look
equal. `value_axis` starts the axis near the data when the empty band below it would be wider
than the data's own spread, and `zoom_note` is the words that say so on the axis, since a bar
that does not start at zero must not pass for one that does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ValueAxis:
    """An axis from `bottom` to `top` with ticks every `step`; `zoomed` when `bottom` is above zero."""

    bottom: float
    top: float
    step: float

    @property
    def zoomed(self) -> bool:
        return self.bottom > 0

    def ticks(self) -> list[float]:
        n = round((self.top - self.bottom) / self.step)
        return [round(self.bottom + i * self.step, 10) for i in range(n + 1)]

    def decimals(self) -> int:
        """Digits that tell the ticks apart (0.05 steps need 2, 0.005 steps 3)."""
        power = math.floor(math.log10(self.step) + 1e-9)
        return max(0, -power + (1 if math.isclose(self.step / 10**power, 2.5) else 0))


def _nice_step(span: float, ticks: int = 4) -> float:
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)


def value_axis(low: Sequence[float], high: Sequence[float]) -> ValueAxis:
    """The axis for values whose error bars run from `low` to `high` (NaNs ignored), never below zero.

    It starts at zero unless the band between zero and the data would be wider than the data's spread;
    then it starts one tick below the lowest value, so bars 0.02 apart differ visibly."""
    lows = np.asarray(low, dtype=float)
    highs = np.asarray(high, dtype=float)
    finite = np.concatenate([lows[np.isfinite(lows)], highs[np.isfinite(highs)]])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    lo = max(lo, 0.0)
    hi = max(hi, lo + 1e-9)
    if lo <= hi - lo:  # zero is near enough: show it
        step = _nice_step(hi)
        return ValueAxis(0.0, round(step * math.ceil(hi / step - 1e-9), 10), step)
    step = _nice_step(max(hi - lo, 0.1 * hi))  # one value alone still gets an axis a tenth of its level wide
    bottom = max(0.0, step * (math.floor(lo / step + 1e-9) - 1))
    return ValueAxis(round(bottom, 10), round(step * math.ceil(hi / step - 1e-9), 10), step)


def zoom_note(axis: ValueAxis) -> str:
    """The words an axis carries when it does not start at zero; empty when it does."""
    return f"axis from {axis.bottom:.{axis.decimals()}f}, zoomed" if axis.zoomed else ""
