"""Where the simulated sites are and how their load follows local time.

Real city names with their IANA time zones; a diurnal load profile evaluated at each site's
local time (zoneinfo, so US daylight saving time moves the peak with the clocks).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class City:
    name: str
    slug: str
    region: str
    timezone: str


# Ordered so that the first few sites of a country already span its time zones.
CITIES: dict[str, tuple[City, ...]] = {
    "JP": (
        City("Tokyo", "tokyo", "Kanto", "Asia/Tokyo"),
        City("Osaka", "osaka", "Kansai", "Asia/Tokyo"),
        City("Sapporo", "sapporo", "Hokkaido", "Asia/Tokyo"),
        City("Fukuoka", "fukuoka", "Kyushu", "Asia/Tokyo"),
        City("Nagoya", "nagoya", "Chubu", "Asia/Tokyo"),
        City("Sendai", "sendai", "Tohoku", "Asia/Tokyo"),
        City("Hiroshima", "hiroshima", "Chugoku", "Asia/Tokyo"),
        City("Takamatsu", "takamatsu", "Shikoku", "Asia/Tokyo"),
        City("Naha", "naha", "Okinawa", "Asia/Tokyo"),
        City("Niigata", "niigata", "Chubu", "Asia/Tokyo"),
        City("Yokohama", "yokohama", "Kanto", "Asia/Tokyo"),
        City("Kyoto", "kyoto", "Kansai", "Asia/Tokyo"),
    ),
    "US": (
        City("New York", "new-york", "us-east", "America/New_York"),
        City("Chicago", "chicago", "us-central", "America/Chicago"),
        City("Los Angeles", "los-angeles", "us-west", "America/Los_Angeles"),
        City("Denver", "denver", "us-mountain", "America/Denver"),
        City("Dallas", "dallas", "us-central", "America/Chicago"),
        City("Seattle", "seattle", "us-west", "America/Los_Angeles"),
        City("Atlanta", "atlanta", "us-east", "America/New_York"),
        City("Phoenix", "phoenix", "us-mountain", "America/Phoenix"),
        City("Miami", "miami", "us-east", "America/New_York"),
        City("Boston", "boston", "us-east", "America/New_York"),
        City("Anchorage", "anchorage", "us-alaska", "America/Anchorage"),
        City("Honolulu", "honolulu", "us-hawaii", "Pacific/Honolulu"),
    ),
    "AE": (
        City("Dubai", "dubai", "Dubai", "Asia/Dubai"),
        City("Abu Dhabi", "abu-dhabi", "Abu Dhabi", "Asia/Dubai"),
        City("Sharjah", "sharjah", "Sharjah", "Asia/Dubai"),
    ),
}

# Relative consumer traffic by local hour (0..23): trough before dawn, evening peak at 21h.
HOURLY_LOAD = np.array(
    [
        0.45,
        0.34,
        0.26,
        0.22,
        0.20,
        0.22,
        0.30,
        0.42,
        0.54,
        0.60,
        0.62,
        0.65,
        0.68,
        0.66,
        0.64,
        0.66,
        0.72,
        0.80,
        0.88,
        0.95,
        1.00,
        0.98,
        0.85,
        0.64,
    ]
)


def city_for(country: str, index: int) -> tuple[City, str]:
    """The city and site id of the `index`-th site of a country (0-based)."""
    cities = CITIES[country]
    city = cities[index % len(cities)]
    return city, f"{country.lower()}-{city.slug}-{index // len(cities) + 1:02d}"


_offset_cache: dict[tuple[str, int], int] = {}


def utc_offsets_s(timezone: str, t_ns: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """UTC offset in seconds at each instant. Transitions of the zones used here fall on whole
    UTC hours, so the offset is looked up once per hour and zone."""
    hours = t_ns // (3600 * 10**9)
    uniq, inv = np.unique(hours, return_inverse=True)
    tz = ZoneInfo(timezone)
    offs = np.empty(len(uniq), dtype=np.int64)
    for i, h in enumerate(uniq.tolist()):
        key = (timezone, h)
        off = _offset_cache.get(key)
        if off is None:
            delta = datetime.fromtimestamp(h * 3600, UTC).astimezone(tz).utcoffset()
            off = _offset_cache[key] = int(delta.total_seconds()) if delta else 0
        offs[i] = off
    return offs[inv.reshape(-1)]


def diurnal_load(timezone: str, t_ns: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Load factor 0.2..1.0 at each instant, following the site's local time of day."""
    local_s = t_ns // 10**9 + utc_offsets_s(timezone, t_ns)
    hour = (local_s % 86400) / 3600.0
    lo = np.floor(hour).astype(np.int64)
    frac = hour - lo
    return HOURLY_LOAD[lo] * (1.0 - frac) + HOURLY_LOAD[(lo + 1) % 24] * frac
