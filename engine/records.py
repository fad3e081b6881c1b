"""The log's schema.

Records are written on the hot path as plain dicts (orjson) and validated with
pydantic when a log is read back, so a corrupt or foreign file fails loudly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

LOG_FORMAT_VERSION = 1


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class UsageModel(BaseModel):
    model_config = ConfigDict(extra="ignore")
    prompt_tokens: int = 0
    completion_tokens: int = 0


class RunHeader(BaseModel):
    """First line of every log. Never holds a secret: keys are read from env vars only."""

    model_config = ConfigDict(extra="allow")
    type: Literal["run"] = "run"
    format: int = LOG_FORMAT_VERSION
    run_name: str
    scenario: dict[str, Any]
    scenario_hash: str
    seed: int
    backends: dict[str, dict[str, Any]] = Field(default_factory=dict)
    package_version: str
    started_at: float
    notices: list[str] = Field(default_factory=list)


class TurnRecord(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["turn"] = "turn"
    conversation_id: str
    seq: int
    index: int
    speaker: str
    role: str
    text: str
    usage: UsageModel = Field(default_factory=UsageModel)
    cost_usd: float | None = None
    latency_ms: float = 0.0
    attempts: int = 1
    request_hash: str = ""
    finish_reason: str | None = None
    t: float = 0.0


class EndRecord(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["end"] = "end"
    conversation_id: str
    seq: int
    status: Literal["done", "failed"]
    reason: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    t: float = 0.0


class StopRecord(BaseModel):
    """Written when a run stops before finishing on purpose (budget reached, write error)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["stop"] = "stop"
    reason: str
    t: float = 0.0
