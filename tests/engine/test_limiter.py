import asyncio
import random

import pytest

from culturepark.engine.limiter import RateLimiter


async def _grant_times(limiter: RateLimiter, sizes: list[int]) -> list[tuple[float, int]]:
    loop = asyncio.get_running_loop()
    out: list[tuple[float, int]] = []

    async def one(tokens: int) -> None:
        await limiter.acquire(tokens)
        out.append((loop.time(), tokens))

    await asyncio.gather(*(one(t) for t in sizes))
    return out


def _max_excess(grants: list[tuple[float, int]], rate: float, capacity: float, use_tokens: bool) -> float:
    """Largest (granted in [t_i, t_j]) - (rate * (t_j - t_i) + capacity) over all windows."""
    worst = float("-inf")
    for i in range(len(grants)):
        total = 0.0
        for j in range(i, len(grants)):
            total += grants[j][1] if use_tokens else 1
            allowed = rate * (grants[j][0] - grants[i][0]) + capacity
            worst = max(worst, total - allowed)
    return worst


async def test_requests_never_exceed_budget_over_any_window():
    limiter = RateLimiter(rpm=6000, burst_s=0.2)  # 100/s, capacity 20
    grants = await _grant_times(limiter, [1] * 120)
    assert len(grants) == 120
    assert _max_excess(grants, 100.0, 20.0, use_tokens=False) <= 1.0 + 1e-6


async def test_tokens_never_exceed_budget_over_any_window():
    rng = random.Random(3)
    limiter = RateLimiter(tpm=60_000, burst_s=0.25)  # 1000 tokens/s, capacity 250
    sizes = [rng.randint(20, 120) for _ in range(60)]
    grants = await _grant_times(limiter, sizes)
    # debt is allowed only for a request bigger than capacity, none here
    assert _max_excess(grants, 1000.0, 250.0, use_tokens=True) <= 1e-6
    elapsed = grants[-1][0] - grants[0][0]
    assert elapsed >= (sum(sizes) - 250) / 1000.0 - 0.02  # it really waited for the budget


async def test_waiters_are_served_in_fifo_order():
    limiter = RateLimiter(rpm=60_000, burst_s=0.01)  # capacity 10
    order: list[int] = []

    async def one(i: int) -> None:
        await limiter.acquire(1)
        order.append(i)

    await asyncio.gather(*(one(i) for i in range(60)))
    assert order == list(range(60))


async def test_one_timer_wake_per_grant_not_a_polling_herd():
    wakes = 0

    class Counting(RateLimiter):
        def _wake(self) -> None:
            nonlocal wakes
            wakes += 1
            super()._wake()

    limiter = Counting(rpm=30_000, burst_s=0.02)  # 500/s, capacity 10
    await asyncio.gather(*(limiter.acquire(1) for _ in range(300)))
    # 290 queued grants; each wake grants at least one waiter
    assert 0 < wakes <= 300


async def test_usage_settling_refunds_and_admission_does_not():
    async def queued_after_settle(mode: str) -> int:
        limiter = RateLimiter(tpm=60_000, burst_s=1.0, settle_mode=mode)  # capacity 1000 tokens
        grant = await limiter.acquire(900)  # prompt 100 + max_tokens 800
        limiter.settle(grant, prompt_tokens=100, completion_tokens=20, max_tokens=800)
        before = limiter.stats.waited
        await limiter.acquire(700)
        return limiter.stats.waited - before

    assert await queued_after_settle("usage") == 0  # 780 tokens came back
    assert await queued_after_settle("admission") == 1  # nothing comes back: it had to wait


async def test_settle_charges_more_when_the_provider_counted_more():
    limiter = RateLimiter(tpm=60_000, burst_s=1.0, settle_mode="admission")
    grant = await limiter.acquire(200)  # estimated prompt 100 + max 100
    limiter.settle(grant, prompt_tokens=700, completion_tokens=10, max_tokens=100)  # provider saw 800
    before = limiter.stats.waited
    await limiter.acquire(300)  # ~200 of 1000 left after the extra charge: must queue
    assert limiter.stats.waited - before == 1


async def test_retry_after_pauses_the_whole_endpoint():
    limiter = RateLimiter(rpm=600_000)
    loop = asyncio.get_running_loop()
    await limiter.acquire(1)
    limiter.pause(0.3)
    t0 = loop.time()
    await asyncio.gather(*(limiter.acquire(1) for _ in range(5)))
    assert loop.time() - t0 >= 0.29


async def test_pause_applies_to_an_unlimited_endpoint_too():
    limiter = RateLimiter()
    loop = asyncio.get_running_loop()
    limiter.pause(0.2)
    t0 = loop.time()
    await limiter.acquire(10)
    assert loop.time() - t0 >= 0.19
    t1 = loop.time()
    await limiter.acquire(10)  # back to the fast path once the pause is over
    assert loop.time() - t1 < 0.05


async def test_cancelled_waiter_does_not_block_the_queue():
    limiter = RateLimiter(rpm=600, burst_s=0.1)  # 10/s, capacity 1
    await limiter.acquire(1)
    head = asyncio.create_task(limiter.acquire(1))
    second = asyncio.create_task(limiter.acquire(1))
    await asyncio.sleep(0)
    head.cancel()
    await asyncio.wait_for(second, timeout=2)
    assert limiter.queue_length == 0


async def test_headers_only_lower_local_credit():
    limiter = RateLimiter(rpm=6000, tpm=60_000, burst_s=1.0)
    limiter.observe_headers(remaining_requests=1000, remaining_tokens=5)
    before = limiter.stats.waited
    await limiter.acquire(100)
    assert limiter.stats.waited - before == 1  # provider said only 5 tokens were left
    assert limiter.stats.header_corrections == 1


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError):
        RateLimiter(rpm=0)
    with pytest.raises(ValueError):
        RateLimiter(rpm=10, burst_s=0)


async def test_set_rates_rebalances_a_running_limiter():
    limiter = RateLimiter(rpm=6, burst_s=0.1)  # one request per 10 s, capacity 1
    loop = asyncio.get_running_loop()
    await limiter.acquire(1)  # the burst is spent
    waiter = asyncio.ensure_future(limiter.acquire(1))
    await asyncio.sleep(0)
    t0 = loop.time()
    limiter.set_rates(60_000, None)  # 1000/s: the queued request is re-timed, not left on the old timer
    await waiter
    assert loop.time() - t0 < 1.0  # on the old timer it would have waited 10 s
    with pytest.raises(ValueError):
        limiter.set_rates(600, 1000)  # adding a token limit mid-run would change what is counted
