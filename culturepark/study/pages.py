"""The study's HTML pages: plain server-rendered forms that work without JavaScript; scripts
only disable double submits and stream the tutor's reply. Every user text is escaped, and
every form of a participant's session carries its anti-forgery token (`form_token`)."""
from __future__ import annotations

import base64
import hashlib
import html
import unicodedata
import urllib.parse
from collections import Counter
from typing import Any

from aiohttp import web

from culturepark.agents.learners import EduStep
from culturepark.study.server import Participant, StudyServer

CSS = """
body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#1f2933;line-height:1.5}
h1{font-size:1.5rem}h2{font-size:1.1rem;margin-top:1.5rem}
.q{border:1px solid #d9e2ec;border-radius:8px;padding:.75rem 1rem;margin:.75rem 0}
.q.missing{border:2px solid #e12d39;background:#fff5f5}
.q p{margin:.2rem 0 .5rem;white-space:pre-line}.scale{color:#52606d;font-size:.9rem}
label.opt{display:inline-block;margin-right:1rem}
.error{background:#ffe3e3;border:1px solid #e12d39;padding:.6rem 1rem;border-radius:8px}
.notice{background:#fff8e1;border:1px solid #f0b429;padding:.6rem 1rem;border-radius:8px}
.ai{background:#eef2ff;border:1px solid #6366f1;padding:.6rem 1rem;border-radius:8px}
.code{font:700 1.6rem ui-monospace,monospace;letter-spacing:.15rem;background:#f0f4f8;padding:.4rem .8rem;border-radius:6px}
.msg{padding:.6rem .9rem;border-radius:10px;margin:.5rem 0;max-width:85%;white-space:pre-wrap}
.you{background:#d9eaff;margin-left:auto}.tutor{background:#f0f4f8}.pending span:empty::after{content:'…'}
.chat{display:flex;flex-direction:column}
textarea,input[type=text],input[type=password]{width:100%;font:inherit;box-sizing:border-box}textarea{min-height:5rem}
button{font:inherit;padding:.5rem 1.2rem;border-radius:6px;border:0;background:#2563eb;color:#fff;cursor:pointer}
button:disabled{background:#9aa5b1}button.danger{background:#e12d39}
footer{margin-top:2.5rem;border-top:1px solid #d9e2ec;padding-top:.6rem;color:#52606d;font-size:.85rem}
.progress{color:#52606d;font-size:.9rem}table{border-collapse:collapse}td,th{border:1px solid #d9e2ec;padding:.3rem .6rem}
"""

DISABLE_ON_SUBMIT = """<script>
document.querySelectorAll('form').forEach(f=>f.addEventListener('submit',()=>{
 const b=f.querySelector('button');if(b){b.disabled=true;b.textContent=b.dataset.busy||'Sending…';}}));
</script>"""


# The reply appears as it is generated: the question is posted with `Accept: application/x-ndjson`
# and the answer comes back as lines of {"text": reply so far}, then {"done": true} (or
# {"error": message}); the page then reloads from the server, which renders it from the log
# (the reply, or, if the tutor could not answer, the saved question with "Try again").
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

def _csp_source(element: str) -> str:
    """The CSP hash source of an inline `<script>` or `<style>` element's text."""
    inner = element[element.index(">") + 1:element.rindex("</")]
    return "'sha256-" + base64.b64encode(hashlib.sha256(inner.encode()).digest()).decode() + "'"


# Only this app's own inline script and style run: no third-party origin, no other inline code
# (an injected <script> would not run even if escaping failed), no framing, forms only to itself.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; "
    f"script-src {_csp_source(DISABLE_ON_SUBMIT)} {_csp_source(STREAM_REPLY)}; "
    f"style-src {_csp_source(f'<style>{CSS}</style>')}; "
    "connect-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # a participant's link never leaves in a Referer
    "Cross-Origin-Opener-Policy": "same-origin",
    "Server": "culturepark-study",  # not aiohttp's name and version
}

NUMBER_WORDS = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def page(title: str, body: str, status: int = 200, footer: str = "") -> web.Response:
    doc = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
           f"<meta name='viewport' content='width=device-width,initial-scale=1'><title>{html.escape(title)}</title>"
           f"<style>{CSS}</style></head><body>{body}{footer}{DISABLE_ON_SUBMIT}</body></html>")
    resp = web.Response(text=doc, content_type="text/html", status=status)
    resp.headers["Cache-Control"] = "no-store"  # a shared computer's back button shows nobody's answers
    return resp


def error_box(message: str | None) -> str:
    return f"<p class='error' role='alert'>{html.escape(message)}</p>" if message else ""


def hidden(name: str, value: str) -> str:
    return f"<input type='hidden' name='{name}' value='{html.escape(value)}'>"


def message_page(title: str, message: str, status: int) -> web.Response:
    """A refused or failed request: one plain sentence, and the way back."""
    return page(title, f"<h1>{html.escape(title)}</h1>{error_box(message)}<p><a href='/'>Back to the first page</a></p>",
                status)


# -- the study's texts --------------------------------------------------------------------

def fill(text: str, server: StudyServer, partner: str, country: str) -> str:
    """A scenario text with {partner}, {country}, {arms}, {assignment} and {ip} filled in, escaped
    (other braces stay)."""
    arms = len(server.scenario.arms)
    words = NUMBER_WORDS[arms] if arms < len(NUMBER_WORDS) else str(arms)
    assignment = ("Everyone talked with the same AI conversation partner" if arms == 1 else
                  f"Participants were assigned at random to one of {words} AI conversation partners built in "
                  "different ways")
    ip = ("the server records your IP address in its access log, kept apart from your answers, for the "
          "server's security" if server.human.log_client_addresses else "the server does not record your IP address")
    values = {"{partner}": partner, "{country}": country, "{arms}": words, "{assignment}": assignment, "{ip}": ip}
    for key, value in values.items():
        text = text.replace(key, value)
    return html.escape(text)


UNSET = "<i>not stated</i>"


def _stated(value: str | None) -> str:
    return html.escape(value) if value else UNSET


def who_runs_it(server: StudyServer) -> str:
    h = server.human
    rows = [("Researcher", _stated(h.researcher)), ("Contact", _stated(h.contact)),
            ("Ethics approval", _stated(h.approval)), ("Responsible for the data", _stated(h.data_controller))]
    out = "".join(f"<li>{k}: {v}</li>" for k, v in rows)
    note = ("" if not h.missing() else "<p class='notice'>This study has not stated everything above. Please ask "
            "whoever sent you this link before you take part.</p>")
    return f"<ul>{out}</ul>{note}<p>{html.escape(h.complaints)}</p>"


def ai_provider(server: StudyServer) -> str:
    """Where the chat text goes, from the arms' model specs: the study's own computer, or a named
    external AI service (the consent page says so; an ethics board asks)."""
    places = []
    for arm in server.scenario.arms:
        provider = arm.tutor.split(":", 1)[0]
        host = urllib.parse.urlsplit(arm.base_url).hostname if arm.base_url else None
        if provider == "local" or host in ("localhost", "127.0.0.1", "::1"):
            places.append("")
        elif host:
            places.append(f"the AI service at {host}")
        else:
            places.append({"openai": "OpenAI (USA)", "gemini": "Google's Gemini service",
                           "anthropic": "Anthropic (USA)"}.get(provider, provider))
    external = sorted({p for p in places if p})
    if not external:
        return ("The AI runs on computers of this study: your chat messages are not sent to an outside AI "
                "company.")
    some = "" if all(places) else " (for some participants)"
    return (f"To write the replies, your chat messages{some} are sent to {html.escape(' and '.join(external))}, an "
            "outside AI service, which processes them under its own terms.")


def pilot_banner(server: StudyServer) -> str:
    """While researcher, contact or approval is unset the server admits nobody, unless started with
    `--pilot`; then every page says it is a pilot."""
    if not server.pilot:
        return ""
    return ("<p class='notice' role='note'><b>Pilot run.</b> This is a test of the study, not the study itself: "
            "the researcher has not yet stated who runs it or its ethics approval.</p>")


def footer(p: Participant, server: StudyServer) -> str:
    contact = html.escape(server.human.contact) if server.human.contact else "no contact stated"
    return (f"{pilot_banner(server)}<footer><a href='/p/{p.spec.id}/withdraw'>Withdraw from the study</a> · "
            f"<a href='/p/{p.spec.id}/record'>Download your answers</a> · Questions: {contact}</footer>")


# -- before the study -----------------------------------------------------------------------

def consent_page(server: StudyServer, token: str, error: str | None = None, status: int = 200) -> web.Response:
    h = server.human
    minutes = server.minutes
    partner, country = "The conversation partner in this study", "the country you will learn about"
    invitation = ("<p><label>Invitation code <input type='text' name='invitation' autocomplete='off'></label></p>"
                  if h.invitation_codes else "")
    age = (f"<p><label><input type='checkbox' name='age' value='yes'> I am {h.min_age} years old or older.</label></p>"
           if h.min_age else "")
    closed = ("" if server.open_to_participants else "<p class='error' role='alert'>This study is not open yet: the "
              "researcher has not stated who runs it, how to contact them and its ethics approval. Please come back "
              "later.</p>")
    body = f"""<h1>{html.escape(h.title)}</h1>{error_box(error)}
<h2>What this study is</h2><p>{fill(h.purpose, server, partner, country)}</p>
<p>You first answer a short survey, then chat with a conversation partner about another culture, then
answer the survey again and a few questions about the chat. It takes about {minutes} minutes.</p>
<h2>Your conversation partner is an AI</h2><p class='ai'>{fill(h.ai_disclosure, server, partner, country)}</p>
<h2>Your data</h2><p>{fill(h.data, server, partner, country)}</p><p>{ai_provider(server)}</p>
<ul><li>How long it is kept: {fill(h.retention, server, partner, country) if h.retention else UNSET}</li>
<li>Who sees it: {fill(h.recipients, server, partner, country) if h.recipients else UNSET}</li></ul>
<h2>Risks</h2><p>{fill(h.risks, server, partner, country)}</p>
<h2>Taking part and withdrawing</h2><p>{fill(h.withdrawal, server, partner, country)}</p>
<h2>Who runs this study</h2>{who_runs_it(server)}{closed}
<form method="post" action="/start">{hidden("form_token", token)}{invitation}{age}
<p><label><input type="checkbox" name="consent" value="yes"> {fill(h.consent, server, partner, country)}</label></p>
<button type="submit">Start</button></form>
<p class='progress'>Started before and have a recovery code? <a href='/recover'>Continue or withdraw</a>.</p>"""
    return page("Consent", pilot_banner(server) + body, status)


def welcome_page(server: StudyServer, p: Participant, code: str) -> web.Response:
    body = (f"<h1>Your recovery code</h1><p class='code'>{html.escape(code)}</p>"
            "<p>Please write it down. It is shown only now. With it you can continue on another device or "
            "browser, and withdraw from the study later, also after the end. Nobody else needs it, and we "
            "cannot tell it to you again.</p>"
            f"<form method='get' action='/p/{p.spec.id}'><button type='submit'>I have noted it — continue</button></form>")
    return page("Your recovery code", body, footer=footer(p, server))


def recover_page(server: StudyServer, token: str, error: str | None = None, status: int = 200,
                 heading: str = "Continue with your recovery code") -> web.Response:
    body = (f"<h1>{html.escape(heading)}</h1>{error_box(error)}"
            "<p>Enter the recovery code you were shown when you agreed to take part. The session then "
            "continues in this browser (and no longer in the one used before).</p>"
            f"<form method='post' action='/recover'>{hidden('form_token', token)}"
            "<p><input type='text' name='code' autocomplete='off' placeholder='ABCD-EFGH'></p>"
            "<button type='submit'>Continue</button></form>")
    return page("Recovery code", body, status)


# -- the session ----------------------------------------------------------------------------

def _scale_inputs(step: EduStep, chosen: str | None) -> str:
    item = step.item
    assert item is not None
    opts = []
    for v in range(item.lo, item.hi + 1):
        checked = " checked" if chosen == str(v) else ""
        opts.append(f"<label class='opt'><input type='radio' name='{html.escape(item.key)}' value='{v}'{checked}> {v}</label>")
    return "".join(opts)


def answers_page(server: StudyServer, p: Participant, step: EduStep, token: str, error: str | None = None,
                 form: dict[str, str] | None = None, missing: list[str] | None = None) -> web.Response:
    meta, form, missing = p.meta, form or {}, missing or []
    steps = server.page_steps(p, step)
    country = html.escape(meta.country)
    if step.phase == "pre":
        title, intro = "Survey (before)", (f"Answer each question <b>as a typical person from {country} would</b>. "
                                           "Guess if you are not sure.")
    elif step.phase == "post":
        title, intro = "Survey (after)", (f"Now that you have talked with {html.escape(meta.tutor.name)}, "
                                          f"answer again <b>as a typical person from {country} would</b>.")
    else:
        title, intro = "About the conversation", "How much do you agree with each statement? (1 = strongly disagree, 5 = strongly agree)"
    parts = [f"<h1>{title}</h1><p class='progress'>{len(steps)} questions on this page</p>{error_box(error)}<p>{intro}</p>",
             f"<form method='post' action='/p/{p.spec.id}/answers'>{hidden('step', str(step.number))}"
             f"{hidden('form_token', token)}"]
    for i, s in enumerate(steps, 1):
        item = s.item
        assert item is not None
        cls = "q missing" if item.key in missing else "q"
        if s.phase == "free":
            parts.append(f"<div class='{cls}'><p>{html.escape(item.question)}</p><textarea name='free' "
                         f"maxlength='{server.scenario.max_reply_chars}'>{html.escape(form.get('free', ''))}</textarea></div>")
            continue
        scale = "" if s.phase == "exp" else f"<p class='scale'>{html.escape(item.scale)}</p>"
        parts.append(f"<div class='{cls}' id='q{i}'><p><b>{i}.</b> {html.escape(item.question)}</p>{scale}"
                     f"{_scale_inputs(s, form.get(item.key))}</div>")
    parts.append("<button type='submit'>Continue</button></form>")
    return page(title, "".join(parts), 400 if error else 200, footer(p, server))


def chat_page(server: StudyServer, p: Participant, aligned: list[EduStep], token: str, error: str | None = None,
              draft: str = "", mode: str = "ask") -> web.Response:
    """The chat. `mode`: `ask` (the text box), `outage` (the tutor could not answer: the saved
    question and "Try again"), `over` (the last reply, read before moving on to the survey)."""
    meta = p.meta
    tutor = html.escape(meta.tutor.name)
    country = meta.country
    asked = sum(1 for s in aligned if s.phase == "learn" and s.role == "learner")
    total = meta.learning_turns
    msgs = []
    for s, t in zip(aligned, p.turns):
        if s.phase != "learn":
            continue
        who, cls = ("You", "you") if s.role == "learner" else (f"{tutor} (AI)", "tutor")
        msgs.append(f"<div class='msg {cls}'><b>{who}:</b> {html.escape(t.text)}</div>")
    if mode == "over":
        progress = f"You have sent all {total} messages."
        action = (f"<p class='notice'>That was the end of the chat. Take your time to read {tutor}'s last answer, "
                  "then go on to the survey.</p>"
                  f"<form method='get' action='/p/{p.spec.id}'>{hidden('go', 'survey')}"
                  "<button type='submit'>Continue to the survey</button></form>")
    elif mode == "outage":
        progress = f"Message {asked} of {total}"
        action = (f"<p class='notice' role='alert'>{tutor} could not reply just now: the AI service did not answer. "
                  "Your message is saved. Please try again in a moment.</p>"
                  f"<form method='post' action='/p/{p.spec.id}/retry'>{hidden('form_token', token)}"
                  f"<button type='submit' data-busy='{tutor} is replying…'>Try again</button></form>")
    else:
        progress = f"Message {asked + 1} of {total}"
        action = (f"<form class='ask' method='post' action='/p/{p.spec.id}/ask' data-tutor='{tutor} (AI)'>"
                  f"{hidden('step', str(len(p.turns)))}{hidden('form_token', token)}"
                  f"<textarea name='message' maxlength='{server.scenario.max_reply_chars}' placeholder='Your question…'>"
                  f"{html.escape(draft)}</textarea><p><button type='submit' data-busy='{tutor} is replying…'>Send"
                  "</button></p></form>")
    body = (f"<h1>Chat with {tutor}</h1><p class='ai'><b>AI conversation partner.</b> "
            f"{fill(server.human.ai_disclosure, server, meta.tutor.name, country)}</p>"
            f"<p>Ask about everyday life, values and customs in {html.escape(country)}.</p>"
            f"<p class='progress'>{progress}</p>{error_box(error)}<div class='chat'>{''.join(msgs)}</div>{action}")
    script = STREAM_REPLY if mode == "ask" else ""
    return page(f"Chat with {meta.tutor.name}", body + script, 400 if error else 200, footer(p, server))


def thanks_page(server: StudyServer, p: Participant) -> web.Response:
    """The end: the debriefing (what the study compared, that the partner was an AI), who to ask."""
    h, meta = server.human, p.meta
    body = (f"<h1>Thank you!</h1><p>Your answers have been saved.</p>"
            f"<h2>About this study</h2><p>{fill(h.debriefing, server, meta.tutor.name, meta.country)}</p>"
            f"<h2>If you change your mind</h2><p>{fill(h.withdrawal, server, meta.tutor.name, meta.country)}</p>"
            f"<h2>Who runs this study</h2>{who_runs_it(server)}<p>You can close this page now.</p>")
    return page("Thank you", body, footer=footer(p, server))


def withdraw_page(server: StudyServer, p: Participant, token: str) -> web.Response:
    body = ("<h1>Withdraw from the study</h1><p>If you withdraw, your answers and messages are marked as "
            "withdrawn and left out of every analysis and export. You cannot undo this.</p>"
            f"<p>{still_on_disk(server)}</p>"
            f"<form method='post' action='/p/{p.spec.id}/withdraw'>{hidden('form_token', token)}"
            "<button type='submit' class='danger'>Withdraw my answers</button></form>"
            f"<p><a href='/p/{p.spec.id}'>Go back to the study</a></p>")
    return page("Withdraw", body)


def withdrawn_page(server: StudyServer, p: Participant) -> web.Response:
    h, meta = server.human, p.meta
    body = ("<h1>You have withdrawn</h1><p>Your answers and messages are marked as withdrawn and will not be used. "
            f"Thank you for your time.</p><p>{still_on_disk(server)}</p>"
            f"<h2>About this study</h2><p>{fill(h.debriefing, server, meta.tutor.name, meta.country)}</p>"
            f"<h2>Who runs this study</h2>{who_runs_it(server)}")
    return page("Withdrawn", body)


def still_on_disk(server: StudyServer) -> str:
    """What withdrawal does not do by itself, said plainly: the records stay in the study's files until erased."""
    contact = f" ({html.escape(server.human.contact)})" if server.human.contact else ""
    return ("Withdrawing does not delete anything by itself: your records stay in the study's files, marked as "
            f"withdrawn. To have them erased completely, ask the researcher{contact} and give them your participant "
            "number from the address bar (it starts with \"p-\"); they can erase them with one command.")


def not_found_page() -> web.Response:
    return page("Unknown session", "<h1>Unknown session</h1><p class='error'>This link does not belong to a "
                "session of this study. <a href='/'>Start from the first page</a>.</p>", 404)


# -- the researcher -------------------------------------------------------------------------

def stage_of(server: StudyServer, p: Participant) -> str:
    if p.withdrawn:
        return "withdrawn"
    _, step = server.step_of(p)
    return "finished" if step is None else {"pre": "pre-test", "learn": "chat", "post": "post-test",
                                            "exp": "questionnaire", "free": "questionnaire"}[step.phase]


STAGES = ["pre-test", "chat", "post-test", "questionnaire", "finished", "withdrawn"]


def admin_login_page(token: str, error: str | None = None, status: int = 200) -> web.Response:
    """The researcher signs in with the token printed at start; it is posted, never put in a URL."""
    body = (f"<h1>Study administration</h1>{error_box(error)}<p>Enter the admin token printed when the server "
            "started.</p><form method='post' action='/admin/login'>"
            f"{hidden('form_token', token)}<p><input type='password' name='token' autocomplete='off'></p>"
            "<button type='submit'>Sign in</button></form>")
    return page("Study administration", body, status)


def admin_page(server: StudyServer) -> web.Response:
    counts: Counter[tuple[str, str, str]] = Counter()
    for p in server.participants.values():
        counts[(p.meta.culture, p.meta.arm, stage_of(server, p))] += 1
    rows = []
    for c in server.plan.cultures:
        for arm in server.scenario.arms:
            cells = "".join(f"<td>{counts[(c.name, arm.name, s)]}</td>" for s in STAGES)
            started = sum(counts[(c.name, arm.name, s)] for s in STAGES)
            rows.append(f"<tr><td>{html.escape(c.name)}</td><td>{html.escape(arm.name)}</td><td>{started}</td>{cells}</tr>")
    head = "".join(f"<th>{s}</th>" for s in ["culture", "arm", "started", *STAGES])
    n = len(server.participants)
    refused = "".join(f"<li>{html.escape(k)}: {v}</li>" for k, v in sorted(server.rejected.items())) or "<li>none</li>"
    alerts = "".join(f"<p class='error' role='alert'>{html.escape(k)}: {v} — records could not be written (is the "
                     "disk full?). Participants are told their answers were not saved; free space, then check the "
                     "run directory.</p>" for k, v in sorted(server.alerts.items()))
    body = (f"<h1>{html.escape(server.scenario.name)}: progress</h1>{alerts}<p>{n} participant{'' if n == 1 else 's'}; "
            f"run directory {html.escape(str(server.out))}</p><table><tr>{head}</tr>{''.join(rows)}</table>"
            "<p class='scale'>started: everyone who began; the other columns: where each of them is now.</p>"
            f"<h2>Refused requests since the server started</h2><ul>{refused}</ul>"
            "<p><a href='/admin/export'>Export (JSONL, withdrawn participants marked, "
            "their answers left out)</a></p>")
    return page("Study progress", body)


def export_rows(server: StudyServer) -> list[dict[str, Any]]:
    """The admin export: one row per participant; a withdrawn one is marked and carries no answers."""
    rows = []
    for p in server.participants.values():
        row: dict[str, Any] = {"id": p.spec.id, "culture": p.meta.culture, "arm": p.meta.arm,
                               "stage": stage_of(server, p), "withdrawn": p.withdrawn}
        if not p.withdrawn:
            row["turns"] = [{"role": t.role, "text": inert(t.text)} for t in p.turns]
        rows.append(row)
    return rows


FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "|", "%")


def inert(text: str) -> str:
    """An exported text a spreadsheet shows as text: control characters (but line breaks) out, and a
    leading formula sign (`=HYPERLINK(…)`, `+`, `-`, `@`, …) escaped with an apostrophe (OWASP's rule)."""
    text = "".join(ch for ch in text if ch == "\n" or unicodedata.category(ch) != "Cc")
    return "'" + text if text.startswith(FORMULA_START) else text
