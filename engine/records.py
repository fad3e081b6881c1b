"""The log's one schema: a header line, then turn, end and stop records (and, in a study with
people, participant, access and withdrawal records).

Turn, end and stop records are slotted dataclasses: they are built on the hot path and
orjson serialises dataclasses natively, as fast as a dict. Reading a log back validates
every line into the same types with pydantic (`parse_record`), so the writer, resume,
export, replay and every reader share one definition, and a foreign line fails loudly.

Logs written before these types existed (format 1, culturepark 0.1) read unchanged: their
fields are the same, and their header's stage-specific keys are sorted into `RunHeader`
by `RunHeader.from_legacy` (see tests/fixtures/v0.1-run).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

LOG_FORMAT_VERSION = 1

Stage = Literal["run", "study", "refine", "eval"]


@dataclass(slots=True)
class Usage:
    """Tokens of one request. `cached_tokens` is the part of `prompt_tokens` the provider served
    from its prompt cache (billed at the cached-input rate); `cache_write_tokens` the part it wrote
    to the cache (Anthropic bills it at 1.25 times input); 0 where it reports none (and in logs
    written before writes were counted)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def plus(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens,
                     self.cached_tokens + other.cached_tokens, self.cache_write_tokens + other.cache_write_tokens)


@dataclass(slots=True)
class TurnRecord:
    """One generated turn. `text` is stripped; `cost_usd` is None when the price is unknown;
    `tier` is the service tier that served it (None: standard), which its cost is priced at."""

    type: Literal["turn"] = field(default="turn", init=False)
    conversation_id: str
    seq: int
    index: int
    speaker: str
    role: str
    text: str
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = None
    latency_ms: float = 0.0
    attempts: int = 1
    request_hash: str = ""
    finish_reason: str | None = None
    cached: bool = False
    human: bool = False  # typed by a person (a study participant), not generated
    t: float = 0.0
    tier: str | None = None
    temperature: float | None = None  # when a re-ask of a rejected reply sampled hotter than asked
    # replies before this one that the caller rejected (an echo, an unparseable answer) and re-asked:
    # the provider billed them all the same (None: there were none)
    rejected: Usage | None = None
    rejected_cost_usd: float | None = None
    # the answer's probabilities over the request's choices, when it asked for them (`Request.label_probs`)
    label_probs: dict[str, float] | None = None


@dataclass(slots=True)
class ParticipantRecord:
    """A conversation created while the run is going (a person joined a study), not planned
    ahead: its spec is in the log because no plan can recompute it."""

    type: Literal["participant"] = field(default="participant", init=False)
    conversation_id: str
    seq: int
    meta: dict[str, Any] = field(default_factory=dict)
    t: float = 0.0
    # How the person is recognised again, as sha256 hashes — never the secrets themselves — and
    # which version of the texts they agreed to: {"session", "recovery", "invitation", "texts"}.
    access: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class AccessRecord:
    """A person's session moved to a new key (they resumed in another browser with their recovery
    code); the newest key wins, so the browser that had the old one can no longer continue."""

    type: Literal["access"] = field(default="access", init=False)
    conversation_id: str
    seq: int
    session: str  # sha256 of the new session key
    t: float = 0.0


@dataclass(slots=True)
class WithdrawalRecord:
    """A person withdrew from a study. The log is append-only, so their turns stay on disk; every
    reader (`engine.export.assemble`, the study's admin export, `eval education`) leaves them out."""

    type: Literal["withdrawal"] = field(default="withdrawal", init=False)
    conversation_id: str
    seq: int
    t: float = 0.0


@dataclass(slots=True)
class EndRecord:
    """A conversation is over: `done`, or `failed` with the last attempt's reason."""

    type: Literal["end"] = field(default="end", init=False)
    conversation_id: str
    seq: int
    status: Literal["done", "failed"]
    reason: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    attempts: int | None = None
    t: float = 0.0
    # a conversation that failed after replies were rejected: those replies were billed (see TurnRecord),
    # asked by this role
    rejected: Usage | None = None
    rejected_cost_usd: float | None = None
    role: str | None = None


@dataclass(slots=True)
class StopRecord:
    """The run stopped before its end on purpose (budget reached); resuming continues it."""

    type: Literal["stop"] = field(default="stop", init=False)
    reason: str
    t: float = 0.0


Record = TurnRecord | EndRecord | StopRecord | ParticipantRecord | AccessRecord | WithdrawalRecord
_RECORD = TypeAdapter(Annotated[Record, Field(discriminator="type")])


def parse_record(data: dict[str, Any]) -> Record:
    """Validate one log line (already JSON-decoded) into its record type; raises ValueError."""
    return _RECORD.validate_python(data)


def package_version() -> str:
    """The culturepark version that writes a log (recorded in its header)."""
    try:
        return metadata.version("culturepark")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class RayInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workers: int
    budget: str


class RunHeader(BaseModel):
    """First line of every log: what made the run. Never holds a secret (keys come from env vars).

    One shape for every stage. `scenario_hash` is the content hash `--resume` checks;
    `details` holds what only that stage reads (an eval's task and seeds, a refinement's
    source and config), so the engine never needs to know it.
    """

    model_config = ConfigDict(extra="forbid")
    type: Literal["run"] = "run"
    format: int = LOG_FORMAT_VERSION
    stage: Stage = "run"
    run_name: str | None = None
    scenario_hash: str = ""
    started_at: float = 0.0
    package_version: str | None = Field(default_factory=package_version)
    seed: int | None = None
    backends: dict[str, dict[str, Any]] = Field(default_factory=dict)
    scenario: dict[str, Any] | None = None
    planned_conversations: int | None = None
    limit: int | None = None
    data_dir: str | None = None
    notices: list[str] = Field(default_factory=list)
    learners: Literal["simulated", "human"] | None = None
    ray: RayInfo | None = None
    details: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def from_legacy(cls, data: Any) -> Any:
        """Culturepark 0.1 headers had no `stage`, and kept an eval's or a refinement's own keys
        at the top level: infer the stage and move those keys into `details`."""
        if not isinstance(data, dict) or ("stage" in data and "details" in data):
            return data
        data = dict(data)
        known = set(cls.model_fields)
        if "stage" not in data:
            data["stage"] = ("eval" if "model_spec" in data else
                             "study" if data.get("learners") == "human" else "run")
        if data["stage"] == "eval" and "backend" in data:
            data.setdefault("backends", {"model": data.pop("backend")})
        details = dict(data.get("details") or {})
        for key in [k for k in data if k not in known]:
            details[key] = data.pop(key)
        data["details"] = details
        return data


__all__ = [
    "LOG_FORMAT_VERSION",
    "AccessRecord",
    "EndRecord",
    "ParticipantRecord",
    "RayInfo",
    "Record",
    "RunHeader",
    "StopRecord",
    "TurnRecord",
    "Usage",
    "WithdrawalRecord",
    "package_version",
    "parse_record",
]
