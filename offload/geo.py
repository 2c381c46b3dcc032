"""Where devices and servers are: ``"LAT,LON"`` locations and great-circle distances.

The haversine formula on a sphere of the Earth's mean radius: within 0.5% of
the distance on the ellipsoid (about 0.05% for Berlin-Munich, 504 km), far
closer than "which server is nearest" needs, in a few lines of stdlib.
"""

from __future__ import annotations

import math

EARTH_RADIUS_KM = 6371.0088  # mean radius (IUGG)


def parse_location(text: str) -> tuple[float, float]:
    """``"57.048,9.919"`` -> ``(57.048, 9.919)``; ValueError unless a valid latitude, longitude."""
    parts = str(text).split(",")
    if len(parts) != 2:
        raise ValueError(f"a location is 'LAT,LON' in degrees, not {text!r}")
    lat, lon = float(parts[0]), float(parts[1])
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise ValueError(f"latitude must be within ±90 and longitude ±180, not {text!r}")
    return lat, lon


def format_location(location: tuple[float, float]) -> str:
    """``(57.048, 9.919)`` -> ``"57.048,9.919"``."""
    return f"{location[0]:.6g},{location[1]:.6g}"


def distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """The great-circle distance between two (latitude, longitude) points, in km."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))
