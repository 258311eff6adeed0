"""Settings of the `agent` section (see collector/config.py for loading rules)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class AgentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
