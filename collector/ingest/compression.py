"""gRPC per-message compression, undone by the ingest itself, bounded and counted.

    gRPC (per_message_decompression off) -> raw message -> inflate() -> batch bytes -> _admit

The service runs gRPC with its own decompression turned off: gRPC's decompressor ends the
whole stream when a message does not decompress (INTERNAL) or inflates beyond the receive
limit (RESOURCE_EXHAUSTED), before the service sees it, so the batch could be neither
answered nor counted. Here such a message is one batch answered INVALID_ARGUMENT (reasons
`decompress` and `oversize`) and the stream goes on. Output is capped at the limit plus one
byte, so a decompression bomb costs at most `max_message_bytes` of memory.

gRPC does not tell the application whether one message was compressed (its flag is per
message: a client's gRPC sends a message uncompressed when compression does not shrink it),
so the bytes say it. gzip (RFC 1952, the `gzip` encoding) starts with 1f 8b, which no
protobuf message can (wire type 7 does not exist). A zlib stream (RFC 1950, the `deflate`
encoding) starts with a two-byte header that a protobuf message may also begin with, so a
zlib-looking message that does not inflate is parsed as it is before it counts as corrupt.
"""

from __future__ import annotations

import zlib

GZIP_MAGIC = b"\x1f\x8b"


class CorruptCompression(Exception):
    """The message looks compressed and does not decompress."""

    def __init__(self, encoding: str, detail: str, *, maybe_plain: bool = False) -> None:
        self.encoding = encoding
        self.detail = detail
        # a zlib-looking header may be the start of an uncompressed protobuf message
        self.maybe_plain = maybe_plain
        super().__init__(f"message is not valid {encoding} data ({detail})")


def looks_zlib(data: bytes) -> bool:
    """An RFC 1950 header: method 8 (deflate), window <= 32 KiB, check bits."""
    return (
        len(data) >= 2 and data[0] & 0x0F == 8 and data[0] >> 4 <= 7 and ((data[0] << 8) | data[1]) % 31 == 0
    )


def encoding_of(data: bytes) -> str | None:
    """'gzip', 'deflate' or None (not compressed) by the message's first bytes."""
    if data[:2] == GZIP_MAGIC:
        return "gzip"
    if looks_zlib(data):
        return "deflate"
    return None


def inflate(data: bytes, limit: int) -> tuple[bytes, str | None]:
    """(batch bytes, encoding) of one gRPC message; at most `limit + 1` bytes out, so a
    result longer than `limit` means "inflates past the limit" (its start still carries the
    header, for the nack's seq). Raises CorruptCompression."""
    encoding = encoding_of(data)
    if encoding is None:
        return data, None
    d = zlib.decompressobj(wbits=(16 + zlib.MAX_WBITS) if encoding == "gzip" else zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit + 1)
        while not d.eof and len(out) <= limit:
            more = d.decompress(d.unconsumed_tail, limit + 1 - len(out))
            if not more:
                break
            out += more
    except zlib.error as exc:
        raise CorruptCompression(encoding, str(exc), maybe_plain=encoding == "deflate") from None
    if len(out) > limit:
        return out, encoding
    if not d.eof:
        raise CorruptCompression(encoding, "truncated", maybe_plain=encoding == "deflate")
    if d.unused_data:
        raise CorruptCompression(
            encoding,
            f"{len(d.unused_data)} bytes after the end of the compressed data",
            maybe_plain=encoding == "deflate",
        )
    return out, encoding
