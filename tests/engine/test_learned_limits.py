"""Limits from the provider: read from its headers when nothing is stated, followed as they change,
never over a stated limit, told once and counted in the endpoint's summary."""
import asyncio

import aiohttp
import pytest
from multidict import CIMultiDict

from culturepark.engine.backends.base import Request
from culturepark.engine.backends.openai_http import OpenAIHTTPBackend
from culturepark.engine.backends.rate_headers import parse_duration, read_rate_headers
from culturepark.engine.endpoint import Endpoint
from culturepark.engine.limiter import RateLimiter
from culturepark.engine.retry import RetryPolicy

REQ = Request(messages=[{"role": "user", "content": "hi"}], max_tokens=20)
FAST = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05)


@pytest.mark.parametrize("text,seconds", [
    ("6m0s", 360.0), ("1s", 1.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5s", 0.5), ("59.999s", 59.999),
    ("2", 2.0), ("", None), ("soon", None), ("1s20", None), ("-3s", None),
])
def test_openai_durations(text, seconds):
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_openai_and_anthropic_headers_read_alike():
    openai = read_rate_headers(CIMultiDict({
        "x-ratelimit-limit-requests": "500", "x-ratelimit-limit-tokens": "30000",
        "x-ratelimit-remaining-requests": "499", "x-ratelimit-remaining-tokens": "29000",
        "x-ratelimit-reset-requests": "120ms", "x-ratelimit-reset-tokens": "2s"}))
    assert openai is not None and (openai.limit_requests, openai.limit_tokens) == (500, 30000)
    assert (openai.remaining_requests, openai.remaining_tokens) == (499, 29000)
    assert openai.reset_requests_s == pytest.approx(0.12) and openai.reset_tokens_s == 2.0
    anthropic = read_rate_headers(CIMultiDict({
        "anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": "2026-01-01T00:00:01Z",
        "anthropic-ratelimit-tokens-limit": "40000", "anthropic-ratelimit-tokens-remaining": "39000",
        "anthropic-ratelimit-tokens-reset": "2026-01-01T00:00:30Z"}), now=1767225600.0)  # 2026-01-01T00:00:00Z
    assert anthropic is not None and (anthropic.limit_requests, anthropic.limit_tokens) == (50, 40000)
    assert (anthropic.reset_requests_s, anthropic.reset_tokens_s) == (1.0, 30.0)
    assert read_rate_headers(CIMultiDict({"content-type": "application/json"})) is None


async def _set_limits(url: str, **limits: float) -> None:
    async with aiohttp.ClientSession() as s, s.post(url.removesuffix("/v1") + "/limits", json=limits) as r:
        assert r.status == 200


async def test_unstated_limits_are_learned_followed_and_told_once(sim):
    url = await sim(rpm=6000, tpm=600_000)
    told: list[str] = []
    ep = Endpoint(OpenAIHTTPBackend(url, "m"), retry=FAST, say=told.append)
    try:
        assert ep.limiter.unlimited
        await ep.complete(REQ)
        assert ep.limiter.learned == {"rpm": 6000, "tpm": 600_000} and not ep.limiter.unlimited
        assert ep.limiter.rpm is None  # learned, not stated
        await _set_limits(url, rpm=3000, tpm=600_000)  # the provider halves the request limit
        await ep.complete(REQ)
        assert ep.limiter.learned == {"rpm": 3000, "tpm": 600_000}
    finally:
        await ep.aclose()
    assert len(told) == 1 and "6,000 requests/min" in told[0] and "600,000 tokens/min" in told[0]


async def test_a_stated_limit_wins_over_the_headers(sim):
    url = await sim(rpm=6000, tpm=600_000)
    ep = Endpoint(OpenAIHTTPBackend(url, "m"), RateLimiter(rpm=120), retry=FAST)
    try:
        await ep.complete(REQ)
    finally:
        await ep.aclose()
    assert ep.limiter.learned == {"tpm": 600_000} and ep.limiter.rpm == 120
    assert ep.limiter._requests is not None and ep.limiter._requests.rate == 2.0  # 120/min, as stated


async def _max_loop_lag(stop: asyncio.Event, lags: list[float]) -> None:
    """How late the event loop woke a 20 ms sleep, at worst: a process starved of CPU (another test
    worker on a 2-core machine) sends its paced requests in a bunch when it wakes."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(0.02)
        lags.append(loop.time() - t - 0.02)


async def test_once_learned_the_endpoint_paces_at_the_limit_without_429s(sim):
    """After the first answer told the limit, a wave of 200 requests is paced at it: none refused,
    and the wave takes as long as the limit makes it (one 0.5 s burst, the rest at 100/s).

    The server counts arrivals in 1 s windows; a stall of the test process longer than the
    burst's slack delivers paced requests together, which no client can prevent. So the
    no-429 assertion holds when the loop never stalled over 0.2 s; when it did (measured, never
    assumed), every refused request must still have been retried to an answer."""
    url = await sim(rpm=6000)
    ep = Endpoint(OpenAIHTTPBackend(url, "m"), retry=FAST)
    loop = asyncio.get_running_loop()
    stop, lags = asyncio.Event(), [0.0]
    try:
        await ep.complete(REQ)
        await asyncio.sleep(1.1)  # the server's 1 s window and our burst refill (not a sync: a window)
        monitor = asyncio.create_task(_max_loop_lag(stop, lags))
        t0 = loop.time()
        await asyncio.gather(*(ep.complete(REQ) for _ in range(200)))
        elapsed = loop.time() - t0
        stop.set()
        await monitor
    finally:
        await ep.aclose()
    assert ep.stats.ok == 201
    if max(lags) < 0.2:
        assert ep.stats.rate_limited == 0, f"429s with the loop never stalled over {max(lags):.3f} s"
        assert 1.3 <= elapsed <= 3.5  # (200 - 50 burst) / 100 per second = 1.5 s
    else:
        assert ep.stats.rate_limited <= 200


def test_a_run_with_unstated_limits_prints_what_it_learned_once_and_records_it(tmp_path, tiny_data, sim_process):
    import json

    import yaml

    from tests.conftest import run_cli, scenario_dict

    data = scenario_dict(concurrency=4, conversations_per_item=2)
    data["backend"]["base_url"] = sim_process("--seed", "4", "--rpm", "3000", "--tpm", "900000")
    sc = tmp_path / "s.yaml"
    sc.write_text(yaml.safe_dump(data))
    res = run_cli("run", str(sc), "--out", str(tmp_path / "out"), "--data-dir", str(tiny_data), "--json")
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("limits from the provider's headers: 3,000 requests/min, 900,000 tokens/min") == 1
    assert json.loads(res.stdout)["endpoints"][0]["learned_limits"] == {"rpm": 3000.0, "tpm": 900000.0}


async def test_learned_limits_are_in_summary_json_and_a_re_export_keeps_them(sim, tmp_path, tiny_data):
    import orjson
    import yaml

    from culturepark.engine.export import export_run
    from culturepark.runs.in_process import run_async
    from culturepark.runs.prepare import RunOptions
    from tests.conftest import scenario_dict

    url = await sim(rpm=6000, tpm=600_000)
    data = scenario_dict()
    data["backend"]["base_url"] = url
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    result = await run_async(path, RunOptions(out=out, data_dir=tiny_data))
    learned = {"sim-model": {"rpm": 6000.0, "tpm": 600_000.0}}
    assert result.summary.learned_limits == learned
    assert result.summary.endpoints and result.summary.endpoints[0].learned_limits == learned["sim-model"]
    assert orjson.loads((out / "summary.json").read_bytes())["learned_limits"] == learned
    assert export_run(out).learned_limits == learned  # the log does not hold them; the summary keeps them
    assert orjson.loads((out / "summary.json").read_bytes())["learned_limits"] == learned
