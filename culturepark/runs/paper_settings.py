"""What `culturepark paper` runs, as one settings model: the command's flags are derived from it
(`culturepark.commands.options`), and it is kept apart from the chain so building them stays cheap."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class PaperChain(BaseModel):
    """What `culturepark paper` runs: each field is a flag (`culturepark.commands.options`), so its
    name, default and help are declared here only."""

    model_config = ConfigDict(extra="forbid")
    cultures: list[str] = Field(min_length=1, json_schema_extra={"flag": "--culture"},
                                description="the cultures, e.g. Chinese German")
    out: Path = Field(description="every step's run directory goes here (resumable)")
    model: str | None = Field(None, description="the conversations' model (default: the paper's gpt-3.5-turbo)")
    refiner: str = Field("gpt-4", description="GPT-4-class refiner")
    base_url: str | None = Field(None, description="one OpenAI-compatible server for every call")
    versions: list[Literal["v1", "v2"]] = Field(["v1", "v2"], description="the protocol versions to run")
    limit: int | None = Field(None, ge=1, description="conversations per version")
    rpm: float | None = Field(None, gt=0, description="the conversations' RPM limit (default: the paper scenarios')")
    tpm: float | None = Field(None, gt=0, description="the conversations' TPM limit")
    trainer: Literal["openai", "lora"] = Field("openai", description="an OpenAI fine-tuning job, or LoRA on the "
                                                                     "embedded model")
    tune_model: str = Field("gpt-3.5-turbo-0613", description="openai: the model to fine-tune")
    epochs: int = Field(3, ge=1, description="fine-tuning epochs")
    lora_max_steps: int | None = Field(None, ge=1, description="lora: stop after this many steps")
    seeds: int = Field(3, ge=1, description="evaluation repetitions with different seeds")
    moderation_limit: int | None = Field(200, ge=0, description="rows per moderation set, 0 for all")
    data_dir: Path | None = Field(None, description="the research data directory (default: $CULTUREPARK_DATA_DIR "
                                                    "or ../shared/data)")
    poll_s: float = Field(10.0, gt=0, description="seconds between polls of a fine-tuning job")

    @field_validator("moderation_limit")
    @classmethod
    def _zero_is_all(cls, v: int | None) -> int | None:
        return v or None

    def base_spec(self) -> str:
        return "local:gemma3-270m" if self.trainer == "lora" else f"openai:{self.tune_model}"
