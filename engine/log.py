"""Append-only JSONL run log: one writer, one syscall per record, torn-line recovery.

Each record is one `os.write` of a complete line to an O_APPEND descriptor, so a
`kill -9` can lose at most the record being written and never leaves two records
interleaved. Data written this way survives a process crash (it is in the page
cache); `fsync` ("always" or "interval") also makes it survive a power loss.
"""
from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import orjson
from pydantic import ValidationError

from culturepark.engine.errors import CorruptLogError, LogError, LogWriteError
from culturepark.engine.records import Record, RunHeader, parse_record

LOG_NAME = "log.jsonl"
LOCK_NAME = ".lock"
SHARDS_DIR = "shards"  # one extra log per distributed worker session: shards/NNNN.jsonl

FsyncPolicy = Literal["never", "interval", "always"]


class RunDirLock:
    """Exclusive lock on a run directory; released by the kernel when the process dies."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            holder = self.path.read_text().strip() or "another process"
            raise LogError(f"{self.path.parent} is in use by a running run (pid {holder}); "
                           "wait for it or choose another --out") from exc
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(slots=True)
class RunLog:
    """The single writer of a run's log. Not thread-safe by design: the event loop owns it."""

    path: Path
    fsync: FsyncPolicy = "interval"
    fsync_interval_s: float = 1.0
    _fd: int = -1
    _last_sync: float = field(default=0.0)
    records_written: int = 0

    def open(self) -> RunLog:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._last_sync = time.monotonic()
        return self

    def append(self, record: Record | RunHeader) -> None:
        payload = record.model_dump(mode="json") if isinstance(record, RunHeader) else record
        line = orjson.dumps(payload) + b"\n"
        try:
            written = os.write(self._fd, line)
            if written != len(line):  # a short write leaves a torn line: cut it off again
                os.ftruncate(self._fd, os.fstat(self._fd).st_size - written)
                raise OSError(f"short write ({written} of {len(line)} bytes)")
            if self.fsync == "always":
                os.fsync(self._fd)
            elif self.fsync == "interval":
                now = time.monotonic()
                if now - self._last_sync >= self.fsync_interval_s:
                    os.fsync(self._fd)
                    self._last_sync = now
        except OSError as exc:
            raise LogWriteError(f"cannot append to {self.path}: {exc}") from exc
        self.records_written += 1

    def close(self) -> None:
        if self._fd >= 0:
            try:
                if self.fsync != "never":
                    os.fsync(self._fd)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = -1


@dataclass(slots=True)
class LogContents:
    header: RunHeader | None
    records: list[Record]
    torn_bytes: int = 0  # bytes of a partial last line (0 when the log ended cleanly)


def _parse_line(raw: bytes, path: Path, lineno: int) -> RunHeader | Record:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CorruptLogError(f"{path}:{lineno}: corrupt record (not JSON); "
                              "the log was edited or damaged — refusing to guess") from exc
    if not isinstance(data, dict) or "type" not in data:
        raise CorruptLogError(f"{path}:{lineno}: record without a 'type'")
    try:
        return RunHeader.model_validate(data) if data["type"] == "run" else parse_record(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or str(data["type"])
        raise CorruptLogError(f"{path}:{lineno}: not a valid {data['type']!r} record "
                              f"({where}: {first['msg']})") from exc


def shard_paths(run_dir: Path) -> list[Path]:
    """A distributed run's worker logs, in the order they were created (numbered names)."""
    folder = Path(run_dir) / SHARDS_DIR
    return sorted(folder.glob("*.jsonl")) if folder.is_dir() else []


def new_shard_path(run_dir: Path) -> Path:
    """The next unused shard name; only the driver (which holds the run's lock) calls this."""
    existing = shard_paths(run_dir)
    number = int(existing[-1].stem) + 1 if existing else 1
    folder = Path(run_dir) / SHARDS_DIR
    folder.mkdir(exist_ok=True)
    path = folder / f"{number:04d}.jsonl"
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))  # reserve the name
    return path


def log_files(path: Path) -> list[Path]:
    """A log file, or a run directory's main log and its shards in creation order."""
    path = Path(path)
    files = [path / LOG_NAME, *shard_paths(path)] if path.is_dir() else [path]
    if not files[0].exists():
        raise LogError(f"no log at {files[0]}")
    return files


class LogReader:
    """One pass over a log and its shards in constant memory: `records()` yields each record as it
    is parsed, so a run of any size can be resumed, exported or replayed.

    Records of the shards (written by distributed workers) follow the main log's, shard by shard
    in creation order, so one conversation's records stay in the order they were written however
    many workers and sessions wrote them. A torn last line (a write cut by a crash) is not
    yielded; `cut_torn()` truncates it away — call it only after the pass, so a corrupt file
    refuses the whole read without anything having changed.
    """

    def __init__(self, path: Path, has_header: bool = True) -> None:
        self.files = log_files(path)
        self.has_header = has_header  # a single shard file has none
        self.header: RunHeader | None = read_header(self.files[0]) if has_header else None
        self.torn_bytes = 0
        self._cuts: list[tuple[Path, int]] = []

    def records(self) -> Iterator[Record]:
        self.torn_bytes, self._cuts = 0, []
        for number, file in enumerate(self.files):
            offset = 0
            with open(file, "rb") as fh:
                for lineno, raw in enumerate(fh, start=1):
                    if not raw.endswith(b"\n"):  # only the last line can lack its newline
                        self.torn_bytes += len(raw)
                        self._cuts.append((file, offset))
                        break
                    offset += len(raw)
                    if (self.has_header and number == 0 and lineno == 1) or not raw.strip():
                        continue  # the header (read apart), or a blank line
                    rec = _parse_line(raw, file, lineno)
                    if isinstance(rec, RunHeader):
                        raise CorruptLogError(f"{file}:{lineno}: a second run header among the records")
                    yield rec

    def cut_torn(self) -> None:
        for file, size in self._cuts:
            with open(file, "r+b") as fh:
                fh.truncate(size)
        self._cuts = []


def _read(path: Path, cut_torn: bool) -> LogContents:
    reader = LogReader(path)
    contents = LogContents(header=reader.header, records=list(reader.records()), torn_bytes=reader.torn_bytes)
    if cut_torn:
        reader.cut_torn()
    return contents


def read_log(path: Path) -> LogContents:
    """Read a (possibly partial) log into memory without changing it (small logs, tests);
    `LogReader` streams a log of any size."""
    return _read(path, cut_torn=False)


def read_header(path: Path) -> RunHeader | None:
    """Only the run header (the first line), without reading a possibly huge log. None while the
    log is empty or its header torn; a first line that is no header is a corrupt log."""
    path = Path(path)
    if path.is_dir():
        path = path / LOG_NAME
    with open(path, "rb") as fh:
        first = fh.readline()
    if not first.endswith(b"\n"):
        return None  # empty, or a torn header
    rec = _parse_line(first, path, 1)
    if not isinstance(rec, RunHeader):
        raise CorruptLogError(f"{path}:1: first record is not a run header")
    return rec


def recover(path: Path) -> LogContents:
    """Read a log for resuming: a torn last line (partial write) is cut off each file."""
    return _read(path, cut_torn=True)

