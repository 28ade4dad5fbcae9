"""Small inline-SVG charts for the report (pure; no JavaScript, no network, no plotting library).

Each function returns one ``<svg>`` element as text. Amounts arrive as ``Decimal``; they become
floats only to place pixels. Every label is HTML-escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal
from html import escape

WIDTH = 760
HEIGHT = 300
LEFT, RIGHT, TOP, BOTTOM = 78, 16, 28, 48
UP, DOWN, TOTAL, GRID = "#2e7d32", "#c62828", "#37474f", "#e0e0e0"
SERIES_COLOURS = ("#1565c0", "#ef6c00", "#6a1b9a", "#00838f")


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering ``low`` .. ``high``."""
    if high <= low:
        high = low + 1
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 10))
    return ticks


def compact(value: float) -> str:
    """1234567 -> ``1.23M``, 12500 -> ``12.5k``."""
    size = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if size >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


class _Frame:
    """Maps data values to pixels inside the plotting area."""

    def __init__(self, low: float, high: float, width: int = WIDTH, height: int = HEIGHT) -> None:
        self.ticks = nice_ticks(low, high)
        self.low, self.high = self.ticks[0], self.ticks[-1]
        self.width, self.height = width, height

    def y(self, value: float) -> float:
        span = self.high - self.low or 1.0
        return TOP + (self.high - value) / span * (self.height - TOP - BOTTOM)

    def axis(self, label: str = "", fmt: str = "compact") -> list[str]:
        parts = []
        for tick in self.ticks:
            y = self.y(tick)
            text = compact(tick) if fmt == "compact" else f"{tick:g}%"
            parts.append(
                f'<line x1="{LEFT}" x2="{self.width - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                f'stroke="{GRID}"/><text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" '
                f'font-size="11">{escape(text)}</text>'
            )
        if label:
            parts.append(
                f'<text x="14" y="{(self.height - BOTTOM + TOP) / 2:.0f}" font-size="11" '
                f'transform="rotate(-90 14 {(self.height - BOTTOM + TOP) / 2:.0f})" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
        return parts


def _svg(title: str, body: Sequence[str], width: int = WIDTH, height: int = HEIGHT) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">'
        f"<title>{escape(title)}</title>"
        f'<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>'
        + "".join(body)
        + "</svg>"
    )


def waterfall(title: str, lines: Sequence[tuple[str, Decimal]], unit: str = "") -> str:
    """A bridge: the first and last lines are levels (start, end), those between are steps.
    The value axis starts at 0 (lower only when a level is negative), so bar heights compare
    truly; each bar is labelled with its amount, so small steps can still be read."""
    levels: list[tuple[float, float]] = []
    running = 0.0
    for index, (_, amount) in enumerate(lines):
        value = float(amount)
        if index in (0, len(lines) - 1):
            levels.append((0.0, value))
            running = value
        else:
            levels.append((running, running + value))
            running += value
    low = min(0.0, *(min(a, b) for a, b in levels))
    high = max(0.0, *(max(a, b) for a, b in levels))
    frame = _Frame(low, high)
    slot = (WIDTH - LEFT - RIGHT) / len(lines)
    body = frame.axis(unit)
    for index, ((label, amount), (a, b)) in enumerate(zip(lines, levels, strict=True)):
        x = LEFT + index * slot + slot * 0.15
        top, bottom = frame.y(max(a, b)), frame.y(min(a, b))
        is_level = index in (0, len(lines) - 1)
        colour = TOTAL if is_level else (UP if amount >= 0 else DOWN)
        body.append(
            f'<rect x="{x:.1f}" y="{top:.1f}" width="{slot * 0.7:.1f}" '
            f'height="{max(bottom - top, 1):.1f}" fill="{colour}"><title>{escape(label)}: '
            f"{amount:,.2f}</title></rect>"
            f'<text x="{x + slot * 0.35:.1f}" y="{HEIGHT - BOTTOM + 16}" font-size="11" '
            f'text-anchor="middle">{escape(label)}</text>'
            f'<text x="{x + slot * 0.35:.1f}" y="{top - 4:.1f}" font-size="10" '
            f'text-anchor="middle">{escape(compact(float(amount)))}</text>'
        )
    return _svg(title, body)


def line_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[Decimal | None]]],
    unit: str = "%",
) -> str:
    """Lines over ``labels``; a None value leaves a gap (an absent figure is not drawn as 0)."""
    values = [float(v) for _, points in series for v in points if v is not None]
    frame = _Frame(min(values, default=0.0), max(values, default=1.0))
    step = (WIDTH - LEFT - RIGHT) / max(len(labels) - 1, 1)
    body = frame.axis(fmt="percent" if unit == "%" else "compact")
    for index, label in enumerate(labels):
        if index % max(len(labels) // 12, 1) == 0:
            body.append(
                f'<text x="{LEFT + index * step:.1f}" y="{HEIGHT - BOTTOM + 16}" font-size="10" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    for number, (name, points) in enumerate(series):
        colour = SERIES_COLOURS[number % len(SERIES_COLOURS)]
        segments: list[list[str]] = [[]]
        for index, value in enumerate(points):
            if value is None:
                segments.append([])
                continue
            x, y = LEFT + index * step, frame.y(float(value))
            segments[-1].append(f"{x:.1f},{y:.1f}")
            body.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}">'
                f"<title>{escape(name)} {escape(labels[index])}: {value:.2f}{escape(unit)}</title>"
                "</circle>"
            )
        body.extend(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(s)}"/>'
            for s in segments
            if len(s) > 1
        )
        body.append(
            f'<rect x="{LEFT + 10 + number * 150}" y="{HEIGHT - 18}" width="12" height="4" '
            f'fill="{colour}"/><text x="{LEFT + 26 + number * 150}" y="{HEIGHT - 12}" '
            f'font-size="11">{escape(name)}</text>'
        )
    return _svg(title, body)


def heat_map(
    title: str,
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    values: Sequence[Sequence[Decimal | None]],
) -> str:
    """A grid of ratios (1 = 100 %) coloured red (low) to green (>= 100 %); None left blank."""
    cell_w = max(min((WIDTH - LEFT - RIGHT) / max(len(column_labels), 1), 48), 22)
    cell_h = 20
    width = int(LEFT + cell_w * len(column_labels) + RIGHT)
    height = int(TOP + 20 + cell_h * len(row_labels) + 10)
    body = [
        f'<text x="{LEFT + i * cell_w + cell_w / 2:.1f}" y="{TOP + 12}" font-size="10" '
        f'text-anchor="middle">{escape(label)}</text>'
        for i, label in enumerate(column_labels)
    ]
    for r, (label, row) in enumerate(zip(row_labels, values, strict=True)):
        y = TOP + 20 + r * cell_h
        body.append(
            f'<text x="{LEFT - 6}" y="{y + 14}" font-size="11" text-anchor="end">'
            f"{escape(label)}</text>"
        )
        for c, value in enumerate(row):
            if value is None:
                continue
            x = LEFT + c * cell_w
            share = max(0.0, min(float(value), 1.2)) / 1.2
            colour = f"hsl({share * 120:.0f}, 55%, {78 - share * 20:.0f}%)"
            body.append(
                f'<rect x="{x:.1f}" y="{y}" width="{cell_w - 1:.1f}" height="{cell_h - 1}" '
                f'fill="{colour}"><title>{escape(label)} +{c}: {value * 100:.1f}%</title></rect>'
                f'<text x="{x + cell_w / 2:.1f}" y="{y + 14}" font-size="9" '
                f'text-anchor="middle">{value * 100:.0f}</text>'
            )
    return _svg(title, body, width=max(width, 320), height=height)


def bar_chart(title: str, items: Sequence[tuple[str, Decimal]]) -> str:
    """Horizontal bars of signed amounts (gains green, losses red), one per item."""
    row_h = 20
    height = TOP + row_h * max(len(items), 1) + 24
    label_w = 200
    values = [float(a) for _, a in items] or [0.0]
    low, high = min(*values, 0.0), max(*values, 0.0)
    span = (high - low) or 1.0
    plot = WIDTH - label_w - RIGHT - 60

    def x(value: float) -> float:
        return label_w + (value - low) / span * plot

    body = [f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{TOP}" y2="{height - 20}" stroke="#999"/>']
    for index, (label, amount) in enumerate(items):
        y = TOP + index * row_h
        a, b = sorted((x(0), x(float(amount))))
        colour = UP if amount >= 0 else DOWN
        body.append(
            f'<text x="{label_w - 8}" y="{y + 14}" font-size="11" text-anchor="end">'
            f"{escape(label[:32])}</text>"
            f'<rect x="{a:.1f}" y="{y + 3}" width="{max(b - a, 1):.1f}" height="{row_h - 6}" '
            f'fill="{colour}"><title>{escape(label)}: {amount:+,.2f}</title></rect>'
            f'<text x="{b + 4:.1f}" y="{y + 14}" font-size="10">{amount:+,.0f}</text>'
        )
    return _svg(title, body, height=height)
