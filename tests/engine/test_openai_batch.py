"""`run --batch-api`: rounds of turns through /v1/batches give the same conversations as direct
requests, at the batch tier's price; failed lines and expired batches go into later rounds; a
batch created just before a kill is found again instead of being paid for twice."""
import orjson
import pytest
import yaml

from culturepark.engine.backends.base import Request
from culturepark.engine.backends.batch_api import BatchBackend, BatchLedger, BatchLimits
from culturepark.engine.backends.openai_batch import OpenAIBatches
from culturepark.engine.backends.openai_http import OpenAIHTTPBackend
from culturepark.runs.in_process import run_async
from culturepark.runs.prepare import RunOptions
from tests.conftest import scenario_dict, sim_stats_async

FAST = {"gather_s": 0.05, "poll_s": 0.05}


def _scenario(tmp_path, url, name="s"):
    data = scenario_dict(turns=6)
    data["backend"].update(base_url=url, model="gpt-4o-mini", batch=FAST)
    data["retry"]["max_attempts"] = 12  # a line may fail or expire several rounds in a row
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("faults", [{}, {"batch_line_fail_rate": 0.25, "batch_expire_rate": 0.3}],
                         ids=["clean", "failed-lines-and-expired-batches"])
async def test_batch_rounds_give_the_direct_runs_conversations_at_half_the_price(sim, tmp_path, tiny_data, faults):
    direct_url = await sim(seed=3)
    direct = await run_async(_scenario(tmp_path, direct_url, "d"), RunOptions(out=tmp_path / "direct",
                                                                                data_dir=tiny_data))
    batch_url = await sim(seed=3, batch_delay_s=0.02, **faults)
    batched = await run_async(_scenario(tmp_path, batch_url, "b"), RunOptions(out=tmp_path / "batched",
                                                                                data_dir=tiny_data, batch_api=True))
    assert batched.summary.done == direct.summary.done == 4 and batched.summary.failed == 0
    assert (tmp_path / "batched/conversations.jsonl").read_bytes() == (tmp_path / "direct/conversations.jsonl").read_bytes()
    assert batched.summary.turns_by_tier == {"batch": 24}
    assert batched.summary.cost_usd == pytest.approx(direct.summary.cost_usd / 2, rel=1e-3)
    stats = await sim_stats_async(batch_url)
    assert stats["batch_lines_repeated"] == 0 and stats["by_path"].get("chat", 0) == 0  # nothing sent directly
    assert stats["batches_created"] >= 6  # a round per turn index, more when lines failed
    events = BatchLedger(tmp_path / "batched/batches-delegate.jsonl").read()
    submitted = [e for e in events if e["event"] == "submitted"]
    assert len(submitted) == stats["batches_created"]
    assert {e["batch_id"] for e in events if e["event"] == "consumed"} == {e["batch_id"] for e in submitted}


async def test_a_batch_created_before_a_kill_is_found_by_its_file_and_its_answers_used(sim, tmp_path):
    url = await sim(seed=1, batch_delay_s=0.0)
    http = OpenAIHTTPBackend(url, "sim-model")
    request = Request(messages=[{"role": "user", "content": "hello there"}], max_tokens=20)
    first = BatchBackend(OpenAIBatches(http), tmp_path / "batches.jsonl", BatchLimits(**FAST))
    # what a killed run left: the file uploaded, `submitting` logged, the batch created, no `submitted`
    line = orjson.dumps({"custom_id": f"{request.key('sim-model')}.0", "method": "POST",
                         "url": "/v1/chat/completions", "body": http.body(request)})
    file_id = await first.provider.upload(line + b"\n")
    first.ledger.append("submitting", input_file_id=file_id, custom_ids=[f"{request.key('sim-model')}.0"])
    await http.call_api("POST", "/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"})
    first.ledger.close()
    await http.aclose()

    resumed = BatchBackend(OpenAIBatches(OpenAIHTTPBackend(url, "sim-model")), tmp_path / "batches.jsonl",
                           BatchLimits(**FAST))
    await resumed.start()
    completion = await resumed.complete(request)
    await resumed.aclose()
    stats = await sim_stats_async(url)
    assert completion.text and completion.tier == "batch" and resumed.resumed_answers == 1
    assert stats["batches_created"] == 1 and stats["batch_lines"] == 1  # nothing sent again
    events = [e["event"] for e in BatchLedger(tmp_path / "batches.jsonl").read()]
    assert events == ["submitting", "submitted", "consumed"]
