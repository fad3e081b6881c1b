"""From a run's log (main log and Ray shards) to its conversations, in `seq` order.

Works on a partial log too: a conversation without an end record has status "incomplete".
The rules make the result independent of how the run was written (resumed, sharded, retried):
the first turn logged at an index wins, a `done` end outranks a `failed` one, a withdrawal
hides the turns; ordering is by the conversation's `seq` and the turn `index`.

Two readers, the same rules: `assemble` holds a whole (small) run in memory (an eval, a
refinement's own log, a fork's source); `ordered_conversations` streams a run of any size in
bounded memory: one pass spreads the records over temporary bucket files by `seq` range, then
each bucket is assembled and sorted on its own. A bucket's records keep the order they were read
in, so both readers give the same conversations.
"""
from __future__ import annotations

import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from culturepark.engine.log import LogReader, read_log
from culturepark.engine.records import (
    EndRecord,
    Record,
    RunHeader,
    StopRecord,
    TurnRecord,
    WithdrawalRecord,
    parse_record,
)


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


__all__ = ["BUCKET_SEQS", "Assembled", "AssembledConversation", "OrderedRun", "assemble", "one_conversation",
           "ordered_conversations"]
