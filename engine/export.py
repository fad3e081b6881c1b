"""From a log to `conversations.jsonl` + `summary.json` (both written atomically).

Works on a partial log too: conversations without an end record are exported
with status "incomplete". Ordering is by the conversation's `seq` and the turn
`index`, so an uninterrupted run and a resumed one export identical content.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import orjson
from pydantic import BaseModel, ConfigDict, Field

from culturepark.engine.files import atomic_write
from culturepark.engine.log import read_log
from culturepark.engine.records import EndRecord, RunHeader, StopRecord, TurnRecord

CONVERSATIONS_NAME = "conversations.jsonl"
SUMMARY_NAME = "summary.json"


@dataclass
class AssembledConversation:
    seq: int
    turns: dict[int, TurnRecord] = field(default_factory=dict)
    end: EndRecord | None = None

    @property
    def status(self) -> str:
        return self.end.status if self.end else "incomplete"

    def ordered_turns(self) -> list[TurnRecord]:
        return [self.turns[i] for i in sorted(self.turns)]


@dataclass
class Assembled:
    header: RunHeader | None
    conversations: list[tuple[str, AssembledConversation]]
    duplicate_turns: int
    torn_bytes: int
    stop_reasons: list[str]
    first_t: float | None = None
    last_t: float | None = None


def assemble(run_dir: Path) -> Assembled:
    contents = read_log(Path(run_dir))
    convs: dict[str, AssembledConversation] = {}
    duplicates = 0
    stops: list[str] = []
    times = [rec.t for rec in contents.records if rec.t]
    for rec in contents.records:
        if isinstance(rec, TurnRecord):
            conv = convs.setdefault(rec.conversation_id, AssembledConversation(rec.seq))
            if rec.index in conv.turns:
                duplicates += 1
                continue
            conv.turns[rec.index] = rec
        elif isinstance(rec, EndRecord):
            conv = convs.setdefault(rec.conversation_id, AssembledConversation(rec.seq))
            if conv.end is None or conv.end.status != "done":
                conv.end = rec  # a failed conversation retried later: its newer end wins, done outranks failed
        elif isinstance(rec, StopRecord):
            stops.append(rec.reason)
    ordered = sorted(convs.items(), key=lambda kv: (kv[1].seq, kv[0]))
    return Assembled(contents.header, ordered, duplicates, contents.torn_bytes, stops,
                     min(times, default=None), max(times, default=None))


def conversation_rows(assembled: Assembled) -> Iterator[dict[str, Any]]:
    """The rows of `conversations.jsonl` (a dict each: the JSONL row that `datasets` loads)."""
    for conv_id, conv in assembled.conversations:
        end = conv.end
        row: dict[str, Any] = {
            "id": conv_id,
            "status": conv.status,
            "turns": [{"speaker": t.speaker, "text": t.text} for t in conv.ordered_turns()],
            "meta": end.meta if end else {},
        }
        if end and end.reason:
            row["reason"] = end.reason
        yield row


class TokenCounts(BaseModel):
    prompt: int = 0
    completion: int = 0
    total: int = 0


class EndpointCounts(BaseModel):
    """One distinct endpoint's request counts (roles sharing a backend share one entry)."""

    roles: list[str]
    model: str
    requests: int
    rate_limited: int
    retries: int
    cache_hits: int
    errors: dict[str, int]


class RunSummary(BaseModel):
    """`summary.json`, and what `run --json` prints (with `endpoints`, and `ray` for a Ray run)."""

    model_config = ConfigDict(extra="forbid")
    run_name: str | None = None
    scenario_hash: str | None = None
    conversations: int = 0
    done: int = 0
    failed: int = 0
    incomplete: int = 0
    turns: int = 0
    cached_turns: int = 0
    tokens: TokenCounts = TokenCounts()
    cost_usd: float | None = None  # None when some turn's price is unknown (never a silent 0)
    cost_usd_known_part: float = 0.0
    duration_s: float | None = None
    failures_by_reason: dict[str, int] = Field(default_factory=dict)
    duplicate_turns_dropped: int = 0
    stops: list[str] = Field(default_factory=list)
    endpoints: list[EndpointCounts] | None = None  # known to the process that ran it, not to the log
    ray: dict[str, Any] | None = None  # `run --ray`: workers, restarts, counts per shard

    def to_json(self) -> dict[str, Any]:
        """The JSON object, without the parts this summary does not have (a plain export has no endpoints)."""
        return self.model_dump(mode="json", exclude={k for k in ("endpoints", "ray") if getattr(self, k) is None})


def summarize(assembled: Assembled) -> RunSummary:
    statuses: Counter = Counter()
    failures: Counter = Counter()
    prompt = completion = turns = cached = 0
    cost = 0.0
    cost_known = True
    for _, conv in assembled.conversations:
        statuses[conv.status] += 1
        if conv.end and conv.end.status == "failed":
            failures[conv.end.reason or "unknown"] += 1
        for t in conv.turns.values():
            turns += 1
            prompt += t.usage.prompt_tokens
            completion += t.usage.completion_tokens
            cached += t.cached
            if t.cost_usd is None:
                cost_known = False
            else:
                cost += t.cost_usd
    header = assembled.header
    started = header.started_at if header else None
    last_t = assembled.last_t
    return RunSummary(
        run_name=header.run_name if header else None, scenario_hash=header.scenario_hash if header else None,
        conversations=sum(statuses.values()), done=statuses["done"], failed=statuses["failed"],
        incomplete=statuses["incomplete"], turns=turns, cached_turns=cached,
        tokens=TokenCounts(prompt=prompt, completion=completion, total=prompt + completion),
        cost_usd=round(cost, 6) if cost_known else None, cost_usd_known_part=round(cost, 6),
        duration_s=round(last_t - started, 3) if (last_t and started) else None,
        failures_by_reason=dict(failures), duplicate_turns_dropped=assembled.duplicate_turns,
        stops=assembled.stop_reasons)


def export_run(run_dir: Path) -> RunSummary:
    """Write conversations.jsonl and summary.json for a (possibly partial) run; return the summary."""
    run_dir = Path(run_dir)
    assembled = assemble(run_dir)
    lines = b"".join(orjson.dumps(row) + b"\n" for row in conversation_rows(assembled))
    atomic_write(run_dir / CONVERSATIONS_NAME, lines)
    summary = summarize(assembled)
    atomic_write(run_dir / SUMMARY_NAME, orjson.dumps(summary.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
    return summary
