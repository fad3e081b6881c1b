"""Crafted requests against `culturepark study serve`, as a table (printed with `pytest -s`).

Each case is one request a script, another website or a second browser could send. For every
case the same invariants hold: the status is the one expected (never 500), the page says what
happened in words, nothing is written to the log, the refusal is counted under its reason on
the admin page, and at the end the server's own output names no client address.
"""
import asyncio
import re
import signal

import yaml

from culturepark.engine.log import read_log
from tests.conftest import write_hofstede
from tests.study.test_server import FIELDS, STEP, TOKEN, Server, browser, consent, study

EVIL = {"Origin": "https://evil.example"}


async def _post(s, url, data, headers=None):
    async with s.post(url, data=data, headers=headers or {}, allow_redirects=False) as r:
        return r.status, await r.text()


async def _get(s, url):
    async with s.get(url, allow_redirects=False) as r:
        return r.status, await r.text()


def _answers(ctx, **changes):
    return {"step": ctx["step"], "form_token": ctx["token"], **ctx["fields"], **changes}


# case -> (request, expected status, reason counted on the admin page or None for an answer refused on its page)
CASES = {
    "admin token, non-ASCII": (lambda c: _get(c["owner"], c["url"] + "admin?token=%C3%BC%E2%82%AC"), 403, "admin_token"),
    "admin token, wrong": (lambda c: _get(c["owner"], c["url"] + "admin?token=guess"), 403, "admin_token"),
    "admin export, no token": (lambda c: _get(c["owner"], c["url"] + "admin/export"), 403, "admin_token"),
    "answer '²' (a digit to str.isdigit)": (lambda c: _post(c["owner"], c["answers"], _answers(c, **{"vsm13:1": "²"})), 400, None),
    "answer '٣' (Arabic-Indic three)": (lambda c: _post(c["owner"], c["answers"], _answers(c, **{"vsm13:1": "٣"})), 400, None),
    "answer of 4,301 digits": (lambda c: _post(c["owner"], c["answers"], _answers(c, **{"vsm13:1": "9" * 4301})), 400, None),
    "answer -1": (lambda c: _post(c["owner"], c["answers"], _answers(c, **{"vsm13:1": "-1"})), 400, None),
    "answer 6 on a 1-5 scale": (lambda c: _post(c["owner"], c["answers"], _answers(c, **{"vsm13:1": "6"})), 400, None),
    "form body not UTF-8": (lambda c: _post(c["owner"], c["answers"], f"form_token={c['token']}&step={c['step']}&"
                                            "vsm13%3A1=%FF%FE".encode(),
                                            {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}), 400, None),
    "body over 256 KiB": (lambda c: _post(c["owner"], c["answers"], _answers(c, free="x" * 300_000)), 413, "http_413"),
    "consent posted from another website": (lambda c: _post(c["owner"], c["url"] + "start",
                                                            {"consent": "yes", "form_token": "x"}, EVIL), 403, "cross_site"),
    "consent posted by a script without the form cookie": (lambda c: _post(c["stranger"], c["url"] + "start",
                                                                           {"consent": "yes", "form_token": "x"}), 403, "forged"),
    "answers without the form token": (lambda c: _post(c["owner"], c["answers"], _answers(c, form_token="")), 403, "forged"),
    "chat message with a forged token": (lambda c: _post(c["owner"], c["base"] + "/ask",
                                                         {"step": "24", "form_token": "0" * 32, "message": "hi"}), 403, "forged"),
    "answers posted cross-site (Sec-Fetch-Site)": (lambda c: _post(c["owner"], c["answers"], _answers(c),
                                                                   {"Sec-Fetch-Site": "cross-site"}), 403, "cross_site"),
    "withdrawal posted from another website": (lambda c: _post(c["owner"], c["base"] + "/withdraw",
                                                               {"form_token": c["token"]}, EVIL), 403, "cross_site"),
    "reused link in a second browser: open": (lambda c: _get(c["stranger"], c["base"]), 403, "no_session"),
    "reused link in a second browser: post": (lambda c: _post(c["stranger"], c["answers"], _answers(c)), 403, "no_session"),
    "wrong recovery code": (lambda c: _post(c["stranger2"], c["url"] + "recover",
                                            {"code": "AAAA-AAAA", "form_token": c["stranger2_token"]}), 403, "recovery_code"),
    "unknown page": (lambda c: _get(c["owner"], c["url"] + "etc/passwd"), 404, "http_404"),
    "wrong method": (lambda c: _get(c["owner"], c["url"] + "start"), 405, "http_405"),
}


def _counters(admin_html):
    return {k: int(v) for k, v in re.findall(r"<li>([a-z0-9_]+): (\d+)</li>", admin_html)}


def test_crafted_requests_are_refused_with_a_page_and_write_nothing(tmp_path, tiny_data, sim_process):
    write_hofstede(tiny_data)
    scenario = tmp_path / "study.yaml"
    scenario.write_text(yaml.safe_dump(study(sim_process("--seed", "2"))))
    out = tmp_path / "run"
    server = Server(scenario, out, tiny_data)
    log = out / "log.jsonl"
    table = []
    try:
        async def go():
            async with browser() as owner, browser() as stranger, browser() as stranger2:
                path, _ = await consent(owner, server.url)
                base = server.url.rstrip("/") + path
                _, page = await _get(owner, base)
                _, recover_page = await _get(stranger2, server.url + "recover")
                ctx = {"owner": owner, "stranger": stranger, "stranger2": stranger2, "url": server.url,
                       "base": base, "answers": base + "/answers", "step": STEP.search(page).group(1),
                       "token": TOKEN.search(page).group(1), "fields": {k: "3" for k, _ in FIELDS.findall(page)},
                       "stranger2_token": TOKEN.search(recover_page).group(1)}
                for case, (send, status, reason) in CASES.items():
                    before_log = log.read_bytes()
                    before = _counters((await _get(owner, server.admin))[1])
                    got, text = await send(ctx)
                    after = _counters((await _get(owner, server.admin))[1])
                    written = "nothing" if log.read_bytes() == before_log else "THE LOG CHANGED"
                    counted = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
                    table.append((case, got, written, counted))
                    assert got == status, (case, got, text[:300])
                    assert "<h1>" in text and ("class='error'" in text), (case, text[:300])  # said in words, on a page
                    assert written == "nothing", case
                    assert counted == ({reason: 1} if reason else {}), (case, counted)
                # malformed HTTP, below the app: aiohttp answers 400 and logs it, without the client's address
                host, port = server.url.split("//")[1].rstrip("/").split(":")
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
                await writer.drain()
                assert (await reader.read(100)).split(b" ")[1] == b"400"
                writer.close()
                # and the participant still continues normally afterwards
                got, text = await _post(owner, ctx["answers"], _answers(ctx))
                assert got == 303
        asyncio.run(go())
    finally:
        server.stop(signal.SIGTERM)
        print("\n| crafted request | status | written | counted |\n|---|---|---|---|")
        for case, got, written, counted in table:
            print(f"| {case} | {got} | {written} | {', '.join(f'{k} +{v}' for k, v in counted.items()) or '—'} |")
    assert len(table) == len(CASES)
    assert "127.0.0.1" not in server.stderr and "Traceback" not in server.stderr, server.stderr[-2000:]
    assert "malformed HTTP request refused (BadHttpMessage; client address not logged)" in server.stderr


def test_two_hundred_signups_in_a_minute_admit_the_limit_and_invitation_codes_admit_one_each(
        tmp_path, tiny_data, sim_process):
    write_hofstede(tiny_data)
    url = sim_process("--seed", "2")
    scenario = tmp_path / "study.yaml"
    scenario.write_text(yaml.safe_dump(study(url)))  # signups_per_minute: 60
    out = tmp_path / "run"
    server = Server(scenario, out, tiny_data)
    try:
        async def one():
            async with browser() as s:
                async with s.get(server.url) as r:
                    token = TOKEN.search(await r.text()).group(1)
                async with s.post(server.url + "start", data={"consent": "yes", "form_token": token}) as r:
                    return r.status, await r.text()

        async def everyone():
            results = await asyncio.gather(*(one() for _ in range(200)))
            async with browser() as s, s.get(server.admin) as r:
                return results, await r.text()
        results, admin = asyncio.run(everyone())
    finally:
        server.stop()
    statuses = [status for status, _ in results]
    assert statuses.count(200) == 60 and statuses.count(429) == 140
    assert all("try again in a minute" in text for status, text in results if status == 429)
    assert _counters(admin)["signup_rate"] == 140
    assert sum(r.type == "participant" for r in read_log(out).records) == 60

    closed = tmp_path / "closed.yaml"
    spec = study(url)
    spec["human"]["invitation_codes"] = ["ALPHA-1", "BETA-2"]
    closed.write_text(yaml.safe_dump(spec))
    out2 = tmp_path / "run2"
    server = Server(closed, out2, tiny_data)
    try:
        async def sign_up(code):
            async with browser() as s:
                async with s.get(server.url) as r:
                    page = await r.text()
                    assert "Invitation code" in page
                data = {"consent": "yes", "form_token": TOKEN.search(page).group(1)}
                if code is not None:
                    data["invitation"] = code
                async with s.post(server.url + "start", data=data) as r:
                    return r.status

        async def codes():
            return [await sign_up(c) for c in (None, "WRONG", "ALPHA-1", "ALPHA-1", " BETA-2 ")]
        assert asyncio.run(codes()) == [403, 403, 200, 403, 200]
    finally:
        server.stop()
    assert sum(r.type == "participant" for r in read_log(out2).records) == 2
