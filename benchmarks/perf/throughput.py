"""`culturepark bench throughput`: the engine path vs a raw aiohttp loop (and the openai SDK).

The sim server runs in a separate process so server and client do not share an
event loop. The engine path is the real one — endpoint (limiter, retries) →
aiohttp backend → scheduler → log in a temp dir — driven by a synthetic
two-speaker `TurnPolicy` (the CulturePark policy would only add prompt
building, which is not what this bench measures). Baselines fire the same
number of requests at the same concurrency with no limiter and no log.

`--unstated-limits`: the sim server enforces `--rpm`/`--tpm` but the engine is told neither; it
learns them from the server's headers, or (`--no-limit-headers`) finds them with its adaptive
ceiling. `--halve-after-s` halves the server's limits mid-run; the server's grants are sampled
each second, so the result says how close to the limit the engine ran after `--warmup-s`, its
429s after it, and how long it took to get back to 0.9 of the halved limit.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import aiohttp
import orjson

from culturepark.engine.backends.base import Request
from culturepark.engine.backends.openai_http import OpenAIHTTPBackend
from culturepark.engine.endpoint import Endpoint
from culturepark.engine.limiter import AdaptiveCeiling, RateLimiter
from culturepark.engine.log import RunLog
from culturepark.engine.records import RunHeader
from culturepark.engine.retry import RetryPolicy
from culturepark.engine.scheduler import ConversationSpec, Scheduler, SchedulerConfig, TurnRequest

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

MODEL = "sim-model"


class BenchPolicy:
    """Two speakers, `turns` turns; each request carries a short fixed prompt (like a first turn)."""

    def __init__(self, turns: int, max_tokens: int) -> None:
        self.turns = turns
        self.max_tokens = max_tokens

    def next_turn(self, conv: ConversationSpec, turns: Any) -> TurnRequest | None:
        i = len(turns)
        if i >= self.turns:
            return None
        msgs = [{"role": "system", "content": "You are a delegate in a cultural exchange."},
                {"role": "user", "content": f"{conv.id} turn {i}: what do you think?"}]
        return TurnRequest("A" if i % 2 == 0 else "B", "x",
                           Request(messages=msgs, max_tokens=self.max_tokens, temperature=0.7))


def start_sim_process(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    extra = ["--charge", "admission", "--window-s", str(args.window_s), "--latency-ms", str(args.latency_ms),
             "--seed", "0"]
    if args.start_empty:
        extra.append("--start-empty")
    if args.no_limit_headers:
        extra.append("--no-limit-headers")
    if args.rpm:
        extra += ["--rpm", str(args.rpm)]
    if args.tpm:
        extra += ["--tpm", str(args.tpm)]
    return launch_sim_server(extra)


def launch_sim_server(extra: list[str]) -> tuple[subprocess.Popen[str], str]:
    """A sim server in its own process (so its CPU is not the engine's); returns (process, base URL)."""
    proc = subprocess.Popen([sys.executable, "-m", "culturepark.cli", "sim-server", "--port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"sim server did not start: {line}{proc.stderr.read() if proc.stderr else ''}")
    return proc, line.split()[-1]


async def server_stats(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(url.removesuffix("/v1") + "/stats") as r:
        stats: dict[str, Any] = orjson.loads(await r.read())
        return stats


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[k]


def _timeline(times: list[float], t0: float) -> list[int]:
    if not times:
        return []
    buckets = [0] * (int(max(times) - t0) + 1)
    for t in times:
        buckets[int(t - t0)] += 1
    return buckets


async def sample_server(url: str, t0: float, into: list[tuple[float, int, int, int]]) -> None:
    """(seconds since t0, requests, ok, rate_limited) from the server, once a second."""
    while True:
        s = await server_stats(url)
        into.append((time.perf_counter() - t0, s["requests"], s["ok"], s["rate_limited"]))
        await asyncio.sleep(1.0)


async def halve_limits(url: str, args: argparse.Namespace, after_s: float) -> None:
    await asyncio.sleep(after_s)
    halved = {"rpm": args.rpm / 2 if args.rpm else None, "tpm": args.tpm / 2 if args.tpm else None}
    async with aiohttp.ClientSession() as s, s.post(url.removesuffix("/v1") + "/limits", json=halved) as r:
        r.raise_for_status()


async def run_engine(url: str, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    backend = OpenAIHTTPBackend(url, MODEL, timeout_s=120.0)
    unstated = args.unstated_limits
    limiter = RateLimiter(None if unstated else args.rpm, None if unstated else args.tpm, burst_s=0.5,
                          settle_mode="admission")
    endpoint = Endpoint(backend, limiter, RetryPolicy(max_attempts=6, base_delay_s=0.2, max_delay_s=5),
                        ceiling=AdaptiveCeiling(args.concurrency) if unstated else None)
    log = RunLog(log_dir / "log.jsonl", fsync="interval").open()
    log.append(RunHeader(run_name="bench-throughput"))
    scheduler = Scheduler(BenchPolicy(args.turns, args.max_tokens), {"x": endpoint}, log,
                          SchedulerConfig(concurrency=args.concurrency))
    convs = (ConversationSpec(f"c{i}", i, {}) for i in range(args.conversations))
    before = await server_stats(url)
    await backend.start()
    cpu0, t0 = time.process_time(), time.perf_counter()
    samples: list[tuple[float, int, int, int]] = []
    helpers = [asyncio.create_task(sample_server(url, t0, samples))]
    if args.halve_after_s:
        helpers.append(asyncio.create_task(halve_limits(url, args, args.halve_after_s)))
    try:
        stats = await scheduler.run(convs)
    finally:
        for task in helpers:
            task.cancel()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    after = await server_stats(url)
    log.close()
    await endpoint.aclose()
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    # completion times from the log, for the timeline
    times = [rec["t"] for rec in map(orjson.loads, (log_dir / "log.jsonl").read_bytes().splitlines())
             if rec.get("type") == "turn"]
    requests = after["requests"] - before["requests"]
    ok = after["ok"] - before["ok"]
    charged = after["charged_tokens"] - before["charged_tokens"]
    return {
        "wall_s": wall, "cpu_s": cpu, "turns": stats.turns, "failed": stats.failed,
        "requests": requests, "rate_limited": after["rate_limited"] - before["rate_limited"],
        "avg_charge": charged / ok if ok else None, "latencies": list(stats.latencies_ms),
        "timeline": _timeline(times, min(times)) if times else [], "peak_rss_mb": peak_rss_mb,
        "samples": samples, "learned_limits": dict(limiter.learned),
        "ceiling": endpoint.ceiling.describe() if endpoint.ceiling else None,
    }


def over_time(samples: list[tuple[float, int, int, int]], limit_at: Any, args: argparse.Namespace
              ) -> dict[str, Any]:
    """From the server's per-second samples: utilization and 429 share after the warm-up, and
    after a halving how long until the granted rate (10 s average) was back to 0.9 of the limit."""
    def window(a: float, b: float) -> tuple[float, int, int, float]:
        inside = [s for s in samples if a <= s[0] <= b]
        if len(inside) < 2:
            return 0.0, 0, 0, 0.0
        first, last = inside[0], inside[-1]
        span = last[0] - first[0]
        return span, last[1] - first[1], last[3] - first[3], (last[2] - first[2]) / span if span else 0.0

    # the run's tail (its last conversations, too few to fill the limit) is not the engine's pacing:
    # measure up to where the server had answered 95 % of what it answered in the run
    total = samples[-1][2] - samples[0][2] if samples else 0
    end = next((s[0] for s in samples if s[2] - samples[0][2] >= 0.95 * total), 0.0)
    halve = args.halve_after_s
    warm_end = min(halve, end) if halve else end
    span, requests, limited, granted = window(args.warmup_s, warm_end)
    out: dict[str, Any] = {
        "utilization_after_warmup": round(granted / limit_at(args.warmup_s), 4) if span else None,
        "rate_limited_fraction_after_warmup": round(limited / requests, 5) if requests else None,
    }
    if halve:
        recovered = None
        for s in samples:
            if s[0] >= halve + 10 and window(s[0] - 10, s[0])[3] >= 0.9 * limit_at(s[0]):
                recovered = round(s[0] - halve, 1)
                break
        out["halved_at_s"] = halve
        out["recovery_s"] = recovered
        span, requests, limited, granted = window(halve + 120, end)
        out["utilization_2min_after_halving"] = round(granted / limit_at(end), 4) if span else None
        out["rate_limited_fraction_after_halving"] = round(limited / requests, 5) if requests else None
    out["granted_per_s"] = [round((b[2] - a[2]) / (b[0] - a[0]), 2) for a, b in itertools.pairwise(samples)
                            if b[0] > a[0]]
    return out


def _bodies(args: argparse.Namespace) -> list[bytes]:
    policy = BenchPolicy(args.turns, args.max_tokens)
    out = []
    for i in range(args.conversations):
        conv = ConversationSpec(f"c{i}", i, {})
        for t in range(args.turns):
            req = policy.next_turn(conv, [None] * t).request  # type: ignore[union-attr]
            out.append(orjson.dumps({"model": MODEL, "messages": req.messages,
                                     "max_tokens": req.max_tokens, "temperature": req.temperature}))
    return out


async def run_raw(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """The floor: one aiohttp session, a semaphore, no limiter, no log."""
    bodies = _bodies(args)
    sem = asyncio.Semaphore(args.concurrency)
    done: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     headers={"Content-Type": "application/json"}) as session:
        async def one(body: bytes) -> None:
            nonlocal errors
            async with sem, session.post(url + "/chat/completions", data=body) as r:
                payload = orjson.loads(await r.read())
                if r.status != 200 or not payload["choices"][0]["message"]["content"]:
                    errors += 1
            done.append(time.time())

        t0 = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "requests": len(bodies), "errors": errors,
            "timeline": _timeline(done, min(done)) if done else []}


async def run_sdk(url: str, args: argparse.Namespace) -> dict[str, Any]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key="sim", max_retries=2)
    policy = BenchPolicy(args.turns, args.max_tokens)
    sem = asyncio.Semaphore(args.concurrency)
    errors = 0

    async def one(i: int, t: int) -> None:
        nonlocal errors
        req = policy.next_turn(ConversationSpec(f"c{i}", i, {}), [None] * t).request  # type: ignore[union-attr]
        async with sem:
            try:
                # role/content dicts, which the SDK types as its message TypedDicts
                messages = cast("list[ChatCompletionMessageParam]", req.messages)
                r = await client.chat.completions.create(model=MODEL, messages=messages,
                                                         max_tokens=req.max_tokens, temperature=req.temperature)
                if not r.choices[0].message.content:
                    errors += 1
            except Exception:
                errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i, t) for i in range(args.conversations) for t in range(args.turns)))
    wall = time.perf_counter() - t0
    await client.close()
    return {"wall_s": wall, "requests": args.conversations * args.turns, "errors": errors}


async def bench(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    baselines = {b.strip() for b in (args.baselines or "").split(",") if b.strip()}
    proc, url = start_sim_process(args)
    try:
        with tempfile.TemporaryDirectory(prefix="culturepark-bench-") as tmp:
            engine = await run_engine(url, args, Path(tmp))
        raw = await run_raw(url, args) if "raw" in baselines else None
        sdk = await run_sdk(url, args) if "sdk" in baselines else None
    finally:
        proc.kill()
        proc.wait(timeout=10)
    rps = engine["turns"] / engine["wall_s"] if engine["wall_s"] else 0.0
    raw_rps = raw["requests"] / raw["wall_s"] if raw else None
    sdk_rps = sdk["requests"] / sdk["wall_s"] if sdk else None
    ceiling = None
    if args.rpm or args.tpm:
        limits = []
        if args.rpm:
            limits.append(args.rpm / 60.0)
        if args.tpm and engine["avg_charge"]:
            limits.append(args.tpm / 60.0 / engine["avg_charge"])
        ceiling = min(limits) if limits else None
    if ceiling and args.halve_after_s:  # the limit over the whole run: full, then half
        at_halving = args.halve_after_s
        full = (at_halving + (engine["wall_s"] - at_halving) / 2) / engine["wall_s"] * ceiling
    else:
        full = ceiling
    lat = engine["latencies"]
    result = {
        "requests": engine["requests"], "turns": engine["turns"],
        "errors": engine["failed"],  # engine conversations that ended failed
        "raw_errors": raw["errors"] if raw else None,  # raw/SDK ignore limits: 429s count here
        "sdk_errors": sdk["errors"] if sdk else None,
        "requests_per_s": round(rps, 1),
        "raw_requests_per_s": round(raw_rps, 1) if raw_rps else None,
        "ratio_vs_raw": round(rps / raw_rps, 3) if raw_rps else None,
        "sdk_requests_per_s": round(sdk_rps, 1) if sdk_rps else None,
        "ratio_vs_sdk": round(rps / sdk_rps, 2) if sdk_rps else None,
        "ceiling_requests_per_s": round(ceiling, 2) if ceiling else None,
        "utilization": round(rps / full, 4) if full else None,
        "rate_limited_fraction": round(engine["rate_limited"] / engine["requests"], 5) if engine["requests"] else None,
        "p50_ms": round(_percentile(lat, 0.5) or 0, 2), "p99_ms": round(_percentile(lat, 0.99) or 0, 2),
        "cpu_ms_per_turn": round(engine["cpu_s"] * 1000 / engine["turns"], 4) if engine["turns"] else None,
        "peak_rss_mb": round(engine["peak_rss_mb"], 1),
        "wall_s": round(engine["wall_s"], 2),
        "config": {"conversations": args.conversations, "turns": args.turns, "concurrency": args.concurrency,
                   "latency_ms": args.latency_ms, "rpm": args.rpm, "tpm": args.tpm, "max_tokens": args.max_tokens},
    }
    if args.rpm or args.tpm:
        result["limits"] = ("headers" if not args.no_limit_headers else "none") if args.unstated_limits \
            else "stated"
        result["config"].update(window_s=args.window_s, start_empty=args.start_empty,
                                limit_headers=not args.no_limit_headers, warmup_s=args.warmup_s)
        result["learned_limits"] = engine["learned_limits"]
        result["concurrency_ceiling"] = engine["ceiling"]
        if ceiling:
            halve = args.halve_after_s
            result.update(over_time(engine["samples"],
                                    lambda t: ceiling / 2 if halve and t >= halve else ceiling, args))
    timelines = {"engine": engine["timeline"], "raw": raw["timeline"] if raw else []}
    return result, timelines


def plot_granted(result: dict[str, Any], path: Path) -> None:
    """The server's grants per second against its limit (halved mid-run with --halve-after-s)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    granted = result["granted_per_s"]
    limit = result["ceiling_requests_per_s"]
    halve = result["config"].get("halve_after_s") or result.get("halved_at_s")
    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=110)
    xs = list(range(len(granted)))
    ax.plot(xs, granted, lw=0.5, alpha=0.35, label="granted by the server, each second")
    smooth = [sum(granted[max(0, x - 9):x + 1]) / len(granted[max(0, x - 9):x + 1]) for x in xs]
    ax.plot(xs, smooth, lw=2, label="granted, 10 s average")
    ax.plot(xs, [limit / 2 if halve and x >= halve else limit for x in xs], "k--", lw=1, label="server's limit")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("second of the run")
    ax.set_ylabel("requests / s")
    ax.set_title(f"bench throughput, limits {result.get('limits')}: granted rate over time")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot(timelines: dict[str, list[int]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=110)
    for name, series in timelines.items():
        full = series[:-1] if len(series) > 1 else series  # the last second is partial: leave it out
        if full:
            ax.plot(range(len(full)), full, marker="o", markersize=3, label=name)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("second of the run")
    ax.set_ylabel("requests completed / s")
    ax.set_title("culturepark bench throughput: engine vs raw aiohttp")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    result, timelines = asyncio.run(bench(args))
    if args.json:
        print(orjson.dumps(result).decode(), flush=True)
        if args.plot:
            (plot_granted(result, args.plot) if "granted_per_s" in result else plot(timelines, args.plot))
        return 0
    width = max(len(k) for k in result)
    for key, value in result.items():
        if key != "config":
            print(f"{key:<{width}}  {value}")
    path = args.plot or Path("bench-throughput.png")
    plot(timelines, path)
    print(f"plot: {path}")
    if result["errors"]:
        print(f"note: {result['errors']} errors", file=sys.stderr)
    return 0
