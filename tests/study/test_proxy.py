"""Behind a TLS-terminating reverse proxy (issue 35, finding 3): forwarded headers from a trusted proxy
only; the forms work, cookies are Secure, and per-client limits see the real clients."""
import asyncio
import contextlib

import pytest
from aiohttp import CookieJar
from aiohttp.test_utils import TestClient, TestServer

from culturepark.engine.errors import InputError
from culturepark.study.proxy import forwarded_client, parse_proxies
from culturepark.study.routes import build_app
from tests.study.harness import make_server
from tests.study.test_server import TOKEN

HTTPS = {"Origin": "https://study.example.org", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "study.example.org"}


@contextlib.asynccontextmanager
async def _behind(server, trusted):
    app = build_app(server, trusted_proxies=parse_proxies(trusted))
    async with TestClient(TestServer(app), cookie_jar=CookieJar(unsafe=True)) as c:
        yield c


async def _consent(c, headers):
    """As a browser on https would: the (Secure) form cookie goes back with the post; the test client
    speaks plain http to the app, as the proxy does, so the cookie is carried by hand."""
    async with c.get("/", headers=headers) as r:
        token = TOKEN.search(await r.text()).group(1)
        cookie = r.cookies["cp_form"].value
    async with c.post("/start", data={"consent": "yes", "age": "yes", "form_token": token},
                      headers={**headers, "Cookie": f"cp_form={cookie}"}) as r:
        return r.status, r.headers.getall("Set-Cookie", [])


def test_forms_work_through_a_trusted_proxy_and_forwarded_headers_from_others_are_ignored(tmp_path, tiny_data):
    server = make_server(tmp_path, tiny_data)

    async def go():
        async with _behind(server, ["127.0.0.1"]) as proxied:
            status, cookies = await _consent(proxied, HTTPS)
            assert status == 200  # the browser's https Origin matches the scheme and host the proxy forwarded
            assert all("Secure" in c for c in cookies) and any(c.startswith("cp_session=") for c in cookies)
        async with _behind(server, []) as direct:  # the same headers, straight from a client: not believed
            status, _ = await _consent(direct, HTTPS)
            assert status == 403
        async with _behind(server, ["10.0.0.0/8"]) as other:  # a peer that is not the named proxy
            status, _ = await _consent(other, HTTPS)
            assert status == 403
    asyncio.run(go())
    assert server.rejected["cross_site"] == 2


def test_per_client_limits_see_the_forwarded_client(tmp_path, tiny_data):
    server = make_server(tmp_path, tiny_data, signups_per_minute=100)

    async def go():
        async with _behind(server, ["127.0.0.1"]) as proxied:
            script = {**HTTPS, "X-Forwarded-For": "198.51.100.1, 203.0.113.9"}  # the client faked the first
            got = [(await _consent(proxied, script))[0] for _ in range(11)]
            other = (await _consent(proxied, {**HTTPS, "X-Forwarded-For": "203.0.113.10"}))[0]
            return got, other
    got, other = asyncio.run(go())
    assert got == [200] * 10 + [429] and other == 200
    assert server.rejected["signup_rate_client"] == 1


def test_forwarded_client_and_bad_proxy_values():
    proxies = parse_proxies(["10.0.0.0/8", "::1"])
    assert forwarded_client("1.2.3.4, 10.0.0.5", "10.0.0.6", proxies) == "1.2.3.4"
    assert forwarded_client("9.9.9.9, 1.2.3.4", "10.0.0.6", proxies) == "1.2.3.4"  # rightmost untrusted
    assert forwarded_client("10.0.0.7", "10.0.0.6", proxies) == "10.0.0.6"
    assert forwarded_client("not-an-ip", "10.0.0.6", proxies) == "10.0.0.6"
    with pytest.raises(InputError, match=r"--trusted-proxy 'example\.org'"):
        parse_proxies(["example.org"])
