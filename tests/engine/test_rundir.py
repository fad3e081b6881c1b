"""`--resume` is idempotent: wherever nothing was written yet, it starts the run (with a notice);
a directory holding something else, or another scenario's run, still refuses."""
from __future__ import annotations

from pathlib import Path

import pytest

from culturepark.engine.errors import InputError
from culturepark.engine.log import RunLog
from culturepark.engine.records import RunHeader, TurnRecord
from culturepark.engine.rundir import RunDir


def _nothing(out: Path) -> None:
    pass


def _empty_dir(out: Path) -> None:
    out.mkdir()


def _only_lock(out: Path) -> None:
    out.mkdir()
    (out / ".lock").write_text("12345")  # left by a run killed before its log existed


def _empty_log(out: Path) -> None:
    out.mkdir()
    (out / "log.jsonl").write_bytes(b"")  # killed between creating the log and its header


def _torn_header(out: Path) -> None:
    out.mkdir()
    (out / "log.jsonl").write_bytes(b'{"type":"run","run_na')  # killed while writing the header


STARTS = [_nothing, _empty_dir, _only_lock, _empty_log, _torn_header]


@pytest.mark.parametrize("state", STARTS, ids=[f.__name__.strip("_") for f in STARTS])
def test_resume_where_nothing_was_written_starts_the_run(tmp_path, state):
    out = tmp_path / "run"
    state(out)
    said: list[str] = []
    with RunDir(out, resume=True, content_hash="h", say=said.append) as rd:
        assert rd.resume_state is None
        log = rd.start(RunHeader(run_name="r"))
        log.append(TurnRecord("a", 0, 0, "x", "delegate", "hi"))
    assert said and ("starting" in said[-1])
    with RunDir(out, resume=True, content_hash="h") as again:  # the same command again: it continues
        assert again.header is not None and again.header.run_name == "r"
        assert again.resume_state is not None and len(again.resume_state.turns["a"]) == 1


REFUSALS = [  # (what is in the directory, what the one line says)
    (lambda out: (out.mkdir(), (out / "notes.txt").write_text("mine")), "not empty"),
    (lambda out: out.write_text("a file"), "not a directory"),
    (lambda out: (out.mkdir(), RunLog(out / "log.jsonl").open().append(RunHeader(scenario_hash="other"))),
     "different scenario"),
]


@pytest.mark.parametrize("state,message", REFUSALS, ids=["foreign files", "a file", "another scenario"])
def test_resume_still_refuses_what_is_not_this_run(tmp_path, state, message):
    out = tmp_path / "run"
    state(out)
    before = sorted((p.name, p.stat().st_size) for p in ([out] if out.is_file() else out.iterdir()))
    with pytest.raises(InputError, match=message), RunDir(out, resume=True, content_hash="h"):
        pass
    assert sorted((p.name, p.stat().st_size) for p in ([out] if out.is_file() else out.iterdir())) == before
