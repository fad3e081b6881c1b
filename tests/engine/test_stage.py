"""The one stage lifecycle: nothing half-written on bad input, the original error kept on a
crash, endpoints always closed, and a started run never removed."""
from __future__ import annotations

import pytest

from culturepark.engine.backends.openai_http import OpenAIHTTPBackend, Unreachable
from culturepark.engine.endpoint import Endpoint
from culturepark.engine.errors import InputError
from culturepark.engine.records import RunHeader
from culturepark.engine.stage import Stage


class Watched(OpenAIHTTPBackend):
    """A real HTTP backend that records whether it was closed, and can fail its start."""

    def __init__(self, url: str, fail_start: BaseException | None = None) -> None:
        super().__init__(url, "m")
        self.fail_start = fail_start
        self.closed = False

    async def start(self) -> None:
        if self.fail_start is not None:
            raise self.fail_start
        await super().start()

    async def aclose(self) -> None:
        self.closed = True
        await super().aclose()


CASES = [  # (what goes wrong, the backend, the error that must come out unchanged)
    ("unreachable server", lambda url: Watched("http://127.0.0.1:9/v1"), Unreachable),
    ("bug in a backend's start", lambda url: Watched(url, RuntimeError("boom")), RuntimeError),
    ("missing extra at start", lambda url: Watched(url, InputError("pip install it")), InputError),
]


@pytest.mark.parametrize("name,make,error", CASES, ids=[c[0] for c in CASES])
async def test_a_stage_that_fails_before_its_header_leaves_nothing(sim, tmp_path, name, make, error):
    url = await sim()
    backend = make(url)
    out = tmp_path / "new"
    with pytest.raises(error) as raised:
        async with Stage.in_dir({"x": Endpoint(backend)}, out, resume=False, content_hash="h"):
            pass
    assert type(raised.value) is error  # never re-labelled: a bug stays a bug (exit 1, traceback)
    assert isinstance(raised.value, InputError) == (error is not RuntimeError)
    assert not out.exists() and backend.closed


async def test_a_started_stage_keeps_its_directory_when_the_work_crashes(sim, tmp_path):
    backend = Watched(await sim())
    out = tmp_path / "run"
    with pytest.raises(ZeroDivisionError):
        async with Stage.in_dir({"a": Endpoint(backend), "b": Endpoint(backend)}, out, False, "h") as stage:
            stage.start(RunHeader(run_name="r"))
            raise ZeroDivisionError("the stage's own work crashed")
    assert (out / "log.jsonl").read_bytes().startswith(b'{"type":"run"') and backend.closed
    async with Stage.in_dir({"a": Endpoint(Watched(backend.base_url))}, out, True, "h") as again:
        assert again.header is not None and again.header.run_name == "r"  # the crashed run resumes
