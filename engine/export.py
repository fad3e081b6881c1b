"""From a log to `conversations.jsonl` + `summary.json` (both written atomically).

Works on a partial log too: conversations without an end record are exported
with status "incomplete". Ordering is by the conversation's `seq` and the turn
`index`, so an uninterrupted run and a resumed one export identical content.

Runs of any size export in bounded memory (`ordered_conversations`): one streaming pass
spreads the records over temporary bucket files by `seq` range, then each bucket is
assembled and sorted on its own. A bucket's records keep the order they were read in, so
the rules (first turn of an index wins; a `done` end outranks a `failed` one) and the bytes
written are those of `assemble`, which holds a whole (small) run in memory.
"""
from __future__ import annotations

import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from culturepark.engine.errors import InputError
from culturepark.engine.files import atomic_write, atomic_writer
from culturepark.engine.log import LogReader, read_log
from culturepark.engine.pricing import CostSplit, Price
from culturepark.engine.records import (
    EndRecord,
    Record,
    RunHeader,
    StopRecord,
    TurnRecord,
    Usage,
    WithdrawalRecord,
    parse_record,
)

CONVERSATIONS_NAME = "conversations.jsonl"
PARQUET_NAME = "conversations.parquet"
PARQUET_ROWS_PER_GROUP = 10_000
SUMMARY_NAME = "summary.json"


@dataclass
class AssembledConversation:
    seq: int
    turns: dict[int, TurnRecord] = field(default_factory=dict)
    end: EndRecord | None = None
    withdrawn: bool = False  # a study participant withdrew: no reader sees the turns

    @property
    def status(self) -> str:
        if self.withdrawn:
            return "withdrawn"
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


def _gather(records: Iterable[Record], convs: dict[str, AssembledConversation]) -> int:
    """Add turn and end records to their conversations; returns the duplicate turns dropped."""
    duplicates = 0
    for rec in records:
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
        elif isinstance(rec, WithdrawalRecord):
            convs.setdefault(rec.conversation_id, AssembledConversation(rec.seq)).withdrawn = True
    return duplicates


def _ordered(convs: dict[str, AssembledConversation]) -> list[tuple[str, AssembledConversation]]:
    return sorted(convs.items(), key=lambda kv: (kv[1].seq, kv[0]))


def assemble(run_dir: Path) -> Assembled:
    """A whole run in memory (small runs: an eval, a refinement's own log)."""
    contents = read_log(Path(run_dir))
    convs: dict[str, AssembledConversation] = {}
    duplicates = _gather(contents.records, convs)
    stops = [rec.reason for rec in contents.records if isinstance(rec, StopRecord)]
    times = [rec.t for rec in contents.records if rec.t]
    return Assembled(contents.header, _ordered(convs), duplicates, contents.torn_bytes, stops,
                     min(times, default=None), max(times, default=None))


@dataclass
class OrderedRun:
    """A run being read in `seq` order from bucket files; `conversations()` streams them once."""

    header: RunHeader | None
    torn_bytes: int
    stop_reasons: list[str]
    last_t: float | None
    buckets: list[Path]
    duplicate_turns: int = 0  # known once `conversations()` has been read to the end

    def conversations(self) -> Iterator[tuple[str, AssembledConversation]]:
        for bucket in self.buckets:
            convs: dict[str, AssembledConversation] = {}
            with open(bucket, "rb") as fh:
                self.duplicate_turns += _gather((parse_record(orjson.loads(line)) for line in fh), convs)
            yield from _ordered(convs)


BUCKET_SEQS = 4096  # conversations per bucket: memory of the ordering pass ~ one bucket's turns
_FLUSH_BYTES = 1 << 16


@contextmanager
def ordered_conversations(run_dir: Path, tmp_parent: Path | None = None,
                          bucket_seqs: int = BUCKET_SEQS) -> Iterator[OrderedRun]:
    """Every conversation of a (partial) run in `seq` order, in bounded memory (see the module)."""
    reader = LogReader(Path(run_dir))
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=tmp_parent))
    try:
        buffers: dict[int, list[bytes]] = defaultdict(list)
        sizes: dict[int, int] = defaultdict(int)
        stops: list[str] = []
        last_t: float | None = None
        for rec in reader.records():
            if rec.t and (last_t is None or rec.t > last_t):
                last_t = rec.t
            if isinstance(rec, StopRecord):
                stops.append(rec.reason)
                continue
            line = orjson.dumps(rec) + b"\n"
            b = rec.seq // bucket_seqs
            buffers[b].append(line)
            sizes[b] += len(line)
            if sizes[b] >= _FLUSH_BYTES:
                _flush(tmp, b, buffers, sizes)
        for b in list(buffers):
            _flush(tmp, b, buffers, sizes)
        buckets = sorted(tmp.glob("*.jsonl"), key=lambda p: int(p.stem))
        yield OrderedRun(reader.header, reader.torn_bytes, stops, last_t, buckets)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def one_conversation(run_dir: Path, conv_id: str) -> tuple[AssembledConversation | None, int]:
    """One conversation read out of a run of any size in one streaming pass (`replay --id`);
    also the torn bytes at the log's end."""
    reader = LogReader(Path(run_dir))
    convs: dict[str, AssembledConversation] = {}
    _gather((r for r in reader.records() if getattr(r, "conversation_id", None) == conv_id), convs)
    return convs.get(conv_id), reader.torn_bytes


def _flush(tmp: Path, bucket: int, buffers: dict[int, list[bytes]], sizes: dict[int, int]) -> None:
    with open(tmp / f"{bucket}.jsonl", "ab") as fh:
        fh.write(b"".join(buffers.pop(bucket)))
    sizes.pop(bucket, None)


def conversation_rows(assembled: Assembled | Iterable[tuple[str, AssembledConversation]]
                      ) -> Iterator[dict[str, Any]]:
    """The rows of `conversations.jsonl` (a dict each: the JSONL row that `datasets` loads)."""
    convs = assembled.conversations if isinstance(assembled, Assembled) else assembled
    for conv_id, conv in convs:
        yield _row(conv_id, conv)


def _row(conv_id: str, conv: AssembledConversation) -> dict[str, Any]:
    if conv.withdrawn:  # the person's words and answers leave no export
        return {"id": conv_id, "status": "withdrawn", "turns": [], "meta": {}}
    end = conv.end
    row: dict[str, Any] = {
        "id": conv_id,
        "status": conv.status,
        "turns": [{"speaker": t.speaker, "text": t.text} for t in conv.ordered_turns()],
        "meta": end.meta if end else {},
    }
    if end and end.reason:
        row["reason"] = end.reason
    return row


class TokenCounts(BaseModel):
    prompt: int = 0
    completion: int = 0
    total: int = 0
    cached_prompt: int = 0  # the part of `prompt` served from the provider's prompt cache


class CacheCounts(BaseModel):
    """How much of the input the provider's prompt cache served: as a share of prompt tokens,
    overall and by turn index (a conversation's history grows, so later turns should hit more),
    and the turns that had any cached tokens."""

    hit_rate: float = 0.0
    turns_with_hits: int = 0
    hit_rate_by_turn: dict[int, float] = Field(default_factory=dict)


class CostSplitUSD(BaseModel):
    uncached_input: float = 0.0
    cached_input: float = 0.0
    output: float = 0.0


class EndpointCounts(BaseModel):
    """One distinct endpoint's request counts (roles sharing a backend share one entry)."""

    roles: list[str]
    model: str
    requests: int
    rate_limited: int
    retries: int
    cache_hits: int
    errors: dict[str, int]
    # limits nobody stated, as the provider's headers gave them ("rpm"/"tpm" per minute; last seen)
    learned_limits: dict[str, float] = Field(default_factory=dict)
    # the adaptive ceiling on requests in flight (maximum, final, lowest, decreases); None: none
    concurrency_ceiling: dict[str, float] | None = None


class RunSummary(BaseModel):
    """`summary.json`, and what `run --json` prints (with `endpoints`, and `ray` for a Ray run)."""

    model_config = ConfigDict(extra="forbid")
    run_name: str | None = None
    scenario_hash: str | None = None
    conversations: int = 0
    done: int = 0
    failed: int = 0
    incomplete: int = 0
    withdrawn: int = 0  # study participants who withdrew (their rows carry no turns)
    turns: int = 0
    cached_turns: int = 0
    tokens: TokenCounts = TokenCounts()
    cost_usd: float | None = None  # None when some turn's price is unknown (never a silent 0)
    cost_usd_known_part: float = 0.0
    # replies billed but rejected by validation (an echo, an unparseable answer) and re-asked: part of
    # cost_usd; the share is of cost_usd (None: unknown)
    rejected_tokens: int = 0
    rejected_cost_usd: float | None = 0.0
    rejected_cost_share: float | None = 0.0
    # cost_usd split by what was billed, at the rates the run header records (None: some rates unknown)
    cost_split_usd: CostSplitUSD | None = None
    cache: CacheCounts = CacheCounts()
    turns_by_tier: dict[str, int] = Field(default_factory=dict)  # standard, flex, batch
    duration_s: float | None = None
    failures_by_reason: dict[str, int] = Field(default_factory=dict)
    duplicate_turns_dropped: int = 0
    stops: list[str] = Field(default_factory=list)
    endpoints: list[EndpointCounts] | None = None  # known to the process that ran it, not to the log
    ray: dict[str, Any] | None = None  # `run --ray`: workers, restarts, counts per shard

    def to_json(self) -> dict[str, Any]:
        """The JSON object, without the parts this summary does not have (a plain export has no endpoints)."""
        return self.model_dump(mode="json", exclude={k for k in ("endpoints", "ray") if getattr(self, k) is None})


def header_prices(header: RunHeader | None) -> dict[str, Price]:
    """Each role's rates as its run header recorded them (runs before rates were recorded: none)."""
    prices = {}
    for role, described in (header.backends if header else {}).items():
        if isinstance(described.get("price"), dict):
            prices[role] = Price.from_description(described["price"])
    return prices


class Tally:
    """Counts for `summary.json`, added up one conversation at a time (any size of run)."""

    def __init__(self, prices: dict[str, Price] | None = None) -> None:
        self.statuses: Counter = Counter()
        self.failures: Counter = Counter()
        self.prompt = self.completion = self.turns = self.cached = self.cached_prompt = self.turns_hit = 0
        self.cost = 0.0
        self.cost_known = True
        self.prices = prices or {}
        self.costed_roles: set[str] = set()  # roles with a known cost: the split needs their rates
        self.billed: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])  # (role, tier) → p, c, cached
        self.by_turn: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # index → [prompt, cached]
        self.tiers: Counter = Counter()
        self.rejected_tokens = 0
        self.rejected_cost = 0.0

    def add(self, conv: AssembledConversation) -> None:
        self.statuses[conv.status] += 1
        if conv.end and conv.end.status == "failed":
            self.failures[conv.end.reason or "unknown"] += 1
            if conv.end.rejected is not None:
                self.add_rejected(conv.end.rejected, conv.end.rejected_cost_usd, conv.end.role or "", "standard")
        for t in conv.turns.values():
            self.add_turn(t)

    def add_rejected(self, u: Usage, cost: float | None, role: str, tier: str) -> None:
        """Replies billed but rejected and re-asked: in the bill (cost, split), not in the turns' tokens."""
        self.rejected_tokens += u.total_tokens
        if cost is None:
            self.cost_known = False
        else:
            self.cost += cost
            self.rejected_cost += cost
            self.costed_roles.add(role)
        billed = self.billed[(role, tier)]
        billed[0] += u.prompt_tokens
        billed[1] += u.completion_tokens
        billed[2] += u.cached_tokens

    def add_turn(self, t: TurnRecord) -> None:
        u = t.usage
        self.turns += 1
        self.prompt += u.prompt_tokens
        self.completion += u.completion_tokens
        self.cached += t.cached
        self.cached_prompt += u.cached_tokens
        self.turns_hit += u.cached_tokens > 0
        at = self.by_turn[t.index]
        at[0] += u.prompt_tokens
        at[1] += u.cached_tokens
        tier = t.tier or "standard"
        self.tiers[tier] += 1
        if t.rejected is not None:
            self.add_rejected(t.rejected, t.rejected_cost_usd, t.role, tier)
        if t.cost_usd is None:
            self.cost_known = False
        else:
            self.cost += t.cost_usd
            self.costed_roles.add(t.role)
        if not t.cached:  # a turn answered from an earlier run's log was not billed
            billed = self.billed[(t.role, tier)]
            billed[0] += u.prompt_tokens
            billed[1] += u.completion_tokens
            billed[2] += u.cached_tokens

    def cost_split(self) -> CostSplitUSD | None:
        """`cost_usd` split by what was billed, from the tokens per role and tier at the header's rates
        (prices are linear, so the sum of the turns' splits is the split of their sums)."""
        if not self.cost_known or any(role not in self.prices for role in self.costed_roles):
            return None
        total = CostSplit()
        for (role, tier), (prompt, completion, cached) in self.billed.items():
            if role in self.prices:
                total = total + self.prices[role].split(prompt, completion, cached, tier)
        return CostSplitUSD(uncached_input=round(total.uncached_input, 6), cached_input=round(total.cached_input, 6),
                            output=round(total.output, 6))

    def cache_counts(self) -> CacheCounts:
        return CacheCounts(
            hit_rate=round(self.cached_prompt / self.prompt, 4) if self.prompt else 0.0, turns_with_hits=self.turns_hit,
            hit_rate_by_turn={i: round(c / p, 4) if p else 0.0 for i, (p, c) in sorted(self.by_turn.items())})

    def summary(self, header: RunHeader | None, duplicates: int, stops: list[str],
                last_t: float | None) -> RunSummary:
        started = header.started_at if header else None
        return RunSummary(
            run_name=header.run_name if header else None, scenario_hash=header.scenario_hash if header else None,
            conversations=sum(self.statuses.values()), done=self.statuses["done"], failed=self.statuses["failed"],
            incomplete=self.statuses["incomplete"], withdrawn=self.statuses["withdrawn"], turns=self.turns,
            cached_turns=self.cached,
            tokens=TokenCounts(prompt=self.prompt, completion=self.completion, total=self.prompt + self.completion,
                               cached_prompt=self.cached_prompt),
            cost_usd=round(self.cost, 6) if self.cost_known else None, cost_usd_known_part=round(self.cost, 6),
            rejected_tokens=self.rejected_tokens,
            rejected_cost_usd=round(self.rejected_cost, 6) if self.cost_known else None,
            rejected_cost_share=(round(self.rejected_cost / self.cost, 4) if self.cost else 0.0)
            if self.cost_known else None,
            cost_split_usd=self.cost_split(),
            cache=self.cache_counts(), turns_by_tier=dict(self.tiers),
            duration_s=round(last_t - started, 3) if (last_t and started) else None,
            failures_by_reason=dict(self.failures), duplicate_turns_dropped=duplicates, stops=stops)


def summarize(assembled: Assembled) -> RunSummary:
    tally = Tally(header_prices(assembled.header))
    for _, conv in assembled.conversations:
        tally.add(conv)
    return tally.summary(assembled.header, assembled.duplicate_turns, assembled.stop_reasons, assembled.last_t)


def _parquet_writer(path: Path) -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise InputError("export --format parquet needs pyarrow: pip install 'culturepark[parquet]'") from exc
    schema = pa.schema([("id", pa.string()), ("status", pa.string()),
                        ("turns", pa.list_(pa.struct([("speaker", pa.string()), ("text", pa.string())]))),
                        ("meta", pa.string()), ("reason", pa.string())])
    return pa, pq.ParquetWriter(path, schema, compression="zstd")


class _ParquetRows:
    """`conversations.parquet`, written a row group at a time: the rows of `conversations.jsonl`,
    with `meta` as a JSON string (its fields differ between kinds of study, a column cannot)."""

    def __init__(self, fh: Any) -> None:
        self.pa, self.writer = _parquet_writer(fh)
        self.rows: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append({**row, "meta": orjson.dumps(row["meta"]).decode(), "reason": row.get("reason")})
        if len(self.rows) >= PARQUET_ROWS_PER_GROUP:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.writer.write_table(self.pa.Table.from_pylist(self.rows, schema=self.writer.schema))
            self.rows = []

    def close(self) -> None:
        self.flush()
        self.writer.close()


def export_run(run_dir: Path, fmt: str = "jsonl") -> RunSummary:
    """Write conversations.jsonl (or `.parquet`) and summary.json for a (possibly partial) run of
    any size, in bounded memory; return the summary. The temporary buckets go to the system's temporary
    directory (`TMPDIR`), about the size of the log."""
    run_dir = Path(run_dir)
    tally: Tally | None = None
    name = PARQUET_NAME if fmt == "parquet" else CONVERSATIONS_NAME
    with ordered_conversations(run_dir) as run, atomic_writer(run_dir / name) as out:
        parquet = _ParquetRows(out) if fmt == "parquet" else None
        tally = Tally(header_prices(run.header))
        for conv_id, conv in run.conversations():
            row = _row(conv_id, conv)
            if parquet is None:
                out.write(orjson.dumps(row) + b"\n")
            else:
                parquet.add(row)
            tally.add(conv)
        if parquet is not None:
            parquet.close()
    assert tally is not None
    summary = tally.summary(run.header, run.duplicate_turns, run.stop_reasons, run.last_t)
    atomic_write(run_dir / SUMMARY_NAME, orjson.dumps(summary.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
    return summary
