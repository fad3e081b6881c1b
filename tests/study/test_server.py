"""`culturepark study serve` as participants meet it: real HTTP against the server process."""
import asyncio
import html
import itertools
import re
import signal
import subprocess
import sys

import aiohttp
import orjson
import pytest
import yaml

from culturepark.engine.log import read_log
from tests.conftest import run_cli, write_hofstede

STEP = re.compile(r"name='step' value='(\d+)'")
FIELDS = re.compile(r"name='((?:vsm13|wvs|likert):\d+)' value='(\d+)'")
TOKEN = re.compile(r"name='form_token' value='([^']+)'")
PID = re.compile(r"action='/p/(p-[^/']+)")
CODE = re.compile(r"<p class='code'>([A-Z0-9-]+)</p>")


def study(url, **kw):
    spec = {"name": "human-study", "kind": "education", "cultures": ["Chinese", "German"],
            "arms": [{"name": "a", "tutor": "openai:tutor-a", "base_url": url},
                     {"name": "b", "tutor": "openai:tutor-b", "base_url": url}],
            "learning_turns": 2, "max_reply_chars": 300, "seed": 5,
            "learner_backend": {"provider": "local", "model": "gemma3-270m"},  # unused by people: never loaded
            "sampling": {"max_tokens": 30}, "retry": {"max_attempts": 2, "base_delay_s": 0.01, "max_delay_s": 0.02},
            "human": {"researcher": "Test Lab", "contact": "study@example.org", "approval": "IRB-2026-001",
                      "signups_per_minute": 60}}
    spec.update(kw)
    return spec


class Server:
    """`culturepark study serve` in its own process; stopped by the test (SIGTERM, or SIGKILL to crash it).

    SIGTERM, not SIGINT: a process started from a background job may have SIGINT ignored.
    """

    def __init__(self, scenario, out, data_dir, *extra):
        self.proc = subprocess.Popen([sys.executable, "-m", "culturepark.cli", "study", "serve", str(scenario),
                                      "--out", str(out), "--port", "0", "--data-dir", str(data_dir), *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = self.proc.stdout.readline()
        assert first.startswith("listening on "), first + self.proc.stderr.read()
        self.url = first.split()[-1]
        admin = self.proc.stdout.readline().split()  # admin: URL token: TOKEN
        self.admin, self.token = admin[1], admin[-1]
        self.auth = {"Authorization": f"Bearer {self.token}"}  # the token travels in a header, never in a URL
        self.stderr = ""

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)
        self.stderr = self.proc.stderr.read()
        if sig == signal.SIGTERM:  # a clean stop says how to continue
            assert self.proc.returncode == 0 and "stopped;" in self.proc.stdout.read()


def browser():
    """One participant's browser: its own cookies (aiohttp keeps none for an IP address unless unsafe)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


@pytest.fixture
def setup(tmp_path, tiny_data, sim_process):
    write_hofstede(tiny_data)
    url = sim_process("--seed", "2", "--latency-ms", "20")
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study(url)))
    return path, tmp_path / "run", tiny_data


async def consent(session, base, **extra):
    """The consent page, then agreeing: returns the participant's path and the page with the recovery code."""
    async with session.get(base) as r:
        token = TOKEN.search(await r.text()).group(1)
    async with session.post(base + "start", data={"consent": "yes", "age": "yes", "form_token": token, **extra}) as r:
        assert r.status == 200, await r.text()
        page = await r.text()
    return f"/p/{PID.search(page).group(1)}", page


async def take_part(session, base, answer="3", questions=("What do people eat?", "And on holidays?")):
    """One participant, page by page, as a browser would post the forms. Returns the participant's path."""
    path, _ = await consent(session, base)
    root = base.rstrip("/")
    async with session.get(root + path) as r:
        page = await r.text()
    asked = 0
    for _ in range(20):  # bounded: 2 tests + 2 chat turns + the chat's end + questionnaire
        if "<h1>Thank you" in page:
            return path
        if "Continue to the survey" in page:  # the last reply stays until the participant moves on
            async with session.get(root + path, params={"go": "survey"}) as r:
                page = await r.text()
            continue
        token = TOKEN.search(page).group(1)
        step = STEP.search(page).group(1)
        if "<h1>Chat with" in page:
            data = {"step": step, "form_token": token, "message": questions[asked % len(questions)]}
            asked += 1
            target = f"{path}/ask"
        else:
            data = {"step": step, "form_token": token, **{k: answer for k, _ in FIELDS.findall(page)}}
            if "name='free'" in page:
                data["free"] = "The food and family life."
            target = f"{path}/answers"
        async with session.post(root + target, data=data) as r:
            assert r.status == 200, await r.text()
            page = await r.text()
    raise AssertionError("the study did not end")


@pytest.mark.slow  # a whole stage end to end: CI only, not the fast lane
def test_thirty_participants_at_once_then_scored_like_simulated_learners(setup):
    scenario, out, data_dir = setup
    server = Server(scenario, out, data_dir)
    try:
        async def one():
            async with browser() as session:
                return await take_part(session, server.url)

        async def everyone():
            return await asyncio.gather(*(one() for _ in range(30)))
        paths = asyncio.run(everyone())
        assert len(set(paths)) == 30

        async def admin():
            async with browser() as session:
                async with session.get(server.url + "admin") as r:
                    assert r.status == 401 and "name='token'" in await r.text()  # the sign-in form
                async with session.get(server.admin, headers=server.auth) as r:
                    return r.status, await r.text()
        status, page = asyncio.run(admin())
        assert status == 200 and "30 participants" in page
    finally:
        server.stop()
    contents = read_log(out)
    token = server.token
    assert contents.header.learners == "human" and token not in (out / "log.jsonl").read_text()
    assert set(contents.header.backends) == {"tutor:a", "tutor:b"}  # the learner's local model was never made
    ends = [r for r in contents.records if r.type == "end"]
    assert len(ends) == 30 and {e.meta["learners"] for e in ends} == {"human"}
    # block randomisation: 30 = 7 full blocks of 4 (culture × arm) + 2, so every cell has 7 or 8
    cells = sorted(sum(1 for e in ends if (e.meta["culture"], e.meta["arm"]) == cell)
                   for cell in [("Chinese", "a"), ("Chinese", "b"), ("German", "a"), ("German", "b")])
    assert cells[0] >= 7 and cells[-1] <= 8
    for e in ends:  # every participant's turns are complete and in order: 24 + 4 + 24 + 4 + 1
        idx = [r.index for r in contents.records if r.type == "turn" and r.conversation_id == e.conversation_id]
        assert idx == list(range(57))
    done = run_cli("eval", "education", str(out), "--data-dir", str(data_dir), "--json")
    assert done.returncode == 0, done.stderr
    result = orjson.loads(done.stdout)
    assert result["learners"] == "human" and result["learners_scored"] == 30
    assert result["by_arm"]["a"]["experience"]["mean"] == 3.0  # every Likert answer was 3
    assert "not a human study" not in done.stdout


def test_bad_input_is_refused_on_the_page_naming_the_questions_and_nothing_is_written(setup):
    scenario, out, data_dir = setup
    server = Server(scenario, out, data_dir)
    log = out / "log.jsonl"
    try:
        async def go():
            async with browser() as s:
                async with s.get(server.url) as r:
                    token = TOKEN.search(await r.text()).group(1)
                async with s.post(server.url + "start", data={"form_token": token}) as r:  # no consent ticked
                    assert r.status == 400 and "tick the box" in await r.text()
                path, welcome = await consent(s, server.url)
                assert re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}", CODE.search(welcome).group(1))
                base = server.url.rstrip("/") + path
                async with s.get(base) as r:
                    page = await r.text()
                step, token = STEP.search(page).group(1), TOKEN.search(page).group(1)
                fields = {k: "3" for k, _ in FIELDS.findall(page)}
                before = log.read_bytes()
                partial = {k: v for k, v in fields.items() if k not in ("vsm13:3", "vsm13:17", "vsm13:24")}
                async with s.post(base + "/answers", data={"step": step, "form_token": token, **partial}) as r:
                    text = await r.text()
                    assert r.status == 400 and "questions 3, 17 and 24 are not answered yet" in text
                    assert text.count("class='q missing'") == 3 and text.count("value='3' checked") == 21
                wrong = {**fields, "vsm13:4": "9"}
                async with s.post(base + "/answers", data={"step": step, "form_token": token, **wrong}) as r:
                    assert r.status == 400 and "Question 4: an answer must be a whole number from 1 to 5" in await r.text()
                assert log.read_bytes() == before
                async with s.post(base + "/answers", data={"step": step, "form_token": token, **fields}) as r:
                    page = await r.text()
                    assert "<h1>Chat with" in page and "AI conversation partner." in page
                before = log.read_bytes()
                chat_step = STEP.search(page).group(1)
                for message, expect in (("   ", "write a question"), ("x" * 301, "too long (301 characters")):
                    async with s.post(base + "/ask", data={"step": chat_step, "form_token": token,
                                                           "message": message}) as r:
                        assert r.status == 400 and expect in await r.text()
                assert log.read_bytes() == before
                async with s.get(server.url + "p/p-nobody") as r:
                    assert r.status == 404 and "Unknown session" in await r.text()
                async with s.post(server.url + "p/p-nobody/answers", data={"step": "0"}) as r:
                    assert r.status == 404
                # a stale (double) submit of the pre-test writes nothing
                async with s.post(base + "/answers", data={"step": step, "form_token": token, **fields}) as r:
                    assert r.status == 200 and "<h1>Chat with" in await r.text()
                assert log.read_bytes() == before
        asyncio.run(go())
    finally:
        server.stop()


def test_a_crashed_server_restarts_and_the_participant_continues_where_they_were(setup):
    scenario, out, data_dir = setup
    server = Server(scenario, out, data_dir)

    async def go():
        nonlocal server
        async with browser() as s:  # one browser throughout: its cookie outlives the crash
            try:
                path, _ = await consent(s, server.url)
                async with s.get(server.url.rstrip("/") + path) as r:
                    page = await r.text()
                token = TOKEN.search(page).group(1)
                data = {"step": STEP.search(page).group(1), "form_token": token,
                        **{k: "2" for k, _ in FIELDS.findall(page)}}
                async with s.post(server.url.rstrip("/") + path + "/answers", data=data) as r:
                    page = await r.text()
                async with s.post(server.url.rstrip("/") + path + "/ask",
                                  data={"step": STEP.search(page).group(1), "form_token": token,
                                        "message": "Is tea common?"}) as r:
                    assert "Is tea common?" in await r.text()
            finally:
                server.stop(signal.SIGKILL)  # a crash, not a clean stop
            server = Server(scenario, out, data_dir)
            async with s.get(server.url.rstrip("/") + path) as r:
                return r.status, await r.text()
    try:
        status, page = asyncio.run(go())
        assert status == 200 and "<h1>Chat with" in page and "Is tea common?" in page and "Message 2 of 2" in page
    finally:
        server.stop()
    turns = [r for r in read_log(out).records if r.type == "turn"]
    assert [t.index for t in turns] == list(range(26))  # 24 answers, one question, one reply


def test_a_busy_port_is_a_one_line_error_and_leaves_no_run_behind(setup):
    import socket

    scenario, out, data_dir = setup
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_cli("study", "serve", str(scenario), "--out", str(out), "--port", str(port),
                       "--data-dir", str(data_dir))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "cannot listen on" in done.stderr
    assert not out.exists()


def test_the_tutor_reply_streams_to_the_page_and_is_logged_whole_even_if_the_page_goes_away(
        tmp_path, tiny_data, sim_process):
    write_hofstede(tiny_data)
    url = sim_process("--seed", "2", "--stream-chunk-ms", "20")
    scenario = tmp_path / "study.yaml"
    scenario.write_text(yaml.safe_dump(study(url)))
    out = tmp_path / "run"
    server = Server(scenario, out, tiny_data)
    streamed = {"Accept": "application/x-ndjson"}
    try:
        async def go():
            async with browser() as s:
                path, _ = await consent(s, server.url)
                base = server.url.rstrip("/") + path
                async with s.get(base) as r:
                    page = await r.text()
                token = TOKEN.search(page).group(1)
                fields = {k: "3" for k, _ in FIELDS.findall(page)}
                async with s.post(base + "/answers", data={"step": STEP.search(page).group(1), "form_token": token,
                                                           **fields}) as r:
                    page = await r.text()
                step = STEP.search(page).group(1)
                async with s.post(base + "/ask", data={"step": step, "form_token": token, "message": "  "},
                                  headers=streamed) as r:
                    assert [orjson.loads(x) for x in (await r.read()).splitlines()] == \
                        [{"error": "Please write a question or a reply first."}]
                async with s.post(base + "/ask", data={"step": step, "form_token": token,
                                                       "message": "What do people eat?"}, headers=streamed) as r:
                    assert r.headers["Content-Type"].startswith("application/x-ndjson")
                    events = [orjson.loads(x) for x in (await r.read()).splitlines()]
                texts = [e["text"] for e in events[:-1]]
                assert events[-1] == {"done": True} and len(texts) > 3
                assert all(b.startswith(a) for a, b in itertools.pairwise(texts))
                async with s.get(base) as r:
                    page = await r.text()
                assert f":</b> {html.escape(texts[-1])}</div>" in page  # the whole reply, rendered from the log
                # the second question: the page goes away after the first chunk
                step = STEP.search(page).group(1)
                async with s.post(base + "/ask", data={"step": step, "form_token": token,
                                                       "message": "And on holidays?"}, headers=streamed) as r:
                    first = orjson.loads(await r.content.readline())["text"]
                    r.close()
                async with s.get(base) as r:  # waits for the reply in progress; it stays until they move on
                    page = await r.text()
                    assert "Continue to the survey" in page and "And on holidays?" in page
                async with s.get(base, params={"go": "survey"}) as r:
                    assert "<h1>Survey (after)" in await r.text()
            return first
        first = asyncio.run(go())
    finally:
        server.stop()
    turns = [r for r in read_log(out).records if r.type == "turn"]
    tutor = [t for t in turns if t.role != "learner"]
    assert len(tutor) == 2 and len(turns) == 24 + 4
    assert tutor[1].text.startswith(first.strip()) and len(tutor[1].text) > len(first)  # whole, not the part seen


CODE_IN_PAGE = re.compile(r"<p class='code'>([A-Z0-9-]+)</p>")


def test_withdrawal_and_recovery_code(setup):
    """A finished participant withdraws (export and eval leave them out); another moves their session to a
    second browser with the recovery code, after which the first browser can no longer continue."""
    scenario, out, data_dir = setup
    server = Server(scenario, out, data_dir)
    try:
        async def go():
            async with browser() as first, browser() as second, browser() as done_one:
                finished = await take_part(done_one, server.url)
                async with done_one.get(server.url.rstrip("/") + finished) as r:
                    thanks = await r.text()
                assert "About this study" in thanks and "was an AI, not a person" in thanks
                assert "IRB-2026-001" in thanks and "study@example.org" in thanks
                async with done_one.get(server.url.rstrip("/") + finished + "/withdraw") as r:
                    token = TOKEN.search(await r.text()).group(1)
                async with done_one.post(server.url.rstrip("/") + finished + "/withdraw",
                                         data={"form_token": token}) as r:
                    assert r.status == 200 and "<h1>You have withdrawn" in await r.text()

                path, welcome = await consent(first, server.url)
                code = CODE_IN_PAGE.search(welcome).group(1)
                base = server.url.rstrip("/") + path
                async with second.get(base) as r:
                    assert r.status == 403 and "enter your recovery code" in await r.text()
                async with second.get(server.url + "recover") as r:
                    token = TOKEN.search(await r.text()).group(1)
                async with second.post(server.url + "recover",
                                       data={"code": code.lower().replace("-", " "), "form_token": token}) as r:
                    assert r.status == 200 and "<h1>Survey (before)" in await r.text()
                async with first.get(base) as r:
                    assert r.status == 403  # the session moved; the old browser only sees the recovery form
                async with second.get(server.admin + "/export", headers=server.auth) as r:
                    rows = [orjson.loads(x) for x in (await r.read()).splitlines()]
            return finished, path, rows, code
        finished, path, rows, code = asyncio.run(go())
    finally:
        server.stop()
    by_id = {row["id"]: row for row in rows}
    gone = by_id[finished.rsplit("/", 1)[1]]
    assert gone["withdrawn"] is True and gone["stage"] == "withdrawn" and "turns" not in gone
    assert by_id[path.rsplit("/", 1)[1]]["withdrawn"] is False
    records = read_log(out).records
    assert [r.type for r in records].count("withdrawal") == 1 and [r.type for r in records].count("access") == 1
    log_text = (out / "log.jsonl").read_text()
    assert "recovery" in log_text and code.replace("-", "") not in log_text  # hashes only
    done = run_cli("eval", "education", str(out), "--data-dir", str(data_dir), "--json")
    result = orjson.loads(done.stdout)
    assert result["learners_scored"] == 0 and result["withdrawn_excluded"] == 1

    from culturepark.engine.export import assemble, conversation_rows
    exported = {row["id"]: row for row in conversation_rows(assemble(out))}
    assert exported[finished.rsplit("/", 1)[1]] == {"id": finished.rsplit("/", 1)[1], "status": "withdrawn",
                                                     "turns": [], "meta": {}}
