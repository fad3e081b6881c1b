"""Logs with the conversation meta shapes written before `agents/meta.py` (a v0.1 run, an
education study) still resume and export byte for byte what the code before it wrote.

The expected files under tests/fixtures/meta-shapes/expected were written by `produce` below
with the code as it stood before conversation meta became a model (see that folder's README):
every reader of meta touched by that change is on this path — replay, the run and study
exports, a study resumed from a cut log (the learner policy's `walk`), refinement's opinions
and both SFT formats (prompts built from the stance, de-duplication keyed by culture and item,
the paper format's item rebuilt from meta).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson

from culturepark.commands.logs import replay
from culturepark.engine.export import export_run
from culturepark.runs.in_process import run_async
from culturepark.runs.prepare import RunOptions
from culturepark.trainers.refine.config import RefineConfig
from culturepark.trainers.refine.pipeline import refine_async

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
V01_RUN = FIXTURES / "v0.1-run"
SHAPES = FIXTURES / "meta-shapes"
EXPECTED = SHAPES / "expected"

# The refiner's replies, one path each (as in tests/trainers/test_refine.py, smaller).
REFINE_SCRIPT = [
    {"pattern": r"List every distinct opinion that (\w+)",
     "reply": "- \\1: I think making my parents proud matters because they gave me so much.\n"
              "- I believe making my parents proud matters since they gave me so much.\n"
              "- Science is making our lives worse and more dangerous every year.\n"
              "- The weather in my city is often rainy in the spring months."},
    {"pattern": r"Rewrite it so that it agrees", "reply": "I think science and technology make our lives better."},
    {"pattern": r"Opinion: Science is making", "reply": "Contradict."},
    {"pattern": r"Opinion: The weather", "reply": "irrelevant"},
    {"pattern": r"Opinion: ", "reply": "Entail."},
]
STUDY_SCRIPT = [
    {"pattern": "How much do you agree", "reply": "4"},
    {"pattern": "Answer as a typical person", "reply": "3"},
]
STUDY_CUT_TURNS = 3  # turns of the last learner left out of the study log: resume asks for them again


def _replay(run_dir: Path) -> bytes:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        replay(argparse.Namespace(run_dir=str(run_dir), id=None, limit=None, json=False))
    return buf.getvalue().encode()


def _cut_study_log(full: bytes) -> bytes:
    """The study log without the last learner's end record and its last `STUDY_CUT_TURNS` turns."""
    lines = full.splitlines(keepends=True)
    last = orjson.loads(lines[-1])
    assert last["type"] == "end"
    cid = last["conversation_id"]
    own = [i for i, line in enumerate(lines) if orjson.loads(line).get("conversation_id") == cid]
    drop = set(own[-(STUDY_CUT_TURNS + 1):])
    return b"".join(line for i, line in enumerate(lines) if i not in drop)


async def _refine(source: Path, out: Path, url: str, fmt: str) -> dict[str, bytes]:
    config = RefineConfig.model_validate({
        "backend": {"provider": "openai", "model": "refiner", "base_url": url, "api_key_env": None},
        "concurrency": 1, "dedup": {"embeddings": "openai", "embeddings_base_url": url,
                                    "embeddings_api_key_env": None},
        "export": {"format": fmt}})
    result = await refine_async(source, out, config)
    assert result.exit_code == 0, result.summary
    files = {f"refine-{fmt}/{name}": (out / name).read_bytes()
             for name in ("opinions.jsonl", "sft/openai_chat.jsonl", "sft/text.jsonl")}
    files[f"refine-{fmt}/requests.txt"] = _request_hashes(out / "log.jsonl")
    return files


def _request_hashes(log: Path) -> bytes:
    """What each call asked (its request's hash), so a prompt built from meta that changed shows."""
    turns = [orjson.loads(line) for line in log.read_bytes().splitlines()[1:]]
    rows = sorted(f"{t['conversation_id']} {t['index']} {t['request_hash']}\n" for t in turns if t["type"] == "turn")
    return "".join(rows).encode()


async def produce(work: Path, sim: Callable[..., Awaitable[str]], data_dir: Path) -> dict[str, bytes]:
    """Every export of the fixture logs whose bytes depend on how meta is read, by file name."""
    run = work / "v0.1-run"
    shutil.copytree(V01_RUN, run)
    (run / "expected_conversations.jsonl").unlink()
    files = {"replay-v0.1.txt": _replay(run)}
    export_run(run)
    files["v0.1-conversations.jsonl"] = (run / "conversations.jsonl").read_bytes()
    refiner = await sim(script=REFINE_SCRIPT)
    for fmt in ("open", "paper"):
        files.update(await _refine(run, work / f"refined-{fmt}", refiner, fmt))

    study = work / "study"
    study.mkdir()
    full = (SHAPES / "study" / "log.jsonl").read_bytes()
    (study / "log.jsonl").write_bytes(full)
    files["replay-study.txt"] = _replay(study)
    export_run(study)
    files["study-conversations.jsonl"] = (study / "conversations.jsonl").read_bytes()
    (study / "log.jsonl").write_bytes(_cut_study_log(full))
    (study / "conversations.jsonl").unlink()
    url = await sim(script=STUDY_SCRIPT)
    result = await run_async(SHAPES / "study" / "scenario.yaml",
                             RunOptions(out=study, resume=True, base_url=url, data_dir=data_dir))
    assert result.exit_code == 0
    assert result.summary.endpoints and sum(e.requests for e in result.summary.endpoints) == STUDY_CUT_TURNS
    files["study-resumed-conversations.jsonl"] = (study / "conversations.jsonl").read_bytes()
    files["study-resumed-requests.txt"] = _request_hashes(study / "log.jsonl")
    return files


async def test_old_meta_shapes_resume_and_export_what_the_code_before_the_meta_model_wrote(sim, tmp_path, tiny_data):
    files = await produce(tmp_path, sim, tiny_data)
    expected = sorted(p.relative_to(EXPECTED).as_posix() for p in EXPECTED.rglob("*") if p.is_file())
    assert sorted(files) == expected
    for name, data in files.items():
        assert data == (EXPECTED / name).read_bytes(), name
