"""Inline-SVG charts of the account page (pure; no JavaScript, no external asset, so the strict
CSP holds): vertical bars from zero over dated labels, with a labelled value axis.

Why not a plotting library: the only charts here are bars of one series, and
``nrr.charts`` already draws the report's with the same tick rules (its :func:`nice_ticks` and
:func:`compact` are reused); a library would add a dependency and markup the CSP has to allow.
The value axis always starts at zero, so a bar's height compares truly. Every label is escaped
(the templates insert the SVG as markup)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from nrr.charts import compact, nice_ticks

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 78, 12, 32, 48
BAR, GRID, TEXT = "#1565c0", "#e0e0e0", "#333"


def bar_chart(
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    axis_label: str,
    value_text: Sequence[str] | None = None,
) -> str:
    """One bar per label (oldest first), the value axis from zero and named ``axis_label``
    (with its unit); ``value_text`` is each bar's tooltip figure (the value itself when None).
    At most about eight x labels are written, evenly spaced, so dates stay readable."""
    ticks = nice_ticks(0.0, max([0.0, *values]) or 1.0)
    high = ticks[-1] or 1.0
    plot_h = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(len(values), 1)

    def y(value: float) -> float:
        return TOP + (1 - value / high) * plot_h

    parts = [
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="{GRID}"/>'
        f'<text x="{LEFT - 6}" y="{y(t) + 4:.1f}" text-anchor="end" font-size="13">'
        f"{escape(compact(t))}</text>"
        for t in ticks
    ]
    middle = TOP + plot_h / 2
    parts.append(
        f'<text x="14" y="{middle:.0f}" font-size="13" text-anchor="middle" '
        f'transform="rotate(-90 14 {middle:.0f})">{escape(axis_label)}</text>'
    )
    every = max(-(-len(labels) // 8), 1)
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        x = LEFT + index * slot
        top = y(max(value, 0.0))
        figure = value_text[index] if value_text is not None else compact(value)
        parts.append(
            f'<rect x="{x + slot * 0.1:.1f}" y="{top:.1f}" width="{max(slot * 0.8, 1):.1f}" '
            f'height="{max(TOP + plot_h - top, 0.5):.1f}" fill="{BAR}">'
            f"<title>{escape(label)}: {escape(figure)}</title></rect>"
        )
        if index % every == 0:
            parts.append(
                f'<text x="{x + slot / 2:.1f}" y="{HEIGHT - BOTTOM + 16}" font-size="12" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" fill="{TEXT}">'
        f"<title>{escape(title)}</title>"
        f'<text x="{LEFT}" y="16" font-size="15" font-weight="bold">{escape(title)}</text>'
        + "".join(parts)
        + "</svg>"
    )
