"""`culturepark study serve`: the education study with real participants, in a browser.

The session is the one simulated learners go through (`agents.education.walk`): consent →
pre-test → chat with the tutor → post-test → questionnaire → thank-you. The participant's
answers are written as the learner's turns, the tutor's replies come through the engine's
endpoint (limits, retries), and every record goes to the run's append-only log the moment it
exists. The log is the only state: a reload re-renders the participant's current step from
it, and a restarted server reads it back, so nobody loses their place.

Nothing identifying is asked or kept: a participant is a random id in the URL; IP addresses
and user agents are not logged (the access log is off). An admin page behind a token printed
at start shows progress per culture and arm.
"""
from __future__ import annotations

import asyncio
import html
import random
import secrets
import signal
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson
from aiohttp import web

from culturepark.agents.education import EducationPlan, EduStep, base_sequence, walk
from culturepark.agents.studies import policy_for
from culturepark.engine.endpoint import Endpoint
from culturepark.engine.log import RunLog, read_log
from culturepark.engine.retry import RequestFailed
from culturepark.engine.scheduler import ConversationSpec, ResumeState, Turn, turn_record
from culturepark.scenarios.schema import EducationScenario

HUMAN_LEARNER = {"name": "Learner", "person": "a participant in a study",
                 "reason": "wants to learn about {country}"}


@dataclass
class Participant:
    spec: ConversationSpec
    turns: list[Turn] = field(default_factory=list)
    done: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def meta(self) -> dict[str, Any]:
        return self.spec.meta


class BadInput(Exception):
    """A participant's answer that is not accepted: shown on the page, nothing written."""


class StudyServer:
    def __init__(self, scenario: EducationScenario, plan: EducationPlan, out: Path,
                 endpoints: dict[str, Endpoint], log: RunLog, admin_token: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.scenario = scenario
        self.plan = plan
        self.out = out
        self.endpoints = endpoints
        self.log = log
        self.admin_token = admin_token
        self.policy = policy_for(scenario)
        self.clock = clock
        self.participants: dict[str, Participant] = {}
        self._new_lock = asyncio.Lock()
        self._read_back()

    # -- state from the log ---------------------------------------------------------------
    def _read_back(self) -> None:
        """Participants, their turns and who finished, from the log (as a resumed run reads it)."""
        records = read_log(self.out).records
        state = ResumeState.from_records(records)
        for rec in records:
            if rec["type"] == "participant":
                pid = rec["conversation_id"]
                self.participants[pid] = Participant(ConversationSpec(pid, rec["seq"], rec["meta"]),
                                                     turns=state.turns.get(pid, []), done=pid in state.ended)

    def _assign(self, number: int) -> tuple[Any, str]:
        """Block randomisation: every block of (culture × arm) slots is shuffled with the seed."""
        combos = [(c, arm.name) for c in self.plan.cultures for arm in self.scenario.arms]
        block = random.Random(f"{self.scenario.seed}:human-block:{number // len(combos)}").sample(combos, len(combos))
        return block[number % len(combos)]

    async def new_participant(self) -> Participant:
        async with self._new_lock:
            number = len(self.participants)
            culture, arm = self._assign(number)
            meta = self.plan.participant_meta(culture, arm, number, "human")
            meta["learner"] = {k: v.format(country=culture.country) for k, v in HUMAN_LEARNER.items()}
            pid = "p-" + secrets.token_urlsafe(9)
            self.log.append({"type": "participant", "conversation_id": pid, "seq": number, "meta": meta,
                             "t": self.clock()})
            p = self.participants[pid] = Participant(ConversationSpec(pid, number, meta))
            return p

    def step_of(self, p: Participant) -> tuple[list[EduStep], EduStep | None]:
        return walk(p.meta, [t.text for t in p.turns], self.scenario.answer_tries)

    # -- writing --------------------------------------------------------------------------
    def _append_learner(self, p: Participant, text: str) -> None:
        index = len(p.turns)
        self.log.append({"type": "turn", "conversation_id": p.spec.id, "seq": p.spec.seq, "index": index,
                         "speaker": p.meta["learner"]["name"], "role": "learner", "text": text,
                         "human": True, "t": self.clock()})
        p.turns.append(Turn(index, p.meta["learner"]["name"], "learner", text))

    async def _tutor_reply(self, p: Participant, on_text: Callable[[str], None] | None = None) -> None:
        nxt = self.policy.next_turn(p.spec, p.turns)
        endpoint = self.endpoints[nxt.role]
        request_hash = nxt.request.key(endpoint.backend.model)
        completion = await endpoint.complete(nxt.request, nxt.validate, request_hash, on_text)
        record = turn_record(p.spec, len(p.turns), nxt, completion, endpoint, request_hash, self.clock())
        self.log.append(record)
        p.turns.append(Turn(record["index"], nxt.speaker, nxt.role, record["text"]))

    def _finish_if_over(self, p: Participant) -> None:
        _, step = self.step_of(p)
        if step is None and not p.done:
            self.log.append({"type": "end", "conversation_id": p.spec.id, "seq": p.spec.seq, "status": "done",
                             "reason": None, "meta": p.meta, "t": self.clock()})
            p.done = True

    async def submit_answers(self, p: Participant, form: dict[str, str]) -> None:
        """A whole test or questionnaire page: every answer is checked before any is written."""
        aligned, step = self.step_of(p)
        if step is None or step.role != "learner" or step.phase == "learn":
            return
        pending = self.page_steps(p, step)
        values: list[str] = []
        missing = 0
        for s in pending:
            raw = form.get(s.item["key"], "").strip()  # type: ignore[index]
            if s.phase == "free":
                if len(raw) > self.scenario.max_reply_chars:
                    raise BadInput(f"Your answer is too long ({len(raw)} characters; at most "
                                   f"{self.scenario.max_reply_chars}).")
                values.append(raw or "(no answer)")
                continue
            if not raw:
                missing += 1
                continue
            lo, hi = s.item["lo"], s.item["hi"]  # type: ignore[index]
            if not raw.isdigit() or not lo <= int(raw) <= hi:
                raise BadInput(f"An answer must be a whole number from {lo} to {hi} (got {raw[:20]!r}).")
            values.append(str(int(raw)))
        if missing:
            raise BadInput(f"Please answer every question ({missing} not answered yet).")
        for text in values:
            self._append_learner(p, text)
        self._finish_if_over(p)

    async def ask(self, p: Participant, message: str, on_text: Callable[[str], None] | None = None) -> None:
        _, step = self.step_of(p)
        if step is None or step.phase != "learn" or step.role != "learner":
            return
        message = message.strip()
        if not message:
            raise BadInput("Please write a question or a reply first.")
        if len(message) > self.scenario.max_reply_chars:
            raise BadInput(f"Your message is too long ({len(message)} characters; at most "
                           f"{self.scenario.max_reply_chars}).")
        self._append_learner(p, message)
        await self.catch_up(p, on_text)

    async def ask_if_current(self, p: Participant, step: str, message: str,
                             on_text: Callable[[str], None] | None = None) -> None:
        """`ask` under the participant's lock, for both the plain and the streamed page.

        A stale (double) submit writes nothing; a reply that fails leaves the question saved,
        and the next page view asks for the reply again. `BadInput` goes to the caller.
        """
        async with p.lock:
            if step != str(len(p.turns)):
                return
            try:
                await self.ask(p, message, on_text)
            except RequestFailed:
                pass

    async def catch_up(self, p: Participant, on_text: Callable[[str], None] | None = None) -> None:
        """If the tutor owes a reply (also after a restart between question and reply), get it."""
        _, step = self.step_of(p)
        if step is not None and step.role == "tutor":
            await self._tutor_reply(p, on_text)
        self._finish_if_over(p)

    def page_steps(self, p: Participant, step: EduStep) -> list[EduStep]:
        """The steps shown together on one page: the rest of the current test, or the questionnaire."""
        seq = base_sequence(p.meta)
        phases = {"pre": ("pre",), "post": ("post",), "exp": ("exp", "free"), "free": ("free",)}[step.phase]
        return [s for s in seq[step.number:] if s.phase in phases]


# -- pages --------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#1f2933;line-height:1.5}
h1{font-size:1.5rem}h2{font-size:1.1rem;margin-top:1.5rem}
.q{border:1px solid #d9e2ec;border-radius:8px;padding:.75rem 1rem;margin:.75rem 0}
.q p{margin:.2rem 0 .5rem;white-space:pre-line}.scale{color:#52606d;font-size:.9rem}
label.opt{display:inline-block;margin-right:1rem}
.error{background:#ffe3e3;border:1px solid #e12d39;padding:.6rem 1rem;border-radius:8px}
.msg{padding:.6rem .9rem;border-radius:10px;margin:.5rem 0;max-width:85%;white-space:pre-wrap}
.you{background:#d9eaff;margin-left:auto}.tutor{background:#f0f4f8}.pending span:empty::after{content:'…'}
.chat{display:flex;flex-direction:column}
textarea{width:100%;min-height:5rem;font:inherit}
button{font:inherit;padding:.5rem 1.2rem;border-radius:6px;border:0;background:#2563eb;color:#fff;cursor:pointer}
button:disabled{background:#9aa5b1}
.progress{color:#52606d;font-size:.9rem}table{border-collapse:collapse}td,th{border:1px solid #d9e2ec;padding:.3rem .6rem}
"""

DISABLE_ON_SUBMIT = """<script>
document.querySelectorAll('form').forEach(f=>f.addEventListener('submit',()=>{
 const b=f.querySelector('button');if(b){b.disabled=true;b.textContent=b.dataset.busy||'Sending…';}}));
</script>"""


# The reply appears as it is generated: the question is posted with `Accept: application/x-ndjson`
# and the answer comes back as lines of {"text": reply so far}, then {"done": true} (or
# {"error": message}); the page then reloads from the server, which renders it from the log.
STREAM_REPLY = """<script>
(()=>{const f=document.querySelector('form.ask');if(!f||!window.fetch||!window.TextDecoder)return;
f.addEventListener('submit',async e=>{e.preventDefault();const box=document.querySelector('.chat');
 const bubble=(cls,who,text)=>{const d=document.createElement('div');d.className='msg '+cls;
  const b=document.createElement('b');b.textContent=who+': ';const t=document.createElement('span');t.textContent=text;
  d.append(b,t);box.append(d);return [d,t];};
 const msg=f.message.value,body=new URLSearchParams(new FormData(f));f.message.value='';
 const [q]=bubble('you','You',msg);const [a,reply]=bubble('tutor pending',f.dataset.tutor,'');
 try{const r=await fetch(f.action,{method:'POST',body,headers:{Accept:'application/x-ndjson'}});const rd=r.body.getReader();const dec=new TextDecoder();let buf='';
  for(;;){const {value,done}=await rd.read();if(done)break;buf+=dec.decode(value,{stream:true});let i;
   while((i=buf.indexOf('\\n'))>=0){const ev=JSON.parse(buf.slice(0,i));buf=buf.slice(i+1);
    if(ev.text!==undefined)reply.textContent=ev.text;
    if(ev.error){q.remove();a.remove();f.message.value=msg;const p=document.createElement('p');p.className='error';
     p.textContent=ev.error;f.before(p);const b=f.querySelector('button');b.disabled=false;b.textContent='Send';return;}}}}catch(err){}
 location.replace(f.action.replace(/\\/ask$/,''));});})();
</script>"""


def _page(title: str, body: str, status: int = 200) -> web.Response:
    doc = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
           f"<meta name='viewport' content='width=device-width,initial-scale=1'><title>{html.escape(title)}</title>"
           f"<style>{CSS}</style></head><body>{body}{DISABLE_ON_SUBMIT}</body></html>")
    return web.Response(text=doc, content_type="text/html", status=status)


def _error(message: str | None) -> str:
    return f"<p class='error' role='alert'>{html.escape(message)}</p>" if message else ""


def consent_page(scenario: EducationScenario, error: str | None = None) -> web.Response:
    body = f"""<h1>Learning about another culture</h1>{_error(error)}
<p>In this study you first answer a short survey, then chat with a conversation partner from
another culture, then answer the survey again and a few questions about the conversation.
It takes about 20–30 minutes.</p>
<p>We do not ask for your name, e-mail or anything else that identifies you. Your answers and
messages are stored under a random participant number. Please do not write personal details
in the chat. You can stop at any time by closing the page.</p>
<form method="post" action="/start">
<p><label><input type="checkbox" name="consent" value="yes"> I have read this and agree to take part.</label></p>
<button type="submit">Start</button></form>"""
    return _page("Consent", body, 400 if error else 200)


def _scale_inputs(step: EduStep, chosen: str | None) -> str:
    item = step.item
    assert item is not None
    opts = []
    for v in range(item["lo"], item["hi"] + 1):
        checked = " checked" if chosen == str(v) else ""
        opts.append(f"<label class='opt'><input type='radio' name='{html.escape(item['key'])}' value='{v}'{checked}> {v}</label>")
    return "".join(opts)


def answers_page(server: StudyServer, p: Participant, step: EduStep, error: str | None = None,
                 form: dict[str, str] | None = None) -> web.Response:
    meta, form = p.meta, form or {}
    steps = server.page_steps(p, step)
    country = html.escape(meta["country"])
    if step.phase == "pre":
        title, intro = "Survey (before)", (f"Answer each question <b>as a typical person from {country} would</b>. "
                                           "Guess if you are not sure.")
    elif step.phase == "post":
        title, intro = "Survey (after)", (f"Now that you have talked with {html.escape(meta['tutor']['name'])}, "
                                          f"answer again <b>as a typical person from {country} would</b>.")
    else:
        title, intro = "About the conversation", "How much do you agree with each statement? (1 = strongly disagree, 5 = strongly agree)"
    parts = [f"<h1>{title}</h1><p class='progress'>{len(steps)} questions on this page</p>{_error(error)}<p>{intro}</p>",
             f"<form method='post' action='/p/{p.spec.id}/answers'><input type='hidden' name='step' value='{step.number}'>"]
    for i, s in enumerate(steps, 1):
        item = s.item
        assert item is not None
        if s.phase == "free":
            parts.append(f"<div class='q'><p>{html.escape(item['question'])}</p><textarea name='free' "
                         f"maxlength='{server.scenario.max_reply_chars}'>{html.escape(form.get('free', ''))}</textarea></div>")
            continue
        scale = "" if s.phase == "exp" else f"<p class='scale'>{html.escape(item['scale'])}</p>"
        parts.append(f"<div class='q'><p><b>{i}.</b> {html.escape(item['question'])}</p>{scale}"
                     f"{_scale_inputs(s, form.get(item['key']))}</div>")
    parts.append("<button type='submit'>Continue</button></form>")
    return _page(title, "".join(parts), 400 if error else 200)


def chat_page(server: StudyServer, p: Participant, aligned: list[EduStep], error: str | None = None,
              draft: str = "") -> web.Response:
    meta = p.meta
    tutor = html.escape(meta["tutor"]["name"])
    asked = sum(1 for s in aligned if s.phase == "learn" and s.role == "learner")
    total = meta["learning_turns"]
    msgs = []
    for s, t in zip(aligned, p.turns):
        if s.phase != "learn":
            continue
        who, cls = ("You", "you") if s.role == "learner" else (tutor, "tutor")
        msgs.append(f"<div class='msg {cls}'><b>{who}:</b> {html.escape(t.text)}</div>")
    body = (f"<h1>Chat with {tutor}</h1><p>{tutor} is {html.escape(meta['tutor']['person'])}. Ask about everyday "
            f"life, values and customs in {html.escape(meta['country'])}.</p>"
            f"<p class='progress'>Message {asked + 1} of {total}</p>{_error(error)}"
            f"<div class='chat'>{''.join(msgs)}</div>"
            f"<form class='ask' method='post' action='/p/{p.spec.id}/ask' data-tutor='{tutor}'>"
            f"<input type='hidden' name='step' value='{len(p.turns)}'>"
            f"<textarea name='message' maxlength='{server.scenario.max_reply_chars}' placeholder='Your question…'>"
            f"{html.escape(draft)}</textarea><p><button type='submit' data-busy='{tutor} is replying…'>Send</button></p></form>")
    return _page(f"Chat with {meta['tutor']['name']}", body + STREAM_REPLY, 400 if error else 200)


def thanks_page() -> web.Response:
    return _page("Thank you", "<h1>Thank you!</h1><p>Your answers have been saved. You can close this page now.</p>")


def not_found_page() -> web.Response:
    return _page("Unknown session", "<h1>Unknown session</h1><p class='error'>This link does not belong to a "
                 "session of this study. <a href='/'>Start from the first page</a>.</p>", 404)


def admin_page(server: StudyServer) -> web.Response:
    counts: Counter = Counter()
    for p in server.participants.values():
        _, step = server.step_of(p)
        where = "finished" if step is None else {"pre": "pre-test", "learn": "chat", "post": "post-test",
                                                 "exp": "questionnaire", "free": "questionnaire"}[step.phase]
        counts[(p.meta["culture"], p.meta["arm"], where)] += 1
    stages = ["pre-test", "chat", "post-test", "questionnaire", "finished"]
    rows = []
    for c in server.plan.cultures:
        for arm in server.scenario.arms:
            cells = "".join(f"<td>{counts[(c.name, arm.name, s)]}</td>" for s in stages)
            started = sum(counts[(c.name, arm.name, s)] for s in stages)
            rows.append(f"<tr><td>{html.escape(c.name)}</td><td>{html.escape(arm.name)}</td><td>{started}</td>{cells}</tr>")
    head = "".join(f"<th>{s}</th>" for s in ["culture", "arm", "started", *stages])
    n = len(server.participants)
    body = (f"<h1>{html.escape(server.scenario.name)}: progress</h1><p>{n} participant{'' if n == 1 else 's'}; "
            f"run directory {html.escape(str(server.out))}</p><table><tr>{head}</tr>{''.join(rows)}</table>"
            "<p class='scale'>started: everyone who began; the other columns: where each of them is now.</p>")
    return _page("Study progress", body)


def build_app(server: StudyServer) -> web.Application:
    routes = web.RouteTableDef()

    def participant(request: web.Request) -> Participant | None:
        return server.participants.get(request.match_info["pid"])

    @routes.get("/")
    async def index(_: web.Request) -> web.Response:
        return consent_page(server.scenario)

    @routes.post("/start")
    async def start(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        if form.get("consent") != "yes":
            return consent_page(server.scenario, "Please tick the box to agree before you start.")
        p = await server.new_participant()
        raise web.HTTPSeeOther(f"/p/{p.spec.id}")

    @routes.get("/p/{pid}")
    async def show(request: web.Request) -> web.StreamResponse:
        p = participant(request)
        if p is None:
            return not_found_page()
        async with p.lock:
            try:
                await server.catch_up(p)
            except RequestFailed as exc:
                aligned, _ = server.step_of(p)
                return chat_page(server, p, aligned, f"The conversation partner could not answer just now "
                                                     f"({exc.reason}). Reload the page to try again.")
            aligned, step = server.step_of(p)
        if step is None:
            return thanks_page()
        if step.phase == "learn":
            return chat_page(server, p, aligned)
        return answers_page(server, p, step)

    @routes.post("/p/{pid}/answers")
    async def answers(request: web.Request) -> web.StreamResponse:
        p = participant(request)
        if p is None:
            return not_found_page()
        form = {k: str(v) for k, v in (await request.post()).items()}
        async with p.lock:
            _, step = server.step_of(p)
            if step is not None and form.get("step") == str(step.number):  # a stale double submit writes nothing
                try:
                    await server.submit_answers(p, form)
                except BadInput as exc:
                    return answers_page(server, p, step, str(exc), form)
        raise web.HTTPSeeOther(f"/p/{p.spec.id}")

    @routes.post("/p/{pid}/ask")
    async def ask(request: web.Request) -> web.StreamResponse:
        p = participant(request)
        if p is None:
            return not_found_page()
        form = await request.post()
        message = str(form.get("message", ""))
        step = str(form.get("step", ""))
        if "application/x-ndjson" in request.headers.get("Accept", ""):
            return await ask_streamed(request, p, step, message)
        try:
            await server.ask_if_current(p, step, message)
        except BadInput as exc:  # nothing was written
            aligned, _ = server.step_of(p)
            return chat_page(server, p, aligned, str(exc), message[: server.scenario.max_reply_chars])
        raise web.HTTPSeeOther(f"/p/{p.spec.id}")

    async def ask_streamed(request: web.Request, p: Participant, step: str, message: str) -> web.StreamResponse:
        """The reply so far as NDJSON lines while the tutor generates it (where the backend streams).

        The work runs in a task of its own: a participant who closes the page mid-reply still
        gets the whole reply logged, and sees it on the next visit.
        """
        updates: asyncio.Queue[str | dict[str, Any]] = asyncio.Queue()

        async def work() -> None:
            outcome: dict[str, Any] = {"done": True}
            try:
                await server.ask_if_current(p, step, message, on_text=updates.put_nowait)
            except BadInput as exc:
                outcome = {"error": str(exc)}
            finally:
                updates.put_nowait(outcome)

        task = asyncio.ensure_future(work())
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-store"})
        try:
            await resp.prepare(request)
            while True:
                item = await updates.get()
                while isinstance(item, str) and not updates.empty():
                    item = updates.get_nowait()  # only the newest text matters
                await resp.write(orjson.dumps({"text": item} if isinstance(item, str) else item) + b"\n")
                if not isinstance(item, str):
                    break
        except ConnectionResetError:
            pass  # the page went away; the task (not this handler's child) finishes and logs the reply
        await asyncio.shield(task)
        return resp

    @routes.get("/admin")
    async def admin(request: web.Request) -> web.Response:
        if not secrets.compare_digest(request.query.get("token", ""), server.admin_token):
            return _page("Forbidden", "<h1>Forbidden</h1><p class='error'>This page needs the admin link "
                         "printed when the server started.</p>", 403)
        return admin_page(server)

    app = web.Application(client_max_size=256 * 1024)
    app.add_routes(routes)
    return app


async def serve(scenario_ref: str | Path, out: Path, host: str = "127.0.0.1", port: int = 8800,
                data_dir: Path | None = None, say: Callable[[str], None] = print,
                ready: Callable[[str, str], Any] | None = None, stop: asyncio.Event | None = None) -> None:
    """Run the study server until `stop` is set (or forever). Writes to `out` like `culturepark run`."""
    from culturepark.engine.log import LOG_NAME
    from culturepark.engine.session import RunDir
    from culturepark.errors import InputError
    from culturepark.runner import RunOptions, _header, prepare
    from culturepark.agents.studies import backend_configs
    from culturepark.scenarios.factory import check_reachable, close_endpoints, make_endpoints, start_backends

    scenario, plan, out = prepare(scenario_ref, RunOptions(out=Path(out), data_dir=data_dir))
    if not isinstance(scenario, EducationScenario):
        raise InputError("study serve needs an education scenario (kind: education)")
    sock = _listen(host, port)  # before anything is written: a busy port must leave no run behind
    configs = backend_configs(scenario)
    endpoints = make_endpoints(configs, scenario.limits, scenario.retry, scenario.seed)
    try:
        await check_reachable(endpoints)
        resume = (out / LOG_NAME).exists()
        with RunDir(out, resume, scenario.content_hash(), fsync="always", say=say) as rd:
            await start_backends(endpoints)
            header = _header(scenario, plan, endpoints, RunOptions(out=out))
            header["learners"] = "human"
            log = rd.start(header)
            token = secrets.token_urlsafe(16)
            server = StudyServer(scenario, plan, out, endpoints, log, token)
            runner = web.AppRunner(build_app(server), access_log=None)  # no IP addresses in any log
            await runner.setup()
            await web.SockSite(runner, sock).start()
            url = f"http://{host}:{sock.getsockname()[1]}/"
            say(f"listening on {url}")
            say(f"admin: {url}admin?token={token}")
            if ready:
                ready(url, token)
            if stop is None:  # SIGTERM (service managers) and SIGINT (Ctrl-C) stop it cleanly
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
            try:
                await stop.wait()
            finally:
                await runner.cleanup()
            say("stopped; every answer is in the log — start again with the same --out to continue")
    finally:
        sock.close()
        await close_endpoints(endpoints)


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (0: any free port), or a one-line InputError."""
    from culturepark.errors import InputError

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    return sock
