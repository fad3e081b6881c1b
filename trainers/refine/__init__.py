"""Refinement: extract → verify → rewrite → de-duplicate → post-process → SFT export.

The pipeline (and its HTTP stack) loads on first use, so the CLI can build `refine`'s flags from
the config models without it."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from culturepark.trainers.refine.config import DedupConfig, ExportConfig, RefineConfig

if TYPE_CHECKING:
    from culturepark.trainers.refine.pipeline import RefineResult, refine_async

__all__ = ["DedupConfig", "ExportConfig", "RefineConfig", "RefineResult", "refine_async"]


def __getattr__(name: str) -> Any:
    if name in ("RefineResult", "refine_async"):
        from culturepark.trainers.refine import pipeline
        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
