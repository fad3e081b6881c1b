"""What `culturepark refine` does, as one validated config (YAML via --scenario, or defaults)."""
from __future__ import annotations

import hashlib
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from culturepark.engine.chat_templates import TextTemplate
from culturepark.scenarios.loader import ScenarioError, format_validation_error
from culturepark.scenarios.schema import (
    BACKEND_ADDED_LATER,
    EMBEDDED_ONLY,
    BackendConfig,
    Limits,
    RemoteBackendConfig,
    RetryConfig,
    backend_config,
    flat_backend_dump,
    without_added_defaults,
)


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
    keep: Literal["central", "longest"] = Field(
        default="central", description="which member of a cluster stays: the one nearest its centroid, or the longest "
                               "text (the original's)")
    embeddings: Literal["local", "openai"] = Field("local", description="sentence embeddings for de-duplication: "
                                                                      "the packaged MiniLM or an OpenAI-compatible API")
    embeddings_base_url: str | None = None
    embeddings_model: str = "text-embedding-3-small"
    embeddings_dimensions: int | None = 256  # the paper cuts to 256 dims (openai only)
    embeddings_api_key_env: str | None = "OPENAI_API_KEY"
    embeddings_batch_size: int = Field(256, ge=1)  # texts per /v1/embeddings request


class ExportConfig(_Strict):
    """`open` (ours): an open question in the persona's voice, answered by the opinion.
    `paper` (the original's): the "culture chatbot" system line, the WVS item as multiple choice,
    answered "<code>. <opinion>"; pass t uses each item's t-th kept opinion, and an item with no
    kept opinion is answered with its bare code in every pass (`paper_passes`, 20 as the original)."""

    format: Literal["open", "paper"] = Field("open", json_schema_extra={"flag": "--export-format"},
                                             description="SFT format")
    system_prompt: str | None = "You are {person}. Answer as someone from {culture_phrase} would, in the first person."
    template: TextTemplate = "gemma"
    augment: bool = False  # open format: ask the same WVS items again with varied wording
    augment_passes: int = Field(3, ge=1, le=50)
    paper_passes: int = Field(20, ge=1, le=1000)


# Fields added after refinements were first written, at their defaults: older directories still resume.
REFINE_ADDED_LATER: dict[str, object] = {"extract_speakers": "delegate", "export.format": "open",
                                         "verify": True, "extract_per": "conversation", "dedup.keep": "central",
                                         "export.paper_passes": 20, "retry.reask_temperature_step": 0.2,
                                         "retry.reask_temperature_max": 1.2, "retry.rate_limit_budget_s": 1800.0,
                                         **{f"backend.{k}": v for k, v in BACKEND_ADDED_LATER.items()}}
REFINE_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"backend": {"provider": "openai", "model": "gpt-4"}, "extract_speakers": "both",
              "extract_per": "utterance", "dedup": {"method": "kmeans", "keep": "longest"},
              "export": {"format": "paper"}},
}


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
    # False: no verification (nor rewriting) calls; every extracted opinion goes on as extracted
    # (the paper's "Generate" ablation row; +Verify turns it on, +Diversify de-duplication)
    verify: bool = True
    extract_speakers: Literal["delegate", "both"] = "delegate"  # both: in-cultural runs, as the original
    # utterance: one extraction request per utterance of the speaker, as the original; conversation: one per
    # conversation (ours: the opinion is read in its context, and the calls are fewer)
    extract_per: Literal["conversation", "utterance"] = "conversation"
    keep_rewritten_only_if_entail: bool = True
    min_words: int = Field(5, ge=0)
    first_person: Literal["rule", "none"] = "rule"
    dedup: DedupConfig = DedupConfig()
    export: ExportConfig = ExportConfig()
    seed: int = 0

    def content_hash(self, source_hash: str) -> str:
        """A refinement directory belongs to one config applied to one source corpus."""
        data = self.model_dump(mode="json")
        if data["backend"] is not None:
            flat_backend_dump(data["backend"])
        data = without_added_defaults(data, REFINE_ADDED_LATER)
        blob = orjson.dumps(data, option=orjson.OPT_SORT_KEYS) + source_hash.encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def with_preset(self, preset: str | None) -> RefineConfig:
        """`refine --preset paper`: a GPT-4-class refiner (OpenAI's gpt-4 unless --model/--base-url say
        otherwise), both speakers of in-cultural runs, one extraction per utterance, k-means keeping
        each cluster's longest member, and the paper's SFT format."""
        if preset is None:
            return self
        if preset not in REFINE_PRESETS:
            raise ScenarioError(f"refine --preset {preset!r}: known presets: {', '.join(REFINE_PRESETS)}")
        values = REFINE_PRESETS[preset]
        export = self.export.model_copy(update=values["export"])
        dedup = self.dedup.model_copy(update=values["dedup"])
        return self.model_copy(update={"backend": self.backend or backend_config(values["backend"]),
                                       "extract_speakers": values["extract_speakers"],
                                       "extract_per": values["extract_per"], "dedup": dedup, "export": export})

    def with_switches(self, extract_per: Literal["conversation", "utterance"] | None = None, verify: bool = True,
                      dedup: bool = True) -> RefineConfig:
        """`refine --extract-per/--no-verify/--no-dedup`: a flag turns a step off (or the extraction's
        unit over) on top of the file and the preset; left out, they change nothing."""
        update: dict[str, object] = {}
        if extract_per:
            update["extract_per"] = extract_per
        if not verify:
            update["verify"] = False
        if not dedup:
            update["dedup"] = self.dedup.model_copy(update={"enabled": False})
        return self.model_copy(update=update) if update else self

    def with_flags(self, source_backend: BackendConfig | None, base_url: str | None = None,
                   model: str | None = None, embeddings: str | None = None) -> RefineConfig:
        """`refine --base-url/--model/--embeddings` on top of the file: the refiner keeps the
        config's (or the source run's) other backend settings; the result is validated again."""
        config = self
        if base_url or model:
            base = self.backend or source_backend or RemoteBackendConfig()
            update: dict[str, object] = {"model": model or base.model}
            data = base.model_dump(exclude_unset=True)
            if base_url:  # a server now: the embedded model's own settings no longer apply
                update.update(provider="openai", base_url=base_url, api="chat")
                data = {k: v for k, v in data.items() if k not in EMBEDDED_ONLY}
            try:
                backend = backend_config({**data, **update})
            except ValidationError as exc:
                raise ScenarioError(format_validation_error("refine --base-url/--model", exc)) from exc
            config = config.model_copy(update={"backend": backend})
        if embeddings:
            dedup = DedupConfig.model_validate({**config.dedup.model_dump(), "embeddings": embeddings})
            config = config.model_copy(update={"dedup": dedup})
        return config
