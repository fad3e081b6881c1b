"""From a log to `conversations.jsonl` (or `.parquet`) and `summary.json`, both written atomically.

The export's own job is the files: the rows a conversation becomes, the Parquet writer, and one
streaming pass that writes the rows and feeds the summary's tally. Reading the log into ordered
conversations is `engine.assembly`'s job, the counts are `engine.summary`'s, atomic writes are
`engine.files`'. An uninterrupted run and a resumed one export identical bytes.

The readers' and the summary's public names are importable from here as well, where callers
have always found them.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from culturepark.engine.assembly import (
    Assembled,
    AssembledConversation,
    OrderedRun,
    assemble,
    one_conversation,
    ordered_conversations,
)
from culturepark.engine.errors import InputError
from culturepark.engine.files import atomic_write, atomic_writer
from culturepark.engine.summary import (
    SUMMARY_NAME,
    CacheCounts,
    CostSplitUSD,
    EndpointCounts,
    RunSummary,
    Tally,
    TokenCounts,
    header_prices,
    summarize,
)

CONVERSATIONS_NAME = "conversations.jsonl"
PARQUET_NAME = "conversations.parquet"
PARQUET_ROWS_PER_GROUP = 10_000


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


def previous_learned_limits(run_dir: Path) -> dict[str, dict[str, float]]:
    """The learned limits an earlier summary.json recorded (none if it is missing or unreadable)."""
    try:
        learned = orjson.loads((run_dir / SUMMARY_NAME).read_bytes()).get("learned_limits")
        return {str(m): {str(k): float(v) for k, v in limits.items()} for m, limits in learned.items()}
    except (OSError, orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return {}


def export_run(run_dir: Path, fmt: str = "jsonl", learned: dict[str, dict[str, float]] | None = None) -> RunSummary:
    """Write conversations.jsonl (or `.parquet`) and summary.json for a (possibly partial) run of
    any size, in bounded memory; return the summary. The temporary buckets go to the system's temporary
    directory (`TMPDIR`), about the size of the log. `learned`: the limits the run's process learned
    from the provider's headers; the log does not hold them, so those of an earlier summary.json are
    kept (a re-export, or a resumed session that learned nothing new)."""
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
    summary.learned_limits = {**previous_learned_limits(run_dir), **(learned or {})}
    atomic_write(run_dir / SUMMARY_NAME, orjson.dumps(summary.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
    return summary


__all__ = ["CONVERSATIONS_NAME", "PARQUET_NAME", "SUMMARY_NAME", "Assembled", "AssembledConversation", "CacheCounts",
           "CostSplitUSD", "EndpointCounts", "OrderedRun", "RunSummary", "Tally", "TokenCounts", "assemble",
           "conversation_rows", "export_run", "header_prices", "one_conversation", "ordered_conversations",
           "summarize"]
