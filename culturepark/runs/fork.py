"""`run --fork RUN_DIR --at K [--set PATH=VALUE …]`: a counterfactual continuation of a finished run.

The new run's conversations begin with the first K turns of the source run's and continue under
a changed scenario (another model, stance policy, main contact, moderator script). It is one run
session (`runs.session`, as `run`'s) that uses the engine's own resume: the new log gets a header
(recording the source, K and the changes) and copies of the first K turns of each source
conversation (marked `cached`, cost 0: they were paid for in the source run), and the scheduler
continues from there, so every turn policy continues exactly as it would after a crash.
Conversations the source has fewer than K turns of start afresh. A fork holds exactly its
source's conversations (those in the source's log): a fork of a `--limit 6` run runs 6.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from culturepark.engine.assembly import assemble
from culturepark.engine.errors import InputError
from culturepark.engine.log import LOG_NAME, read_header
from culturepark.engine.records import TurnRecord
from culturepark.engine.resume import ResumeState
from culturepark.engine.scheduler import ConversationSpec
from culturepark.runs.prepare import Prepared, RunOptions, prepare
from culturepark.runs.session import RunSession
from culturepark.scenarios.loader import parse_scenario, scenario_of


def apply_sets(data: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """`PATH=VALUE` (dotted path, YAML value) into the scenario dict; validated afterwards like a file."""
    changes: dict[str, Any] = {}
    for item in sets:
        path, eq, raw = item.partition("=")
        if not eq or not path:
            raise InputError(f"--set {item!r}: expected PATH=VALUE, e.g. main_contact=German")
        value = yaml.safe_load(raw) if raw else ""
        node = data
        *parents, last = path.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[last] = value
        changes[path] = value
    return changes


@dataclass
class Fork:
    """A run to make from a source run's conversations: `run_async` runs it in one session.

    `ids` are the source's conversations (those in its log): the fork holds these and no others
    of its plan, whatever the plan's size."""

    prepared: Prepared
    at: int
    details: dict[str, Any]
    source_turns: dict[str, list[TurnRecord]]  # each source conversation's first `at` turns

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(self.source_turns)

    def carry_into(self, session: RunSession, conversations: Iterable[ConversationSpec]) -> None:
        """Copy the first `at` turns of each conversation the source has them for into the new log
        (marked `cached`, cost 0); the session then resumes from them as after a crash."""
        assert session.log is not None
        copied = []
        for spec in conversations:
            turns = self.source_turns.get(spec.id, [])
            if len(turns) < self.at:
                continue
            for t in turns:
                rec = TurnRecord(conversation_id=spec.id, seq=spec.seq, index=t.index, speaker=t.speaker,
                                 role=t.role, text=t.text, usage=t.usage, cost_usd=0.0, cached=True,
                                 request_hash=t.request_hash, finish_reason=t.finish_reason, t=time.time())
                session.log.append(rec)
                copied.append(rec)
        session.resume_state = ResumeState.from_records(copied)


def fork(source: Path, at: int, sets: list[str], opts: RunOptions) -> tuple[Fork, RunOptions]:
    """The fork of `source` and the options that run it (`run_async(fork, opts)`). Checks
    everything and writes nothing: the run's session writes the header and the copied turns."""
    header = read_header(source / LOG_NAME) if (source / LOG_NAME).exists() else None
    recorded = scenario_of(header, str(source / LOG_NAME))
    if header is None or recorded is None:
        raise InputError(f"--fork {source}: not a run directory (no run header in {source / LOG_NAME})")
    data = recorded.model_dump(mode="json")
    changes = apply_sets(data, sets)
    scenario = parse_scenario(data, f"--fork {source} with --set")
    if opts.out is None:
        raise InputError("--fork needs --out (the new run's directory)")
    if opts.data_dir is None and header.data_dir:
        opts = replace(opts, data_dir=Path(header.data_dir))
    opts = replace(opts, resume=False)
    prepared = prepare(scenario, opts)
    source_turns = {cid: conv.ordered_turns()[:at] for cid, conv in assemble(source).conversations}
    details = {"fork": {"source": str(source), "source_hash": header.scenario_hash, "at": at, "set": changes}}
    return Fork(prepared, at, details, source_turns), opts


def resumed_fork_ids(out: Path) -> frozenset[str] | None:
    """A fork continued with `--resume` holds its source's conversations again: their ids, read
    from the source run its header names (None when `out` holds no fork)."""
    header = read_header(out / LOG_NAME) if (out / LOG_NAME).exists() else None
    made = header.details.get("fork") if header else None
    if not made:
        return None
    source = Path(made["source"])
    if not (source / LOG_NAME).exists():
        raise InputError(f"--resume: {out} is a fork of {source}, which has no {LOG_NAME} "
                         "(a fork holds its source's conversations only)")
    return frozenset(cid for cid, _ in assemble(source).conversations)
