"""`culturepark bench crash-resume`: kill -9 a run at random moments, resume, compare.

Each trial runs the same command line — `culturepark run … --resume` — again and again
until it exits 0, as a user (or a job scheduler) would after a crash. The first run is
SIGKILLed at a random moment: in one trial of three within its first second (while it
starts, before its log exists), in one of three once every conversation has ended (the
kill lands in the final export), otherwise anywhere in the run; later runs are killed too
with some probability. The finished directory is compared with an uninterrupted reference
run: `lost_turns` and `duplicate_turns` count (conversation, index) keys in the log,
`identical` compares `conversations.jsonl` byte for byte.
"""
from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

from culturepark.benchmarks.perf.throughput import launch_sim_server
from culturepark.scenarios.data_dir import resolve_data_dir

SCENARIO: dict[str, Any] = {
    "name": "crash-resume", "cultures": ["Chinese", "German"], "version": "v2", "turns": 6,
    "items": ["27", "31", "158"], "conversations_per_item": 3, "seed": 7, "concurrency": 4,
    "backend": {"provider": "openai", "model": "sim-model"},
    "sampling": {"temperature": 0.7, "max_tokens": 40},
    "retry": {"max_attempts": 3, "base_delay_s": 0.01, "max_delay_s": 0.05},
}


def _run_cmd(scenario: Path, out: Path, data_dir: Path, resume: bool = True) -> list[str]:
    cmd = [sys.executable, "-m", "culturepark.cli", "run", str(scenario), "--out", str(out),
           "--data-dir", str(data_dir), "--json"]
    return [*cmd, "--resume"] if resume else cmd


def _ended(log: Path) -> int:
    try:
        return log.read_bytes().count(b'"type":"end"')
    except FileNotFoundError:
        return 0


def _turn_keys(log: Path) -> list[tuple[str, int]]:
    keys = []
    for line in log.read_bytes().splitlines():
        if b'"type":"turn"' in line:
            rec = orjson.loads(line)
            keys.append((rec["conversation_id"], rec["index"]))
    return keys


def trial(index: int, rng: random.Random, scenario: Path, data_dir: Path, ref_dir: Path, ref_s: float,
          planned: int, work: Path) -> dict[str, Any]:
    out = work / f"trial-{index}"
    log = out / "log.jsonl"
    kills: list[str] = []
    attempt = 0
    while True:
        attempt += 1
        if attempt > 20:
            raise RuntimeError(f"trial {index} did not finish in 20 runs")
        proc = subprocess.Popen(_run_cmd(scenario, out, data_dir), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)  # the same command line every time
        kill = attempt == 1 or rng.random() < 0.3
        if kill and attempt == 1 and index % 3 == 1:  # within the first second: startup, no log yet
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=rng.uniform(0.0, 1.0))
        elif kill and attempt == 1 and index % 3 == 2:  # aim at the final export
            deadline = time.monotonic() + 60
            while _ended(log) < planned and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.001)
        elif kill:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=rng.uniform(0.1, 1.0) * ref_s)
        if kill and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            exported = (out / "conversations.jsonl").exists()
            ended = _ended(log)
            kills.append("before_log" if not log.exists() else "after_export" if exported
                         else "export" if ended >= planned else f"mid_run:{ended}/{planned}")
            continue
        rc = proc.wait()
        if rc != 0:
            assert proc.stderr is not None  # stderr=PIPE above
            raise RuntimeError(f"trial {index}: run exited {rc}: {proc.stderr.read().decode()[-500:]}")
        break
    ref_keys = set(_turn_keys(ref_dir / "log.jsonl"))
    keys = _turn_keys(log)
    result = {"trial": index, "runs": attempt, "kills": kills,
              "lost_turns": len(ref_keys - set(keys)), "duplicate_turns": len(keys) - len(set(keys)),
              "identical": (out / "conversations.jsonl").read_bytes() == (ref_dir / "conversations.jsonl").read_bytes()}
    shutil.rmtree(out)
    return result


def bench(trials: int, seed: int, data_dir: Path, latency_ms: float,
          work: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rng = random.Random(seed)
    sim, url = launch_sim_server(["--seed", "3", "--latency-ms", str(latency_ms)])
    try:
        scenario = work / "scenario.yaml"
        scenario.write_text(yaml.safe_dump({**SCENARIO, "backend": {**SCENARIO["backend"], "base_url": url}}))
        ref = work / "reference"
        t0 = time.perf_counter()
        done = subprocess.run(_run_cmd(scenario, ref, data_dir, resume=False), capture_output=True, text=True)
        ref_s = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"reference run failed: {done.stderr[-500:]}")
        planned = _ended(ref / "log.jsonl")
        results = [trial(i, rng, scenario, data_dir, ref, ref_s, planned, work) for i in range(trials)]
    finally:
        sim.kill()
        sim.wait()
    summary = {"trials": trials, "lost_turns": sum(r["lost_turns"] for r in results),
               "duplicate_turns": sum(r["duplicate_turns"] for r in results),
               "identical": sum(r["identical"] for r in results), "kills": sum(len(r["kills"]) for r in results),
               "kills_in_export": sum(k in ("export", "after_export") for r in results for k in r["kills"]),
               "kills_before_log": sum(k == "before_log" for r in results for k in r["kills"]),
               "reference_turns": len(_turn_keys(ref / "log.jsonl")), "reference_run_s": round(ref_s, 2)}
    return results, summary


def main(args: argparse.Namespace) -> int:
    data_dir = resolve_data_dir(args.data_dir, None)
    with tempfile.TemporaryDirectory(prefix="cp-crash-") as tmp:
        results, summary = bench(args.trials, args.seed, data_dir, args.latency_ms, Path(tmp))
    for r in results:
        print(orjson.dumps(r).decode())
    print(orjson.dumps({"summary": summary}).decode())
    ok = summary["lost_turns"] == 0 and summary["duplicate_turns"] == 0 and summary["identical"] == args.trials
    return 0 if ok else 1
