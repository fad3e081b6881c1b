"""The study's HTTP routes: each handler reads the request, asks the `StudyServer`, renders a page.

Who may do what is checked here, before the server is asked anything:
- a participant's pages need the session cookie set at consent (`Path=/p/ID`, `HttpOnly`,
  `SameSite=Lax`); the link alone shows a page that asks for the recovery code;
- every post carries an anti-forgery token: on a session's forms, one derived from its key
  (`form_token`); on the consent and recovery forms, the value of a cookie set with the form
  (double submit), signed, expiring and spent by its post, the cookie rotated with every answer
  (`forms.FormTokens`: a replayed consent never reaches a session); and a post whose `Origin` or
  `Sec-Fetch-Site` names another site is refused;
- every input is validated: a bad one gets a page with status 400/403/413/429 and nothing is
  written; no request ever ends in a 500 unless the server itself is broken, and then the log
  says which handler failed, never who asked.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from aiohttp import web

from culturepark.engine.errors import LogWriteError
from culturepark.study.forms import ClientGone, FormRefused, FormTokens, parse_form
from culturepark.study.limits import ConnectionLimits
from culturepark.study.pages import (
    SECURITY_HEADERS,
    admin_login_page,
    admin_page,
    answers_page,
    chat_page,
    consent_page,
    export_rows,
    message_page,
    not_found_page,
    recover_page,
    thanks_page,
    welcome_page,
    withdraw_page,
    withdrawn_page,
)
from culturepark.study.proxy import Network, proxy_middleware
from culturepark.study.server import BadInput, NewSession, Participant, Refused, StudyServer, form_token, same_secret

SESSION_COOKIE = "cp_session"
FORM_COOKIE = "cp_form"
ADMIN_COOKIE = "cp_admin"
log = logging.getLogger("culturepark.study")


def session_post(handler: Callable[[Any, web.Request, Participant, str, dict[str, str]],
                                   Awaitable[web.StreamResponse]]) -> Callable[[Any, web.Request],
                                                                               Awaitable[web.StreamResponse]]:
    """A participant's form post: the session cookie, the form (same site, readable) and its token
    are checked before `handler` runs; otherwise the recovery page or a refusal, nothing written."""
    @functools.wraps(handler)
    async def checked(self: StudyRoutes, request: web.Request) -> web.StreamResponse:
        found = await self.participant(request)
        if isinstance(found, web.Response):
            return found
        p, key = found
        form = await self.form(request)
        self.check_form_token(form, form_token(key))
        return await handler(self, request, p, key, form)
    return checked


class StudyRoutes:
    """One method per route; each reads the request, asks the `StudyServer`, renders a page."""

    def __init__(self, server: StudyServer, limits: ConnectionLimits | None = None) -> None:
        self.server = server
        self.limits = limits or ConnectionLimits()
        self.tokens = FormTokens()
        self.admin_key = secrets.token_bytes(32)  # signs the admin cookie; a restart signs everyone out

    # -- checks -----------------------------------------------------------------------------
    def client(self, request: web.Request) -> str:
        """The client's address, for the per-client limits only (hashed there, never kept or written)."""
        return request.remote or ""

    async def form(self, request: web.Request) -> dict[str, str]:
        """The posted form, refused if it comes from another site or cannot be read."""
        # Under `Referrer-Policy: no-referrer` a browser sends `Origin: null` even for its own forms, so
        # "null" defers to `Sec-Fetch-Site`, and, in browsers without it, to the form's token.
        origin = request.headers.get("Origin")
        if request.headers.get("Sec-Fetch-Site") == "cross-site" or (
                origin not in (None, "null") and origin != f"{request.scheme}://{request.host}"):
            raise self.server.refuse("cross_site", "This form was sent from another website, so it was not accepted.")
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                body = await request.read()
        except ConnectionResetError as exc:  # the client hung up mid-body
            raise ClientGone from exc
        except TimeoutError as exc:
            raise self.server.refuse("body_timeout", "What was sent took too long to arrive, so it was not accepted. "
                                                     "Please try again.", 408) from exc
        try:
            return parse_form(request.content_type, request.charset, body)
        except FormRefused as exc:
            raise self.server.refuse(exc.reason, "The form could not be read (it was not sent as this study's "
                                                 "pages send it). Please go back and try again.", exc.status) from exc

    def cookie_form(self, request: web.Request, render: Callable[[str], web.Response], fresh: bool = False
                    ) -> web.Response:
        """A page whose form is checked against a cookie (consent, recovery: no session yet): the
        browser's unspent form token, or (`fresh`, or none usable) a new one, goes both into the
        form and into the cookie."""
        now = time.time()
        token = request.cookies.get(FORM_COOKIE, "")
        if fresh or not self.tokens.valid(token, now) or self.tokens.spent(token):
            token = self.tokens.issue(now)
        resp = render(token)
        set_form_cookie(resp, token, request)
        return resp

    def spend_form_cookie(self, request: web.Request, form: dict[str, str]) -> None:
        """The consent and recovery forms: the form's token must equal the form cookie's value, be
        one this process signed, and not have been sent before (each post spends it)."""
        token = request.cookies.get(FORM_COOKIE, "")
        self.check_form_token(form, token)
        now = time.time()
        if not self.tokens.valid(token, now):
            raise self.server.refuse("forged", "This form has expired or was not sent from this study's page. "
                                               "Please reload the page and try again.")
        if not self.tokens.spend(token, now):
            raise self.server.refuse("form_used", "This form was sent already, so it was not accepted a second "
                                                  "time. Please go back to the first page and start again.")

    async def participant(self, request: web.Request) -> tuple[Participant, str] | web.Response:
        """The participant of the URL and the session key of this browser, or the page to show instead."""
        p = self.server.participants.get(request.match_info["pid"])
        if p is None:
            return not_found_page()
        key = request.cookies.get(SESSION_COOKIE, "")
        state = await self.server.session_state(p, key)
        if state != "ok":
            self.server.rejected["session_expired" if state == "expired" else "no_session"] += 1
            return locked(self, request, expired=state == "expired")
        return p, key

    def check_form_token(self, form: dict[str, str], expected: str) -> None:
        """Every post's anti-forgery check: the form's token equals the expected one (never empty)."""
        if not expected or not same_secret(form.get("form_token", ""), expected):
            raise self.server.refuse("forged", "This form has expired or was not sent from this study's page. "
                                               "Please reload the page and try again.")

    # -- before the session -----------------------------------------------------------------
    async def index(self, request: web.Request) -> web.Response:
        return self.cookie_form(request, lambda token: consent_page(self.server, token))

    async def start(self, request: web.Request) -> web.StreamResponse:
        """Consent: the form's token is spent whatever happens next, and every answer carries a new one,
        so the same form sent again (a replay, the back button on a shared computer) starts nothing."""
        form = await self.form(request)
        try:
            self.spend_form_cookie(request, form)
        except Refused as exc:
            return self.again(request, consent_page, str(exc), exc.status)
        if form.get("consent") != "yes":
            return self.again(request, consent_page, "Please tick the box to agree before you start.", 400)
        if self.server.human.min_age and form.get("age") != "yes":
            return self.again(request, consent_page, f"Please confirm that you are {self.server.human.min_age} years "
                                                     "old or older: this study is for adults only.", 400)
        try:
            made = await self.server.new_participant(form.get("invitation", ""), self.client(request))
        except Refused as exc:
            return self.again(request, consent_page, str(exc), exc.status)
        return self.welcome(request, made)

    def again(self, request: web.Request, render: Callable[[StudyServer, str, str, int], web.Response],
              message: str, status: int) -> web.Response:
        """The consent or recovery form once more, with what was wrong, and a new token (the old one is spent)."""
        return self.cookie_form(request, lambda token: render(self.server, token, message, status), fresh=True)

    def welcome(self, request: web.Request, made: NewSession) -> web.Response:
        resp = welcome_page(self.server, made.participant, made.recovery_code)
        set_session_cookie(resp, made.participant, made.key, request, self.server.session_lifetime_s)
        set_form_cookie(resp, self.tokens.issue(time.time()), request)
        return resp

    async def recover_form(self, request: web.Request) -> web.Response:
        return self.cookie_form(request, lambda token: recover_page(self.server, token))

    async def recover(self, request: web.Request) -> web.StreamResponse:
        form = await self.form(request)
        try:
            self.spend_form_cookie(request, form)
            p, key = await self.server.recover(form.get("code", ""), self.client(request))
        except Refused as exc:
            return self.again(request, recover_page, str(exc), exc.status)
        resp = web.HTTPSeeOther(f"/p/{p.spec.id}")
        set_session_cookie(resp, p, key, request, self.server.session_lifetime_s)
        set_form_cookie(resp, self.tokens.issue(time.time()), request)
        raise resp

    # -- the session --------------------------------------------------------------------------
    async def show(self, request: web.Request) -> web.StreamResponse:
        found = await self.participant(request)
        if isinstance(found, web.Response):
            return found
        (p, key), server = found, self.server
        if p.withdrawn:
            return withdrawn_page(server, p)
        async with p.lock:
            if not p.reply_failed:  # after a failure, only "Try again" asks the tutor again
                await server.catch_up(p)  # a reply owed since a restart
            aligned, step = server.step_of(p)
        token = form_token(key)
        if step is None:
            return thanks_page(server, p)
        if step.phase == "learn":
            return chat_page(server, p, aligned, token, mode="outage" if step.role == "tutor" else "ask")
        chat_just_over = step.phase == "post" and not any(s.phase == "post" for s in aligned)
        if chat_just_over and request.query.get("go") != "survey":
            return chat_page(server, p, aligned, token, mode="over")  # the last reply stays until they move on
        return answers_page(server, p, step, token)

    @session_post
    async def answers(self, request: web.Request, p: Participant, key: str, form: dict[str, str]) -> web.StreamResponse:
        server = self.server
        async with p.lock:
            _, step = server.step_of(p)
            if step is not None and form.get("step") == str(step.number):  # a stale double submit writes nothing
                try:
                    await server.submit_answers(p, form)
                except BadInput as exc:
                    return answers_page(server, p, step, form_token(key), str(exc), form, exc.fields)
        raise web.HTTPSeeOther(f"/p/{p.spec.id}")

    @session_post
    async def ask(self, request: web.Request, p: Participant, key: str, form: dict[str, str]) -> web.StreamResponse:
        server = self.server
        message, step = form.get("message", ""), form.get("step", "")
        if "application/x-ndjson" in request.headers.get("Accept", ""):
            return await self.ask_streamed(request, p, step, message)
        try:
            await server.ask_if_current(p, step, message)
        except BadInput as exc:  # nothing was written
            aligned, _ = server.step_of(p)
            return chat_page(server, p, aligned, form_token(key), str(exc), message[: server.scenario.max_reply_chars])
        raise web.HTTPSeeOther(f"/p/{p.spec.id}")

    async def ask_streamed(self, request: web.Request, p: Participant, step: str,
                           message: str) -> web.StreamResponse:
        """The reply so far as NDJSON lines while the tutor generates it (where the backend streams).

        The work runs in a task of its own: a participant who closes the page mid-reply still
        gets the whole reply logged, and sees it on the next visit.
        """
        updates: asyncio.Queue[str | dict[str, Any]] = asyncio.Queue()

        async def work() -> None:
            outcome: dict[str, Any] = {"done": True}
            turns = len(p.turns)
            try:
                await self.server.ask_if_current(p, step, message, on_text=updates.put_nowait)
            except BadInput as exc:
                outcome = {"error": str(exc)}
            except LogWriteError as exc:  # "done" would be a lie: say what was not saved
                self.server.log_failed(exc)
                outcome = {"error": not_saved(self.server, question_saved=len(p.turns) > turns), "saved": False}
            except Exception:  # a bug: its traceback in the server's log, the participant told the truth
                log.exception("study: the streamed reply failed")
                outcome = {"error": not_saved(self.server, question_saved=len(p.turns) > turns), "saved": False}
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
        await asyncio.shield(task)  # `work` raises nothing: after `prepare`, no second status line
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
        return resp

    async def record(self, request: web.Request) -> web.StreamResponse:
        """The participant's own record, as JSON: their answers and the chat, and which texts they agreed to."""
        found = await self.participant(request)
        if isinstance(found, web.Response):
            return found
        p = found[0]
        body = orjson.dumps({"participant": p.spec.id, "withdrawn": p.withdrawn,
                             "texts_version": self.server.texts_hash,
                             "turns": [{"role": "you" if t.role == "learner" else "AI", "text": t.text}
                                       for t in p.turns]}, option=orjson.OPT_INDENT_2)
        return web.Response(body=body, content_type="application/json",
                            headers={"Content-Disposition": f"attachment; filename={p.spec.id}.json",
                                     "Cache-Control": "no-store"})

    @session_post
    async def retry(self, request: web.Request, p: Participant, key: str, form: dict[str, str]) -> web.StreamResponse:
        """"Try again" after the tutor could not answer: the saved question is asked again."""
        await self.server.retry(p)
        raise web.HTTPSeeOther(f"/p/{p.spec.id}")

    async def withdraw_form(self, request: web.Request) -> web.StreamResponse:
        found = await self.participant(request)
        if isinstance(found, web.Response):
            return found
        p, key = found
        if p.withdrawn:
            return withdrawn_page(self.server, p)
        return withdraw_page(self.server, p, form_token(key))

    @session_post
    async def withdraw(self, request: web.Request, p: Participant, key: str, form: dict[str, str]
                       ) -> web.StreamResponse:
        async with p.lock:
            self.server.withdraw(p)
        raise web.HTTPSeeOther(f"/p/{p.spec.id}")

    # -- the researcher -----------------------------------------------------------------------
    # The admin token is sent as `Authorization: Bearer TOKEN` (scripts) or posted once to the login
    # form, which sets an HttpOnly, SameSite=Strict cookie for /admin; a token in a URL (browser
    # history, proxy logs) is refused, never accepted.
    def admin_cookie(self) -> str:
        return hmac.new(self.admin_key, self.server.admin_token.encode(), hashlib.sha256).hexdigest()

    def is_admin(self, request: web.Request) -> bool:
        """Whether the request carries the admin token (header) or the signed-in cookie; `Refused` for a
        token in the URL or a wrong one in the header."""
        if "token" in request.query:
            raise self.server.refuse("token_in_url", "The admin token never goes in a link (it would stay in the "
                                     "browser's history and in proxy logs). Open /admin and sign in there.", 400)
        auth = request.headers.get("Authorization")
        if auth is not None:
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not same_secret(given.strip(), self.server.admin_token):
                raise self.server.refuse("admin_token", "This admin token is not the one printed when the "
                                                        "server started.")
            return True
        return same_secret(request.cookies.get(ADMIN_COOKIE, ""), self.admin_cookie())

    async def admin(self, request: web.Request) -> web.Response:
        if not self.is_admin(request):
            error = None
            if ADMIN_COOKIE in request.cookies:  # signed in before a restart (or a made-up cookie)
                self.server.rejected["admin_cookie"] += 1
                error = "This sign-in is no longer valid (the server has restarted since). Please sign in again."
            return self.cookie_form(request, lambda token: admin_login_page(token, error, status=401))
        return admin_page(self.server)

    async def admin_login(self, request: web.Request) -> web.StreamResponse:
        form = await self.form(request)
        try:
            self.spend_form_cookie(request, form)
            self.server.per_client("admin_login", self.client(request))
            if not same_secret(form.get("token", "").strip(), self.server.admin_token):
                raise self.server.refuse("admin_token", "This is not the admin token printed when the server started.")
        except Refused as exc:
            message, status = str(exc), exc.status
            return self.cookie_form(request, lambda token: admin_login_page(token, message, status), fresh=True)
        resp = web.HTTPSeeOther("/admin")
        resp.set_cookie(ADMIN_COOKIE, self.admin_cookie(), path="/admin", httponly=True, samesite="Strict",
                        secure=request.secure)
        raise resp

    async def export(self, request: web.Request) -> web.Response:
        if not self.is_admin(request):
            raise self.server.refuse("admin_token", "The export needs the researcher to sign in at /admin first.")
        body = b"".join(orjson.dumps(row) + b"\n" for row in export_rows(self.server))
        return web.Response(body=body, content_type="application/x-ndjson",
                            headers={"Content-Disposition": "attachment; filename=participants.jsonl",
                                     "Cache-Control": "no-store"})


def locked(routes: StudyRoutes, request: web.Request, expired: bool = False) -> web.Response:
    """The link without this browser's session: the recovery form, never the session itself."""
    if expired:
        heading = "This session has expired"
        message = ("This session has been open longer than the study lasts, so it was closed in this browser. "
                   "If it is yours, enter your recovery code to continue.")
    else:
        message, heading = ("This session belongs to another browser (or its cookie is gone). If it is yours, "
                            "enter your recovery code to continue here.", "This session is open elsewhere")
    return routes.cookie_form(request, lambda token: recover_page(routes.server, token, message, 403,
                                                                  heading=heading))


def set_session_cookie(resp: web.StreamResponse, p: Participant, key: str, request: web.Request,
                       lifetime_s: int) -> None:
    """The session cookie lives as long as the server accepts the session (`session_lifetime_s`)."""
    resp.set_cookie(SESSION_COOKIE, key, path=f"/p/{p.spec.id}", httponly=True, samesite="Lax",
                    secure=request.secure, max_age=lifetime_s)


def set_form_cookie(resp: web.StreamResponse, token: str, request: web.Request) -> None:
    resp.set_cookie(FORM_COOKIE, token, path="/", httponly=True, samesite="Lax", secure=request.secure)


def not_saved(server: StudyServer, question_saved: bool) -> str:
    """The sentence for a failed log write: what was not saved, and whom to tell."""
    contact = f" ({server.human.contact})" if server.human.contact else ""
    what = ("Your message was saved, but the reply could not be saved" if question_saved
            else "What you just sent could NOT be saved")
    return (f"{what}: the study's server cannot write its records right now (its disk may be full). Your earlier "
            f"answers are kept. Please stop here and tell the researcher{contact}.")


def guard(server: StudyServer) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Every refusal and error becomes a page with its status; nothing about the client is logged."""
    plain = {404: ("Not found", "There is no such page in this study."),
             405: ("Not allowed", "This page cannot be used that way."),
             413: ("Too large", "What was sent is too large. Please shorten it and try again.")}

    @web.middleware
    async def middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        try:
            return await handler(request)
        except Refused as exc:
            return message_page("Not accepted", str(exc), exc.status)
        except ClientGone:
            server.rejected["client_gone"] += 1
            return web.Response(status=400)  # nobody reads it; no traceback for a hang-up
        except LogWriteError as exc:
            server.log_failed(exc)
            return message_page("Not saved", not_saved(server, question_saved=False), 503)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            server.rejected[f"http_{exc.status}"] += 1
            title, text = plain.get(exc.status, ("Not accepted", "This request was not accepted."))
            return message_page(title, text, exc.status)
        except Exception:
            log.exception("study: the %s handler failed", request.match_info.route.name or "unnamed")
            return message_page("Something went wrong", "The server could not handle this request, so what you sent "
                                "last may not have been saved. Please go back and try again.", 500)
    return middleware


async def secure_headers(_: web.Request, resp: web.StreamResponse) -> None:
    """Every response, the app's pages and its refusals alike: `pages.SECURITY_HEADERS`."""
    resp.headers.update(SECURITY_HEADERS)


async def no_icon(_: web.Request) -> web.Response:
    """Browsers ask for it on every first visit; a 404 there would be counted as a refused request."""
    return web.Response(status=204)


def build_app(server: StudyServer, limits: ConnectionLimits | None = None,
              trusted_proxies: Sequence[Network] = ()) -> web.Application:
    """The study's app; `trusted_proxies`: the reverse proxies whose forwarded headers are believed (`proxy`)."""
    r = StudyRoutes(server, limits)
    app = web.Application(client_max_size=256 * 1024, middlewares=[proxy_middleware(trusted_proxies), guard(server)])
    app.on_response_prepare.append(secure_headers)
    app.add_routes([web.get("/", r.index, name="index"), web.post("/start", r.start, name="start"),
                    web.get("/recover", r.recover_form, name="recover_form"),
                    web.post("/recover", r.recover, name="recover"),
                    web.get("/p/{pid}", r.show, name="show"), web.post("/p/{pid}/answers", r.answers, name="answers"),
                    web.post("/p/{pid}/ask", r.ask, name="ask"), web.post("/p/{pid}/retry", r.retry, name="retry"),
                    web.get("/p/{pid}/withdraw", r.withdraw_form, name="withdraw_form"),
                    web.get("/p/{pid}/record", r.record, name="record"),
                    web.post("/p/{pid}/withdraw", r.withdraw, name="withdraw"),
                    web.get("/admin", r.admin, name="admin"),
                    web.post("/admin/login", r.admin_login, name="admin_login"),
                    web.get("/admin/export", r.export, name="export"),
                    web.get("/favicon.ico", no_icon, name="favicon")])
    return app


__all__ = ["StudyRoutes", "build_app"]
