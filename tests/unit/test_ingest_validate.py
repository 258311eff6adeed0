"""The accepted event-time window and the messages that explain a rejection."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.errors import RuleViolation
from collector.ingest.validate import NS, Limits, validate
from tests.ingest_support import make_batch

NOW = 1_796_000_000 * NS  # 2026-11-29
LIMITS = Limits(max_past_age_s=7 * 86400.0, max_future_skew_s=300.0)


def _with_time(t: int) -> object:
    b = make_batch(series=2, points=1, t0_ns=NOW)
    b.counters.time_unix_nano[0] = t
    return b


def test_a_year_3000_time_computed_in_int64_is_reported_as_overflow_not_as_old() -> None:
    year_3000_ns = 32_503_680_000 * NS
    wrapped = (year_3000_ns + 2**63) % 2**64 - 2**63  # what an int64 computation produces
    assert wrapped < 0
    with pytest.raises(RuleViolation) as err:
        validate(_with_time(wrapped), LIMITS, NOW)  # type: ignore[arg-type]
    assert "before 1970" in err.value.message
    assert "overflowed far-future time" in err.value.message
    assert "older than" not in err.value.message


def test_old_and_future_times_name_the_time_and_the_limit() -> None:
    with pytest.raises(RuleViolation) as old:
        validate(_with_time(NOW - 8 * 86400 * NS), LIMITS, NOW)  # type: ignore[arg-type]
    assert old.value.reason == "too_old"
    assert "2026-11-22T00:53:20Z is older" in old.value.message
    assert "max_past_age (604800s" in old.value.message
    with pytest.raises(RuleViolation) as future:
        validate(_with_time(NOW + 301 * NS), LIMITS, NOW)  # type: ignore[arg-type]
    assert future.value.reason == "clock_skew"
    assert "301s ahead" in future.value.message


@given(st.integers(-(2**63), 2**63 - 1))
def test_every_int64_time_is_accepted_exactly_inside_the_window(t: int) -> None:
    if NOW - 7 * 86400 * NS <= t <= NOW + 300 * NS:
        validate(_with_time(t), LIMITS, NOW)  # type: ignore[arg-type]
        return
    with pytest.raises(RuleViolation, match=r"^counters\.time_unix_nano\[0\]: ") as err:
        validate(_with_time(t), LIMITS, NOW)  # type: ignore[arg-type]
    assert err.value.reason in ("too_old", "clock_skew")
