"""Typed summaries of the stages after a run: refinement (`refine_summary.json`), SFT data checks,
LoRA training (`train_summary.json`) and OpenAI fine-tuning jobs (`train.json`).

The trainers write them; the report (`culturepark/report_page.py`, in the face, which may read
every stage) and the paper chain read them. Keys a file may lack are written only when set
(`to_json`), so each model reads the older shape of its file and writes back what it read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Self

import orjson
from pydantic import BaseModel, ConfigDict, JsonValue

from culturepark.engine.chat_templates import PromptCard
from culturepark.engine.errors import InputError
from culturepark.engine.files import atomic_write_json

REFINE_SUMMARY = "refine_summary.json"


class Summary(BaseModel):
    """A summary file's record: unknown keys refused, unset keys not written."""

    model_config = ConfigDict(extra="forbid")

    def to_json(self) -> dict[str, JsonValue]:
        data: dict[str, JsonValue] = self.model_dump(mode="json", exclude_unset=True)
        return data

    def write(self, path: Path) -> Path:
        atomic_write_json(path, self.to_json())
        return path

    @classmethod
    def read(cls, path: Path) -> Self:
        try:
            return cls.model_validate(orjson.loads(Path(path).read_bytes()))
        except orjson.JSONDecodeError as exc:
            raise InputError(f"{path}: not JSON ({exc})") from exc
        except ValueError as exc:  # pydantic's ValidationError
            lines = str(exc).splitlines()
            raise InputError(f"{path}: not a {cls.__name__} file: {' '.join(lines[1:3]).strip()}") from exc


class FormatCheck(Summary):
    """OpenAI's chat fine-tuning data checks over one SFT file (`trainers.sft.check_openai_chat`)."""

    file: str
    examples: int
    valid: bool
    errors: dict[str, list[int]]  # kind → the first line numbers
    error_counts: dict[str, int]
    tokens_total: int
    tokens_max_example: int
    token_counter: str


class RefineSummary(Summary):
    """What a refinement did, every extracted opinion accounted for (`kept` + drops = `extracted`)."""

    conversations: int
    extract_failed: int
    extract_failures_by_reason: dict[str, int]
    extracted: int
    entail: int
    contradict: int
    irrelevant: int
    rewritten: int
    rewritten_entail: int
    call_failed: int
    too_short: int
    cut_by_max_tokens: int = 0
    deduplicated_removed: int
    kept: int
    exported: int
    drop_reasons: dict[str, int]
    accounted: bool
    export_format: str | None = None
    opinions_beyond_paper_passes: int | None = None
    extract_speakers: str | None = None
    embeddings: str | None = None
    dedup: dict[str, JsonValue] | None = None  # the refine config's dedup section as it ran
    openai_format_check: FormatCheck | None = None
    first_person: str | None = None
    texts_embedded_now: int | None = None
    verify: bool | None = None  # False: no verification calls (the "Generate" ablation); absent before
    extract_per: str | None = None  # conversation or utterance; absent before
    requests: int | None = None
    elapsed_s: float | None = None
    refiner_is_generator: bool | None = None


class LoraSummary(Summary):
    """One `train lora` run: its data, steps, losses, speed and the settings it ran with."""

    base: str
    sft_file: str
    examples: int
    steps: int
    trainable_params: int
    first_loss: float
    last_loss: float  # mean of the last five steps
    seconds_per_step: float
    device: str
    schedule: str
    target_modules: list[str]
    compute_dtype_used: str
    prompt_card: PromptCard
    settings: dict[str, JsonValue]
    peak_rss_mb: float | None = None  # CPU runs
    peak_gpu_mb: float | None = None  # CUDA runs
    merged: str | None = None  # with --merge
    padded_with_eos: bool | None = None  # the tokenizer had no pad token (Llama-2): EOS pads; absent before


class OpenAIJobState(Summary):
    """A fine-tuning job's `train.json`: written after every step, so a restart follows the same job."""

    sft_file: str | None = None
    sft_file_hash: str | None = None
    base_model: str | None = None
    epochs: int | None = None
    suffix: str | None = None
    examples: int | None = None
    tokens: int | None = None
    token_counter: str | None = None
    estimated_cost_usd: float | None = None
    file_id: str | None = None
    job_id: str | None = None
    resumed_existing_job: bool | None = None
    status: str | None = None
    trained_tokens: int | None = None
    fine_tuned_model: str | None = None
    events_seen: list[str] | None = None
    error: str | None = None
