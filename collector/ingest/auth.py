"""Bearer tokens: which site a stream may write for.

The token file is a YAML (or JSON) mapping `token: site_id`, owned by the operator and
re-read when it changes (checked at most once per `check_interval_s`, when a stream opens or
a batch arrives on an open one, so a revoked token stops its open streams too), so
rotating a token needs no restart. A file that fails to parse keeps the previous tokens and
is reported (log line + metric), never leaving the service without any token.
Tokens are kept only as SHA-256 digests, and looked up by digest.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from collector.errors import ConfigError

log = logging.getLogger(__name__)

MIN_TOKEN_LENGTH = 16


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_tokens(path: Path) -> dict[bytes, str]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read tokens file: {exc.strerror}", source=str(path)) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML in tokens file: {exc}", source=str(path)) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("tokens file must be a mapping token -> site_id", source=str(path))
    out: dict[bytes, str] = {}
    for i, (token, site) in enumerate(data.items()):
        if not isinstance(token, str) or len(token) < MIN_TOKEN_LENGTH:
            raise ConfigError(
                f"token #{i + 1} shorter than {MIN_TOKEN_LENGTH} characters",
                source=str(path),
                key=f"entry {i + 1}",
            )
        if not isinstance(site, str) or not site:
            raise ConfigError("site_id must be a non-empty string", source=str(path), key=f"entry {i + 1}")
        out[_digest(token)] = site
    return out


class TokenStore:
    """token -> site_id, hot-reloaded from a file."""

    def __init__(
        self, path: Path, check_interval_s: float = 1.0, on_reload: Callable[[str], None] | None = None
    ) -> None:
        self.path = path
        self.check_interval_s = check_interval_s
        self.reloads_ok = 0
        self.reloads_failed = 0
        self._on_reload = on_reload or (lambda result: None)  # "ok" or "failed", once per reload
        self._stamp: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self._tokens = parse_tokens(path)  # start-up: a bad file is a fatal config error
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def maybe_reload(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self.check_interval_s
        stamp = self._stat()
        if stamp is None or stamp == self._stamp:
            return
        try:
            tokens = parse_tokens(self.path)
        except ConfigError as exc:
            self.reloads_failed += 1
            self._on_reload("failed")
            log.error("tokens file not reloaded, keeping %d previous tokens: %s", len(self._tokens), exc)
        else:
            self._tokens = tokens
            self.reloads_ok += 1
            self._on_reload("ok")
            log.info("tokens file reloaded: %d tokens", len(tokens))
        self._stamp = stamp

    def site_for(self, token: str) -> str | None:
        self.maybe_reload()
        return self._tokens.get(_digest(token))

    @staticmethod
    def digest(token: str) -> bytes:
        """What an open stream keeps of its token (never the token itself)."""
        return _digest(token)

    def site_for_digest(self, digest: bytes) -> str | None:
        """The site of a token still in the file (reloaded at most every check_interval_s):
        an open stream whose token was removed gets None."""
        self.maybe_reload()
        return self._tokens.get(digest)

    def __len__(self) -> int:
        return len(self._tokens)
