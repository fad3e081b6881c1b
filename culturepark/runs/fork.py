"""`run --fork RUN_DIR --at K [--set PATH=VALUE …]`: a counterfactual continuation of a finished run.

The new run's conversations begin with the first K turns of the source run's and continue under
a changed scenario (another model, stance policy, main contact, moderator script). It is made
with the engine's own resume: the new log gets a header (recording the source, K and the
changes) and copies of the first K turns of each source conversation (marked `cached`, cost 0:
they were paid for in the source run), and the run is then resumed from there, so every turn
policy continues exactly as it would after a crash. Conversations the source has fewer than K
turns of start afresh.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from culturepark.engine.assembly import assemble
from culturepark.engine.errors import InputError
from culturepark.engine.log import LOG_NAME, read_header
from culturepark.engine.records import TurnRecord
from culturepark.engine.rundir import RunDir
from culturepark.runs.prepare import RunOptions, prepare, run_header
from culturepark.scenarios.endpoints import make_endpoints
from culturepark.scenarios.loader import parse_scenario
from culturepark.scenarios.schema import AnyScenario


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


def fork(source: Path, at: int, sets: list[str], opts: RunOptions) -> tuple[AnyScenario, RunOptions]:
    """Write the fork's run directory (header + the first `at` turns) and return the scenario and
    options that resume it. Checks everything before writing; writes nothing on bad input."""
    header = read_header(source / LOG_NAME) if (source / LOG_NAME).exists() else None
    if header is None or header.scenario is None:
        raise InputError(f"--fork {source}: not a run directory (no run header in {source / LOG_NAME})")
    data = dict(header.scenario)
    changes = apply_sets(data, sets)
    scenario = parse_scenario(data, f"--fork {source} with --set")
    if opts.out is None:
        raise InputError("--fork needs --out (the new run's directory)")
    if opts.data_dir is None and header.data_dir:
        opts = replace(opts, data_dir=Path(header.data_dir))
    prepared = prepare(scenario, replace(opts, resume=False))
    scenario = prepared.scenario
    source_turns = {cid: conv.ordered_turns()[:at] for cid, conv in assemble(source).conversations}
    details = {"fork": {"source": str(source), "source_hash": header.scenario_hash, "at": at, "set": changes}}
    endpoints = make_endpoints(prepared.experiment.backends(), scenario.limits, scenario.retry, scenario.seed)
    with RunDir(prepared.out, False, scenario.content_hash()) as rundir:
        log = rundir.start(run_header(prepared, endpoints, opts.limit, details=details))
        try:
            for spec in prepared.plan.conversations():
                turns = source_turns.get(spec.id, [])
                if len(turns) < at:
                    continue
                for t in turns:
                    log.append(TurnRecord(conversation_id=spec.id, seq=spec.seq, index=t.index, speaker=t.speaker,
                                          role=t.role, text=t.text, usage=t.usage, cost_usd=0.0, cached=True,
                                          request_hash=t.request_hash, finish_reason=t.finish_reason,
                                          t=time.time()))
        finally:
            log.close()
    return scenario, replace(opts, resume=True)
