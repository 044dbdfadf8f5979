"""How results are shown to people: numbers, objective names, and a colour per conv kind.

One home for the terminal tables, the HTML tables, the plots' axes and hover text and the
architecture diagrams, so that 291872 MACs reads ``292k`` everywhere and 0.952646 accuracy
reads ``95.3%`` everywhere.
"""

from __future__ import annotations

import math
from typing import Any

MISSING = "–"
"""Shown where a value is unknown (a failed trial's accuracy, a latency nobody measured)."""

_SUFFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))

# d3-format equivalents of the helpers below, for plotly axes (3 significant digits, zeros trimmed)
COUNT_TICKS = ".3~s"
PERCENT_TICKS = ".1~%"

_LABELS = {
    "accuracy": "accuracy",
    "macs": "MACs",
    "flops": "FLOPs",
    "params": "params",
    "latency_ms": "latency (ms)",
    "train_seconds": "train time (s)",
}

# Tableau 10: distinct, readable on white, and the same for a kind in every figure and diagram
_PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)


def _known(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def count(value: Any) -> str:
    """A count for people: ``291872 -> '292k'``, ``1234567 -> '1.23M'``, ``950 -> '950'``."""
    number = _known(value)
    if number is None:
        return MISSING
    rounded = float(f"{number:.3g}")
    for scale, suffix in _SUFFIXES:
        if abs(rounded) >= scale:
            return f"{rounded / scale:.3g}{suffix}"
    return f"{rounded:.3g}" if rounded != int(rounded) else str(int(rounded))


def percent(value: Any, digits: int = 1) -> str:
    """A fraction as a percentage: ``0.952646 -> '95.3%'``."""
    number = _known(value)
    return MISSING if number is None else f"{100 * number:.{digits}f}%"


def share(value: Any) -> str:
    """A part of a whole, whole percent: ``0.262 -> '26%'``, a small non-zero part ``'<1%'``."""
    number = _known(value)
    if number is None:
        return MISSING
    return "<1%" if 0 < number < 0.005 else f"{100 * number:.0f}%"


def milliseconds(value: Any) -> str:
    """A latency: ``1.2345 -> '1.23 ms'``."""
    number = _known(value)
    return MISSING if number is None else f"{number:.3g} ms"


def seconds(value: Any) -> str:
    number = _known(value)
    return MISSING if number is None else f"{number:.3g} s"


def label(name: str) -> str:
    """An objective or cost column as people name it (``macs -> 'MACs'``)."""
    return _LABELS.get(name, name)


def value(name: str, number: Any) -> str:
    """Any objective or cost column's value, formatted for people according to what it measures."""
    if name == "accuracy":
        return percent(number)
    if name == "latency_ms":
        return milliseconds(number)
    if name == "train_seconds":
        return seconds(number)
    if name in ("macs", "flops", "params"):
        return count(number)
    if name == "hypervolume":
        known = _known(number)
        return MISSING if known is None else f"{known:.4f}"
    return MISSING if number is None or (isinstance(number, float) and math.isnan(number)) else str(number)


def tick_format(name: str) -> str:
    """The plotly axis tick format matching :func:`value` for ``name``."""
    if name == "accuracy":
        return PERCENT_TICKS
    if name in ("macs", "flops", "params"):
        return COUNT_TICKS
    return ""


def log_ticks(low: float, high: float, most: int = 7, gap: float = 0.15) -> list[float]:
    """Tick values for a log axis from ``low`` to ``high``: powers of ten, or 1-3, 1-2-5, 1-2-3-5
    mantissas, whichever is the densest with at most ``most`` ticks no closer than ``gap`` of the
    axis (so that labels like ``200k`` and ``300k`` never touch); at least two where possible."""
    if not (low > 0 and high > low):
        return [low] if low > 0 else []
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    span = math.log10(high) - math.log10(low)
    best: list[float] = []
    for mantissas in ((1,), (1, 3), (1, 2, 5), (1, 2, 3, 5), (1, 1.5, 2, 3, 5, 7)):
        ticks = [
            float(f"{m * 10.0**e:.6g}") for e in range(first, last + 1) for m in mantissas if low <= m * 10.0**e <= high
        ]
        closest = min((math.log10(b / a) for a, b in zip(ticks, ticks[1:])), default=span)
        if len(ticks) <= most and (closest >= gap * span or len(best) < 2):
            best = ticks
    if len(best) < 2:  # a range inside one step of the sparsest scheme: its ends, rounded
        best = sorted({float(f"{low:.2g}"), float(f"{high:.2g}")})
    return best


def contrast_text(background: str) -> str:
    """Black-ish or white text, whichever contrasts more with ``background`` (``#rrggbb``; WCAG
    relative luminance): white on blue, dark on yellow."""

    def channel(hex_pair: str) -> float:
        c = int(hex_pair, 16) / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    code = background.lstrip("#")
    r, g, b = (channel(code[i : i + 2]) for i in (0, 2, 4))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    dark = 0.2126 * channel("22") + 0.7152 * channel("22") + 0.0722 * channel("22")
    on_white = 1.05 / (luminance + 0.05)
    on_dark = (luminance + 0.05) / (dark + 0.05)
    return "#fff" if on_white >= on_dark else "#222"


def kind_color(kind: str) -> str:
    """The colour of a conv kind, the same in every plot and diagram (registered order)."""
    from ..ops import registered_kinds

    kinds = list(registered_kinds())
    index = kinds.index(kind) if kind in kinds else len(kinds) + sum(map(ord, kind))
    return _PALETTE[index % len(_PALETTE)]


def state_label(state: str) -> str:
    """A trial state as the report names it."""
    return {
        "COMPLETE": "complete",
        "STOPPED": "stopped early",
        "INFEASIBLE": "infeasible",
        "REPEAT": "repeat",
        "FAIL": "failed",
        "RUNNING": "running",
    }.get(state, state.lower())


__all__ = [
    "COUNT_TICKS",
    "MISSING",
    "PERCENT_TICKS",
    "contrast_text",
    "count",
    "kind_color",
    "label",
    "log_ticks",
    "milliseconds",
    "percent",
    "seconds",
    "share",
    "state_label",
    "tick_format",
    "value",
]
