"""Sessions on a shared computer and what the log keeps of secrets (issue 35, findings 1, 2, 8, 9)."""
import asyncio
import hashlib
import os
import re
import stat
import unicodedata

import orjson

from culturepark.agents.meta import Learner
from culturepark.engine.log import read_log
from culturepark.engine.records import ParticipantRecord
from culturepark.study.keys import KEY_FILE, kdf_check, kdf_hash, keyed, normal_code
from culturepark.study.server import SESSION_MARGIN_S, private_header
from tests.study.harness import Clock, client, make_server
from tests.study.test_server import CODE, PID, TOKEN


async def _consent(c, **extra):
    async with c.get("/") as r:
        page = await r.text()
    token = TOKEN.search(page).group(1)
    async with c.post("/start", data={"consent": "yes", "age": "yes", "form_token": token, **extra}) as r:
        return r.status, await r.text(), token, r


def _cookie(c, name):
    return next((m.value for m in c.session.cookie_jar if m.key == name), None)


def _set_cookie(c, name, value):
    """What a replaying script sends: this cookie value instead of the browser's."""
    c.session.cookie_jar.clear(lambda m: m.key == name)
    c.session.cookie_jar.update_cookies({name: value}, c.make_url("/"))


def test_a_replayed_consent_form_never_yields_a_session_or_a_recovery_code(tmp_path, tiny_data):
    server = make_server(tmp_path, tiny_data)

    async def go():
        async with client(server) as first:
            status, page, token, _ = await _consent(first)
            assert status == 200 and CODE.search(page)
            assert _cookie(first, "cp_form") not in (None, token)  # rotated on use
            # the next person at the same computer: the page carries the new token, not the spent one
            async with first.get("/") as r:
                assert TOKEN.search(await r.text()).group(1) not in (token,)
            # a replay of the spent form, with its cookie, as a script or the back button would send it
            _set_cookie(first, "cp_form", token)
            before = (server.out / "log.jsonl").read_bytes()
            async with first.post("/start", data={"consent": "yes", "age": "yes", "form_token": token}) as r:
                replay = r.status, await r.text()
            assert replay[0] == 403 and "sent already" in replay[1]
            assert not CODE.search(replay[1]) and not PID.search(replay[1].split("<form")[0])
            assert (server.out / "log.jsonl").read_bytes() == before
            assert server.rejected["form_used"] == 1
            # the refusal hands out a fresh token: agreeing again starts a *new* session
            status, page2, _, _ = await _consent(first)
            assert status == 200 and PID.search(page2).group(1) != PID.search(page).group(1)
        return page
    asyncio.run(go())
    assert sum(isinstance(r, ParticipantRecord) for r in read_log(server.out).records) == 2


def test_a_replayed_recovery_form_is_refused_and_a_token_from_another_process_is_forged(tmp_path, tiny_data):
    server = make_server(tmp_path, tiny_data)

    async def go():
        async with client(server) as owner, client(server) as second:
            _, page, _, _ = await _consent(owner)
            code = CODE.search(page).group(1)
            assert re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}", code)
            async with second.get("/recover") as r:
                token = TOKEN.search(await r.text()).group(1)
            async with second.post("/recover", data={"code": code, "form_token": token},
                                   allow_redirects=False) as r:
                assert r.status == 303
            assert _cookie(second, "cp_form") != token
            _set_cookie(second, "cp_form", token)
            async with second.post("/recover", data={"code": code, "form_token": token},
                                   allow_redirects=False) as r:
                assert r.status == 403 and "sent already" in await r.text()
            # a well-formed token this process never signed (a script's, or one from before a restart)
            fake = "1800000000.abcdefghijklmnop.0123456789abcdef01234567"
            _set_cookie(second, "cp_form", fake)
            async with second.post("/start", data={"consent": "yes", "age": "yes", "form_token": fake}) as r:
                assert r.status == 403 and "expired or was not sent" in await r.text()
    asyncio.run(go())
    assert server.rejected["form_used"] == 1 and server.rejected["forged"] == 1
    assert [r.type for r in read_log(server.out).records].count("access") == 1


def test_the_log_keeps_salted_scrypt_hashes_and_a_keyed_hash_of_invitation_codes(tmp_path, tiny_data):
    codes = ["Café-Ünï", "BETA-2"]
    server = make_server(tmp_path, tiny_data, invitation_codes=codes)

    async def go():
        async with client(server) as a, client(server) as b, client(server) as c:
            decomposed = unicodedata.normalize("NFD", "  cafÉ-üNÏ ")  # another form, case and spaces
            first = await _consent(a, invitation=decomposed)
            full_width = "ＢＥＴＡ－２".replace("－", "-")  # full-width letters and digit
            second = await _consent(b, invitation=full_width)
            again = await _consent(c, invitation="beta-2")
            return first, second, again
    first, second, again = asyncio.run(go())
    assert first[0] == 200 and second[0] == 200, (first[1][:300], second[1][:300])
    assert again[0] == 403 and "has been used already" in again[1]
    text = (server.out / "log.jsonl").read_text()
    for code in codes:
        for form in (code, normal_code(code), hashlib.sha256(code.encode()).hexdigest(),
                     hashlib.sha256(normal_code(code).encode()).hexdigest()):
            assert form not in text
    records = [r for r in read_log(server.out).records if isinstance(r, ParticipantRecord)]
    for rec in records:
        assert rec.access["session"].startswith("scrypt$2048$") and rec.access["recovery"].startswith("scrypt$16384$")
        assert rec.access["invitation"].startswith("hmac:")
    salts = {r.access["recovery"].split("$")[2] for r in records}
    assert len(salts) == len(records)  # one salt per secret
    key_file = server.out / KEY_FILE
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    # a restarted server recognises the used codes with the key ...
    again = make_server(tmp_path, tiny_data, invitation_codes=codes)
    assert again.used_invitations == again.invitations
    # ... and the header keeps keyed hashes only
    from culturepark.engine.records import RunHeader
    header = private_header(RunHeader(scenario=server.scenario.model_dump(mode="json")), server.out)
    dumped = orjson.dumps(header.model_dump(mode="json")).decode()
    assert "Café" not in dumped and "BETA-2" not in dumped
    assert header.scenario["human"]["invitation_codes"] == [keyed(server.key, c) for c in codes]


def test_a_session_lasts_the_study_plus_the_margin_and_the_cookie_says_so(tmp_path, tiny_data):
    clock = Clock()
    server = make_server(tmp_path, tiny_data, clock=clock, duration_minutes=20)
    lifetime = 20 * 60 + SESSION_MARGIN_S

    async def go():
        async with client(server) as c:
            status, page, _, resp = await _consent(c)
            assert status == 200
            assert any(h.startswith("cp_session=") and f"Max-Age={lifetime};" in h
                       for h in resp.headers.getall("Set-Cookie"))
            path = "/p/" + PID.search(page).group(1)
            code = CODE.search(page).group(1)
            clock.now += lifetime - 1
            async with c.get(path) as r:
                assert r.status == 200
            clock.now += 2
            async with c.get(path) as r:
                assert r.status == 403 and "has expired" in await r.text()
            assert server.rejected["session_expired"] == 1
            async with c.get("/recover") as r:
                token = TOKEN.search(await r.text()).group(1)
            async with c.post("/recover", data={"code": code, "form_token": token}) as r:
                assert r.status == 200  # the recovery code opens a new session, for another lifetime
    asyncio.run(go())


OLD_KEY = "k" * 31 + "A"  # the shape of secrets.token_urlsafe(24), as earlier versions made keys too


def test_a_made_up_cookie_costs_no_kdf_and_a_well_formed_wrong_one_costs_one(tmp_path, tiny_data, monkeypatch):
    import culturepark.study.server as server_module

    server = make_server(tmp_path, tiny_data)
    made = asyncio.run(server.new_participant(client="198.51.100.1"))
    p = made.participant
    calls = []
    real = server_module.kdf_check
    monkeypatch.setattr(server_module, "kdf_check", lambda *a: calls.append(1) or real(*a))
    for garbage in ("", "x", "'; DROP TABLE", "é" * 32, made.key + "x"):
        assert not server.holds(p, garbage)
    assert calls == []
    assert not server.holds(p, "A" * 32) and calls == [1]
    assert server.holds(p, made.key) and calls == [1]  # its own key: known to this process, no KDF


def test_a_log_from_before_the_kdf_still_opens_its_sessions(tmp_path, tiny_data):
    """Old studies resume: plain sha256 session and 8-letter recovery hashes are still accepted."""
    server = make_server(tmp_path, tiny_data)
    meta = server.plan.participant_meta(server.plan.cultures[0], server.scenario.arms[0].name, 0, "human")
    meta = meta.model_copy(update={"learner": Learner(name="Learner", person="p", reason="r")})
    old = ParticipantRecord("p-old", 0, meta.model_dump(), Clock().now, {
        "session": hashlib.sha256(OLD_KEY.encode()).hexdigest(), "recovery": hashlib.sha256(b"ABCDEFGH").hexdigest()})
    server.log.append(old)
    again = make_server(tmp_path, tiny_data)
    p = again.participants["p-old"]
    assert again.holds(p, OLD_KEY) and not again.holds(p, OLD_KEY[:-1] + "B")
    found, key = asyncio.run(again.recover("abcd efgh"))
    assert found is p and again.holds(p, key) and not again.holds(p, OLD_KEY)


def test_kdf_hashes_check_and_refuse():
    stored = kdf_hash("SECRET", 2 ** 10)
    assert kdf_check("SECRET", stored) and not kdf_check("SECREU", stored)
    assert kdf_hash("SECRET", 2 ** 10) != stored  # salted
    for broken in ("", "scrypt$", "scrypt$3$AA$AA", "scrypt$1024$!!$AA", "scrypt$99999999$AA$AA"):
        assert not kdf_check("SECRET", broken)


def test_two_invitation_codes_equal_once_normalised_are_refused_when_the_scenario_loads():
    import pytest
    from pydantic import ValidationError

    from culturepark.scenarios.schema import HumanStudy

    with pytest.raises(ValidationError, match="compared as the study compares them"):
        HumanStudy(invitation_codes=["Straße-1", "STRASSE-1"])
    assert HumanStudy(invitation_codes=[" ALPHA-1 ", "ALPHA-2"]).invitation_codes == ["ALPHA-1", "ALPHA-2"]
