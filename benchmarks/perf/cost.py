"""`culturepark bench cost`: one scenario four ways on the sim server — standard without and with
`prompt_cache_key`, flex, `--batch-api` — then a `--batch-api` run killed with -9 and resumed, and
a pilot estimate against the full run.

Each way gets a fresh simulator (its own process; a cold prompt cache) playing OpenAI's caching
rules, flex refusals and batches, with replies of real chat length. Every row is measured from the
run's own `summary.json` and log, and checked against the simulator's usage records (`bill_gap`:
recorded cost against the cost recomputed from what the simulator says it answered).
"""
from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import yaml

from culturepark.benchmarks.perf.throughput import launch_sim_server
from culturepark.engine.pricing import Price, lookup_price
from culturepark.engine.records import Usage
from culturepark.scenarios.data_dir import resolve_data_dir

MODEL = "gpt-4o-mini"
SIM_ARGS = ["--prompt-cache", "--reply-tokens", "80", "160", "--latency-ms", "300", "--seed", "0"]


def _scenario(tmp: Path, url: str, name: str, **backend: Any) -> Path:
    data = {"name": "paper-v2-cost", "cultures": ["Arabic", "Bengali", "Chinese", "German", "Korean", "Portuguese",
                                                  "Spanish", "Turkish"],
            "mode": "cross", "version": "v2", "turns": 14, "items": "all", "stance_policy": "sample", "seed": 0,
            "concurrency": 64, "sampling": {"temperature": 0.7, "max_tokens": 168},
            "retry": {"max_attempts": 8, "base_delay_s": 0.05, "max_delay_s": 0.5},
            "backend": {"provider": "openai", "model": MODEL, "base_url": url, **backend}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/stats", timeout=30) as r:
        return orjson.loads(r.read())


def _billed(stats: dict[str, Any], price: Price) -> float:
    """What the simulator answered, per tier, at the model's rates (cache writes included)."""
    billed: float = sum(price.of(Usage(t["prompt_tokens"], t["completion_tokens"], t["cached_tokens"],
                                       t.get("cache_write_tokens", 0)), tier).total
                        for tier, t in stats["usage_by_tier"].items())
    return billed


def _tokens(summary: dict[str, Any], cached: bool = True) -> Usage:
    """A run's tokens as billed (or, with `cached` false, as if nothing were read from or written to a cache)."""
    t = summary["tokens"]
    if not cached:
        return Usage(t["prompt"], t["completion"])
    return Usage(t["prompt"], t["completion"], t["cached_prompt"], t.get("cache_write_prompt", 0))


def _long_prefix_hits(log: Path) -> tuple[int, int]:
    """Turns ≥ 2 whose agent's previous request passed 1,024 prompt tokens: (eligible, hit)."""
    prompts: dict[tuple[str, int], int] = {}
    turns = []
    for line in log.read_bytes().splitlines():
        if b'"type":"turn"' in line:
            rec = orjson.loads(line)
            prompts[(rec["conversation_id"], rec["index"])] = rec["usage"]["prompt_tokens"]
            turns.append(rec)
    eligible = hit = 0
    for rec in turns:
        before = prompts.get((rec["conversation_id"], rec["index"] - 2), 0)
        if rec["index"] >= 2 and before >= 1024:
            eligible += 1
            hit += rec["usage"]["cached_tokens"] > 0
    return eligible, hit


def _ratios_by_model(summary: dict[str, Any]) -> dict[str, float]:
    """The same tokens at other models' list prices: flex with caching over standard without."""
    out = {}
    for model in ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1", "gpt-3.5-turbo"):
        price = lookup_price(model)
        if price is not None:
            flex = price.of(_tokens(summary), "flex").total
            out[model] = round(flex / price.of(_tokens(summary, cached=False)).total, 4)
    return out


def _run(cmd: list[str], timeout: float = 1800) -> dict[str, Any]:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[3:6])} failed: {res.stderr[-2000:]}")
    return orjson.loads(res.stdout.strip().splitlines()[-1])


def _cmd(scenario: Path, out: Path, data_dir: Path, n: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "culturepark.cli", "run", str(scenario), "--out", str(out), "--data-dir",
            str(data_dir), "--limit", str(n), "--json", *extra]


def one_way(tmp: Path, data_dir: Path, n: int, name: str, sim_extra: list[str], flags: list[str],
            **backend: Any) -> dict[str, Any]:
    proc, url = launch_sim_server(SIM_ARGS + sim_extra)
    try:
        t0 = time.perf_counter()
        summary = _run(_cmd(_scenario(tmp, url, name, **backend), tmp / name, data_dir, n, *flags))
        wall = time.perf_counter() - t0
        stats = _stats(url)
    finally:
        proc.kill()
    price = lookup_price(MODEL)
    assert price is not None
    uncached_standard = price.of(_tokens(summary, cached=False)).total
    eligible, hit = _long_prefix_hits(tmp / name / "log.jsonl")
    per_1000 = 1000 / max(1, summary["conversations"])
    return {"bench": "cost", "way": name, "model": MODEL, "conversations": summary["conversations"],
            "done": summary["done"], "turns": summary["turns"], "wall_s": round(wall, 1),
            "cost_usd": summary["cost_usd"], "cost_per_1000_conversations": round(summary["cost_usd"] * per_1000, 4),
            "standard_uncached_per_1000": round(uncached_standard * per_1000, 4),
            "ratio_to_standard_uncached": round(summary["cost_usd"] / uncached_standard, 4),
            "cache_hit_rate_tokens": summary["cache"]["hit_rate"],
            "hit_rate_turns_ge2_prefix_ge1024": round(hit / eligible, 4) if eligible else None,
            "eligible_turns": eligible, "cost_split_usd": summary["cost_split_usd"],
            "turns_by_tier": summary["turns_by_tier"],
            "bill_gap": round(abs(summary["cost_usd"] - _billed(stats, price)) / _billed(stats, price), 6),
            "flex_with_cache_vs_standard_uncached_by_model": _ratios_by_model(summary),
            "sim_requests": stats["requests"], "flex_refused": stats["flex_unavailable"],
            "batches": stats["batches_created"], "batch_lines_repeated": stats["batch_lines_repeated"]}


def killed_batch_run(tmp: Path, data_dir: Path, n: int, reference: Path) -> dict[str, Any]:
    proc, url = launch_sim_server([*SIM_ARGS, "--batch-delay-s", "2"])
    try:
        sc = _scenario(tmp, url, "killed", prompt_cache={"key": True}, batch={"gather_s": 0.5, "poll_s": 0.5})
        out = tmp / "killed"
        run = subprocess.Popen(_cmd(sc, out, data_dir, n, "--batch-api"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        ledger = out / "batches-delegate.jsonl"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            events = ledger.read_bytes().count(b'"submitted"') if ledger.exists() else 0
            if events >= 7:
                break
            time.sleep(0.2)
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
        resumed = _run(_cmd(sc, out, data_dir, n, "--batch-api", "--resume"))
        stats = _stats(url)
    finally:
        proc.kill()
    same = (out / "conversations.jsonl").read_bytes() == (reference / "conversations.jsonl").read_bytes()
    return {"bench": "cost", "way": "batch-api killed at round 7 and resumed", "done": resumed["done"],
            "identical_to_uninterrupted": same, "batch_lines_repeated": stats["batch_lines_repeated"],
            "batch_lines": stats["batch_lines"], "turns": resumed["turns"]}


def pilot_vs_full(tmp: Path, data_dir: Path, n: int, pilot: int, full: dict[str, Any]) -> dict[str, Any]:
    proc, url = launch_sim_server(SIM_ARGS)
    try:
        sc = _scenario(tmp, url, "pilot", prompt_cache={"key": True})
        est = _run(_cmd(sc, tmp / "pilot", data_dir, n, "--dry-run", "--pilot", str(pilot)))
    finally:
        proc.kill()
    p = est["projected"]

    def gap(a: float, b: float) -> float:
        return round((a - b) / b, 4)
    return {"bench": "cost", "way": f"pilot {pilot} → {n}", "prompt_tokens_gap": gap(p["tokens"]["prompt"],
                                                                                      full["prompt"]),
            "cached_tokens_gap": gap(p["tokens"]["cached_prompt"], full["cached_prompt"]),
            "cost_gap": gap(p["cost_usd"], full["cost_usd"]), "projected_cost_usd": p["cost_usd"],
            "projected_duration_s": p["duration_s"], "actual_wall_s": full["wall_s"],
            "actual_cost_usd": full["cost_usd"], "cost_usd_by_tier": p["cost_usd_by_tier"]}


def main(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args.data_dir, None)
    n = args.conversations
    rows = []
    with tempfile.TemporaryDirectory(prefix="cp-cost-") as tmp_name:
        tmp = Path(tmp_name)
        ways: list[tuple[str, list[str], list[str], dict[str, Any]]] = [
                ("standard", [], [], {}), ("standard+cache_key", [], [], {"prompt_cache": {"key": True}}),
                ("flex+cache_key", ["--flex-unavailable-rate", str(args.flex_unavailable_rate)],
                 ["--service-tier", "flex"], {"prompt_cache": {"key": True}, "flex_fallback_after": 4}),
                ("batch-api+cache_key", ["--batch-delay-s", "2"], ["--batch-api"],
                 {"prompt_cache": {"key": True}, "batch": {"gather_s": 0.5, "poll_s": 0.5}})]
        for name, sim_extra, flags, backend in ways:
            rows.append(one_way(tmp, data_dir, n, name, sim_extra, flags, **backend))
            print(orjson.dumps(rows[-1]).decode(), flush=True)
        if not args.no_kill:
            rows.append(killed_batch_run(tmp, data_dir, n, tmp / "batch-api+cache_key"))
            print(orjson.dumps(rows[-1]).decode(), flush=True)
        summary = orjson.loads((tmp / "standard+cache_key" / "summary.json").read_bytes())
        full = {"prompt": summary["tokens"]["prompt"], "cached_prompt": summary["tokens"]["cached_prompt"],
                "cost_usd": summary["cost_usd"], "wall_s": rows[1]["wall_s"]}
        rows.append(pilot_vs_full(tmp, data_dir, n, args.pilot, full))
        print(orjson.dumps(rows[-1]).decode(), flush=True)
    return 0


__all__ = ["main"]
