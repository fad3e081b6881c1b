"""Shared fixtures: a real sim server on a free loopback port, tiny generated WVS data."""
from __future__ import annotations

import asyncio
import contextlib
import csv
import fcntl
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from culturepark.scenarios.data_dir import resolve_data_dir
from culturepark.testing.simulator import SimConfig, start_server

REPO = Path(__file__).resolve().parent.parent

# Parallel test workers (pytest-xdist, addopts `-n auto`) share the cores: one math thread per worker
# and per process it starts. Left to itself, torch starts one OpenMP thread per core in every
# process, and threads that outnumber the cores spin against each other: LoRA training in one
# worker beside the embedded model in the other ran past 20 minutes instead of ~3.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def sim_stats(url: str) -> dict[str, Any]:
    """The sim server's own record (`/stats`: counts, usage, bill) for its `…/v1` URL, from a server
    in another thread or process (`sim_process`): a blocking read."""
    import urllib.request
    with urllib.request.urlopen(url.removesuffix("/v1") + "/stats", timeout=10) as resp:
        return json.loads(resp.read())


async def sim_stats_async(url: str) -> dict[str, Any]:
    """`sim_stats` for a server in the test's own event loop (`sim`), which a blocking read would stall."""
    import aiohttp
    async with aiohttp.ClientSession() as s, s.get(url.removesuffix("/v1") + "/stats") as resp:
        return json.loads(await resp.read())


@pytest.fixture
async def sim():
    """Start sim servers with a given config inside the test's event loop."""
    runners = []

    async def start(**config: Any) -> str:
        runner, url = await start_server(SimConfig(**config))
        runners.append(runner)
        return url

    yield start
    for r in runners:
        await r.cleanup()


def free_port() -> int:
    """A loopback port free now (for a server a test starts in a process of its own)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadedSim:
    """A sim server on its own event loop in a thread of the test process: the same server and
    flags as `culturepark sim-server` in a process of its own, without the ~1 s of CPU a Python
    process and the CLI's imports cost to start (the suite starts one for about every CLI test)."""

    def __init__(self, *args: str) -> None:
        from culturepark.cli import build_parser
        from culturepark.commands.sim_server import sim_config

        parsed = build_parser().parse_args(["sim-server", "--port", "0", *args])
        config = sim_config(parsed)
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self._failed: BaseException | None = None
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                runner, self.url = self.loop.run_until_complete(start_server(config, parsed.host, parsed.port))
            except BaseException as exc:  # reported to the test by the constructor
                self._failed = exc
                started.set()
                return
            started.set()
            try:
                self.loop.run_forever()
            finally:
                self.loop.run_until_complete(runner.cleanup())
                self.loop.close()

        self._thread = threading.Thread(target=serve, name="sim-server", daemon=True)
        self._thread.start()
        if not started.wait(30) or self._failed is not None:
            raise RuntimeError(f"sim server did not start: {self._failed!r}")

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)


@pytest.fixture
def sim_process():
    """A sim server for CLI tests: `start(*flags)` takes `culturepark sim-server`'s flags and returns
    its base URL. It serves from a thread of the test process (`ThreadedSim`), so a `culturepark`
    subprocess or an in-process CLI call (`run_cli_here`) talks to it over loopback as to a server
    of its own; tests whose point is the server's process (kill -9) start one with `Popen`."""
    servers: list[ThreadedSim] = []

    def start(*args: str) -> str:
        servers.append(ThreadedSim(*args))
        return servers[-1].url

    yield start
    for server in servers:
        server.stop()


ITEMS = [
    {"topic": "SOCIAL VALUES", "q_id": "27", "q_content": "One of my main goals in life has been to make my parents proud",
     "option": "1. Strongly agree 2. agree 3. Disagree 4. Strongly disagree"},
    {"topic": "SOCIAL VALUES", "q_id": "31", "q_content": "University is more important for a boy than for a girl",
     "option": "1. Strongly agree 2. agree 3. Disagree 4. Strongly disagree"},
    {"topic": "SCIENCE & TECHNOLOGY", "q_id": "158", "q_content": "Science and technology are making our lives healthier",
     "option": "1. completely Disagree 2. Strongly Disagree 3. Disagree 4. Somewhat Disagree 5. Neither Agree nor Disagree 6. Somewhat Agree 7. Agree 8. Strongly Agree 9. Almost Completely Agree 10. Completely Agree"},
    {"topic": "SECURITY", "q_id": "132", "q_content": "How frequently do robberies occur in your neighborhood?",
     "option": "1. Very frequently 2. Quite frequently 3. Not frequently 4. Not at all frequently"},
]


def write_tiny_data(root: Path) -> Path:
    """A WVS slice with known answers: missing codes mixed in, one item never asked (all -4)."""
    wvs = root / "wvs"
    (wvs / "countries").mkdir(parents=True)
    (wvs / "questions.jsonl").write_text("".join(json.dumps(i) + "\n" for i in ITEMS))
    cols = ["B_COUNTRY", "B_COUNTRY_ALPHA", "Q27", "Q31", "Q158", "Q132"]
    rows = {
        "China": [[156, "CHN", 1, 2, 9, -4], [156, "CHN", 1, -2, 10, -4], [156, "CHN", 2, 3, -1, -4],
                  [156, "CHN", -1, 4, 7, -4], [156, "CHN", 1, 1, 8, -4]],
        "Germany": [[276, "DEU", 3, 4, 6, 3], [276, "DEU", 2, 4, 7, 4], [276, "DEU", 4, -5, 5, 3]],
        "United_States": [[840, "USA", 2, 4, 8, 3], [840, "USA", 1, 3, 7, 4]],
    }
    for country, data in rows.items():
        with open(wvs / "countries" / f"{country}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(cols)
            w.writerows(data)
            w.writerow(["Avg", "", 1.5, -1.0, 2.0, -4.0])
            w.writerow(["Avg_First", "", 1.5, 1.0, 2.0, -4.0])
            w.writerow(["Avg_Last", "", 1.5, 1.0, 2.0, -4.0])
    return root


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return write_tiny_data(tmp_path / "data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = resolve_data_dir()
    if not (path / "wvs" / "questions.jsonl").exists():
        pytest.skip(f"shared research data not found at {path} (set CULTUREPARK_DATA_DIR)")
    return path


def scenario_dict(**overrides: Any) -> dict[str, Any]:
    base = {
        "name": "t", "backend": {"provider": "openai", "model": "sim-model", "base_url": "http://127.0.0.1:9/v1"},
        "sampling": {"temperature": 0.7, "max_tokens": 40},
        "cultures": ["Chinese", "German"], "version": "v2", "turns": 4, "items": ["27", "158"],
        "seed": 1, "concurrency": 8, "retry": {"max_attempts": 3, "base_delay_s": 0.01, "max_delay_s": 0.05},
    }
    base.update(overrides)
    return base


def sim_run(tmp_path: Path, data_dir: Path, base_url: str, name: str = "run", **overrides: Any) -> Path:
    """A finished conversation run of `scenario_dict(**overrides)` against a sim server, via the CLI."""
    data = scenario_dict(**overrides)
    data["backend"]["base_url"] = base_url
    sc = tmp_path / f"{name}.yaml"
    sc.write_text(yaml.safe_dump(data))
    out = tmp_path / name
    res = run_cli_here("run", str(sc), "--out", str(out), "--data-dir", str(data_dir))  # a fixture, not the CLI
    assert res.returncode == 0, res.stderr
    return out


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "culturepark.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def run_cli_here(*args: str) -> subprocess.CompletedProcess:
    """`run_cli` in this process, for tests whose point is a stage's result rather than the process
    (no kill, no environment, no timeout): the libraries a stage loads (sentence-transformers for the
    MiniLM, ~10 s of imports on 2 cores) are then imported once per test session, not once per call.
    The exit code, stdout and stderr come back as from `run_cli`; a crash is exit 1 with its traceback."""
    from culturepark.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 2
        except Exception:
            traceback.print_exc()
            code = 1
    return subprocess.CompletedProcess(["culturepark", *args], code, out.getvalue(), err.getvalue())


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.02) -> None:
    """Bounded wait on an observable condition (a file growing, a process state)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval)


# Published Hofstede scores for the tiny fixture (values as in the real table for these countries).
PUBLISHED_HOFSTEDE = {"China": {"pdi": 80, "idv": 20, "mas": 66, "uai": 30, "lto": 87, "ivr": 24},
                      "Germany": {"pdi": 35, "idv": 67, "mas": 66, "uai": 65, "lto": 83, "ivr": 40}}


def write_hofstede(data_dir: Path) -> None:
    """VSM13 items with recognisable questions ("Survey item 02: ...") and a two-country score table."""
    folder = data_dir / "hofstede"
    folder.mkdir(exist_ok=True)
    items = [{"item": n, "scale": "1 = a, 2 = b, 3 = c, 4 = d, 5 = e",
              "question": f"Survey item {n:02d}: how important is thing {n:02d}?"} for n in range(1, 25)]
    (folder / "vsm13_items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    rows = ["ctr;country;pdi;idv;mas;uai;ltowvs;ivr"]
    rows += [f"X;{c};{s['pdi']};{s['idv']};{s['mas']};{s['uai']};{s['lto']};{s['ivr']}"
             for c, s in PUBLISHED_HOFSTEDE.items()]
    (folder / "6-dimensions-for-website-2015-08-16.csv").write_text("\n".join(rows) + "\n")


def debian_program(package: str, *names: str) -> str | None:
    """A program from Debian's packages, installed here (apt, as root) when missing; None if it
    cannot be. CI runs on a fresh machine, so tests that need a real browser or proxy bring it."""
    found = next((exe for n in names if (exe := shutil.which(n))), None)
    if found is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        # Parallel test workers: one apt at a time (a second would fail on dpkg's lock); a waiting
        # worker then finds the program the first one installed.
        with open(Path(tempfile.gettempdir()) / "culturepark-tests-apt.lock", "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            return _apt_install(package, names)
    return found


def _apt_install(package: str, names: tuple[str, ...]) -> str | None:
    found = next((exe for n in names if (exe := shutil.which(n))), None)
    if found is None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", package]
        if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
            subprocess.run(install, env=env, capture_output=True, timeout=900)
        found = next((exe for n in names if (exe := shutil.which(n))), None)
    return found


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium for browser tests.

    `playwright install` cannot download on these machines, so playwright drives the system
    browser through `executable_path`.
    """
    pytest.importorskip("playwright.sync_api")
    exe = debian_program("chromium", "chromium", "chromium-browser")
    if exe is None:
        pytest.skip("no chromium on PATH and it could not be installed (apt install chromium)")
    return exe


@pytest.fixture(scope="session")
def nginx() -> str:
    """Debian's nginx (and openssl for a self-signed certificate): the study app behind a real
    TLS-terminating reverse proxy."""
    exe = debian_program("nginx", "nginx")
    if exe is None or debian_program("openssl", "openssl") is None:
        pytest.skip("no nginx/openssl on PATH and they could not be installed (apt install nginx openssl)")
    return exe
