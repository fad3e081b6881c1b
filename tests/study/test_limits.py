"""One client cannot take the study from everyone (issue 35, findings 4 and 5): per-client buckets
before the study-wide caps, a header timeout, a body timeout and a cap on open connections."""
import asyncio
import logging
import signal
import socket
import time

import aiohttp
import yaml
from aiohttp import web

from culturepark.engine.log import read_log
from culturepark.study.limits import ConnectionLimits, GuardedSite
from culturepark.study.routes import build_app
from culturepark.study.server import Refused
from tests.conftest import write_hofstede
from tests.study.harness import make_server
from tests.study.test_server import TOKEN, Server, browser, study

SCRIPT, PERSON = "203.0.113.7", "198.51.100.20"  # documentation addresses: a script and a participant


def _refused(coro):
    try:
        asyncio.run(coro)
    except Refused as exc:
        return exc.reason
    return None


def test_a_script_spends_its_own_bucket_not_everyone_s(tmp_path, tiny_data):
    server = make_server(tmp_path, tiny_data, signups_per_minute=100)
    made = [asyncio.run(server.new_participant(client=SCRIPT)) for _ in range(10)]
    assert _refused(server.new_participant(client=SCRIPT)) == "signup_rate_client"
    asyncio.run(server.new_participant(client=PERSON))  # a real sign-up is still admitted
    # recovery: wrong codes from the script lock the script out, not the participant with the right code
    for _ in range(5):
        assert _refused(server.recover("AAAA-AAAA-AAAA", client=SCRIPT)) == "recovery_code"
    assert _refused(server.recover("AAAA-AAAA-AAAA", client=SCRIPT)) == "recovery_rate_client"
    for _ in range(20):  # more than the study-wide 20 a minute: the script's refusals do not spend it
        _refused(server.recover("AAAA-AAAA-AAAA", client=SCRIPT))
    found, _ = asyncio.run(server.recover(made[0].recovery_code, client=PERSON))
    assert found is made[0].participant
    assert server.rejected["recovery_rate_client"] == 21
    # nothing about a client is kept in clear: the buckets are keyed by an in-memory HMAC
    keys = repr(list(server.clients._buckets))
    assert SCRIPT not in keys and PERSON not in keys and len(server.clients) == 4
    assert SCRIPT not in (server.out / "log.jsonl").read_text()


def test_invitation_guessing_is_throttled_per_client(tmp_path, tiny_data):
    server = make_server(tmp_path, tiny_data, invitation_codes=["ALPHA-1", "BETA-2"])
    for guess in ("A", "B", "C", "D", "E"):
        assert _refused(server.new_participant(guess, client=SCRIPT)) == "invitation"
    assert _refused(server.new_participant("ALPHA-1", client=SCRIPT)) == "invitation_rate_client"
    asyncio.run(server.new_participant("alpha-1", client=PERSON))  # the person it was sent to gets in
    assert sum(r.type == "participant" for r in read_log(server.out).records) == 1


async def _serve(server, limits):
    runner = web.AppRunner(build_app(server, limits), access_log=None, keepalive_timeout=limits.keepalive_timeout_s)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    site = GuardedSite(runner, sock, limits, counts=server.rejected)
    await site.start()
    return runner, sock.getsockname()[1]


async def _idle(port, n, partial):
    conns = []
    for i in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if partial and i % 2:
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # half a request, never finished
        conns.append((reader, writer))
    return conns


async def _closed(reader, within):
    """Whether the server closes this connection within `within` seconds (EOF or reset)."""
    try:
        return await asyncio.wait_for(reader.read(100), within) == b""
    except ConnectionResetError:  # aborted by the server
        return True
    except TimeoutError:
        return False


def test_idle_and_half_sent_connections_are_evicted_then_timed_out_and_counted(tmp_path, tiny_data, caplog):
    server = make_server(tmp_path, tiny_data)
    limits = ConnectionLimits(header_timeout_s=1.0, body_timeout_s=0.5, max_connections=20)

    async def go():
        runner, port = await _serve(server, limits)
        try:
            conns = await _idle(port, 60, partial=True)
            await asyncio.sleep(0)  # let the server accept them (no timing depends on it)
            started = time.monotonic()
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/") as r:
                assert r.status == 200 and "Consent" in await r.text()
            answered = time.monotonic() - started
            closed = await asyncio.gather(*(_closed(reader, 5.0) for reader, _ in conns))
            # a form whose body stops half way: 408 after the body timeout
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /start HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                         b"Content-Length: 100\r\n\r\nconsent=yes")
            status = (await asyncio.wait_for(reader.read(40), 5.0)).split(b" ")[1]
            for _, w in [*conns, (reader, writer)]:
                w.close()
            return answered, closed, status
        finally:
            await runner.cleanup()
    with caplog.at_level(logging.WARNING, logger="culturepark.study"):
        answered, closed, status = asyncio.run(go())
    assert answered < 1.0 and all(closed) and status == b"408"
    counted = server.rejected
    assert counted["evicted_idle"] + counted["header_timeout"] >= 60 and counted["evicted_idle"] >= 40
    assert counted["body_timeout"] == 1
    lines = [r.getMessage() for r in caplog.records if "connection(s)" in r.getMessage()]
    assert 2 <= len(lines) <= 6 and not any("127.0.0.1" in line for line in lines)  # counted, not per connection


def test_hundreds_of_idle_sockets_and_a_participant_is_still_answered_within_a_second(
        tmp_path, tiny_data, sim_process):
    write_hofstede(tiny_data)
    scenario = tmp_path / "study.yaml"
    scenario.write_text(yaml.safe_dump(study(sim_process("--seed", "2"))))
    server = Server(scenario, tmp_path / "run", tiny_data)
    port = server.url.rstrip("/").rsplit(":", 1)[1]
    try:
        async def go():
            conns = await _idle(int(port), 400, partial=True)
            try:
                timings = []
                async with browser() as s:
                    for _ in range(3):
                        started = time.monotonic()
                        async with s.get(server.url) as r:
                            page = await r.text()
                            assert r.status == 200
                        timings.append(time.monotonic() - started)
                    async with s.post(server.url + "start", data={"consent": "yes", "age": "yes",
                                                                 "form_token": TOKEN.search(page).group(1)}) as r:
                        assert r.status == 200  # and the participant gets in
                    async with s.get(server.admin, headers=server.auth) as r:
                        admin = await r.text()
                return timings, admin
            finally:
                for _, w in conns:
                    w.close()
        timings, admin = asyncio.run(go())
    finally:
        server.stop(signal.SIGTERM)
    print(f"\n400 idle sockets open: a participant's page answered in {', '.join(f'{t:.3f}' for t in timings)} s")
    assert max(timings) < 1.0, timings
    assert "evicted_idle: " in admin
    assert "Traceback" not in server.stderr and "127.0.0.1" not in server.stderr
    assert server.stderr.count("connection(s)") <= 6, server.stderr[-2000:]
