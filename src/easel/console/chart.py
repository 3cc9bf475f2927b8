"""A per-day bar chart as inline SVG, drawn on the server."""

from __future__ import annotations

from html import escape

WIDTH, HEIGHT, PAD = 600, 160, 24


def bars(days: list[tuple[str, int]], unit: str = "credits") -> str:
    top = max((v for _, v in days), default=0) or 1
    step = (WIDTH - PAD) / max(len(days), 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT + PAD}" role="img" '
        f'aria-label="{unit} spent per day, last {len(days)} days, at most {top}">',
        f'<text x="0" y="12" class="axis">{top}</text>',
        f'<line x1="{PAD}" y1="{HEIGHT}" x2="{WIDTH}" y2="{HEIGHT}" class="axis"/>',
    ]
    for i, (day, value) in enumerate(days):
        h = (HEIGHT - 16) * max(value, 0) / top  # a day of refunds only: no bar, not a negative
        x = PAD + i * step
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{HEIGHT - h:.1f}" width="{max(step - 2, 1):.1f}" '
            f'height="{h:.1f}"><title>{escape(day)}: {value} {unit}</title></rect>'
        )
    if days:
        parts.append(f'<text x="{PAD}" y="{HEIGHT + 16}" class="axis">{escape(days[0][0])}</text>')
        parts.append(
            f'<text x="{WIDTH}" y="{HEIGHT + 16}" text-anchor="end" class="axis">'
            f"{escape(days[-1][0])}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
