"""Security headers, the admin sign-in and the export's spreadsheet safety (issue 35, finding 8)."""
import asyncio
import base64
import hashlib
import re

import orjson

from culturepark.study.pages import inert
from tests.study.harness import ADMIN, client, make_server
from tests.study.test_failures import _to_chat

INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.S)


def _check_headers(resp, page):
    h = resp.headers
    csp = h["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp and "'unsafe-inline'" not in csp
    assert not re.search(r"https?:|\*", csp)  # no third-party (or any other) origin
    assert h["X-Frame-Options"] == "DENY" and h["X-Content-Type-Options"] == "nosniff"
    assert h["Referrer-Policy"] == "no-referrer"
    assert "aiohttp" not in h["Server"] and "Python" not in h["Server"] and not re.search(r"\d", h["Server"])
    for _, inner in INLINE.findall(page):  # every inline script and style of the page is allowed by its hash
        digest = base64.b64encode(hashlib.sha256(inner.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp


def test_every_response_carries_the_security_headers_and_the_csp_allows_exactly_its_inline_code(
        tmp_path, tiny_data, sim_process):
    server = make_server(tmp_path, tiny_data, url=sim_process("--seed", "2"))

    async def go():
        async with client(server) as c:
            path, _, _ = await _to_chat(c)
            seen = 0
            for method, url in (("GET", "/"), ("GET", "/recover"), ("GET", "/nowhere"), ("GET", path),
                                ("GET", path + "/withdraw"), ("GET", "/admin"), ("POST", "/start"),
                                ("GET", "/p/p-nobody"), ("GET", "/admin/export"), ("GET", "/favicon.ico")):
                async with c.request(method, url, allow_redirects=False) as r:
                    _check_headers(r, await r.text())
                    seen += 1
            async with c.get(path) as r:
                page = await r.text()
                assert "<script>" in page and len(INLINE.findall(page)) == 3  # style, submit guard, streaming
            return seen
    assert asyncio.run(go()) == 10


def test_the_admin_signs_in_with_a_form_or_a_header_and_the_token_never_appears_in_a_url(tmp_path, tiny_data):
    server = make_server(tmp_path, tiny_data)

    async def go():
        async with client(server) as c:
            async with c.get("/admin") as r:
                page = await r.text()
                assert r.status == 401 and "type='password'" in page
            token = re.search(r"name='form_token' value='([^']+)'", page).group(1)
            async with c.post("/admin/login", data={"token": "wrong", "form_token": token}) as r:
                assert r.status == 403
            async with c.get("/admin") as r:
                token = re.search(r"name='form_token' value='([^']+)'", await r.text()).group(1)
            async with c.post("/admin/login", data={"token": ADMIN, "form_token": token}, allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == "/admin"
                cookie = next(h for h in r.headers.getall("Set-Cookie") if h.startswith("cp_admin="))
                assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin" in cookie
                assert ADMIN not in cookie
            async with c.get("/admin") as r:
                page = await r.text()
                assert r.status == 200 and "progress" in page and ADMIN not in page
                assert "href='/admin/export'" in page and "token=" not in page
            async with c.get("/admin/export") as r:
                assert r.status == 200
        async with client(server) as script:
            async with script.get("/admin/export", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
                assert r.status == 200
            async with script.get(f"/admin/export?token={ADMIN}") as r:
                assert r.status == 400 and "never goes in a link" in await r.text()
    asyncio.run(go())
    assert server.rejected["token_in_url"] == 1 and server.rejected["admin_token"] == 1


def test_exported_text_is_inert_in_a_spreadsheet(tmp_path, tiny_data, sim_process):
    for raw, safe in (("=HYPERLINK(\"http://x\",\"y\")", "'=HYPERLINK(\"http://x\",\"y\")"), ("+1", "'+1"),
                      ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"), ("\t=1", "'=1"), ("a\x1b[31mb\x07", "a[31mb"),
                      ("line\nbreak", "line\nbreak"), ("plain = fine", "plain = fine"), ("3", "3")):
        assert inert(raw) == safe, raw
    server = make_server(tmp_path, tiny_data, url=sim_process("--seed", "2"))

    async def go():
        async with client(server) as c:
            path, step, token = await _to_chat(c)
            async with c.post(path + "/ask", data={"step": step, "form_token": token,
                                                   "message": "=HYPERLINK(\"http://evil\",\"click\")"}) as r:
                assert r.status == 200
            async with c.get("/admin/export", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
                return [orjson.loads(x) for x in (await r.read()).splitlines()]
    rows = asyncio.run(go())
    texts = [t["text"] for t in rows[0]["turns"]]
    assert "'=HYPERLINK(\"http://evil\",\"click\")" in texts and not any(t.startswith("=") for t in texts)
