"""`culturepark study erase RUN_DIR --participant ID`: a participant's records gone from the run.

Withdrawal only marks (the log is append-only); a participant who asks for erasure is entitled
to more. This rewrites `log.jsonl` without any record of that participant — every other line
byte for byte as it was — into a temporary file that replaces the log atomically (a crash leaves
the old log or the new one, never half of each). The run must not be in use (its lock is taken,
so a running `study serve` makes this refuse). Then:

- `erasures.jsonl` gets one audit line: when, and how many records went — no id, no content;
- derived files are made again from the new log: `education.json` (`eval education`, with the
  data directory the run's header names); any other file in the run directory that still names
  the participant is removed, and the command says which and how to make it again.

The participant's id is what the study showed them (the "p-…" in their address bar).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from culturepark.engine.errors import CultureparkError, InputError
from culturepark.engine.files import atomic_writer
from culturepark.engine.log import LOCK_NAME, LOG_NAME, RunDirLock

AUDIT_NAME = "erasures.jsonl"
KEPT = {LOG_NAME, LOCK_NAME, AUDIT_NAME, "study.key"}


@dataclass
class Erased:
    records: int
    regenerated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def erase(run_dir: Path, participant: str, say: Callable[[str], None] = print) -> Erased:
    """Remove every record of `participant` from the run at `run_dir` (see the module's docstring)."""
    run_dir = Path(run_dir)
    log_path = run_dir / LOG_NAME
    if not log_path.is_file():
        raise InputError(f"{run_dir}: no {LOG_NAME} here (not a run directory)")
    if not participant.startswith("p-") or len(participant) > 64:
        raise InputError(f"--participant {participant!r}: a participant id looks like p-… (from their address bar)")
    with RunDirLock(run_dir):
        kept, removed = _without(log_path, participant)
        if removed == 0:
            raise InputError(f"{run_dir}: no records of participant {participant} (already erased, or another run)")
        with atomic_writer(log_path) as fh:
            fh.writelines(kept)
        _audit(run_dir, removed, len(kept))
        result = Erased(removed)
        _derived(run_dir, participant, result, say)
    say(f"erased {removed} records of {participant} from {log_path}; audit line in {run_dir / AUDIT_NAME}")
    return result


def _without(log_path: Path, participant: str) -> tuple[list[bytes], int]:
    """The log's lines without the participant's records (the header and everything else untouched)."""
    kept: list[bytes] = []
    removed = 0
    with open(log_path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.endswith(b"\n"):
                raise InputError(f"{log_path}:{number}: a torn last line; start and stop `study serve` once "
                                 "(it cuts it off), then erase")
            if number > 1 and participant.encode() in line:
                data = orjson.loads(line)
                if isinstance(data, dict) and data.get("conversation_id") == participant:
                    removed += 1
                    continue
            kept.append(line)
    return kept, removed


def _audit(run_dir: Path, removed: int, remaining: int) -> None:
    """One line: when, how many records went, how many stayed. Nothing that names the participant."""
    line = orjson.dumps({"erased_at": time.time(), "participants": 1, "records_removed": removed,
                         "records_left": remaining - 1}) + b"\n"
    fd = os.open(run_dir / AUDIT_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _derived(run_dir: Path, participant: str, result: Erased, say: Callable[[str], None]) -> None:
    """Files made from the log: made again, or removed (and said so) where they still name the participant."""
    from culturepark.benchmarks.education import RESULT_NAME, score

    if (run_dir / RESULT_NAME).exists():
        try:
            score(run_dir)
            result.regenerated.append(RESULT_NAME)
            say(f"made {run_dir / RESULT_NAME} again from the new log (eval education, default settings)")
        except (CultureparkError, OSError) as exc:
            (run_dir / RESULT_NAME).unlink()
            result.removed.append(RESULT_NAME)
            say(f"removed {RESULT_NAME} ({exc}); make it again with `culturepark eval education {run_dir}`")
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file() and p.name not in KEPT):
        if participant.encode() in path.read_bytes():
            path.unlink()
            result.removed.append(str(path.relative_to(run_dir)))
            say(f"removed {path} (made from the log before the erasure and naming the participant); "
                "make it again with the command that made it")


__all__ = ["AUDIT_NAME", "Erased", "erase"]
