import itertools
import random

import pytest

from culturepark.engine.backends.base import Request
from culturepark.engine.backends.openai_http import OpenAIHTTPBackend
from culturepark.engine.endpoint import Endpoint
from culturepark.engine.errors import RequestFailed
from culturepark.engine.retry import RetryPolicy
from culturepark.testing.simulator import Fault

FAST = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.02)
REQ = Request(messages=[{"role": "user", "content": "hi"}], max_tokens=20)


async def _endpoint(url, **kw):
    return Endpoint(OpenAIHTTPBackend(url, "m", timeout_s=kw.pop("timeout_s", 5)), retry=kw.pop("retry", FAST))


@pytest.mark.parametrize("fault", [
    Fault(kind="status", status=503, times=2), Fault(kind="status", status=500, times=2),
    Fault(kind="malformed", times=2), Fault(kind="truncated", times=2), Fault(kind="empty", times=2),
    Fault(kind="length_empty", times=2),
])
async def test_transient_faults_are_retried_then_succeed(sim, fault):
    url = await sim(faults=[fault])
    ep = await _endpoint(url)
    completion = await ep.complete(REQ)
    await ep.aclose()
    assert completion.text.strip() and completion.attempts == 3
    assert ep.stats.retries == 2


async def test_empty_reply_is_never_returned_and_fails_with_reason(sim):
    url = await sim(faults=[Fault(kind="empty")])
    ep = await _endpoint(url)
    with pytest.raises(RequestFailed) as exc:
        await ep.complete(REQ)
    await ep.aclose()
    assert exc.value.reason == "empty_reply" and exc.value.attempts == FAST.max_attempts


async def test_client_error_is_not_retried(sim):
    url = await sim(faults=[Fault(kind="status", status=400)])
    ep = await _endpoint(url)
    with pytest.raises(RequestFailed) as exc:
        await ep.complete(REQ)
    await ep.aclose()
    assert exc.value.reason.startswith("http_400") and exc.value.attempts == 1


async def test_429_pauses_the_endpoint_for_retry_after(sim):
    url = await sim(faults=[Fault(kind="status", status=429, retry_after=0.3, times=1)])
    ep = await _endpoint(url)
    completion = await ep.complete(REQ)
    await ep.aclose()
    assert completion.attempts == 2 and ep.stats.rate_limited == 1
    assert ep.limiter.stats.pauses == 1


async def test_read_timeout_is_retried(sim):
    url = await sim(faults=[Fault(kind="slow", delay_s=2.0, times=1)])
    ep = await _endpoint(url, timeout_s=0.3)
    completion = await ep.complete(REQ)
    await ep.aclose()
    assert completion.attempts == 2 and ep.stats.errors["timeout"] == 1


async def test_wrong_usage_is_not_trusted(sim):
    url = await sim(faults=[Fault(kind="bad_usage")])
    ep = await _endpoint(url)
    completion = await ep.complete(REQ)
    await ep.aclose()
    assert not completion.usage_reported and completion.usage.prompt_tokens > 0


async def test_validator_rejects_and_retries(sim):
    url = await sim()
    ep = await _endpoint(url)
    with pytest.raises(RequestFailed) as exc:
        await ep.complete(REQ, validate=lambda text: "echo_reply")
    await ep.aclose()
    assert exc.value.reason == "echo_reply"


def test_backoff_is_bounded_and_honours_retry_after():
    policy = RetryPolicy(max_attempts=10, base_delay_s=0.5, max_delay_s=4.0)
    rng = random.Random(0)
    delays = [policy.delay(a, rng) for a in range(1, 10) for _ in range(50)]
    assert all(0 <= d <= 4.0 for d in delays) and max(delays) > 2.0
    assert all(policy.delay(1, rng, retry_after=3.0) >= 3.0 for _ in range(20))


@pytest.mark.parametrize("api", ["chat", "completions"])
async def test_a_streamed_reply_arrives_in_growing_prefixes_and_equals_the_plain_one(sim, api):
    url = await sim(seed=4, min_reply_tokens=20)
    req = REQ if api == "chat" else Request(prompt="Wei: In China, family", max_tokens=20)
    ep = Endpoint(OpenAIHTTPBackend(url, "m", api=api), retry=FAST)
    seen: list[str] = []
    try:
        streamed = await ep.complete(req, on_text=seen.append)
        plain = await ep.complete(req)  # the sim server answers the same request the same way
    finally:
        await ep.aclose()
    assert streamed.text == plain.text and len(seen) > 3 and seen[-1] == streamed.text
    assert all(b.startswith(a) and len(b) > len(a) for a, b in itertools.pairwise(seen))
    # usage comes in the stream's last chunk (stream_options.include_usage), so it is the server's figure
    assert streamed.usage_reported and streamed.usage == plain.usage and streamed.finish_reason == plain.finish_reason


async def test_a_stream_cut_before_done_is_retried_from_the_start_then_fails():
    from aiohttp import web

    async def cut(request):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"choices": [{"index": 0, "delta": {"content": "Half a "}}]}\n\n')
        return resp  # ends without [DONE]

    app = web.Application()
    app.router.add_post("/v1/chat/completions", cut)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    ep = Endpoint(OpenAIHTTPBackend(f"http://127.0.0.1:{port}/v1", "m"), retry=FAST)
    seen: list[str] = []
    try:
        with pytest.raises(RequestFailed) as exc:
            await ep.complete(REQ, on_text=seen.append)
    finally:
        await ep.aclose()
        await runner.cleanup()
    assert exc.value.reason == "truncated_body" and exc.value.attempts == FAST.max_attempts
    assert seen == ["Half a "] * FAST.max_attempts  # every attempt started again from nothing


class _Replies:
    """A backend that gives the same reply and notes the temperature it was asked at."""

    name, model, price = "stub", "stub", None
    can_stream = checks_reachable = False

    def __init__(self) -> None:
        self.temperatures: list[float] = []

    async def complete(self, request: Request):
        from culturepark.engine.backends.base import Completion
        from culturepark.engine.records import Usage

        self.temperatures.append(request.temperature)
        return Completion(text="I think so", finish_reason="stop", usage=Usage(5, 3))

    async def aclose(self) -> None:
        pass


async def test_a_rejected_reply_is_asked_again_at_once_and_hotter_and_says_so():
    """An echo is no sign of an overloaded server: no backoff (a minute here would time the test
    out); at the same temperature a small model repeats its short reply, so each re-ask is hotter,
    up to the cap, and the completion records the temperature it was finally sampled at."""
    import asyncio

    backend = _Replies()
    ep = Endpoint(backend, retry=RetryPolicy(max_attempts=5, base_delay_s=60, max_delay_s=60,
                                             reask_temperature_step=0.2, reask_temperature_max=1.2))
    verdicts = iter(["echo_reply", "echo_reply", None])
    completion = await asyncio.wait_for(ep.complete(Request(prompt="Anna:", temperature=0.7),
                                                    validate=lambda _text: next(verdicts)), timeout=10)
    assert backend.temperatures == [0.7, 0.9, 1.1] and completion.attempts == 3
    assert completion.temperature == 1.1 and ep.stats.retries == 2
    backend.temperatures.clear()
    with pytest.raises(RequestFailed):
        await asyncio.wait_for(ep.complete(Request(prompt="Anna:", temperature=0.7),
                                           validate=lambda _text: "echo_reply"), timeout=10)
    assert backend.temperatures == [0.7, 0.9, 1.1, 1.2, 1.2]
    first_try = await ep.complete(Request(prompt="Anna:", temperature=0.7))
    assert first_try.temperature is None  # asked at the request's own temperature


# -- a 429 is a pacing signal: retried past max_attempts, until the wall-clock budget ------------------

async def test_a_429_storm_longer_than_max_attempts_is_ridden_out(sim):
    url = await sim(faults=[Fault(kind="status", status=429, retry_after=0.01, times=3 * FAST.max_attempts)])
    ep = await _endpoint(url)
    completion = await ep.complete(REQ)
    await ep.aclose()
    assert completion.text and completion.attempts == 3 * FAST.max_attempts + 1
    assert ep.stats.rate_limited == 3 * FAST.max_attempts and ep.stats.ok == 1


async def test_a_429_after_transient_failures_does_not_use_up_their_attempts(sim):
    """max_attempts - 1 server errors, then 429s, then an answer: the 429s are not failures."""
    faults = [Fault(kind="status", status=503, times=FAST.max_attempts - 1),
              Fault(kind="status", status=429, retry_after=0.01, times=5)]
    ep = await _endpoint(await sim(faults=faults))
    completion = await ep.complete(REQ)
    await ep.aclose()
    assert completion.attempts == FAST.max_attempts - 1 + 5 + 1


@pytest.mark.parametrize("retry_after", [0.05, None], ids=["Retry-After", "backoff"])
async def test_429s_end_only_when_the_wall_clock_budget_is_spent(sim, retry_after):
    import asyncio

    budget = 0.6
    url = await sim(faults=[Fault(kind="status", status=429, retry_after=retry_after)])  # never stops
    ep = Endpoint(OpenAIHTTPBackend(url, "m"), retry=RetryPolicy(max_attempts=2, base_delay_s=0.02,
                                                                 max_delay_s=0.1, rate_limit_budget_s=budget))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(RequestFailed) as exc:
        await ep.complete(REQ)
    elapsed = loop.time() - t0
    await ep.aclose()
    assert exc.value.reason == "http_429" and exc.value.attempts > 2 * 2  # far past max_attempts
    assert ep.stats.rate_limited == exc.value.attempts
    # given up before the budget ran out, but not earlier than one more wait would have taken
    assert budget - 0.2 <= elapsed <= budget + 0.2


async def test_an_account_error_ends_a_429_storm_at_once(sim):
    from culturepark.engine.errors import AccountError

    faults = [Fault(kind="status", status=429, retry_after=0.01, times=6), Fault(kind="quota_exhausted")]
    ep = await _endpoint(await sim(faults=faults))
    with pytest.raises(AccountError):
        await ep.complete(REQ)
    await ep.aclose()
    assert ep.stats.requests == 7 and ep.stats.rate_limited == 6


async def test_a_stop_ends_a_429_storm_without_failing_the_request(sim):
    import asyncio

    url = await sim(faults=[Fault(kind="status", status=429, retry_after=0.02)])
    ep = await _endpoint(url)  # the default budget: half an hour
    with pytest.raises(TimeoutError):  # the caller's cancellation, not RequestFailed
        await asyncio.wait_for(ep.complete(REQ), timeout=0.5)
    await ep.aclose()
    assert ep.stats.rate_limited > FAST.max_attempts
