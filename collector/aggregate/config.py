"""Settings of the `aggregate` section (see collector/config.py for loading rules)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class AggregateSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
