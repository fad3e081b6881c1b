"""The study's HTML pages: plain server-rendered forms that work without JavaScript; scripts
only disable double submits and stream the tutor's reply. Every user text is escaped."""
from __future__ import annotations

import html
from collections import Counter

from aiohttp import web

from culturepark.agents.education import EduStep
from culturepark.scenarios.schema import EducationScenario
from culturepark.study.server import Participant, StudyServer

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


def page(title: str, body: str, status: int = 200) -> web.Response:
    doc = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
           f"<meta name='viewport' content='width=device-width,initial-scale=1'><title>{html.escape(title)}</title>"
           f"<style>{CSS}</style></head><body>{body}{DISABLE_ON_SUBMIT}</body></html>")
    return web.Response(text=doc, content_type="text/html", status=status)


def error_box(message: str | None) -> str:
    return f"<p class='error' role='alert'>{html.escape(message)}</p>" if message else ""


def consent_page(scenario: EducationScenario, error: str | None = None) -> web.Response:
    body = f"""<h1>Learning about another culture</h1>{error_box(error)}
<p>In this study you first answer a short survey, then chat with a conversation partner from
another culture, then answer the survey again and a few questions about the conversation.
It takes about 20–30 minutes.</p>
<p>We do not ask for your name, e-mail or anything else that identifies you. Your answers and
messages are stored under a random participant number. Please do not write personal details
in the chat. You can stop at any time by closing the page.</p>
<form method="post" action="/start">
<p><label><input type="checkbox" name="consent" value="yes"> I have read this and agree to take part.</label></p>
<button type="submit">Start</button></form>"""
    return page("Consent", body, 400 if error else 200)


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
    parts = [f"<h1>{title}</h1><p class='progress'>{len(steps)} questions on this page</p>{error_box(error)}<p>{intro}</p>",
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
    return page(title, "".join(parts), 400 if error else 200)


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
            f"<p class='progress'>Message {asked + 1} of {total}</p>{error_box(error)}"
            f"<div class='chat'>{''.join(msgs)}</div>"
            f"<form class='ask' method='post' action='/p/{p.spec.id}/ask' data-tutor='{tutor}'>"
            f"<input type='hidden' name='step' value='{len(p.turns)}'>"
            f"<textarea name='message' maxlength='{server.scenario.max_reply_chars}' placeholder='Your question…'>"
            f"{html.escape(draft)}</textarea><p><button type='submit' data-busy='{tutor} is replying…'>Send</button></p></form>")
    return page(f"Chat with {meta['tutor']['name']}", body + STREAM_REPLY, 400 if error else 200)


def thanks_page() -> web.Response:
    return page("Thank you", "<h1>Thank you!</h1><p>Your answers have been saved. You can close this page now.</p>")


def not_found_page() -> web.Response:
    return page("Unknown session", "<h1>Unknown session</h1><p class='error'>This link does not belong to a "
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
    return page("Study progress", body)
