"""What an ethics board asks of the study app (issue 35, findings 9 and 10)."""
import asyncio

import orjson

from culturepark.engine.log import read_log
from culturepark.engine.records import ParticipantRecord
from culturepark.study.pages import consent_page, fill, still_on_disk
from tests.study.harness import client, make_server
from tests.study.test_server import PID, TOKEN


async def _consent(c, **fields):
    async with c.get("/") as r:
        page = await r.text()
    data = {"consent": "yes", "age": "yes", "form_token": TOKEN.search(page).group(1), **fields}
    async with c.post("/start", data={k: v for k, v in data.items() if v is not None}) as r:
        return r.status, await r.text(), page


def _participants(server):
    return [r for r in read_log(server.out).records if isinstance(r, ParticipantRecord)]


def test_nobody_is_admitted_while_researcher_contact_or_approval_is_unset_unless_a_pilot(tmp_path, tiny_data):
    closed = make_server(tmp_path / "a", tiny_data, researcher=None, approval=None)

    async def go(server):
        async with client(server) as c:
            return await _consent(c)
    status, text, page = asyncio.run(go(closed))
    assert "This study is not open yet" in page and status == 503 and "not open yet" in text
    assert _participants(closed) == [] and closed.rejected["not_open"] == 1
    pilot = make_server(tmp_path / "b", tiny_data, researcher=None, approval=None, pilot=True)
    status, text, page = asyncio.run(go(pilot))
    assert status == 200 and "Pilot run" in page and "Pilot run" in text  # the consent page and the session's
    assert len(_participants(pilot)) == 1


def test_eligibility_is_confirmed_before_anything_is_written(tmp_path, tiny_data):
    server = make_server(tmp_path, tiny_data)

    async def go():
        async with client(server) as c:
            return await _consent(c, age=None)
    status, text, page = asyncio.run(go())
    assert "I am 18 years old or older" in page
    assert status == 400 and "18 years old or older" in text and _participants(server) == []
    no_age = make_server(tmp_path / "b", tiny_data, min_age=0)
    assert "years old" not in consent_page(no_age, "t").text


def test_the_consent_page_states_data_risks_provider_and_who_is_responsible(tmp_path, tiny_data, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")  # the external tutor is never called
    server = make_server(tmp_path, tiny_data)
    text = consent_page(server, "t").text
    assert "the server does not record your IP address" in text
    assert "not sent to an outside AI company" in text  # the tutors are on this machine (127.0.0.1)
    assert "How long it is kept: <i>not stated</i>" in text and "Who sees it: <i>not stated</i>" in text
    assert "Responsible for the data: <i>not stated</i>" in text and "data protection authority" in text
    assert "<h2>Risks</h2>" in text
    logged = make_server(tmp_path / "b", tiny_data, url="https://api.example.net/v1", log_client_addresses=True,
                         retention="Until 31 Dec 2027, then deleted.", recipients="The research team only.",
                         data_controller="University of X, dpo@example.org")
    text = consent_page(logged, "t").text
    assert "records your IP address in its access log" in text and "does not record" not in text
    assert "sent to the AI service at api.example.net, an outside AI service" in text
    assert "Until 31 Dec 2027" in text and "The research team only." in text and "dpo@example.org" in text
    assert logged.texts_hash != server.texts_hash


def test_a_one_arm_debriefing_reads_right(tmp_path, tiny_data):
    one = make_server(tmp_path, tiny_data, spec_changes={
        "arms": [{"name": "a", "tutor": "openai:tutor-a", "base_url": "http://127.0.0.1:9/v1"}]})
    text = fill(one.human.debriefing, one, "Lena", "Germany")
    assert "Everyone talked with the same AI conversation partner" in text and "one of one" not in text
    two = make_server(tmp_path / "b", tiny_data)
    assert "assigned at random to one of two AI conversation partners" in fill(two.human.debriefing, two, "L", "G")


def test_each_version_of_the_texts_is_logged_once_in_full(tmp_path, tiny_data):
    server = make_server(tmp_path, tiny_data)

    async def three(server):
        async with client(server) as a, client(server) as b, client(server) as c:
            for x in (a, b, c):
                assert (await _consent(x))[0] == 200
    asyncio.run(three(server))
    changed = make_server(tmp_path, tiny_data, purpose="A corrected purpose.")  # the same run, edited texts
    asyncio.run(three(changed))
    records = _participants(changed)
    full = [r for r in records if "texts_json" in r.access]
    assert len(records) == 6 and len(full) == 2
    assert {r.access["texts"] for r in full} == {server.texts_hash, changed.texts_hash}
    assert orjson.loads(full[1].access["texts_json"])["purpose"] == "A corrected purpose."
    again = make_server(tmp_path, tiny_data, purpose="A corrected purpose.")  # restarted: already logged
    asyncio.run(three(again))
    assert sum("texts_json" in r.access for r in _participants(again)) == 2


def test_a_participant_downloads_their_own_record_and_learns_withdrawal_keeps_it_on_disk(tmp_path, tiny_data):
    server = make_server(tmp_path, tiny_data)

    async def go():
        async with client(server) as c, client(server) as other:
            _, page, _ = await _consent(c)
            path = "/p/" + PID.search(page).group(1)
            async with c.get(path + "/record") as r:
                assert r.status == 200 and "attachment" in r.headers["Content-Disposition"]
                own = orjson.loads(await r.read())
            async with other.get(path + "/record") as r:
                assert r.status == 403  # someone else's browser: the recovery form, not the record
            async with c.get(path) as r:
                assert "Download your answers" in await r.text()
            async with c.get(path + "/withdraw") as r:
                assert "does not delete anything by itself" in await r.text()
            return own, path
    own, path = asyncio.run(go())
    assert own["participant"] == path.rsplit("/", 1)[1] and own["withdrawn"] is False and own["turns"] == []
    assert "study@example.org" in still_on_disk(server)
