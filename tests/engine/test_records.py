"""The log's typed records: written and read as the same types; logs of culturepark 0.1 still
read, resume and export (tests/fixtures/v0.1-run was written by that version)."""
from __future__ import annotations

import shutil
from pathlib import Path

import orjson

from culturepark.engine.export import assemble
from culturepark.engine.log import read_log
from culturepark.engine.records import EndRecord, RunHeader, TurnRecord
from culturepark.runs.in_process import run_async
from culturepark.runs.prepare import RunOptions

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "v0.1-run"


def test_a_v0_1_log_reads_as_typed_records():
    contents = read_log(FIXTURE / "log.jsonl")
    assert contents.header is not None and contents.header.stage == "run"
    assert contents.header.run_name == "fixture-v1" and contents.header.scenario_hash == "0544e9d82440ceb6"
    turns = [r for r in contents.records if isinstance(r, TurnRecord)]
    ends = [r for r in contents.records if isinstance(r, EndRecord)]
    assert len(turns) == 11 and len(ends) == 2 and all(t.usage.prompt_tokens > 0 for t in turns)
    cut = dict(assemble(FIXTURE).conversations)["Chinese:Q158:0"]
    assert cut.status == "incomplete" and sorted(cut.turns) == [0, 1, 2]


async def test_a_v0_1_log_resumes_and_exports_what_that_version_exported(sim, tmp_path, tiny_data):
    url = await sim(latency_ms=1)  # the fixture was written against the sim server's defaults
    out = tmp_path / "run"
    shutil.copytree(FIXTURE, out)
    (out / "expected_conversations.jsonl").unlink()
    result = await run_async(FIXTURE / "scenario.yaml", RunOptions(out=out, resume=True, base_url=url,
                                                                   data_dir=tiny_data, limit=3))
    assert result.exit_code == 0 and result.summary.done == 3 and result.summary.turns == 12
    assert result.summary.endpoints[0].requests == 1  # only the missing last turn was asked for
    expected = (FIXTURE / "expected_conversations.jsonl").read_bytes()
    assert (out / "conversations.jsonl").read_bytes() == expected


def test_legacy_header_shapes_are_sorted_into_one_header():
    run = RunHeader.model_validate({"type": "run", "format": 1, "run_name": "r", "scenario": {"kind": "culturepark"},
                                    "scenario_hash": "h", "seed": 1, "started_at": 2.0, "planned_conversations": 8})
    study = RunHeader.model_validate({"type": "run", "run_name": "s", "scenario": {}, "learners": "human"})
    evaluation = RunHeader.model_validate({"type": "run", "format": 1, "task": "hofstede", "cultures": ["Chinese"],
                                           "seeds": 3, "model_spec": "openai:m", "backend": {"kind": "openai"},
                                           "prompts_hash": "p", "started_at": 1.0, "scenario_hash": "e"})
    refine = RunHeader.model_validate({"type": "run", "format": 1, "stage": "refine", "source": "runs/a",
                                       "source_hash": "s", "config": {}, "backends": {}, "started_at": 1.0})
    assert (run.stage, run.planned_conversations, run.details) == ("run", 8, {})
    assert study.stage == "study" and study.learners == "human"
    assert evaluation.stage == "eval" and evaluation.backends == {"model": {"kind": "openai"}}
    assert evaluation.details == {"task": "hofstede", "cultures": ["Chinese"], "seeds": 3, "model_spec": "openai:m",
                                  "prompts_hash": "p"}
    assert refine.stage == "refine" and refine.details["source"] == "runs/a"
    again = RunHeader.model_validate(orjson.loads(orjson.dumps(evaluation.model_dump(mode="json"))))
    assert again == evaluation  # a header written today reads back unchanged
