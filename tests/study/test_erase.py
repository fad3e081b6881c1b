"""`culturepark study erase`: the participant gone from the run, everyone else untouched (issue 35, finding 10)."""
import asyncio
import subprocess

import orjson
import pytest
import yaml

from culturepark.engine.log import read_log
from tests.conftest import run_cli, write_hofstede
from tests.study.test_server import Server, browser, study, take_part


@pytest.fixture
def run_setup(tmp_path, tiny_data, sim_process):
    write_hofstede(tiny_data)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study(sim_process("--seed", "2"))))
    return path, tmp_path / "run", tiny_data


def _files(run_dir):
    return {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def test_erase_removes_one_of_three_participants_everywhere_and_leaves_the_others_byte_identical(run_setup):
    scenario, out, data_dir = run_setup
    server = Server(scenario, out, data_dir)
    try:
        async def three():
            async with browser() as a, browser() as b, browser() as c:
                return [await take_part(s, server.url) for s in (a, b, c)]
        paths = asyncio.run(three())
        ids = [p.rsplit("/", 1)[1] for p in paths]
        busy = run_cli("study", "erase", str(out), "--participant", ids[1])  # the server still runs: refused
        assert busy.returncode != 0 and "in use" in busy.stderr
    finally:
        server.stop()
    done = run_cli("eval", "education", str(out), "--data-dir", str(data_dir), "--json")
    assert done.returncode == 0, done.stderr
    gone = ids[1]
    before = (out / "log.jsonl").read_bytes().splitlines(keepends=True)
    assert gone.encode() in (out / "education.json").read_bytes()

    done = run_cli("study", "erase", str(out), "--participant", gone)
    assert done.returncode == 0, done.stderr
    after = (out / "log.jsonl").read_bytes().splitlines(keepends=True)
    assert after == [line for line in before if gone.encode() not in line]  # everything else byte for byte
    assert len(before) - len(after) == 1 + 57 + 1  # participant record, 57 turns, end
    grep = subprocess.run(["grep", "-r", "-l", gone, str(out)], capture_output=True, text=True)
    assert grep.returncode == 1 and grep.stdout == "", grep.stdout  # nowhere in the run directory
    audit = (out / "erasures.jsonl").read_text().splitlines()
    assert len(audit) == 1 and orjson.loads(audit[0])["records_removed"] == 59 and "p-" not in audit[0]
    result = orjson.loads((out / "education.json").read_bytes())  # made again from the new log
    assert result["learners_scored"] == 2 and {r["id"] for r in result["per_learner"]} == {ids[0], ids[2]}
    assert "made" in done.stdout and "education.json" in done.stdout
    assert {r.conversation_id for r in read_log(out).records if r.type == "participant"} == {ids[0], ids[2]}

    again = run_cli("study", "erase", str(out), "--participant", gone)
    assert again.returncode == 2 and "no records of participant" in again.stderr
    unchanged = _files(out)
    bad = run_cli("study", "erase", str(out), "--participant", "../../etc")
    assert bad.returncode == 2 and _files(out) == unchanged

    server = Server(scenario, out, data_dir)  # the study continues after an erasure
    try:
        async def admin():
            async with browser() as s, s.get(server.admin, headers=server.auth) as r:
                return await r.text()
        assert "2 participants" in asyncio.run(admin())
    finally:
        server.stop()
