"""The study's HTTP routes: each handler reads the request, asks the `StudyServer`, renders a page."""
from __future__ import annotations

import asyncio
import secrets
from typing import Any

import orjson
from aiohttp import web

from culturepark.engine.errors import RequestFailed
from culturepark.study.pages import admin_page, answers_page, chat_page, consent_page, not_found_page, page, thanks_page
from culturepark.study.server import BadInput, Participant, StudyServer


class StudyRoutes:
    """One method per route; each reads the request, asks the `StudyServer`, renders a page."""

    def __init__(self, server: StudyServer) -> None:
        self.server = server

    def participant(self, request: web.Request) -> Participant | None:
        return self.server.participants.get(request.match_info["pid"])

    async def index(self, _: web.Request) -> web.Response:
        return consent_page(self.server.scenario)

    async def start(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        if form.get("consent") != "yes":
            return consent_page(self.server.scenario, "Please tick the box to agree before you start.")
        p = await self.server.new_participant()
        raise web.HTTPSeeOther(f"/p/{p.spec.id}")

    async def show(self, request: web.Request) -> web.StreamResponse:
        server, p = self.server, self.participant(request)
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

    async def answers(self, request: web.Request) -> web.StreamResponse:
        server, p = self.server, self.participant(request)
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

    async def ask(self, request: web.Request) -> web.StreamResponse:
        server, p = self.server, self.participant(request)
        if p is None:
            return not_found_page()
        form = await request.post()
        message = str(form.get("message", ""))
        step = str(form.get("step", ""))
        if "application/x-ndjson" in request.headers.get("Accept", ""):
            return await self.ask_streamed(request, p, step, message)
        try:
            await server.ask_if_current(p, step, message)
        except BadInput as exc:  # nothing was written
            aligned, _ = server.step_of(p)
            return chat_page(server, p, aligned, str(exc), message[: server.scenario.max_reply_chars])
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

    async def admin(self, request: web.Request) -> web.Response:
        if not secrets.compare_digest(request.query.get("token", ""), self.server.admin_token):
            return page("Forbidden", "<h1>Forbidden</h1><p class='error'>This page needs the admin link "
                        "printed when the server started.</p>", 403)
        return admin_page(self.server)


def build_app(server: StudyServer) -> web.Application:
    r = StudyRoutes(server)
    app = web.Application(client_max_size=256 * 1024)
    app.add_routes([web.get("/", r.index), web.post("/start", r.start), web.get("/p/{pid}", r.show),
                    web.post("/p/{pid}/answers", r.answers), web.post("/p/{pid}/ask", r.ask),
                    web.get("/admin", r.admin)])
    return app


__all__ = ["StudyRoutes", "build_app"]
