"""Limits on settable quantities, checked before any I/O (cf. QCoDeS validators, ophyd ``LimitError``)."""

from __future__ import annotations

import math

from drivers.errors import LimitError


def _fmt(x: float) -> str:
    """Whole numbers without exponent (10000000, not 1e+07), others in short form."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def check_range(field: str, value: float, limits: tuple[float, float], unit: str = "") -> float:
    """Return ``value`` as float if ``limits[0] <= value <= limits[1]``, else raise :class:`LimitError`.

    The message names ``field`` and the allowed range, e.g. ``power_mw = 30 is outside [0, 5] mW``.
    """
    low, high = limits
    suffix = f" {unit}" if unit else ""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise LimitError(f"{field} must be a number in [{_fmt(low)}, {_fmt(high)}]{suffix}, got {value!r}")
    if not low <= value <= high:
        raise LimitError(f"{field} = {_fmt(value)} is outside the allowed range [{_fmt(low)}, {_fmt(high)}]{suffix}")
    return float(value)


def check_limits_pair(field: str, limits: tuple[float, float]) -> None:
    """Reject a (low, high) limit pair that is empty or not finite."""
    low, high = limits
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise LimitError(f"{field} must be a finite [low, high] pair with low <= high, got {list(limits)}")
