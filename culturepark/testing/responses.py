"""Error bodies as OpenAI-compatible servers send them (shared by the completions and job routes)."""
from __future__ import annotations

import orjson
from aiohttp import web


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, headers=headers,
                        body=orjson.dumps({"error": {"message": message, "type": "sim_error", "code": status}}),
                        content_type="application/json")
