"""`culturepark bench scale`: a big run's memory, phase by phase, through the real CLI.

N conversations × T turns of a v2 scenario against the sim server (no limits, no latency):
the run is SIGKILLed once about halfway, resumed with the same command until it exits 0,
then exported again on its own; with `--ray-workers W`, the same run once more on a local
Ray instance, its merged export compared byte for byte with the single-process one. Each
phase is its own process, so its peak RSS is its own (sampled every 50 ms with psutil);
bytes on disk per turn come from the log. The figures a user needs before a
million-conversation run: does `--resume` or `export` fit in memory?
"""
from __future__ import annotations

import argparse
import math
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psutil
import yaml

from culturepark.agents.protocol import build_plan
from culturepark.benchmarks.eval_run import file_digest
from culturepark.benchmarks.perf.throughput import launch_sim_server
from culturepark.scenarios.data_dir import resolve_data_dir
from culturepark.scenarios.loader import parse_model
from culturepark.scenarios.schema import Scenario

CULTURES = ["Chinese", "German"]


def scenario(url: str, per_item: int, turns: int) -> dict[str, Any]:
    return {"name": "scale", "cultures": CULTURES, "version": "v2", "turns": turns, "items": "all",
            "conversations_per_item": per_item, "seed": 1, "concurrency": 256,
            "backend": {"provider": "openai", "model": "sim-model", "base_url": url},
            "sampling": {"temperature": 0.7, "max_tokens": 12},
            "retry": {"max_attempts": 3, "base_delay_s": 0.01, "max_delay_s": 0.05}}


def sized_scenario(url: str, conversations: int, turns: int, data_dir: Path) -> dict[str, Any]:
    """At least `conversations`: repeats per (culture, item) pair the data actually asked."""
    pairs = build_plan(parse_model(Scenario, scenario(url, 1, turns), "<bench scale>"), data_dir).size
    return scenario(url, math.ceil(conversations / pairs), turns)


def watch(cmd: list[str], kill_when: Any = None) -> dict[str, Any]:
    """Run one phase; sample its RSS; SIGKILL it when `kill_when()` says so."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    ps = psutil.Process(proc.pid)
    peak, peak_at, killed = 0, 0.0, False
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss
        except psutil.NoSuchProcess:
            break
        if rss > peak:
            peak, peak_at = rss, time.perf_counter() - t0
        if kill_when is not None and kill_when():
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.05)
    out = proc.communicate()[0]
    return {"wall_s": round(time.perf_counter() - t0, 2), "peak_rss_mb": round(peak / 2**20, 1),
            "peak_at_s": round(peak_at, 1), "killed": killed, "rc": proc.returncode, "stdout": out}


def bench(conversations: int, turns: int, data_dir: Path, work: Path, ray_workers: int = 0) -> list[dict[str, Any]]:
    sim, url = launch_sim_server(["--seed", "1"])
    try:
        spec = sized_scenario(url, conversations, turns, data_dir)
        path = work / "scale.yaml"
        path.write_text(yaml.safe_dump(spec))
        out = work / "run"
        run = [sys.executable, "-m", "culturepark.cli", "run", str(path), "--data-dir", str(data_dir), "--json"]
        planned = build_plan(parse_model(Scenario, spec, str(path)), data_dir).size
        log = out / "log.jsonl"

        def halfway() -> bool:
            return log.exists() and log.stat().st_size > 0 and _ends(log) >= planned // 2

        rows = [{"phase": "run (killed about halfway)", **watch([*run, "--out", str(out), "--resume"], halfway)}]
        for attempt in range(5):
            phase = watch([*run, "--out", str(out), "--resume"])
            rows.append({"phase": f"resume{'' if attempt == 0 else f' #{attempt + 1}'}", **phase})
            if phase["rc"] == 0:
                break
        rows.append({"phase": "export", **watch([sys.executable, "-m", "culturepark.cli", "export", str(out),
                                                 "--json"])})
        summary = orjson.loads(rows[-1]["stdout"].splitlines()[-1])
        size = log.stat().st_size
        if ray_workers:
            rows.append(_ray_phase(run, work / "ray", ray_workers, out / "conversations.jsonl"))
        for r in rows:
            r.pop("stdout")
            r.update(conversations=summary["conversations"], turns=summary["turns"],
                     log_bytes_per_turn=round(size / max(1, summary["turns"]), 1))
        return rows
    finally:
        sim.kill()
        sim.wait()


def _ray_phase(run: list[str], out: Path, workers: int, reference: Path) -> dict[str, Any]:
    """The same run on a local Ray instance (not killed): the driver's peak RSS (the workers are
    other processes), and whether its merged export is byte-identical to the single-process one."""
    phase = watch([*run, "--out", str(out), "--ray", "--workers", str(workers)])
    merged = out / "conversations.jsonl"
    return {"phase": f"ray run, {workers} workers (driver RSS)", **phase,
            "export_identical": merged.exists() and file_digest(merged) == file_digest(reference)}


def _ends(log: Path) -> int:
    """Ended conversations so far, counted from the tail's density (cheap on a big log)."""
    size = log.stat().st_size
    with open(log, "rb") as fh:
        fh.seek(max(0, size - (1 << 20)))
        tail = fh.read()
    lines = max(1, tail.count(b"\n"))
    share_of_ends, bytes_per_line = tail.count(b'"type":"end"') / lines, len(tail) / lines
    return int(share_of_ends * size / bytes_per_line)


def main(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args.data_dir, None)
    with tempfile.TemporaryDirectory(prefix="cp-scale-", dir=args.work) as tmp:
        rows = bench(args.conversations, args.turns, data_dir, Path(tmp), args.ray_workers)
    for r in rows:
        print(orjson.dumps(r).decode())
    return 0 if rows[-1]["rc"] == 0 else 1
