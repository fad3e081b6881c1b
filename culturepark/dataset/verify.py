"""`culturepark dataset verify DIR`: recompute what the manifest pins and name the first difference.

Checked: every file the manifest lists (sha256 and size), no data file beside them that it does
not list, and each source directory that is still where the build found it (its log digest and
its refinement's digest). A source that has moved away is reported, not failed: the folder can
be checked on its own after it is published.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from culturepark.dataset.models import MANIFEST, Manifest
from culturepark.dataset.sources import refine_digest, run_digest
from culturepark.engine.files import file_sha256
from culturepark.engine.log import LOG_NAME


class VerifyFailed(Exception):
    """What changed, in one line."""


@dataclass
class Verified:
    files: int
    sources_checked: int
    notes: list[str] = field(default_factory=list)


def verify(folder: Path) -> Verified:
    manifest = Manifest.read(folder)
    for rel, entry in manifest.files.items():
        path = folder / rel
        if not path.is_file():
            raise VerifyFailed(f"{rel}: missing")
        if path.stat().st_size != entry.bytes or file_sha256(path) != entry.sha256:
            raise VerifyFailed(f"{rel}: changed (sha256 {file_sha256(path)[:16]}…, manifest {entry.sha256[:16]}…)")
    listed = set(manifest.files) | {MANIFEST}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = str(path.relative_to(folder))
        if rel not in listed and not rel.startswith("."):
            raise VerifyFailed(f"{rel}: not in the manifest")
    done = Verified(files=len(manifest.files), sources_checked=0)
    for s in manifest.sources:
        run = Path(s.run_dir)
        if not (run / LOG_NAME).exists():
            done.notes.append(f"source {s.name}: {run} is not here; not checked")
            continue
        if run_digest(run) != s.run_digest:
            raise VerifyFailed(f"source {s.name}: the run's log changed ({run})")
        if s.refine_dir and s.refine_digest:
            refine = Path(s.refine_dir)
            if not (refine / LOG_NAME).exists():
                done.notes.append(f"source {s.name}: refinement {refine} is not here; not checked")
            elif refine_digest(refine) != s.refine_digest:
                raise VerifyFailed(f"source {s.name}: the refinement changed ({refine})")
        done.sources_checked += 1
    return done
