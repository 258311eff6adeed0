"""Retry timing: the one full-jitter backoff policy (collector/backoff.py) and the sender's
reading of the ingest's retry-after-ms pushback."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from collector.backoff import backoff_delay


def test_backoff_is_full_jitter_with_a_cap() -> None:
    assert backoff_delay(0, 0.5, 30.0, lambda: 1.0) == 0.5
    assert backoff_delay(3, 0.5, 30.0, lambda: 1.0) == 4.0
    assert backoff_delay(10, 0.5, 30.0, lambda: 1.0) == 30.0  # capped
    assert backoff_delay(500, 0.5, 30.0, lambda: 1.0) == 30.0  # no overflow
    assert backoff_delay(10, 0.5, 30.0, lambda: 0.0) == 0.0  # full jitter reaches 0


@given(
    st.integers(0, 10_000),
    st.floats(1e-3, 10.0),
    st.floats(1e-3, 600.0),
    st.floats(0.0, 1.0, exclude_max=True),
)
def test_backoff_stays_within_the_growing_cap(attempt: int, initial: float, cap: float, u: float) -> None:
    d = backoff_delay(attempt, initial, cap, lambda: u)
    assert 0.0 <= d <= min(cap, initial * 2.0 ** min(attempt, 62))
    # the bound never shrinks as attempts grow
    assert backoff_delay(attempt + 1, initial, cap, lambda: u) >= d


def test_backoff_draws_from_the_default_random_source() -> None:
    delays = {backoff_delay(4, 1.0, 60.0) for _ in range(50)}
    assert all(0.0 <= d <= 16.0 for d in delays)
    assert len(delays) > 1  # jittered, not a fixed delay


def test_retry_pushback_is_read_from_the_refusal_trailers() -> None:
    import grpc

    from collector.agent.sender import retry_pushback_s

    def err(md: tuple[tuple[str, str], ...]) -> grpc.aio.AioRpcError:
        return grpc.aio.AioRpcError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(*md),
            details="site limit",
        )

    assert retry_pushback_s(err((("retry-after-ms", "1500"),))) == 1.5
    assert retry_pushback_s(err(())) == 0.0
    assert retry_pushback_s(err((("retry-after-ms", "soon"),))) == 0.0
