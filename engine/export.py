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

from culturepark.engine.files import atomic_write
from culturepark.engine.log import read_log

CONVERSATIONS_NAME = "conversations.jsonl"
SUMMARY_NAME = "summary.json"


@dataclass
class _Conv:
    seq: int
    turns: dict[int, dict[str, Any]] = field(default_factory=dict)
    end: dict[str, Any] | None = None


@dataclass
class Assembled:
    header: dict[str, Any] | None
    conversations: list[tuple[str, _Conv]]
    duplicate_turns: int
    torn_bytes: int
    stop_reasons: list[str]
    records: list[dict[str, Any]]


def assemble(run_dir: Path) -> Assembled:
    contents = read_log(Path(run_dir))
    convs: dict[str, _Conv] = {}
    duplicates = 0
    stops: list[str] = []
    for rec in contents.records:
        kind = rec["type"]
        if kind == "turn":
            conv = convs.setdefault(rec["conversation_id"], _Conv(rec.get("seq", 0)))
            if rec["index"] in conv.turns:
                duplicates += 1
                continue
            conv.turns[rec["index"]] = rec
        elif kind == "end":
            conv = convs.setdefault(rec["conversation_id"], _Conv(rec.get("seq", 0)))
            if conv.end is None or conv.end["status"] != "done":
                conv.end = rec  # a failed conversation retried later: its newer end wins, done outranks failed
        elif kind == "stop":
            stops.append(rec.get("reason", ""))
    ordered = sorted(convs.items(), key=lambda kv: (kv[1].seq, kv[0]))
    return Assembled(contents.header, ordered, duplicates, contents.torn_bytes, stops, contents.records)


def conversation_rows(assembled: Assembled) -> Iterator[dict[str, Any]]:
    for conv_id, conv in assembled.conversations:
        end = conv.end
        status = end["status"] if end else "incomplete"
        row: dict[str, Any] = {
            "id": conv_id,
            "status": status,
            "turns": [{"speaker": t["speaker"], "text": t["text"]}
                      for _, t in sorted(conv.turns.items())],
            "meta": (end or {}).get("meta", {}),
        }
        if end and end.get("reason"):
            row["reason"] = end["reason"]
        yield row


def summarize(assembled: Assembled) -> dict[str, Any]:
    statuses: Counter = Counter()
    failures: Counter = Counter()
    prompt = completion = turns = cached = 0
    cost = 0.0
    cost_known = True
    first_t = last_t = None
    for _, conv in assembled.conversations:
        statuses[conv.end["status"] if conv.end else "incomplete"] += 1
        if conv.end and conv.end["status"] == "failed":
            failures[conv.end.get("reason") or "unknown"] += 1
        for t in conv.turns.values():
            turns += 1
            usage = t.get("usage") or {}
            prompt += usage.get("prompt_tokens", 0)
            completion += usage.get("completion_tokens", 0)
            cached += bool(t.get("cached"))
            if t.get("cost_usd") is None:
                cost_known = False
            else:
                cost += t["cost_usd"]
    for rec in assembled.records:
        t = rec.get("t")
        if t:
            first_t = t if first_t is None else min(first_t, t)
            last_t = t if last_t is None else max(last_t, t)
    header = assembled.header or {}
    started = header.get("started_at")
    return {
        "run_name": header.get("run_name"),
        "scenario_hash": header.get("scenario_hash"),
        "conversations": sum(statuses.values()),
        "done": statuses["done"],
        "failed": statuses["failed"],
        "incomplete": statuses["incomplete"],
        "turns": turns,
        "cached_turns": cached,
        "tokens": {"prompt": prompt, "completion": completion, "total": prompt + completion},
        "cost_usd": round(cost, 6) if cost_known else None,
        "cost_usd_known_part": round(cost, 6),
        "duration_s": round(last_t - started, 3) if (last_t and started) else None,
        "failures_by_reason": dict(failures),
        "duplicate_turns_dropped": assembled.duplicate_turns,
        "stops": assembled.stop_reasons,
    }


def export_run(run_dir: Path) -> dict[str, Any]:
    """Write conversations.jsonl and summary.json for a (possibly partial) run; return the summary."""
    run_dir = Path(run_dir)
    assembled = assemble(run_dir)
    lines = b"".join(orjson.dumps(row) + b"\n" for row in conversation_rows(assembled))
    atomic_write(run_dir / CONVERSATIONS_NAME, lines)
    summary = summarize(assembled)
    atomic_write(run_dir / SUMMARY_NAME, orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    return summary
