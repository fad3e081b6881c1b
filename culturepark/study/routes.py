"""The study's HTTP routes: each handler reads the request, asks the `StudyServer`, renders a page.

Who may do what is checked here, before the server is asked anything:
- a participant's pages need the session cookie set at consent (`Path=/p/ID`, `HttpOnly`,
  `SameSite=Lax`); the link alone shows a page that asks for the recovery code;
- every post carries an anti-forgery token: on a session's forms, one derived from its key
  (`form_token`); on the consent and recovery forms, the value of a cookie set with the form
  (double submit); and a post whose `Origin` or `Sec-Fetch-Site` names another site is refused;
- every input is validated: a bad one gets a page with status 400/403/413/429 and nothing is
  written; no request ever ends in a 500 unless the server itself is broken, and then the log
  says which handler failed, never who asked.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from culturepark.study.pages import (
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
from culturepark.study.server import BadInput, NewSession, Participant, Refused, StudyServer, form_token, same_secret

SESSION_COOKIE = "cp_session"
FORM_COOKIE = "cp_form"
REPEAT_CONSENT_S = 600.0  # a consent form posted twice (a double click without JavaScript) gets the same session
log = logging.getLogger("culturepark.study")


def session_post(handler: Callable[[Any, web.Request, Participant, str, dict[str, str]],
                                   Awaitable[web.StreamResponse]]) -> Callable[[Any, web.Request],
                                                                               Awaitable[web.StreamResponse]]:
    """A participant's form post: the session cookie, the form (same site, readable) and its token
    are checked before `handler` runs; otherwise the recovery page or a refusal, nothing written."""
    @functools.wraps(handler)
    async def checked(self: StudyRoutes, request: web.Request) -> web.StreamResponse:
        found = self.participant(request)
        if isinstance(found, web.Response):
            return found
        p, key = found
        form = await self.form(request)
        self.check_form_token(form, form_token(key))
        return await handler(self, request, p, key, form)
    return checked


class StudyRoutes:
    """One method per route; each reads the request, asks the `StudyServer`, renders a page."""

    def __init__(self, server: StudyServer) -> None:
        self.server = server
        self._consented: dict[str, tuple[float, NewSession]] = {}  # form token -> session made with it

    # -- checks -----------------------------------------------------------------------------
    async def form(self, request: web.Request) -> dict[str, str]:
        """The posted form, refused if it comes from another site or cannot be read."""
        origin = request.headers.get("Origin")
        if request.headers.get("Sec-Fetch-Site") == "cross-site" or (
                origin is not None and origin != f"{request.scheme}://{request.host}"):
            raise self.server.refuse("cross_site", "This form was sent from another website, so it was not accepted.")
        try:
            return {k: str(v) for k, v in (await request.post()).items()}
        except (UnicodeDecodeError, ValueError) as exc:
            raise self.server.refuse("bad_form", "The form could not be read. Please go back and try again.",
                                     400) from exc

    def cookie_form(self, request: web.Request, render: Callable[[str], web.Response]) -> web.Response:
        """A page whose form is checked against a cookie (consent, recovery: no session yet): the
        browser's form cookie, or a new one, goes both into the form and into the cookie."""
        token = request.cookies.get(FORM_COOKIE) or secrets.token_urlsafe(24)
        resp = render(token)
        resp.set_cookie(FORM_COOKIE, token, path="/", httponly=True, samesite="Lax", secure=request.secure)
        return resp

    def check_form_cookie(self, request: web.Request, form: dict[str, str]) -> str:
        """The consent and recovery forms: the form's token must equal the form cookie's value."""
        token = request.cookies.get(FORM_COOKIE, "")
        self.check_form_token(form, token)
        return token

    def participant(self, request: web.Request) -> tuple[Participant, str] | web.Response:
        """The participant of the URL and the session key of this browser, or the page to show instead."""
        p = self.server.participants.get(request.match_info["pid"])
        if p is None:
            return not_found_page()
        key = request.cookies.get(SESSION_COOKIE, "")
        if not self.server.holds(p, key):
            self.server.rejected["no_session"] += 1
            return locked(self, request)
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
        form = await self.form(request)
        token = self.check_form_cookie(request, form)
        now = time.monotonic()
        self._consented = {k: v for k, v in self._consented.items() if now - v[0] < REPEAT_CONSENT_S}
        if token in self._consented:
            return self.welcome(request, self._consented[token][1])
        if form.get("consent") != "yes":
            return consent_page(self.server, token, "Please tick the box to agree before you start.", 400)
        try:
            made = await self.server.new_participant(form.get("invitation", ""))
        except Refused as exc:
            return consent_page(self.server, token, str(exc), exc.status)
        self._consented[token] = (now, made)
        return self.welcome(request, made)

    def welcome(self, request: web.Request, made: NewSession) -> web.Response:
        resp = welcome_page(self.server, made.participant, made.recovery_code)
        set_session_cookie(resp, made.participant, made.key, request)
        return resp

    async def recover_form(self, request: web.Request) -> web.Response:
        return self.cookie_form(request, lambda token: recover_page(self.server, token))

    async def recover(self, request: web.Request) -> web.StreamResponse:
        form = await self.form(request)
        token = self.check_form_cookie(request, form)
        try:
            p, key = self.server.recover(form.get("code", ""))
        except Refused as exc:
            return recover_page(self.server, token, str(exc), exc.status)
        resp = web.HTTPSeeOther(f"/p/{p.spec.id}")
        set_session_cookie(resp, p, key, request)
        raise resp

    # -- the session --------------------------------------------------------------------------
    async def show(self, request: web.Request) -> web.StreamResponse:
        found = self.participant(request)
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
            try:
                await self.server.ask_if_current(p, step, message, on_text=updates.put_nowait)
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

    @session_post
    async def retry(self, request: web.Request, p: Participant, key: str, form: dict[str, str]) -> web.StreamResponse:
        """"Try again" after the tutor could not answer: the saved question is asked again."""
        await self.server.retry(p)
        raise web.HTTPSeeOther(f"/p/{p.spec.id}")

    async def withdraw_form(self, request: web.Request) -> web.StreamResponse:
        found = self.participant(request)
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
    def admin_token(self, request: web.Request) -> str:
        token = request.query.get("token", "")
        if not same_secret(token, self.server.admin_token):
            raise self.server.refuse("admin_token", "This page needs the admin link printed when the server started.")
        return token

    async def admin(self, request: web.Request) -> web.Response:
        return admin_page(self.server, self.admin_token(request))

    async def export(self, request: web.Request) -> web.Response:
        self.admin_token(request)
        body = b"".join(orjson.dumps(row) + b"\n" for row in export_rows(self.server))
        return web.Response(body=body, content_type="application/x-ndjson",
                            headers={"Content-Disposition": "attachment; filename=participants.jsonl",
                                     "Cache-Control": "no-store"})


def locked(routes: StudyRoutes, request: web.Request) -> web.Response:
    """The link without this browser's session: the recovery form, never the session itself."""
    return routes.cookie_form(request, lambda token: recover_page(
        routes.server, token, "This session belongs to another browser (or its cookie is gone). If it is yours, "
        "enter your recovery code to continue here.", 403, heading="This session is open elsewhere"))


def set_session_cookie(resp: web.StreamResponse, p: Participant, key: str, request: web.Request) -> None:
    resp.set_cookie(SESSION_COOKIE, key, path=f"/p/{p.spec.id}", httponly=True, samesite="Lax",
                    secure=request.secure, max_age=180 * 24 * 3600)


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
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            server.rejected[f"http_{exc.status}"] += 1
            title, text = plain.get(exc.status, ("Not accepted", "This request was not accepted."))
            return message_page(title, text, exc.status)
        except Exception:
            log.exception("study: the %s handler failed", request.match_info.route.name or "unnamed")
            return message_page("Something went wrong", "The server could not handle this request. Your answers so "
                                "far are saved; please go back and try again.", 500)
    return middleware


async def no_icon(_: web.Request) -> web.Response:
    """Browsers ask for it on every first visit; a 404 there would be counted as a refused request."""
    return web.Response(status=204)


def build_app(server: StudyServer) -> web.Application:
    r = StudyRoutes(server)
    app = web.Application(client_max_size=256 * 1024, middlewares=[guard(server)])
    app.add_routes([web.get("/", r.index, name="index"), web.post("/start", r.start, name="start"),
                    web.get("/recover", r.recover_form, name="recover_form"),
                    web.post("/recover", r.recover, name="recover"),
                    web.get("/p/{pid}", r.show, name="show"), web.post("/p/{pid}/answers", r.answers, name="answers"),
                    web.post("/p/{pid}/ask", r.ask, name="ask"), web.post("/p/{pid}/retry", r.retry, name="retry"),
                    web.get("/p/{pid}/withdraw", r.withdraw_form, name="withdraw_form"),
                    web.post("/p/{pid}/withdraw", r.withdraw, name="withdraw"),
                    web.get("/admin", r.admin, name="admin"), web.get("/admin/export", r.export, name="export"),
                    web.get("/favicon.ico", no_icon, name="favicon")])
    return app


__all__ = ["StudyRoutes", "build_app"]
