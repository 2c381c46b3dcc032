"""A small map of servers as inline SVG, drawn from their coordinates (nothing fetched).

An equirectangular projection of the points' bounding box (with a margin),
a dot and a label per server, this device as a distinct dot, and a line
from it to each server labelled with the great-circle distance. Good enough
to see which server is near and which is far; no tiles, no internet.
"""

from __future__ import annotations

import math
from html import escape

from ..geo import distance_km, parse_location

WIDTH, HEIGHT, PAD = 360, 220, 34


def server_map(here: str | None, servers: list[tuple[str, str]]) -> str:
    """An ``<svg>`` of ``servers`` (label, ``"LAT,LON"``) and ``here``; "" without points."""
    points: list[tuple[str, float, float, bool]] = []
    for label, location in servers:
        try:
            lat, lon = parse_location(location)
        except ValueError:
            continue
        points.append((label, lat, lon, False))
    you = None
    if here:
        try:
            you = parse_location(here)
            points.append(("you", you[0], you[1], True))
        except ValueError:
            you = None
    if not points:
        return ""
    lats = [p[1] for p in points]
    lons = [p[2] for p in points]
    mid = math.cos(math.radians((max(lats) + min(lats)) / 2))
    span_x = max((max(lons) - min(lons)) * mid, 0.01)
    span_y = max(max(lats) - min(lats), 0.01)
    scale = min((WIDTH - 2 * PAD) / span_x, (HEIGHT - 2 * PAD) / span_y)

    def xy(lat: float, lon: float) -> tuple[float, float]:
        x = WIDTH / 2 + ((lon - (max(lons) + min(lons)) / 2) * mid) * scale
        y = HEIGHT / 2 - (lat - (max(lats) + min(lats)) / 2) * scale
        return round(x, 1), round(y, 1)

    parts = [
        f'<svg class="map" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        'aria-label="where the servers are">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" rx="8" class="map-bg"/>',
    ]
    if you is not None:
        yx, yy = xy(*you)
        for _label, lat, lon, is_you in points:
            if is_you:
                continue
            x, y = xy(lat, lon)
            km = distance_km(you, (lat, lon))
            parts.append(f'<line x1="{yx}" y1="{yy}" x2="{x}" y2="{y}" class="map-line"/>')
            parts.append(
                f'<text x="{(x + yx) / 2:.1f}" y="{(y + yy) / 2 - 4:.1f}" '
                f'class="map-km">{km:.0f} km</text>'
            )
    for label, lat, lon, is_you in points:
        x, y = xy(lat, lon)
        kind = "map-you" if is_you else "map-server"
        parts.append(f'<circle cx="{x}" cy="{y}" r="6" class="{kind}"/>')
        parts.append(f'<text x="{x + 9}" y="{y + 4}" class="map-label">{escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)
