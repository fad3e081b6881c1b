"""What `culturepark paper` runs, as one settings model: the command's flags are derived from it
(`culturepark.commands.options`), and it is kept apart from the chain so building them stays cheap."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from culturepark.engine.errors import InputError

# Models the paper fine-tuned that OpenAI no longer fine-tunes: a chain naming one would spend on
# conversations and refinement, then fail at the training step; it is refused before anything runs.
NO_LONGER_FINE_TUNED = {"gpt-3.5-turbo-0613": "OpenAI no longer fine-tunes it (the paper's model, retired)"}
DEFAULT_TUNE_MODEL = "gpt-4o-mini-2024-07-18"  # fine-tunable today; the paper's gpt-3.5-turbo-0613 is not


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
    modes: list[Literal["cross", "in"]] = Field(
        ["cross"], description="cross: cross-cultural conversations; in: in-cultural ones too (the original ran "
                               "both; their opinions are merged before the export)")
    limit: int | None = Field(None, ge=1, description="conversations per version")
    rpm: float | None = Field(None, gt=0, description="the conversations' RPM limit (default: the paper scenarios')")
    tpm: float | None = Field(None, gt=0, description="the conversations' TPM limit")
    trainer: Literal["openai", "lora"] = Field("openai", description="an OpenAI fine-tuning job, or LoRA on the "
                                                                     "embedded model")
    tune_model: str = Field(DEFAULT_TUNE_MODEL, description="openai: the model to fine-tune (one fine-tunable "
                                                            "today; the paper's gpt-3.5-turbo-0613 is retired)")
    epochs: int | None = Field(None, ge=1, description="fine-tuning epochs (default: 3 for openai; lora: the "
                                                       "LoRA preset's 6, the original's)")
    lora_max_steps: int | None = Field(None, ge=1, description="lora: stop after this many steps")
    seeds: int = Field(3, ge=1, description="evaluation repetitions with different seeds")
    moderation_limit: int | None = Field(200, ge=0, description="rows per moderation set, 0 for all")
    data_dir: Path | None = Field(None, description="the research data directory (default: $CULTUREPARK_DATA_DIR "
                                                    "or ../shared/data)")
    poll_s: float = Field(10.0, gt=0, description="seconds between polls of a fine-tuning job")
    baselines: list[str] = Field([], json_schema_extra={"flag": "--baseline"},
                                 description="more models evaluated as rows beside base and tuned, as they are "
                                             "(any model spec: openai:gpt-4, gemini:gemini-2.0-flash, "
                                             "local:gemma3-270m)")
    direct: bool = Field(False, description="also the paper's direct-generation baseline as a row: a chatbot asked "
                                            "for 10 reasons per item (kind: direct, style: paper), refined, trained "
                                            "and evaluated like the tuned row")
    ablation: bool = Field(False, description="also the paper's ablation rows from the same conversations: "
                                              "Generate (no verification, no de-duplication) and +Verify (no "
                                              "de-duplication), each trained and evaluated like the tuned row; "
                                              "+Diversify is the full refinement (the tuned row)")

    @field_validator("moderation_limit")
    @classmethod
    def _zero_is_all(cls, v: int | None) -> int | None:
        return v or None

    def run_keys(self) -> list[str]:
        """One conversation run per version and mode: `v1` (cross, the directory it always had), `v1-in`."""
        return [v if m == "cross" else f"{v}-{m}" for v in self.versions for m in dict.fromkeys(self.modes)]

    def train_epochs(self) -> int:
        """The epochs the training step runs: given, else 3 for an OpenAI job, the preset's 6 for LoRA."""
        if self.epochs is not None:
            return self.epochs
        return 3 if self.trainer == "openai" else 6

    def check_tune_model(self) -> None:
        """Refuse (exit 2), before anything is spent, a model that can no longer be fine-tuned."""
        why = NO_LONGER_FINE_TUNED.get(self.tune_model)
        if self.trainer == "openai" and why:
            raise InputError(f"paper --tune-model {self.tune_model}: {why}; the training step would fail after "
                             f"the conversations and refinement were paid for. Use one fine-tunable today, e.g. "
                             f"--tune-model {DEFAULT_TUNE_MODEL} (the default)")

    def base_spec(self) -> str:
        return "local:gemma3-270m" if self.trainer == "lora" else f"openai:{self.tune_model}"
