"""What `culturepark refine` does, as one validated config (YAML via --scenario, or defaults)."""
from __future__ import annotations

import hashlib
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from culturepark.scenarios.loader import ScenarioError, format_validation_error
from culturepark.scenarios.schema import BackendConfig, Limits, RetryConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DedupConfig(_Strict):
    """Near-duplicate removal.

    `agglomerative` (default): complete-linkage clustering on cosine distance with a fixed
    `threshold`, so two opinions share a cluster only if *every* pair in it is that close —
    the number of clusters follows the data instead of a guessed k (the original's
    k = min(k, n) keeps nearly everything when n is small, and splits real paraphrases
    apart when n is large). `kmeans` with a fixed `k` per group is kept for comparison
    with the paper.
    """

    enabled: bool = True
    scope: Literal["culture_item", "culture"] = "culture_item"
    method: Literal["agglomerative", "kmeans"] = "agglomerative"
    threshold: float = Field(0.25, gt=0, lt=2)  # cosine distance; 0.25 ≈ similarity 0.75
    k: int = Field(10, ge=1)
    embeddings: Literal["local", "openai"] = "local"
    embeddings_base_url: str | None = None
    embeddings_model: str = "text-embedding-3-small"
    embeddings_dimensions: int | None = 256  # the paper cuts to 256 dims (openai only)
    embeddings_api_key_env: str | None = "OPENAI_API_KEY"
    embeddings_batch_size: int = Field(256, ge=1)  # texts per /v1/embeddings request


class ExportConfig(_Strict):
    system_prompt: str | None = "You are {person}. Answer as someone from {culture_phrase} would, in the first person."
    template: Literal["gemma", "chatml"] = "gemma"
    augment: bool = False  # the paper: ask the same WVS items again with varied wording
    augment_passes: int = Field(3, ge=1, le=50)


class RefineConfig(_Strict):
    backend: BackendConfig | None = None  # default: the delegate backend of the source run
    limits: Limits = Limits()
    retry: RetryConfig = RetryConfig(max_attempts=4, base_delay_s=0.5)
    concurrency: int = Field(32, ge=1)
    extract_max_tokens: int = Field(256, ge=16)
    verify_max_tokens: int = Field(8, ge=1)
    rewrite_max_tokens: int = Field(96, ge=8)
    rewrite_temperature: float = Field(0.7, ge=0, le=2)
    rewrite: bool = True
    keep_rewritten_only_if_entail: bool = True
    min_words: int = Field(5, ge=0)
    first_person: Literal["rule", "none"] = "rule"
    dedup: DedupConfig = DedupConfig()
    export: ExportConfig = ExportConfig()
    seed: int = 0

    def content_hash(self, source_hash: str) -> str:
        """A refinement directory belongs to one config applied to one source corpus."""
        blob = orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS) + source_hash.encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def with_flags(self, source_backend: BackendConfig | None, base_url: str | None = None,
                   model: str | None = None, embeddings: str | None = None) -> "RefineConfig":
        """`refine --base-url/--model/--embeddings` on top of the file: the refiner keeps the
        config's (or the source run's) other backend settings; the result is validated again."""
        config = self
        if base_url or model:
            base = self.backend or source_backend or BackendConfig()
            update: dict[str, object] = {"model": model or base.model}
            if base_url:
                update.update(provider="openai", base_url=base_url, api="chat")
            try:
                backend = BackendConfig.model_validate({**base.model_dump(exclude_unset=True), **update})
            except ValidationError as exc:
                raise ScenarioError(format_validation_error("refine --base-url/--model", exc)) from exc
            config = config.model_copy(update={"backend": backend})
        if embeddings:
            dedup = DedupConfig.model_validate({**config.dedup.model_dump(), "embeddings": embeddings})
            config = config.model_copy(update={"dedup": dedup})
        return config
