"""TLS and basic auth for the /metrics endpoints, configured like Prometheus exporters.

Each service's `metrics_web_config` names a YAML file in the exporter-toolkit web
configuration format (the one node_exporter's `--web.config.file` reads), so an operator
who secures exporters already knows it:

    tls_server_config:
      cert_file: metrics.crt          # relative paths: relative to this file
      key_file: metrics.key
      client_ca_file: ca.crt          # optional: then a client certificate is required
    basic_auth_users:                 # optional: user -> bcrypt hash (htpasswd -nBC 10 "" ...)
      prometheus: $2y$10$...

With TLS the endpoint serves HTTPS only (TLS 1.2 and up); with users every request needs
`Authorization: Basic` for one of them (else 401 with a `WWW-Authenticate` challenge; the
password is checked with bcrypt, a check that succeeded is remembered by its SHA-256 so a
scrape every few seconds does not pay bcrypt each time). Passwords and hashes never reach a
log line.

Every role's endpoint (collector/exposition/http.py) uses `ssl_context()` and `check()`.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import yaml

from collector.errors import ConfigError

_KEYS = {"tls_server_config", "basic_auth_users", "http_server_config"}
_TLS_KEYS = {"cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version"}


@dataclass
class WebConfig:
    path: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None
    users: dict[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash
    _ok: set[bytes] = field(default_factory=set, repr=False)  # sha256 of accepted credentials
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _ctx: ssl.SSLContext | None = field(default=None, repr=False)

    @classmethod
    def load(cls, path: Path, key: str) -> WebConfig:
        """Read and check the file; a problem is a ConfigError naming `key` and the file."""

        def bad(msg: str) -> ConfigError:
            return ConfigError(f"{key}: {path}: {msg}", key=key)

        try:
            data = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise bad(f"cannot read: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise bad(f"not valid YAML: {exc}") from exc
        if not isinstance(data, dict) or set(data) - _KEYS:
            raise bad(
                f"unknown keys {sorted(set(data) - _KEYS) if isinstance(data, dict) else data!r} "
                f"(expected {sorted(_KEYS)})"
            )
        cfg = cls(path)
        tls = data.get("tls_server_config") or {}
        if not isinstance(tls, dict) or set(tls) - _TLS_KEYS:
            raise bad(f"tls_server_config: unknown keys (expected {sorted(_TLS_KEYS)})")
        if tls:
            for name in ("cert_file", "key_file"):
                if not tls.get(name):
                    raise bad(f"tls_server_config.{name} is required with tls_server_config")
            cfg.cert_file, cfg.key_file = (path.parent / tls["cert_file"], path.parent / tls["key_file"])
            if tls.get("client_ca_file"):
                cfg.client_ca_file = path.parent / tls["client_ca_file"]
            try:
                cfg.ssl_context()
            except (OSError, ssl.SSLError) as exc:
                raise bad(f"tls_server_config: cannot load the certificate or key: {exc}") from exc
        users = data.get("basic_auth_users") or {}
        if not isinstance(users, dict):
            raise bad("basic_auth_users must map user names to bcrypt hashes")
        for user, h in users.items():
            hb = str(h).encode()
            if not hb.startswith((b"$2a$", b"$2b$", b"$2y$")):
                raise bad(f"basic_auth_users.{user}: not a bcrypt hash")  # the value is not shown
            cfg.users[str(user)] = hb
        return cfg

    @property
    def tls(self) -> bool:
        return self.cert_file is not None

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server context (built once; the files are read at start)."""
        if self.cert_file is None or self.key_file is None:
            return None
        if self._ctx is not None:
            return self._ctx
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        if self.client_ca_file is not None:
            ctx.load_verify_locations(str(self.client_ca_file))
            ctx.verify_mode = ssl.CERT_REQUIRED
        self._ctx = ctx
        return ctx

    def check(self, authorization: str | None) -> bool:
        """True when no users are configured or `authorization` is valid Basic credentials."""
        if not self.users:
            return True
        if not authorization:
            return False
        scheme, _, b64 = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(b64.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        want = self.users.get(user)
        if not sep or want is None:
            return False
        seen = hashlib.sha256(want + b"\0" + password.encode()).digest()
        with self._lock:
            if seen in self._ok:
                return True
        try:
            ok = bcrypt.checkpw(password.encode(), want.replace(b"$2y$", b"$2b$", 1))
        except ValueError:
            return False
        if ok:
            with self._lock:
                if len(self._ok) > 64:
                    self._ok.clear()
                self._ok.add(seen)
        return ok


def load(path: Path | None, key: str) -> WebConfig | None:
    return None if path is None else WebConfig.load(Path(path), key)
