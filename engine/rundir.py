"""A run directory's life: check it, lock it, read back its log, then append to it.

Every stage that calls models (conversations, refinement, evaluation) writes the same kind
of directory: `log.jsonl` with a header that names what made it (its content hash), then
turn and end records. `--resume` continues a directory only if the hash matches, and starts
the run (with a notice) where nothing was written yet — a missing or empty directory, one
with only a lock file, an empty log — so a crashed first try is continued by the same
command line. A run that fails before its header is written leaves nothing behind.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from culturepark.engine.errors import InputError
from culturepark.engine.log import LOG_NAME, FsyncPolicy, LogReader, RunDirLock, RunLog, read_header
from culturepark.engine.records import RunHeader
from culturepark.engine.resume import ResumeState


def check_out_dir(out: Path, resume: bool) -> bool:
    """Return True if the directory must be created. Raises InputError on a bad directory."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a directory")
    if resume:
        if not os.access(out, os.W_OK):
            raise InputError(f"--out {out}: not writable")
        return False
    if out.exists() and any(p.name != ".lock" for p in out.iterdir()):
        raise InputError(f"--out {out}: directory is not empty (use --resume to continue the run "
                         "in it, or choose another --out)")
    parent = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"--out {out}: {parent} is not writable")
    return not out.exists()


class RunDir:
    """Context manager: `with RunDir(out, resume, hash) as rd: ...; log = rd.start(header)`.

    Until `start` writes the header, leaving the block removes a directory it created, so bad
    input or a failed model load never leaves a half-made run behind.
    """

    def __init__(self, out: Path, resume: bool, content_hash: str, fsync: FsyncPolicy = "interval",
                 say: Callable[[str], None] | None = None, what: str = "scenario") -> None:
        self.out = Path(out)
        self.resume = resume
        self.content_hash = content_hash
        self.fsync = fsync
        self.say = say or (lambda _m: None)
        self.what = what
        self.resume_state: ResumeState | None = None
        self.header: RunHeader | None = None
        self.log: RunLog | None = None
        self._lock: RunDirLock | None = None
        self._created = False
        self._top_created = self.out

    @property
    def log_path(self) -> Path:
        path: Path = self.out / LOG_NAME
        return path

    def __enter__(self) -> RunDir:
        if self.resume and not self.log_path.exists():
            # "run the same command again until it exits 0" must work when the first try died
            # before its log existed: --resume then starts the run (a foreign directory still refuses)
            self.say(f"--resume: nothing to resume in {self.out} yet (no {LOG_NAME}): starting the run")
            self.resume = False
        self._created = check_out_dir(self.out, self.resume)
        # the highest directory this run creates (parents included): what a refusal removes
        self._top_created = next((p for p in [*reversed(self.out.parents), self.out] if not p.exists()), self.out)
        if self.resume:
            self._check_hash(read_header(self.log_path))  # before the lock: a refusal writes nothing
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"--out {self.out}: cannot create ({exc.strerror})") from exc
        try:
            lock = RunDirLock(self.out)
            lock.acquire()
            self._lock = lock
            if self.resume:
                self._read_back()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _read_back(self) -> None:
        """One streaming pass (memory follows the open conversations, not the run's size); torn
        last lines are cut only after every file has parsed."""
        reader = LogReader(self.out)
        if reader.header is None:  # empty, or killed while writing the header: nothing to keep
            list(reader.records())
            reader.cut_torn()
            self.say(f"{self.log_path} is empty (the run was killed before its header): starting it afresh")
            return
        self._check_hash(reader.header)
        self.resume_state = ResumeState.from_records(reader.records())
        if reader.torn_bytes:
            self.say(f"warning: discarded a torn last line ({reader.torn_bytes} bytes) in {self.log_path}")
        reader.cut_torn()
        self.header = reader.header

    def _check_hash(self, header: RunHeader | None) -> None:
        if header is not None and header.scenario_hash != self.content_hash:
            raise InputError(f"--resume: {self.out} was made by a different {self.what} (hash "
                             f"{header.scenario_hash} ≠ {self.content_hash})")

    def start(self, header: RunHeader | None) -> RunLog:
        """Open the log for appending; write the header unless the run is being resumed."""
        self.log = RunLog(self.log_path, fsync=self.fsync).open()
        self._created = False  # from here on the directory holds a real run: never remove it
        if self.resume_state is None:
            if header is None:
                raise ValueError("a new run directory needs a header")
            self.header = header.model_copy(update={"scenario_hash": self.content_hash})
            self.log.append(self.header)
        return self.log

    def __exit__(self, *exc: object) -> None:
        if self.log is not None:
            self.log.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if self._created and self.out.exists():
            shutil.rmtree(self._top_created, ignore_errors=True)


__all__ = ["RunDir", "check_out_dir"]
