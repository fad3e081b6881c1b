"""`run --ray`: a local Ray instance, the sim server as provider, shards, a killed worker, resume."""
import asyncio
import os
import subprocess
import sys

import orjson
import pytest
import yaml

from culturepark.engine.log import read_log, shard_paths
from culturepark.runs.in_process import run_async
from culturepark.runs.on_ray import (
    CHUNK,
    RayOptions,
    ShardWalk,
    _Progress,
    run_ray_async,
    shard_of,
    split_limits,
)
from culturepark.runs.prepare import RunOptions
from culturepark.scenarios.schema import Limits
from tests.conftest import run_cli, scenario_dict

ray = pytest.importorskip("ray")
# One Ray cluster at a time: parallel test workers run these tests on one worker (--dist loadgroup).
pytestmark = pytest.mark.xdist_group("ray")


def test_progress_adds_up_the_workers_rejected_cost_so_the_line_shows_its_share():
    from culturepark.console import rejected_share

    progress = _Progress()
    progress.update([{"done": 1, "failed": 0, "turns": 4, "tokens": 100, "cost_usd": 0.30, "rejected_cost_usd": 0.06},
                     {"done": 2, "failed": 0, "turns": 8, "tokens": 200, "cost_usd": 0.10, "rejected_cost_usd": 0.04},
                     {"done": 0, "failed": 0, "turns": 0, "tokens": 0, "cost_usd": 0.0}])  # a worker from before
    assert progress.stats.rejected_cost_usd == pytest.approx(0.10) and progress.stats.cost_usd == pytest.approx(0.40)
    assert rejected_share(progress.stats) == "rejected $0.1000 (25%)  "


def test_shards_are_a_stable_hash_of_the_conversation_id():
    # blake2b, not Python's per-process salted hash: pinned values, and the same in a process whose
    # string hashes are salted differently
    assert [shard_of(f"Chinese:Q27:{k}", 3) for k in range(6)] == [2, 2, 2, 2, 2, 0]
    code = "from culturepark.runs.on_ray import shard_of; print([shard_of(f'Chinese:Q27:{k}', 3) for k in range(6)])"
    for seed in ("1", "2"):
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                               env={**os.environ, "PYTHONHASHSEED": seed})
        assert other.stdout.strip() == "[2, 2, 2, 2, 2, 0]", other.stderr
    ids = [f"C{c}:Q{q}:{k}" for c in range(4) for q in range(25) for k in range(4)]
    counts = [sum(shard_of(i, 4) == w for i in ids) for w in range(4)]
    assert sum(counts) == 400 and min(counts) > 60  # spread over every worker
    assert split_limits(Limits(rpm=1200, tpm=90_000), 3).model_dump(include={"rpm", "tpm"}) == \
        {"rpm": 400, "tpm": 30_000}


def test_shard_walks_cover_the_pending_plan_once_in_chunks_without_making_other_shards_specs(tiny_data):
    """The driver's stream: every pending spec of the (limited) plan reaches exactly one shard,
    in seq order, in chunks of at most CHUNK; a shard's walk draws no stance for others' ids."""
    from culturepark.agents.protocol import build_plan
    from culturepark.engine.records import EndRecord
    from culturepark.engine.resume import ResumeState
    from culturepark.scenarios.loader import parse_scenario

    plan = build_plan(parse_scenario(scenario_dict(conversations_per_item=300)), tiny_data)
    every = list(plan.conversations())
    limit = len(every) - 7
    ended = [EndRecord(c.id, c.seq, "done" if c.seq % 3 else "failed") for c in every[:200:2]]
    state = ResumeState.from_records(ended)
    made = []
    original = type(plan)._meta
    type(plan)._meta = lambda self, culture, item, stance: made.append(1) or original(self, culture, item, stance)
    try:
        walk = ShardWalk(plan, state, workers=3, limit=limit, retry_failed=True)
        shards = {k: list(walk.chunks(k)) for k in range(3)}
    finally:
        type(plan)._meta = original
    got = [spec for k in range(3) for chunk in shards[k] for spec in chunk]
    wanted = [c for c in every[:limit] if state.status(c.id) != "done"]  # failed ones are retried
    assert sorted(s.seq for s in got) == [c.seq for c in wanted]
    assert len(got) <= len(made) <= len(got) + 3  # each walk makes at most one spec past the limit
    assert all(len(chunk) <= CHUNK for k in range(3) for chunk in shards[k])
    assert all(shard_of(spec.id, 3) == k for k in range(3) for chunk in shards[k] for spec in chunk)
    by_id = {c.id: c for c in every}
    assert all(spec == by_id[spec.id] for spec in got)  # the very specs a single process makes


@pytest.mark.slow  # a whole stage end to end: CI only, not the fast lane
def test_ray_runs_match_a_single_process_run_keep_the_budget_and_survive_a_killed_worker(tmp_path, tiny_data):
    from culturepark.benchmarks.perf.ray_workers import compare

    rows = compare(tmp_path, tiny_data, workers=2, per_item=3, rpm=1200, latency_ms=30, kill=True)
    single, together, killed = rows
    assert single["turns"] == 108 and single["server_429"] == 0
    for row in (together, killed):
        assert row["identical"] and row["lost_turns"] == 0 and row["duplicate_turns"] == 0
        assert row["server_429_pct"] <= 0.5  # the split budget stayed within the provider's limit
    assert killed["kill"] == "killed" and killed["restarts"] == 1
    assert together["restarts"] == 0
    run_dir = tmp_path / "ray-2-kill-worker"
    workers = orjson.loads((run_dir / "workers.json").read_bytes())
    assert workers["0"]["restarts"] == 1 and len(shard_paths(run_dir)) == 3  # the replacement wrote a new shard


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=3, include_dashboard=False, object_store_memory=80 * 1024**2, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow  # a whole stage end to end: CI only, not the fast lane
def test_resume_with_another_worker_count_and_without_ray_gives_each_conversation_once(
        tmp_path, tiny_data, sim_process, local_ray):
    url = sim_process("--seed", "5")
    spec = scenario_dict(conversations_per_item=3, limits={"rpm": 6000})
    spec["backend"]["base_url"] = url
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    reference = tmp_path / "single"
    asyncio.run(run_async(path, RunOptions(out=reference, data_dir=tiny_data)))

    out = tmp_path / "sharded"
    first = asyncio.run(run_ray_async(path, RunOptions(out=out, data_dir=tiny_data, limit=5),
                                      RayOptions(workers=3)))
    assert first.summary.done == 5
    after_first = len(shard_paths(out))
    second = asyncio.run(run_ray_async(path, RunOptions(out=out, data_dir=tiny_data, limit=9, resume=True),
                                       RayOptions(workers=2)))
    assert second.summary.done == 9
    assert len(shard_paths(out)) > after_first  # the resumed workers wrote new shards beside the old ones
    last = run_cli("run", str(path), "--out", str(out), "--data-dir", str(tiny_data), "--resume", "--json")
    assert last.returncode == 0, last.stderr
    summary = orjson.loads(last.stdout)
    assert summary["done"] == 12 and summary["duplicate_turns_dropped"] == 0
    assert (out / "conversations.jsonl").read_bytes() == (reference / "conversations.jsonl").read_bytes()
    replay = run_cli("replay", str(out), "--json")
    assert replay.returncode == 0 and len(replay.stdout.splitlines()) == 12


def test_without_ray_installed_the_flag_gives_an_install_hint_and_writes_nothing(tmp_path, tiny_data,
                                                                                  monkeypatch, capsys):
    from culturepark.cli import main

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(scenario_dict()))
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    code = main(["run", str(path), "--out", str(tmp_path / "out"), "--data-dir", str(tiny_data), "--ray"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'culturepark[ray]'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    monkeypatch.undo()
    with pytest.raises(SystemExit) as parsed:  # refused while parsing the flags
        main(["run", str(path), "--out", str(tmp_path / "out"), "--data-dir", str(tiny_data), "--ray", "--workers", "0"])
    assert parsed.value.code == 2 and "--workers: must be > 0" in capsys.readouterr().err


@pytest.mark.slow  # a whole stage end to end: CI only, not the fast lane
def test_the_dollar_budget_is_split_over_workers_not_multiplied(tmp_path, tiny_data, sim_process, local_ray):
    url = sim_process("--seed", "6")
    spec = scenario_dict(conversations_per_item=3, budget_usd=2.0, concurrency=2)  # one in flight per worker
    spec["backend"].update(base_url=url, price={"input_per_1m": 1000.0, "output_per_1m": 0.0})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = asyncio.run(run_ray_async(path, RunOptions(out=tmp_path / "r", data_dir=tiny_data),
                                       RayOptions(workers=2)))
    turns = [r for r in read_log(tmp_path / "r").records if r.type == "turn"]
    dearest = max(t.cost_usd for t in turns)
    # each worker stops once its half is spent, finishing its one in-flight turn (an unsplit
    # budget would let each worker spend 2.0, i.e. 4.0 or more in all)
    assert 2.0 <= result.summary.cost_usd <= 2.0 + 2 * dearest < 4.0
    assert result.summary.stops == ["budget_reached", "budget_reached"] and result.exit_code == 1


@pytest.mark.slow  # a whole stage end to end: CI only, not the fast lane
def test_bench_scale_runs_every_phase_and_the_ray_export_equals_the_single_process_one(tmp_path, tiny_data):
    r = run_cli("bench", "scale", "--conversations", "300", "--ray-workers", "2", "--data-dir", str(tiny_data),
                "--work", str(tmp_path), timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [orjson.loads(line) for line in r.stdout.splitlines()]
    phases = [row["phase"] for row in rows]
    assert phases[0].startswith("run") and phases[-2] == "export" and phases[-1].startswith("ray run")
    assert rows[-2]["rc"] == 0 and rows[-1]["rc"] == 0 and rows[-1]["export_identical"] is True
    assert all(row["conversations"] >= 300 and row["turns"] == 2 * row["conversations"] for row in rows)
    assert all(row["peak_rss_mb"] > 0 and row["log_bytes_per_turn"] > 0 for row in rows)
