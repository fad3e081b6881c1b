"""Refinement: extract → verify → rewrite → de-duplicate → post-process → SFT export."""
from culturepark.trainers.refine.config import DedupConfig, ExportConfig, RefineConfig
from culturepark.trainers.refine.pipeline import RefineResult, refine_async

__all__ = ["DedupConfig", "ExportConfig", "RefineConfig", "RefineResult", "refine_async"]
