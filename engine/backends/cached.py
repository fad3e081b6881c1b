"""Answer identical requests from an earlier run's log, without the network."""
from __future__ import annotations

from pathlib import Path

from culturepark.engine.backends.base import Completion
from culturepark.engine.log import read_log
from culturepark.engine.records import TurnRecord, Usage


class ResponseCache:
    """request_hash → completion text, loaded from one or more previous logs."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, str | None, int, int, dict[str, float] | None]] = {}

    @classmethod
    def from_runs(cls, run_dirs: list[Path]) -> ResponseCache:
        cache = cls()
        for run_dir in run_dirs:
            for rec in read_log(Path(run_dir)).records:
                if isinstance(rec, TurnRecord) and rec.request_hash:
                    cache._entries.setdefault(rec.request_hash, (
                        rec.text, rec.finish_reason, rec.usage.prompt_tokens, rec.usage.completion_tokens,
                        rec.label_probs))
        return cache

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, request_hash: str) -> Completion | None:
        hit = self._entries.get(request_hash)
        if hit is None:
            return None
        text, finish, p, c, probs = hit  # answer probabilities too, when the request asked for them
        return Completion(text=text, finish_reason=finish, usage=Usage(p, c), cached=True, label_probs=probs)
