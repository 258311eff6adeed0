"""The sender's retry timing: full-jitter backoff and the ingest's retry-after-ms pushback."""

from __future__ import annotations


def test_backoff_is_full_jitter_with_a_cap() -> None:
    from collector.agent.sender import backoff_delay

    assert backoff_delay(0, 0.5, 30.0, lambda: 1.0) == 0.5
    assert backoff_delay(3, 0.5, 30.0, lambda: 1.0) == 4.0
    assert backoff_delay(10, 0.5, 30.0, lambda: 1.0) == 30.0  # capped
    assert backoff_delay(500, 0.5, 30.0, lambda: 1.0) == 30.0  # no overflow
    assert backoff_delay(10, 0.5, 30.0, lambda: 0.0) == 0.0  # full jitter reaches 0


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
