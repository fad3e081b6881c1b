"""A `--batch-api` run killed with -9 while its batches are in flight resumes by polling what it
already paid for: no request billed twice, the conversations of an uninterrupted run — for OpenAI's
batches and Anthropic's Message Batches alike, the same invariants for every case; on Anthropic's,
with its cache breakpoints, the recorded cost is the simulator's bill."""
import signal
import subprocess
import sys

import orjson
import pytest
import yaml

from culturepark.engine.backends.batch_api import BatchLedger
from tests.conftest import run_cli, scenario_dict, sim_stats, wait_for

# provider → (backend fields, simulator flags): Anthropic's priced as the simulator bills, its cache from 200 tokens
PROVIDERS = {
    "openai": ({}, []),
    "anthropic": ({"provider": "anthropic", "api_key_env": "ANTHROPIC_API_KEY",
                   "price": {"input_per_1m": 3.0, "output_per_1m": 15.0}},
                  ["--prompt-cache-min-tokens", "200"]),
}


def _scenario(tmp_path, url, name, provider):
    data = scenario_dict(items=["27", "31", "158"], conversations_per_item=2, turns=6, concurrency=4)
    data["backend"].update(base_url=url, batch={"gather_s": 0.05, "poll_s": 0.05}, **PROVIDERS[provider][0])
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# when the run is killed: (batches submitted at least, more submitted than consumed)
MOMENTS = {"first round in flight": 1, "third round in flight": 3}


@pytest.mark.slow  # a whole stage end to end: CI only, not the fast lane
@pytest.mark.parametrize("moment", list(MOMENTS))
@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_kill_9_with_batches_in_flight_then_resume_pays_nothing_twice(tmp_path, tiny_data, sim_process, provider,
                                                                      moment):
    sim_flags = ["--seed", "4", *PROVIDERS[provider][1]]
    ref = tmp_path / "ref"
    direct = sim_process(*sim_flags)
    assert run_cli("run", str(_scenario(tmp_path, direct, "d", provider)), "--out", str(ref),
                   "--data-dir", str(tiny_data)).returncode == 0

    url = sim_process(*sim_flags, "--batch-delay-s", "0.4")
    sc = _scenario(tmp_path, url, "b", provider)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "culturepark.cli", "run", str(sc), "--out", str(out),
                             "--data-dir", str(tiny_data), "--batch-api"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ledger = BatchLedger(out / "batches-delegate.jsonl")

    def in_flight() -> bool:
        events = [e["event"] for e in ledger.read()]
        return events.count("submitted") >= MOMENTS[moment] and events.count("submitted") > events.count("consumed")

    wait_for(in_flight, timeout=60)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert not (out / "conversations.jsonl").exists()  # it really died mid-run
    paid_before = sim_stats(url)["batch_lines"]

    res = run_cli("run", str(sc), "--out", str(out), "--resume", "--data-dir", str(tiny_data), "--batch-api",
                  "--json")
    assert res.returncode == 0, res.stderr
    assert (out / "conversations.jsonl").read_bytes() == (ref / "conversations.jsonl").read_bytes()
    stats = sim_stats(url)
    assert stats["batch_lines_repeated"] == 0 and stats["batch_lines"] > paid_before
    assert stats["batch_lines_billed"] == 12 * 6  # every request paid exactly once, across the kill
    turns = [orjson.loads(x) for x in (out / "log.jsonl").read_bytes().splitlines() if b'"type":"turn"' in x]
    keys = [(t["conversation_id"], t["index"]) for t in turns]
    assert len(keys) == len(set(keys)) == 12 * 6
    assert {t["tier"] for t in turns} == {"batch"}
    summary = orjson.loads(res.stdout)
    assert summary["turns_by_tier"] == {"batch": 72} and summary["done"] == 12
    if provider == "anthropic":  # the recorded cost, across the kill, is the simulator's bill at half price
        assert summary["tokens"]["cache_write_prompt"] > 0 and summary["tokens"]["cached_prompt"] > 0
        assert summary["cost_usd"] == pytest.approx(stats["bill_usd"], rel=0.01)


def test_batch_api_refuses_the_embedded_model_and_ray_with_one_line(tmp_path, tiny_data):
    data = scenario_dict()
    data["backend"] = {"provider": "local", "model": "gemma3-270m"}
    sc = tmp_path / "local.yaml"
    sc.write_text(yaml.safe_dump(data))
    res = run_cli("run", str(sc), "--out", str(tmp_path / "o"), "--data-dir", str(tiny_data), "--batch-api")
    assert res.returncode == 2 and "--batch-api needs an OpenAI-compatible server" in res.stderr
    assert not (tmp_path / "o").exists()
    res = run_cli("run", str(sc), "--out", str(tmp_path / "o"), "--batch-api", "--ray")
    assert res.returncode == 2 and "--batch-api takes no --ray" in res.stderr
