"""Bar charts as geometry for inline SVG: the page needs no chart library and no script.

The template draws what this computes; every chart also gets a data table on the page
(screen readers and copy-paste read the table, not the picture).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 640
HEIGHT = 240
MARGIN_LEFT = 56
MARGIN_RIGHT = 12
MARGIN_TOP = 12
MARGIN_BOTTOM = 48
MAX_SLOT = 72
"""Widest room for one bar: a chart of two bars keeps bar-like bars."""
MAX_X_LABELS = 10
"""More bars than this get every n-th label only, so labels never overlap."""


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    x: float
    y: float
    width: float
    height: float
    show_label: bool


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class BarChart:
    """A vertical bar chart in SVG user units (``viewBox="0 0 width height"``)."""

    bars: tuple[Bar, ...]
    ticks: tuple[Tick, ...]
    x_label: str
    y_label: str
    width: int = WIDTH
    height: int = HEIGHT
    left: int = MARGIN_LEFT
    bottom: float = HEIGHT - MARGIN_BOTTOM
    right: int = WIDTH - MARGIN_RIGHT


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is >= ``value`` (axis top)."""
    if value <= 1:
        return 1
    power = int(10 ** math.floor(math.log10(value)))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    raise AssertionError("unreachable: 10 * power >= value")


def bar_chart(values: Sequence[tuple[str, int]], *, x_label: str, y_label: str) -> BarChart:
    """Bars of equal width filling the plot, heights scaled to a round axis top."""
    plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_height = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    bottom = HEIGHT - MARGIN_BOTTOM
    top = nice_ceiling(max((v for _, v in values), default=0))
    slot = min(plot_width / max(len(values), 1), MAX_SLOT)
    gap = min(slot * 0.15, 6.0)
    every = math.ceil(len(values) / MAX_X_LABELS) if values else 1
    bars = []
    for n, (label, value) in enumerate(values):
        height = plot_height * value / top
        bars.append(
            Bar(
                label=label,
                value=value,
                x=round(MARGIN_LEFT + n * slot + gap / 2, 2),
                y=round(bottom - height, 2),
                width=round(slot - gap, 2),
                height=round(height, 2),
                show_label=n % every == 0,
            )
        )
    ticks = tuple(
        Tick(y=round(bottom - plot_height * f, 2), label=f"{round(top * f):,}")
        for f in (0.0, 0.5, 1.0)
        if f == 0.0 or top * f == round(top * f)
    )
    return BarChart(bars=tuple(bars), ticks=ticks, x_label=x_label, y_label=y_label)
