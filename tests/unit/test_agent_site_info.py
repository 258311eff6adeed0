"""The agent's site info metric and UTC offset, which local-time dashboards join on."""

from __future__ import annotations

import datetime as dt

from collector.agent.batch import SiteInfo
from collector.agent.metrics import _site_families

TOKYO = SiteInfo("jp-tokyo-01", "JP", "Kanto", "Asia/Tokyo")
NEW_YORK = SiteInfo("us-new-york-01", "US", "us-east", "America/New_York")


def _values(now: dt.datetime, *sites: SiteInfo) -> dict[str, dict[str, float]]:
    fams = _site_families([(f"{s.site_id}-a", s) for s in sites], now.timestamp())
    return {f.name: {s.labels["site"]: s.value for s in f.samples} for f in fams}


def test_offset_follows_daylight_saving_time() -> None:
    winter = _values(dt.datetime(2026, 1, 15, 12, tzinfo=dt.UTC), TOKYO, NEW_YORK)
    summer = _values(dt.datetime(2026, 7, 15, 12, tzinfo=dt.UTC), TOKYO, NEW_YORK)
    off = "collector_agent_site_utc_offset_seconds"
    assert winter[off] == {"jp-tokyo-01": 9 * 3600, "us-new-york-01": -5 * 3600}
    assert summer[off] == {"jp-tokyo-01": 9 * 3600, "us-new-york-01": -4 * 3600}
    assert winter["collector_agent_site_info"] == {"jp-tokyo-01": 1.0, "us-new-york-01": 1.0}


def test_unknown_zone_has_info_but_no_offset() -> None:
    bad = SiteInfo("xx-1", "JP", "r", "Mars/Olympus")
    v = _values(dt.datetime(2026, 1, 15, tzinfo=dt.UTC), bad)
    assert v["collector_agent_site_info"] == {"xx-1": 1.0}
    assert v["collector_agent_site_utc_offset_seconds"] == {}


def test_info_labels_name_the_site() -> None:
    fams = list(_site_families([("a1", TOKYO)], 0.0))
    labels = fams[0].samples[0].labels
    assert labels == {
        "agent_id": "a1",
        "site": "jp-tokyo-01",
        "country": "JP",
        "region": "Kanto",
        "timezone": "Asia/Tokyo",
    }
