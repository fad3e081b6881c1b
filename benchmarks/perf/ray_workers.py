"""`culturepark bench ray`: the same scenario single-process and on Ray workers, against the sim server.

Three runs, each a `culturepark run` subprocess (so Ray's start-up is in the wall time, as a
user meets it): single process, `--ray --workers W`, and `--ray --workers W` with worker 0
SIGKILLed mid-run. Each prints one JSON line; the Ray lines say whether `conversations.jsonl`
is byte-identical to the single-process run, how many turns were lost or duplicated, and how
many requests the sim server refused with 429 (the shared budget kept, or not).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

from culturepark.benchmarks.perf.crash_resume import SCENARIO
from culturepark.benchmarks.perf.throughput import launch_sim_server
from culturepark.engine.log import LOG_NAME, shard_paths
from culturepark.scenarios.data_dir import resolve_data_dir


def _stats(url: str) -> dict[str, Any]:
    import urllib.request
    with urllib.request.urlopen(url.removesuffix("/v1") + "/stats", timeout=5) as r:  # loopback only
        stats: dict[str, Any] = orjson.loads(r.read())
        return stats


def turn_keys(run_dir: Path) -> list[tuple[str, int]]:
    """(conversation, index) of every turn record in the main log and all shards."""
    keys = []
    for file in [run_dir / LOG_NAME, *shard_paths(run_dir)]:
        for line in file.read_bytes().splitlines():
            if b'"type":"turn"' in line:
                rec = orjson.loads(line)
                keys.append((rec["conversation_id"], rec["index"]))
    return keys


def _kill_worker_when_busy(proc: subprocess.Popen[str], run_dir: Path, min_lines: int, deadline_s: float) -> str:
    """Kill worker 0 once its shard has `min_lines` records; bounded by `deadline_s`."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and proc.poll() is None:
        try:
            workers = orjson.loads((run_dir / "workers.json").read_bytes())
            shard = run_dir / workers["0"]["log"]
            if shard.read_bytes().count(b"\n") >= min_lines:
                os.kill(workers["0"]["pid"], signal.SIGKILL)
                return "killed"
        except (FileNotFoundError, KeyError, orjson.JSONDecodeError):
            pass
        time.sleep(0.02)
    return "missed (the run ended first)" if proc.poll() is not None else "missed (deadline)"


def compare(work: Path, data_dir: Path, workers: int = 2, per_item: int = 10, rpm: float | None = 1200,
            latency_ms: float = 30.0, kill: bool = True) -> list[dict[str, Any]]:
    sim_args = ["--seed", "3", "--latency-ms", str(latency_ms)] + (["--rpm", str(rpm)] if rpm else [])
    sim, url = launch_sim_server(sim_args)
    out: list[dict[str, Any]] = []
    try:
        spec = {**SCENARIO, "conversations_per_item": per_item, "concurrency": 16,
                "backend": {**SCENARIO["backend"], "base_url": url},
                "limits": {"rpm": rpm} if rpm else {}}
        scenario = work / "scenario.yaml"
        scenario.write_text(yaml.safe_dump(spec))
        modes = [("single", []), (f"ray-{workers}", ["--ray", "--workers", str(workers)])]
        if kill:
            modes.append((f"ray-{workers}-kill-worker", ["--ray", "--workers", str(workers)]))
        reference: Path | None = None
        for mode, extra in modes:
            run_dir = work / mode
            before = _stats(url)
            cmd = [sys.executable, "-m", "culturepark.cli", "run", str(scenario), "--out", str(run_dir),
                   "--data-dir", str(data_dir), "--json", *extra]
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            kill_outcome = None
            if mode.endswith("kill-worker"):
                kill_outcome = _kill_worker_when_busy(proc, run_dir, min_lines=12, deadline_s=120)
            stdout, stderr = proc.communicate(timeout=600)
            wall = time.perf_counter() - t0
            after = _stats(url)
            if proc.returncode != 0:
                raise RuntimeError(f"{mode} exited {proc.returncode}: {stderr[-800:]}")
            summary = orjson.loads(stdout.splitlines()[-1])
            requests = after["requests"] - before["requests"]
            limited = after["rate_limited"] - before["rate_limited"]
            keys = turn_keys(run_dir)
            row: dict[str, Any] = {
                "mode": mode, "conversations": summary["conversations"], "turns": summary["turns"],
                "wall_s": round(wall, 2), "run_s": summary["duration_s"],
                "turns_per_s_wall": round(summary["turns"] / wall, 1),
                "turns_per_s_run": (round(summary["turns"] / summary["duration_s"], 1)
                                    if summary["duration_s"] else None),
                "server_requests": requests, "server_429": limited,
                "server_429_pct": round(100 * limited / requests, 3) if requests else 0.0,
                "budget_rpm": rpm, "duplicate_turns": len(keys) - len(set(keys)),
            }
            if reference is None:
                reference = run_dir
            else:
                ref_keys = set(turn_keys(reference))
                row["lost_turns"] = len(ref_keys - set(keys))
                row["identical"] = ((run_dir / "conversations.jsonl").read_bytes()
                                    == (reference / "conversations.jsonl").read_bytes())
                row["restarts"] = summary.get("ray", {}).get("restarts")
            if kill_outcome:
                row["kill"] = kill_outcome
            out.append(row)
    finally:
        sim.kill()
        sim.wait()
    return out


def main(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args.data_dir, None)
    with tempfile.TemporaryDirectory(prefix="cp-ray-") as tmp:
        rows = compare(Path(tmp), data_dir, args.workers, args.per_item, args.rpm or None,
                       args.latency_ms, kill=not args.no_kill)
    for row in rows:
        print(orjson.dumps(row).decode())
    bad = [r for r in rows[1:] if not r["identical"] or r["lost_turns"] or r["duplicate_turns"]]
    return 1 if bad else 0
