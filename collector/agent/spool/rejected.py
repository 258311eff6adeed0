"""The spool's rejected store: batches the ingest refused (INVALID_ARGUMENT,
PERMISSION_DENIED) kept for an operator as `rejected/<seq>.batch` (the serialised batch) and
`rejected/<seq>.json` (seq, code, reason, when), the newest `keep_rejected` of them."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path


class RejectedStore:
    def __init__(self, spool_dir: Path, keep: int) -> None:
        self.dir = spool_dir / "rejected"
        self.keep = keep

    def create(self) -> None:
        self.dir.mkdir(exist_ok=True)

    def write(self, seq: int, payload: bytes, code: str, reason: str, rejected_unix_nano: int) -> None:
        """Keep one refused batch; on OSError (disk full, permissions) nothing half-written
        stays and the error is raised for the caller to retry later."""
        batch = self.dir / f"{seq:020d}.batch"
        try:
            batch.write_bytes(payload)
            batch.with_suffix(".json").write_text(
                json.dumps(
                    {"seq": seq, "code": code, "reason": reason, "rejected_unix_nano": rejected_unix_nano}
                )
                + "\n"
            )
        except OSError:
            with contextlib.suppress(OSError):
                batch.unlink(missing_ok=True)
            raise

    def trim(self) -> None:
        """Delete all but the newest `keep` batches (raises OSError)."""
        files = sorted(self.dir.glob("*.batch"))
        for f in files[: max(0, len(files) - self.keep)]:
            f.unlink(missing_ok=True)
            f.with_suffix(".json").unlink(missing_ok=True)
