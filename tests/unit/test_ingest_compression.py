"""gRPC per-message compression undone by the ingest (collector/ingest/compression.py):
exact round trips, output never past the limit, corrupt data refused, and an uncompressed
Batch never mistaken for compressed data."""

from __future__ import annotations

import gzip
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.ingest.compression import CorruptCompression, encoding_of, inflate
from tests.ingest_support import make_batch


@given(st.binary(max_size=4096), st.integers(1, 5000), st.sampled_from(["gzip", "deflate"]))
def test_inflate_round_trips_or_stops_one_byte_past_the_limit(data: bytes, limit: int, encoding: str) -> None:
    packed = gzip.compress(data) if encoding == "gzip" else zlib.compress(data)
    out, enc = inflate(packed, limit)
    assert enc == encoding
    if len(data) <= limit:
        assert out == data
    else:
        assert out == data[: limit + 1]


@given(st.binary(max_size=2048), st.integers(0, 4096), st.binary(min_size=1, max_size=4))
def test_inflate_never_returns_more_than_limit_plus_one(data: bytes, limit: int, junk: bytes) -> None:
    # whatever the bytes, at most limit + 1 bytes come out, or a CorruptCompression
    for candidate in (
        data,
        b"\x1f\x8b" + data,
        b"\x78\x9c" + data,
        gzip.compress(data) + junk,
        gzip.compress(data)[:-1],
    ):
        try:
            out, _enc = inflate(candidate, limit)
        except CorruptCompression:
            continue
        assert len(out) <= max(limit + 1, len(candidate))
        if encoding_of(candidate) is None:
            assert out is candidate  # not compressed: passed through as it is


@given(st.binary(min_size=1, max_size=1024), st.data())
def test_a_damaged_gzip_message_is_refused_or_decodes_to_itself(data: bytes, draw: st.DataObject) -> None:
    packed = bytearray(gzip.compress(data, mtime=0))
    i = draw.draw(st.integers(10, len(packed) - 1))  # past the fixed header
    packed[i] ^= draw.draw(st.integers(1, 255))
    refused: CorruptCompression | None = None
    try:
        out, _ = inflate(bytes(packed), 1 << 20)
    except CorruptCompression as exc:
        refused = exc
    if refused is not None:
        assert refused.encoding == "gzip"
        assert not refused.maybe_plain  # gzip's magic is never a protobuf message
    else:
        assert out == data  # only a flip the CRC cannot see: the size field is checked too


def test_truncated_and_trailing_data_are_corrupt() -> None:
    packed = gzip.compress(b"x" * 1000)
    with pytest.raises(CorruptCompression, match="truncated"):
        inflate(packed[:-4], 4096)
    with pytest.raises(CorruptCompression, match="after the end"):
        inflate(packed + b"\x00", 4096)


@given(st.integers(1, 10**6), st.integers(1, 30), st.integers(1, 10))
def test_an_uncompressed_batch_is_never_taken_for_compressed_data(seq: int, series: int, points: int) -> None:
    raw = make_batch("jp-tokyo-01", seq, series=series, points=points).SerializeToString()
    assert encoding_of(raw) is None
    out, enc = inflate(raw, len(raw))
    assert (out, enc) == (raw, None)
