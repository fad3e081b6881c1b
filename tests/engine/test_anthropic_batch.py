"""`run --batch-api` on Anthropic's Message Batches: the same rounds, ledger and crash contract as the
OpenAI batch path (one `BatchBackend`, a provider adapter), against the simulator's
/v1/messages/batches: the conversations of a direct run, cache breakpoints read and written inside
batches, the recorded cost equal to the simulator's bill at half price, failed and expired requests
sent again in later rounds and never paid twice, a batch created just before a kill found again."""
import pytest
import yaml

from culturepark.engine.backends.anthropic_batch import AnthropicBatches, result_answer
from culturepark.engine.backends.anthropic_http import AnthropicHTTPBackend
from culturepark.engine.backends.base import Completion, Request
from culturepark.engine.backends.batch_api import BatchBackend, BatchLedger, BatchLimits
from culturepark.engine.errors import BackendError, FatalBackendError, TransientError
from culturepark.engine.records import Usage
from culturepark.runs.in_process import run_async
from culturepark.runs.prepare import RunOptions
from tests.conftest import scenario_dict, sim_stats_async

FAST = {"gather_s": 0.05, "poll_s": 0.05}
SIM = {"prompt_cache_min_tokens": 100, "min_reply_tokens": 40, "max_reply_tokens": 60}  # caching from turn ~2


def _scenario(tmp_path, url, name):
    data = scenario_dict(turns=6)
    data["backend"] = {"provider": "anthropic", "model": "sim-model", "base_url": url, "batch": FAST,
                       "api_key_env": "ANTHROPIC_API_KEY", "price": {"input_per_1m": 3.0, "output_per_1m": 15.0}}
    data["sampling"]["max_tokens"] = 80
    data["retry"]["max_attempts"] = 12  # a request may fail or expire several rounds in a row
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("faults", [{}, {"batch_line_fail_rate": 0.25, "batch_expire_rate": 0.3}],
                         ids=["clean", "failed-requests-and-expired-batches"])
async def test_message_batches_give_the_direct_runs_conversations_and_cost_the_bill(sim, tmp_path, tiny_data,
                                                                                      faults):
    direct_url = await sim(seed=3, **SIM)
    direct = await run_async(_scenario(tmp_path, direct_url, "d"), RunOptions(out=tmp_path / "direct",
                                                                                data_dir=tiny_data))
    url = await sim(seed=3, batch_delay_s=0.02, **SIM, **faults)
    batched = await run_async(_scenario(tmp_path, url, "b"), RunOptions(out=tmp_path / "batched", data_dir=tiny_data,
                                                                         batch_api=True))
    s = batched.summary
    assert s.done == direct.summary.done == 4 and s.failed == 0 and s.turns_by_tier == {"batch": 24}
    assert (tmp_path / "batched/conversations.jsonl").read_bytes() == \
        (tmp_path / "direct/conversations.jsonl").read_bytes()
    stats = await sim_stats_async(url)
    assert stats["by_path"].get("messages", 0) == 0  # nothing sent to /v1/messages directly
    assert stats["batch_lines_repeated"] == 0 and stats["batch_lines_billed"] == 24  # each request paid once
    assert s.tokens.cache_write_prompt > 0 and s.tokens.cached_prompt > 0  # breakpoints apply inside batches
    assert s.cost_usd == pytest.approx(stats["bill_usd"], rel=0.01)
    assert s.cost_usd == pytest.approx(direct.summary.cost_usd / 2, rel=0.05)  # half price, same cache use
    events = BatchLedger(tmp_path / "batched/batches-delegate.jsonl").read()
    submitted = [e for e in events if e["event"] == "submitted"]
    assert len(submitted) == stats["batches_created"] >= 6  # a round per turn index, more when requests failed
    assert {e["batch_id"] for e in events if e["event"] == "consumed"} == {e["batch_id"] for e in submitted}


async def test_a_message_batch_created_before_a_kill_is_found_by_its_custom_ids_and_its_answer_used(sim, tmp_path):
    url = await sim(seed=1, batch_delay_s=0.0)
    request = Request(messages=[{"role": "user", "content": "hello there"}], max_tokens=20)
    custom_id = f"{request.key('sim-model')}-0"
    http = AnthropicHTTPBackend(url, "sim-model")
    first = BatchBackend(AnthropicBatches(http, 0.05), tmp_path / "batches.jsonl", BatchLimits(**FAST))
    # what a killed run left: `submitting` logged, the batch created, no `submitted`; another job's batch beside it
    first.ledger.append("submitting", submission="s1", custom_ids=[custom_id])
    other = Request(messages=[{"role": "user", "content": "someone else"}], max_tokens=20)
    await first.provider.create({}, [first.provider.entry(f"{other.key('sim-model')}-0", other)])
    await first.provider.create({}, [first.provider.entry(custom_id, request)])
    first.ledger.close()
    await http.aclose()

    resumed = BatchBackend(AnthropicBatches(AnthropicHTTPBackend(url, "sim-model"), 0.05),
                           tmp_path / "batches.jsonl", BatchLimits(**FAST))
    await resumed.start()
    completion = await resumed.complete(request)
    await resumed.aclose()
    stats = await sim_stats_async(url)
    assert completion.text and completion.tier == "batch" and resumed.resumed_answers == 1
    assert stats["batches_created"] == 2 and stats["batch_lines"] == 2  # nothing sent again
    events = BatchLedger(tmp_path / "batches.jsonl").read()
    assert [e["event"] for e in events] == ["submitting", "submitted", "consumed"]
    assert events[1]["batch_id"] == "msgbatch_sim000002"  # ours, not the other job's batch of one request


async def test_a_results_url_on_another_host_is_not_followed_with_the_key(sim):
    url = await sim(seed=1, batch_delay_s=0.0)
    http = AnthropicHTTPBackend(url, "sim-model", api_key="sk-ant-secret")
    adapter = AnthropicBatches(http)
    request = Request(messages=[{"role": "user", "content": "hi"}], max_tokens=20)
    batch_id = await adapter.create({}, [adapter.entry("abc-0", request)])
    batch = await adapter.retrieve(batch_id)
    assert batch["processing_status"] == "ended" and batch["results_url"].startswith(url.removesuffix("/v1"))
    answers = await adapter.results({**batch, "results_url": "https://elsewhere.example/results"})
    await http.aclose()
    assert isinstance(answers["abc-0"], Completion)  # read from the API's own documented path instead


def _message(text="hi"):
    return {"content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 5, "output_tokens": 2, "cache_read_input_tokens": 100,
                      "cache_creation_input_tokens": 10}}


def _errored(kind):
    return {"type": "errored", "error": {"type": "error", "error": {"type": kind, "message": "why"}}}


# result → (kind of answer, its reason)
RESULTS = {
    "succeeded": ({"type": "succeeded", "message": _message()}, Completion, None),
    "succeeded, malformed message": ({"type": "succeeded", "message": {"content": 3}}, TransientError,
                                     "malformed_body"),
    "errored: invalid request": (_errored("invalid_request_error"), FatalBackendError, "batch_invalid_request: why"),
    "errored: api error": (_errored("api_error"), TransientError, "batch_api_error"),
    "errored: overloaded": (_errored("overloaded_error"), TransientError, "batch_overloaded_error"),
    "expired": ({"type": "expired"}, TransientError, "batch_expired"),
    "canceled": ({"type": "canceled"}, TransientError, "batch_canceled"),
    "unknown type": ({"type": "new"}, TransientError, "batch_malformed_reply"),
    "not an object": ("x", TransientError, "batch_malformed_reply"),
}


@pytest.mark.parametrize("case", list(RESULTS), ids=list(RESULTS))
def test_each_result_type_becomes_an_answer_or_the_error_that_decides_a_retry(case):
    result, kind, reason = RESULTS[case]
    http = AnthropicHTTPBackend("http://x/v1", "m")
    answer = result_answer(result, lambda m: http.completion_from(m, Request(prompt="")))
    assert isinstance(answer, kind)
    if isinstance(answer, BackendError):
        assert answer.reason == reason
    else:
        assert answer.text == "hi" and answer.usage == Usage(115, 2, 100, 10)
