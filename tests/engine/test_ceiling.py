"""The adaptive ceiling on requests in flight (AIMD): one decrease per burst of 429s, one more slot
after a run of successes, bounded by `concurrency`; against the sim server with no stated limits
and no limit headers, it finds the server's limit and stays near it with few 429s."""
import asyncio

import pytest

from culturepark.engine.backends.base import Request
from culturepark.engine.backends.openai_http import OpenAIHTTPBackend
from culturepark.engine.endpoint import Endpoint
from culturepark.engine.limiter import AdaptiveCeiling
from culturepark.engine.retry import RetryPolicy


async def test_a_burst_of_429s_lowers_the_ceiling_once():
    c = AdaptiveCeiling(16)
    epochs = [await c.acquire() for _ in range(16)]
    assert c.in_flight == 16 and set(epochs) == {0}
    lowered = [c.rate_limited(e) for e in epochs]  # the whole wave was refused: one burst
    assert lowered.count(True) == 1 and c.limit == 8 and c.decreases == 1
    for _ in epochs:
        c.release()
    later = await c.acquire()  # sent after the decrease: its 429 is a new burst
    assert later == 1 and c.rate_limited(later) and c.limit == 4
    c.release()
    for _ in range(10):
        c.rate_limited(c.epoch)
    assert c.limit == c.minimum == 1 and c.lowest == 1


async def test_successes_raise_it_one_slot_per_run_up_to_the_maximum():
    c = AdaptiveCeiling(6, limit=3)
    for expected in (4, 5, 6, 6):
        for _ in range(c.slots):
            c.succeeded()
        assert c.limit == expected


async def test_waiters_get_slots_in_order_as_they_free_up_or_the_ceiling_rises():
    c = AdaptiveCeiling(4, limit=2)
    order: list[int] = []

    async def one(i: int) -> None:
        await c.acquire()
        order.append(i)

    first = [await c.acquire() for _ in range(2)]
    tasks = [asyncio.create_task(one(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert order == [] and c.in_flight == 2
    c.succeeded()
    c.succeeded()  # a run as long as the ceiling: one more slot, the first waiter goes
    await asyncio.sleep(0)
    assert order == [0] and c.in_flight == 3
    c.release()
    await asyncio.gather(*tasks[1:2])
    assert order == [0, 1]
    tasks[2].cancel()  # a cancelled waiter gives up its place without taking a slot
    await asyncio.gather(tasks[2], return_exceptions=True)
    assert c.in_flight == 3 and not c._waiters and first == [0, 0]


@pytest.mark.parametrize("bad", [{"maximum": 0}, {"maximum": 4, "minimum": 5}, {"maximum": 4, "backoff": 1.0}])
def test_nonsense_settings_are_refused(bad):
    with pytest.raises(ValueError):
        AdaptiveCeiling(**bad)


async def test_with_nothing_stated_or_sent_it_finds_the_servers_limit(sim):
    """50 requests/s allowed, 0.2 s latency (about 10 in flight fit), 64 allowed by `concurrency`:
    after the first second's burst the granted rate stays near the limit, few 429s, all done."""
    url = await sim(rpm=3000, latency_ms=200, rate_limit_headers=False)
    ep = Endpoint(OpenAIHTTPBackend(url, "m"), retry=RetryPolicy(6, 0.05, 1.0), ceiling=AdaptiveCeiling(64))
    slots = asyncio.Semaphore(64)  # the scheduler's concurrency
    loop = asyncio.get_running_loop()
    done: list[float] = []
    after_first_second: list[int] = []

    async def one(i: int) -> None:
        async with slots:
            await ep.complete(Request(messages=[{"role": "user", "content": f"hi {i}"}], max_tokens=20))
            done.append(loop.time())

    t0 = loop.time()
    loop.call_at(t0 + 1.0, lambda: after_first_second.append(ep.stats.rate_limited))
    try:
        await asyncio.gather(*(one(i) for i in range(400)))
    finally:
        await ep.aclose()
    assert len(done) == 400 and ep.stats.ok == 400
    late = [t for t in done if t >= t0 + 2.0]
    rate = (len(late) - 1) / (max(late) - min(late))
    assert rate >= 0.85 * 50  # granted rate after the start, against the server's 50/s
    assert ep.stats.rate_limited - after_first_second[0] <= 0.06 * 400  # 429s after the first second
    assert ep.ceiling is not None and ep.ceiling.decreases >= 1 and ep.ceiling.limit < 64


async def test_once_the_provider_tells_its_limits_the_ceiling_steps_aside(sim):
    """The first wave goes out unpaced and meets 429s; the first answer's headers size the buckets,
    so the ceiling returns to its maximum and the first wave's late 429s lower nothing."""
    c = AdaptiveCeiling(32)
    first_wave = [await c.acquire() for _ in range(4)]
    assert c.rate_limited(first_wave[0]) and c.limit == 16
    c.step_aside()
    assert c.limit == 32 and not c.rate_limited(first_wave[1])
    url = await sim(rpm=6000)
    ep = Endpoint(OpenAIHTTPBackend(url, "m"), ceiling=AdaptiveCeiling(32, limit=4))
    try:
        await ep.complete(Request(messages=[{"role": "user", "content": "hi"}], max_tokens=20))
    finally:
        await ep.aclose()
    assert ep.limiter.learned == {"rpm": 6000} and ep.ceiling is not None and ep.ceiling.limit == 32
