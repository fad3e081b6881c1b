"""`culturepark study serve`: the education study with real participants, in a browser.

Binds the port first (a busy port leaves no run behind), then opens the same run session as
`culturepark run` (`runs.session`) with the web app inside it until stopped.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from aiohttp import web

from culturepark.agents.learners import EducationPlan
from culturepark.engine.errors import InputError
from culturepark.engine.log import LOG_NAME
from culturepark.runs.prepare import RunOptions, prepare
from culturepark.runs.session import run_session
from culturepark.scenarios.schema import EducationScenario
from culturepark.study.limits import ConnectionLimits, GuardedSite
from culturepark.study.proxy import Network, parse_proxies
from culturepark.study.routes import build_app
from culturepark.study.server import StudyServer, private_header


async def serve(scenario_ref: str | Path, out: Path, host: str = "127.0.0.1", port: int = 8800,
                data_dir: Path | None = None, say: Callable[[str], None] = print,
                ready: Callable[[str, str], Any] | None = None, stop: asyncio.Event | None = None,
                base_url: str | None = None, model: str | None = None, arms: list[str] | None = None,
                trusted_proxies: list[str] | None = None, pilot: bool = False) -> None:
    """Run the study server until `stop` is set (or forever). Writes to `out` like `culturepark run`;
    `base_url`, `model` and `arms` change the tutors as `run`'s flags do; `trusted_proxies`: the
    reverse proxies whose X-Forwarded-* headers are believed (`study.proxy`); `pilot`: admit people
    although researcher, contact or approval is unset (the pages say it is a pilot)."""
    proxies = parse_proxies(trusted_proxies or [])
    opts = RunOptions(out=Path(out), data_dir=data_dir, base_url=base_url, model=model, arms=arms)
    prepared = prepare(scenario_ref, opts)
    scenario, plan, out = prepared.scenario, prepared.plan, prepared.out
    if prepared.experiment.kind != "education":
        raise InputError("study serve needs an education scenario (kind: education)")
    scenario, plan = cast(EducationScenario, scenario), cast(EducationPlan, plan)
    sock = _listen(host, port)  # before anything is written: a busy port must leave no run behind
    # The people are the learners: only the tutors need a backend (a local model loads only if an arm uses it).
    tutors = {role: cfg for role, cfg in prepared.experiment.backends().items() if role.startswith("tutor:")}
    try:
        async with run_session(prepared, opts, say, backends=tutors, resume=(out / LOG_NAME).exists(),
                               fsync="always") as session:
            log = session.start_run(lambda header: private_header(header, out), learners="human")
            token = secrets.token_urlsafe(16)
            server = StudyServer(scenario, plan, out, session.endpoints, log, token, pilot=pilot)
            runner = _runner(server, proxies)
            await runner.setup()
            await GuardedSite(runner, sock, counts=server.rejected).start()  # header timeout, connection cap
            url = f"http://{host}:{sock.getsockname()[1]}/"
            say(f"listening on {url}")
            say(f"admin: {url}admin token: {token}")  # the token is posted there or sent as a header, never in a URL
            if missing := scenario.human.missing():
                say(f"warning: human.{', human.'.join(missing)} not set in the scenario; " + (
                    "a pilot: participants are admitted and every page says it is a pilot." if pilot else
                    "nobody is admitted until they are set (or start with --pilot for a test run)."))
            if ready:
                ready(url, token)
            try:
                await (stop or _stop_on_signals()).wait()
            finally:
                await runner.cleanup()
            say("stopped; every answer is in the log — start again with the same --out to continue")
    finally:
        sock.close()


class _NoClientAddress(logging.Filter):
    """aiohttp names the client's IP address (and dumps a traceback) when it refuses a malformed
    request; this keeps one line with the kind of error and nothing about the client."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Error handling request from"):
            kind = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else "error"
            record.msg, record.args = "malformed HTTP request refused (%s; client address not logged)", (kind,)
            record.exc_info = record.exc_text = None
        return True


def _runner(server: StudyServer, proxies: list[Network]) -> web.AppRunner:
    """No client address in any log unless the scenario turns the access log on."""
    logger = logging.getLogger("culturepark.study.http")
    if not any(isinstance(f, _NoClientAddress) for f in logger.filters):
        logger.addFilter(_NoClientAddress())
    app = build_app(server, trusted_proxies=proxies)
    if server.human.log_client_addresses:
        logging.basicConfig(level=logging.INFO)
        return web.AppRunner(app, logger=logger,  # aiohttp's access log, with addresses
                             keepalive_timeout=ConnectionLimits.keepalive_timeout_s)
    return web.AppRunner(app, access_log=None, logger=logger, keepalive_timeout=ConnectionLimits.keepalive_timeout_s)


def _stop_on_signals() -> asyncio.Event:
    """SIGTERM (service managers) and SIGINT (Ctrl-C) stop the server cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (0: any free port), or a one-line InputError."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port} ({exc.strerror})") from exc
    return sock
