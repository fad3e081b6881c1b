"""One stage's life, written once: every stage that calls models goes through `Stage`.

    run directory checked, locked, read back → endpoints reachable? → backends started
    → header written (`start`) → the stage's own work → log closed, lock released → endpoints closed

`run`, `refine`, every `eval`, `study serve` and each Ray worker enter the same block, so
they share its guarantees: bad input (an unreachable server, a bad directory, a missing
model) is found before anything is written; a directory this stage created is removed again
if the block is left before the header; once the header is written the directory is never
removed and the log is the truth; endpoints are always closed, also on a crash.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, cast

from culturepark.engine.backends.base import ChecksReachable
from culturepark.engine.endpoint import Endpoint
from culturepark.engine.log import FsyncPolicy, RunLog
from culturepark.engine.records import RunHeader
from culturepark.engine.resume import ResumeState
from culturepark.engine.rundir import RunDir


def distinct(endpoints: Mapping[str, Endpoint]) -> list[Endpoint]:
    """Each endpoint once (roles with identical settings share one endpoint and its budget)."""
    return list({id(e): e for e in endpoints.values()}.values())


async def check_reachable(endpoints: Mapping[str, Endpoint]) -> None:
    """Fail fast (exit 2, with a hint) when a remote endpoint does not answer at start."""
    for ep in distinct(endpoints):
        if ep.backend.checks_reachable:
            await cast(ChecksReachable, ep.backend).check_reachable()


async def start_backends(endpoints: Mapping[str, Endpoint]) -> None:
    """Start each distinct backend once (a local model loads here). A missing extra or model
    directory is an `InputError`; anything else is a crash with its traceback."""
    for ep in distinct(endpoints):
        await ep.backend.start()


async def close_endpoints(endpoints: Mapping[str, Endpoint]) -> None:
    for ep in distinct(endpoints):
        await ep.aclose()


class LogPlace(Protocol):
    """Where a stage appends: a run directory it owns, or one Ray worker's shard file."""

    resume_state: ResumeState | None

    def __enter__(self) -> Any: ...
    def __exit__(self, *exc: object) -> None: ...
    def start(self, header: RunHeader | None) -> RunLog: ...


class ShardLog:
    """A Ray worker's place: a shard file in a run directory whose lock and header the driver holds."""

    def __init__(self, path: Path, fsync: FsyncPolicy = "interval", resume_state: ResumeState | None = None):
        self.path = Path(path)
        self.fsync = fsync
        self.resume_state = resume_state
        self.log: RunLog | None = None

    def __enter__(self) -> ShardLog:
        return self

    def start(self, header: RunHeader | None = None) -> RunLog:
        self.log = RunLog(self.path, fsync=self.fsync).open()
        return self.log

    def __exit__(self, *exc: object) -> None:
        if self.log is not None:
            self.log.close()


class Stage:
    """`async with Stage(endpoints, RunDir(...)) as stage: log = stage.start(header); ...`"""

    def __init__(self, endpoints: Mapping[str, Endpoint], place: LogPlace, *,
                 check: bool = True, start_backends: bool = True) -> None:
        self.endpoints = endpoints
        self.place = place
        self.check = check
        self.start_models = start_backends
        self._entered = False

    @classmethod
    def in_dir(cls, endpoints: Mapping[str, Endpoint], out: Path, resume: bool, content_hash: str, *,
               fsync: FsyncPolicy = "interval", say: Callable[[str], None] | None = None,
               what: str = "scenario", check: bool = True, start_backends: bool = True) -> Stage:
        return cls(endpoints, RunDir(out, resume, content_hash, fsync=fsync, say=say, what=what),
                   check=check, start_backends=start_backends)

    @property
    def resume_state(self) -> ResumeState | None:
        return self.place.resume_state

    @property
    def header(self) -> RunHeader | None:
        return getattr(self.place, "header", None)

    async def __aenter__(self) -> Stage:
        try:
            self.place.__enter__()  # local checks first (directory, lock, hash): cheap, and nothing to undo
            self._entered = True
            if self.check:
                await check_reachable(self.endpoints)
            if self.start_models:
                await start_backends(self.endpoints)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    def start(self, header: RunHeader | None) -> RunLog:
        """Open the log; the header is written unless the run is being resumed (a shard has none)."""
        return self.place.start(header)

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._entered:
                self._entered = False
                self.place.__exit__(*exc)
        finally:
            await close_endpoints(self.endpoints)


__all__ = ["LogPlace", "ShardLog", "Stage", "check_reachable", "close_endpoints", "distinct",
           "start_backends"]
