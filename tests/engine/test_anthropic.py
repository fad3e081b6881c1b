"""Anthropic's Messages API: the request as the API wants it (system apart, alternating turns, cache
breakpoints, its temperature and stop rules), usage split into plain, cache-read and cache-written
input priced at their rates, its errors in the error tree, its limit headers learned — all against
the simulator's /v1/messages."""
import itertools

import aiohttp
import orjson
import pytest

from culturepark.engine.backends.anthropic_http import AnthropicHTTPBackend, parse_usage
from culturepark.engine.backends.base import Request
from culturepark.engine.endpoint import Endpoint
from culturepark.engine.errors import AccountError, RequestFailed
from culturepark.engine.pricing import Price, Rates, anthropic_price
from culturepark.engine.records import Usage, parse_record
from culturepark.engine.retry import RetryPolicy
from culturepark.engine.scheduler import turn_cost
from culturepark.engine.summary import Tally
from culturepark.scenarios.endpoints import make_backend, price_for
from culturepark.scenarios.model_spec import parse_model_spec
from culturepark.scenarios.schema import backend_config
from tests.conftest import sim_stats_async

FAST = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.02)
LONG_SYSTEM = "You are a delegate. " * 400  # ~2,000 tokens: a cacheable prefix on its own


def _req(*messages: tuple[str, str], **kw) -> Request:
    return Request(messages=[{"role": r, "content": c} for r, c in messages], **kw)


def test_the_body_has_system_apart_alternating_turns_and_breakpoints_at_the_stable_prefix():
    body = AnthropicHTTPBackend("http://x/v1", "m").body(_req(
        ("system", "persona"), ("system", "item"), ("assistant", "I open."), ("user", "a"), ("user", "b"),
        ("assistant", "c"), temperature=1.2, stop=["\n", "Anna:"], max_tokens=50, seed=3))
    assert body["system"] == [{"type": "text", "text": "persona\n\nitem", "cache_control": {"type": "ephemeral"}}]
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user", "assistant", "user", "assistant"]  # opened by a user line, same roles merged
    assert body["messages"][2]["content"] == "a\n\nb"
    assert body["messages"][-1]["content"] == [{"type": "text", "text": "c", "cache_control": {"type": "ephemeral"}}]
    assert body["temperature"] == 1.0 and body["max_tokens"] == 50  # the API's maximum temperature
    assert body["stop_sequences"] == ["Anna:"] and "seed" not in body  # whitespace-only stops are refused


@pytest.mark.parametrize("raw,expected", [
    ({"input_tokens": 10, "output_tokens": 5}, Usage(10, 5, 0, 0)),
    ({"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 200},
     Usage(1210, 5, 1000, 200)),
    ({"input_tokens": -1, "output_tokens": 5}, None),
    ({"output_tokens": 5}, None),
    (None, None),
])
def test_usage_is_the_whole_prompt_with_its_read_and_written_parts(raw, expected):
    assert parse_usage(raw) == expected


def test_cache_writes_and_reads_are_priced_at_anthropics_rates_and_old_records_still_read():
    price = anthropic_price(Price(3.0, 15.0))
    assert (price.cached_input_per_1m, price.cache_write_per_1m) == (pytest.approx(0.3), pytest.approx(3.75))
    # 1,000 read + 200 written + 10 plain input, 5 out
    assert price.cost(1210, 5, 1000, written_tokens=200) == pytest.approx((10 * 3 + 1000 * 0.3 + 200 * 3.75
                                                                           + 5 * 15) / 1e6)
    assert price.cost(1210, 5, 1000, "batch", 200) == pytest.approx(price.cost(1210, 5, 1000, written_tokens=200) / 2)
    assert Rates(1.0, 1.0).split(100, 0, 0, 40).total == pytest.approx(100 / 1e6)  # no write rate: input's
    back = Price.from_description(price.describe())  # as a run header records it
    assert all(back.rates(t) == pytest.approx(price.rates(t)) for t in ("standard", "batch"))
    assert "cache_write_per_1m" not in Price(1.0, 2.0, 0.5).describe()["standard"]  # other headers unchanged
    old = parse_record({"type": "turn", "conversation_id": "c", "seq": 0, "index": 0, "speaker": "A", "role": "r",
                        "text": "x", "usage": {"prompt_tokens": 9, "completion_tokens": 2, "cached_tokens": 4}})
    assert old.usage == Usage(9, 2, 4, 0)  # type: ignore[union-attr]


def test_the_anthropic_spec_reads_its_key_from_its_own_variable_and_never_shows_it(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    cfg = parse_model_spec("anthropic:claude-sonnet-4-5")
    assert (cfg.provider, cfg.api_key_env, cfg.base_url) == ("anthropic", "ANTHROPIC_API_KEY",  # type: ignore[union-attr]
                                                             "https://api.anthropic.com/v1")
    backend = make_backend(cfg)
    assert isinstance(backend, AnthropicHTTPBackend) and backend.checks_reachable and not backend.can_stream
    assert "sk-ant-secret" not in orjson.dumps(backend.describe()).decode()
    price = price_for(cfg)
    assert price is not None and price.cache_write_per_1m == pytest.approx(3.75)
    priced = price_for(backend_config({"provider": "anthropic", "model": "sim-model",  # a stated price gets
                                       "price": {"input_per_1m": 2.0, "output_per_1m": 4.0}}))  # the cache rates
    assert priced is not None and (priced.cached_input_per_1m, priced.cache_write_per_1m) == (0.2, 2.5)


async def test_a_conversation_writes_its_prefix_then_reads_it_and_the_cost_is_the_bill(sim):
    url = await sim(rpm=6000, tpm=6_000_000)
    price = anthropic_price(Price(3.0, 15.0))
    told: list[str] = []
    ep = Endpoint(AnthropicHTTPBackend(url, "sim-model", price=price), retry=FAST, say=told.append)
    messages = [{"role": "system", "content": LONG_SYSTEM}, {"role": "user", "content": "Hello there."}]
    cost, shares = 0.0, []
    try:
        for _ in range(4):
            c = await ep.complete(Request(messages=list(messages), max_tokens=60))
            cost += turn_cost(c, price) or 0.0
            shares.append(c.usage.cached_tokens / c.usage.prompt_tokens)
            assert c.text and c.finish_reason in ("stop", "length")
            messages += [{"role": "assistant", "content": c.text}, {"role": "user", "content": "Say more. " * 40}]
        stats = await sim_stats_async(url)
    finally:
        await ep.aclose()
    assert shares[0] == 0 and all(b > a for a, b in itertools.pairwise(shares))  # written, then read
    written = stats["usage_by_tier"]["standard"]["cache_write_tokens"]
    assert written > 2000 and stats["usage_by_tier"]["standard"]["cached_tokens"] > 3 * 2000
    assert cost == pytest.approx(stats["bill_usd"], rel=0.01)
    assert ep.limiter.learned == {"rpm": 6000, "tpm": 6_000_000} and len(told) == 1  # anthropic-ratelimit-*


async def test_a_stop_sequence_ends_the_reply_as_the_api_reports_it(sim):
    url = await sim(script=[{"pattern": "greet", "reply": "Hello. Anna: and more"}])
    backend = AnthropicHTTPBackend(url, "sim-model")
    try:
        c = await backend.complete(_req(("user", "greet me"), stop=["Anna:"]))
    finally:
        await backend.aclose()
    assert (c.text, c.finish_reason) == ("Hello. ", "stop")


@pytest.mark.parametrize("fault,expected", [
    ({"kind": "revoked_key"}, "invalid_key:http_401"),
    ({"kind": "unknown_model"}, "not_found:http_404"),
    ({"kind": "quota_exhausted"}, "quota_exhausted:http_400"),
    ({"kind": "status", "status": 403}, "forbidden:http_403"),
])
async def test_account_refusals_stop_at_once_with_the_providers_words(sim, fault, expected):
    url = await sim(faults=[fault])
    ep = Endpoint(AnthropicHTTPBackend(url, "sim-model"), retry=FAST)
    try:
        with pytest.raises(AccountError) as err:
            await ep.complete(_req(("user", "hi")))
    finally:
        await ep.aclose()
    assert err.value.reason == expected and ep.stats.requests == 1 and err.value.message


@pytest.mark.parametrize("fault,counted", [
    ({"kind": "overloaded", "times": 2}, "overloaded"),  # 529: transient, retried with backoff
    ({"kind": "status", "status": 500, "times": 2}, "http_500"),
    ({"kind": "status", "status": 429, "times": 2, "retry_after": 0.01}, "http_429"),  # paces, not counted
])
async def test_overloaded_server_errors_and_rate_limits_are_retried_until_answered(sim, fault, counted):
    url = await sim(faults=[fault])
    ep = Endpoint(AnthropicHTTPBackend(url, "sim-model"), retry=FAST)
    try:
        c = await ep.complete(_req(("user", "hi")))
    finally:
        await ep.aclose()
    assert c.text and c.attempts == 3 and ep.stats.errors[counted] == 2
    assert ep.stats.rate_limited == (2 if counted == "http_429" else 0)


async def test_overloaded_past_the_attempts_fails_the_request(sim):
    url = await sim(faults=[{"kind": "overloaded"}])
    ep = Endpoint(AnthropicHTTPBackend(url, "sim-model"), retry=FAST)
    try:
        with pytest.raises(RequestFailed) as err:
            await ep.complete(_req(("user", "hi")))
    finally:
        await ep.aclose()
    assert err.value.reason == "overloaded" and err.value.attempts == 3


@pytest.mark.parametrize("body,headers,message", [
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "a"},
                                                  {"role": "user", "content": "b"}]}, True, "alternate"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "assistant", "content": "a"}]}, True, "first message"),
    ({"model": "m", "max_tokens": 5, "temperature": 1.5, "messages": [{"role": "user", "content": "a"}]}, True,
     "temperature"),
    ({"model": "m", "max_tokens": 5, "stop_sequences": ["\n"], "messages": [{"role": "user", "content": "a"}]}, True,
     "non-whitespace"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "a"}]}, False, "anthropic-version"),
])
async def test_the_simulator_refuses_what_the_api_refuses(sim, body, headers, message):
    url = await sim()
    sent = {"anthropic-version": "2023-06-01"} if headers else {}
    async with aiohttp.ClientSession() as s, s.post(url + "/messages", json=body, headers=sent) as r:
        answer = orjson.loads(await r.read())
    assert r.status == 400 and answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error"
    assert message in answer["error"]["message"]


def test_a_summary_splits_cache_writes_out_and_adds_up_to_the_cost():
    from culturepark.engine.records import TurnRecord

    price = anthropic_price(Price(3.0, 15.0))
    tally = Tally({"r": price})
    usage = Usage(1210, 5, 1000, 200)
    tally.add_turn(TurnRecord(conversation_id="c", seq=0, index=0, speaker="A", role="r", text="x", usage=usage,
                              cost_usd=price.cost(1210, 5, 1000, written_tokens=200)))
    s = tally.summary(None, 0, [], None)
    assert s.tokens.cache_write_prompt == 200 and s.tokens.cached_prompt == 1000
    split = s.cost_split_usd
    assert split is not None and split.cache_write_input == pytest.approx(200 * 3.75 / 1e6, abs=1e-6)
    assert split.uncached_input + split.cached_input + split.output + split.cache_write_input == \
        pytest.approx(s.cost_usd, abs=1e-6)


def test_batch_api_sends_anthropic_through_message_batches_with_its_ledger(tmp_path):
    from culturepark.engine.backends.anthropic_batch import AnthropicBatches
    from culturepark.engine.backends.batch_api import BatchBackend
    from culturepark.scenarios.endpoints import batch_backend

    backend = batch_backend(parse_model_spec("anthropic:sim-model", "http://127.0.0.1:9/v1"), tmp_path, "delegate")
    assert isinstance(backend, BatchBackend) and isinstance(backend.provider, AnthropicBatches)
    assert backend.ledger.path == tmp_path / "batches-delegate.jsonl"
    assert backend.describe()["kind"] == "anthropic" and backend.describe()["service_tier"] == "batch"
    assert not list(tmp_path.iterdir())  # nothing written before the run starts
