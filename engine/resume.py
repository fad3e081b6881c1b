"""What resuming a run needs from its log, and which conversations it still has to hold.

Read once when a run directory (or a Ray shard) is continued: which conversations ended, and
how (`EndedIds`, 16 bytes an id), and the turns of the ones that did not (`ResumeState`). The
scheduler asks `still_to_hold` for each conversation of the plan; a Ray driver asks it too,
while it walks the plan for one shard.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from culturepark.engine.records import EndRecord, Record, TurnRecord
from culturepark.engine.turns import Turn

if TYPE_CHECKING:
    import numpy as np

    from culturepark.engine.scheduler import ConversationSpec


def _digest(conv_id: str) -> bytes:
    return hashlib.blake2b(conv_id.encode(), digest_size=16).digest()


def _as_array(digest: bytes) -> np.ndarray:
    import numpy as np

    return np.frombuffer(digest, dtype="V16")[0]  # type: ignore[no-any-return]


class EndedIds:
    """Which conversations ended, and how, in 16 bytes per id (a 128-bit blake2b digest): 16 MB
    per million conversations where a set of their ids would take ~100 MB.

    Why this shape: the digests are appended to a bytearray while the log is read, then sorted
    *in place* (a numpy view of that same buffer) the first time one is looked up, so the peak is
    the ids themselves — `np.unique` would have copied and arg-sorted them (~5× the ids). Lookups
    are a binary search. A `done` end outranks a `failed` one, whatever order the logs are read in.
    """

    def __init__(self) -> None:
        self._ids: dict[str, bytearray] = {"done": bytearray(), "failed": bytearray()}
        self._views: dict[str, np.ndarray] | None = None  # sorted views of _ids, made on first lookup

    def add(self, conv_id: str, status: str) -> None:
        self._views = None  # drop the views first: a bytearray cannot grow while one is exported
        self._ids["done" if status == "done" else "failed"].extend(_digest(conv_id))

    def _sorted(self) -> dict[str, np.ndarray]:
        import numpy as np  # here, not at the top: a fresh run never looks an id up (~0.1 s of CLI start)

        if self._views is None:
            self._views = {}
            for status, buf in self._ids.items():
                view = np.frombuffer(buf, dtype="V16")
                view.sort()  # in place, in the bytearray: no copy
                self._views[status] = view
        return self._views

    @staticmethod
    def _has(array: np.ndarray, digest: np.ndarray) -> bool:
        i = int(array.searchsorted(digest))
        return i < len(array) and array[i] == digest

    def status(self, conv_id: str) -> str | None:
        views = self._sorted()
        digest = _as_array(_digest(conv_id))
        for status in ("done", "failed"):
            if self._has(views[status], digest):
                return status
        return None

    def __contains__(self, conv_id: object) -> bool:
        return isinstance(conv_id, str) and self.status(conv_id) is not None

    @property
    def nbytes(self) -> int:
        return sum(len(buf) for buf in self._ids.values())

    def __len__(self) -> int:
        """Distinct ended conversations (an id logged done and failed, or twice, counts once)."""
        views = self._sorted()
        done, failed = _distinct(views["done"]), _distinct(views["failed"])
        if len(done) == 0 or len(failed) == 0:
            return len(done) + len(failed)
        import numpy as np

        at = np.minimum(np.searchsorted(done, failed), len(done) - 1)
        both = (done[at].view(np.uint64).reshape(-1, 2) == failed.view(np.uint64).reshape(-1, 2)).all(axis=1)
        return len(done) + len(failed) - int(np.count_nonzero(both))


def _distinct(sorted_ids: np.ndarray) -> np.ndarray:
    """The distinct values of a sorted V16 array (compared as two uint64 halves)."""
    import numpy as np

    if len(sorted_ids) < 2:
        return sorted_ids
    halves = sorted_ids.view(np.uint64).reshape(-1, 2)
    first = np.ones(len(sorted_ids), dtype=bool)
    first[1:] = (halves[1:] != halves[:-1]).any(axis=1)
    return sorted_ids if first.all() else sorted_ids[first]


@dataclass(slots=True)
class ResumeState:
    """What resuming needs, and only that: which conversations ended, and the turns of the others."""

    turns: dict[str, list[Turn]] = field(default_factory=dict)  # conversations not done
    ended: EndedIds = field(default_factory=EndedIds)

    @classmethod
    def from_records(cls, records: Iterable[Record]) -> ResumeState:
        """Turns by index (the contiguous prefix from 0); a `done` end outranks a `failed` one.

        Both rules make the state independent of the order in which several writers' logs are
        read (a failed conversation retried later may be logged in an earlier file). Streaming:
        a done conversation's turns are dropped as soon as its end is read, so memory follows
        the conversations still open, not the run.
        """
        by_index: dict[str, dict[int, Turn]] = {}
        state = cls()
        for rec in records:
            if isinstance(rec, TurnRecord):
                turns = by_index.setdefault(rec.conversation_id, {})
                turns.setdefault(rec.index, Turn(rec.index, rec.speaker, rec.role, rec.text))
            elif isinstance(rec, EndRecord):
                state.ended.add(rec.conversation_id, rec.status)
                if rec.status == "done":
                    by_index.pop(rec.conversation_id, None)
        for conv_id, turns in by_index.items():
            if state.ended.status(conv_id) == "done":
                continue  # its done end was read before these turns (another writer's file)
            prefix = state.turns[conv_id] = []
            while len(prefix) in turns:
                prefix.append(turns[len(prefix)])
        return state

    def status(self, conv_id: str) -> str | None:
        return self.ended.status(conv_id)


def pending_conversations(conversations: Iterable[ConversationSpec], resume: ResumeState | None,
                          retry_failed: bool) -> Iterator[ConversationSpec]:
    """The conversations a (resumed) run still has to hold: not done, and failed only if retried."""
    return (conv for conv in conversations if still_to_hold(conv.id, resume, retry_failed))


def still_to_hold(conv_id: str, resume: ResumeState | None, retry_failed: bool) -> bool:
    status = resume.status(conv_id) if resume else None
    return not (status == "done" or (status == "failed" and not retry_failed))


__all__ = ["EndedIds", "ResumeState", "pending_conversations", "still_to_hold"]
