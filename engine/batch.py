"""Independent single requests (evaluation items, refinement calls) as one-turn conversations,
so they get the scheduler's concurrency, limits, retries, log, resume and cache for free."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from culturepark.engine.assembly import assemble
from culturepark.engine.backends.base import Request
from culturepark.engine.endpoint import Endpoint, Validator
from culturepark.engine.log import RunLog
from culturepark.engine.resume import ResumeState
from culturepark.engine.scheduler import ConversationSpec, RunStats, Scheduler, SchedulerConfig, TurnRequest
from culturepark.engine.turns import Turn


@dataclass(slots=True)
class BatchItem:
    id: str
    request: Request
    validate: Validator | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class BatchResult:
    text: str | None  # None when every attempt failed
    reason: str | None = None
    label_probs: dict[str, float] | None = None  # asked for and given (`Request.label_probs`)


class _OneTurn:
    def __init__(self, items: dict[str, BatchItem], role: str) -> None:
        self.items = items
        self.role = role

    def next_turn(self, conv: ConversationSpec, turns: Sequence[Turn]) -> TurnRequest | None:
        if turns:
            return None
        item = self.items[conv.id]
        return TurnRequest("model", self.role, item.request, item.validate)


async def run_batch(items: Iterable[BatchItem], endpoint: Endpoint, log: RunLog,
                    resume: ResumeState | None = None, concurrency: int = 32,
                    retry_failed: bool = False) -> RunStats:
    by_id = {it.id: it for it in items}
    specs = (ConversationSpec(it.id, i, it.meta) for i, it in enumerate(by_id.values()))
    scheduler = Scheduler(_OneTurn(by_id, "model"), {"model": endpoint}, log,
                          SchedulerConfig(concurrency=concurrency))
    return await scheduler.run(specs, resume, retry_failed)


def batch_results(run_dir: Path) -> dict[str, BatchResult]:
    out: dict[str, BatchResult] = {}
    for conv_id, conv in assemble(run_dir).conversations:
        if conv.status == "done" and 0 in conv.turns:
            out[conv_id] = BatchResult(conv.turns[0].text, label_probs=conv.turns[0].label_probs)
        else:
            out[conv_id] = BatchResult(None, (conv.end.reason if conv.end else None) or "incomplete")
    return out


__all__ = ["BatchItem", "BatchResult", "batch_results", "run_batch"]
