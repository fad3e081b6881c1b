"""What a participant is told when the study cannot save (issue 35, finding 6): never "done" for a
message that was not written, and a stream that ends as valid NDJSON, with no second status line."""
import asyncio

import orjson

from culturepark.engine.errors import LogWriteError
from tests.study.harness import ADMIN, client, make_server
from tests.study.test_server import FIELDS, PID, STEP, TOKEN

STREAMED = {"Accept": "application/x-ndjson"}


class FailingLog:
    """The run log, its appends failing from the `fail_from`-th call on (1 = the next one) while armed."""

    def __init__(self, log):
        self.log, self.real, self.calls, self.fail_from = log, log.append, 0, 0

    def __getattr__(self, name):
        return getattr(self.log, name)

    def append(self, record):
        return self(record)

    def __call__(self, record):
        self.calls += 1
        if self.fail_from and self.calls >= self.fail_from:
            raise LogWriteError(f"cannot append to {self.log.path}: [Errno 28] No space left on device")
        return self.real(record)

    def arm(self, fail_from):
        self.calls, self.fail_from = 0, fail_from


async def _to_chat(c):
    async with c.get("/") as r:
        token = TOKEN.search(await r.text()).group(1)
    async with c.post("/start", data={"consent": "yes", "age": "yes", "form_token": token}) as r:
        path = "/p/" + PID.search(await r.text()).group(1)
    async with c.get(path) as r:
        page = await r.text()
    data = {"step": STEP.search(page).group(1), "form_token": TOKEN.search(page).group(1),
            **{k: "3" for k, _ in FIELDS.findall(page)}}
    async with c.post(path + "/answers", data=data) as r:
        page = await r.text()
    assert "<h1>Chat with" in page
    return path, STEP.search(page).group(1), TOKEN.search(page).group(1)


def test_a_failed_log_write_is_reported_as_not_saved_and_the_stream_ends_cleanly(tmp_path, tiny_data, sim_process):
    server = make_server(tmp_path, tiny_data, url=sim_process("--seed", "2", "--stream-chunk-ms", "5"))
    failing = server.log = FailingLog(server.log)
    log = server.out / "log.jsonl"

    async def go():
        async with client(server) as c:
            path, step, token = await _to_chat(c)
            p = server.participants[path.rsplit("/", 1)[1]]
            turns, before = len(p.turns), log.read_bytes()
            failing.arm(1)  # the question itself cannot be written
            async with c.post(path + "/ask", data={"step": step, "form_token": token, "message": "Is tea common?"},
                              headers=STREAMED) as r:
                assert r.status == 200
                raw = await r.read()
            events = [orjson.loads(line) for line in raw.splitlines()]  # every line JSON: no status line inside
            assert b"HTTP/1.1" not in raw and {"done": True} not in events
            assert events[-1]["saved"] is False and "could NOT be saved" in events[-1]["error"]
            assert "study@example.org" in events[-1]["error"]
            assert len(p.turns) == turns and log.read_bytes() == before
            # the same without the script: an honest page, status 503
            async with c.post(path + "/ask", data={"step": step, "form_token": token, "message": "Is tea common?"}) as r:
                text = await r.text()
                assert r.status == 503 and "could NOT be saved" in text and "are saved" not in text
            assert log.read_bytes() == before
            # the question is written, the tutor's reply is not
            failing.arm(2)
            async with c.post(path + "/ask", data={"step": step, "form_token": token, "message": "Is tea common?"},
                              headers=STREAMED) as r:
                events = [orjson.loads(line) for line in (await r.read()).splitlines()]
            assert events[-1]["saved"] is False and "Your message was saved, but the reply" in events[-1]["error"]
            assert len(p.turns) == turns + 1
            failing.arm(0)
            async with c.get(path) as r:  # the saved question waits for its reply: the page gets it now
                assert r.status == 200 and "Is tea common?" in await r.text()
            async with c.get("/admin", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
                return await r.text()
    admin = asyncio.run(go())
    assert server.alerts["log_write_failed"] == 3
    assert "log_write_failed: 3 — records could not be written" in admin  # the researcher's alert
