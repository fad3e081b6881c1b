"""How every evaluation calls its model: a model spec → one endpoint, items sent through the
engine into a run directory whose log makes the eval resumable and cached, results read back."""
from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson

from culturepark.agents.paper_format import PROMPT_STYLES, PromptStyle
from culturepark.benchmarks.results import RunInfo
from culturepark.engine.batch import BatchItem, BatchResult, batch_results, run_batch
from culturepark.engine.chat_templates import read_prompt_card
from culturepark.engine.errors import InputError
from culturepark.engine.files import file_sha256
from culturepark.engine.records import RunHeader
from culturepark.engine.stage import Stage
from culturepark.scenarios.endpoints import make_endpoints
from culturepark.scenarios.model_spec import parse_model_spec
from culturepark.scenarios.schema import (
    BackendConfig,
    EmbeddedBackendConfig,
    Limits,
    RemoteBackendConfig,
    RetryConfig,
    without_added_defaults,
)


@dataclass
class EvalSettings:
    """How an eval talks to its model (CLI flags map onto this)."""

    model: str
    base_url: str | None = None
    api_key_env: str | None = None
    rpm: float | None = None
    tpm: float | None = None
    concurrency: int = 32
    max_attempts: int = 4
    resume: bool = False
    check_reachability: bool = True
    prompt_style: str | None = None  # None: the style the adapter was trained in, else persona
    api: str | None = None  # a remote model's API as the run used it ("completions": a base model's transcript)

    def backend(self) -> BackendConfig:
        cfg = parse_model_spec(self.model, self.base_url, self.api_key_env)
        if self.api and isinstance(cfg, RemoteBackendConfig):
            return RemoteBackendConfig.model_validate({**cfg.model_dump(exclude_unset=True), "api": self.api})
        return cfg

    def style(self) -> PromptStyle:
        """The prompt style to evaluate in: the one asked for; else, for a tuned local model, the
        style its adapter was trained in (a model is measured in the format it learned); else persona."""
        if self.prompt_style is not None:
            if self.prompt_style not in PROMPT_STYLES:
                raise InputError(f"--prompt-style {self.prompt_style!r}: expected one of {', '.join(PROMPT_STYLES)}")
            return cast(PromptStyle, self.prompt_style)  # checked against PROMPT_STYLES just above
        backend = self.backend()
        card = read_prompt_card(backend.adapter if isinstance(backend, EmbeddedBackendConfig) else None)
        return cast(PromptStyle, card.prompt_style) if card and card.prompt_style in PROMPT_STYLES else "persona"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80]


def digest(*parts: Any) -> str:
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def file_digest(path: Path) -> str:
    return file_sha256(path)[:16]


async def run_items(out: Path, items: list[BatchItem], settings: EvalSettings, header: dict[str, Any],
                    say: Callable[[str], None] | None = None) -> tuple[dict[str, BatchResult], RunInfo]:
    """Send every item through the engine into `out/log.jsonl`; return the results by id.

    The directory's hash covers the model, the prompts and the task, so `--resume` continues
    only the same eval, and a finished eval re-run with `--resume` costs nothing.
    """
    backend = settings.backend()
    endpoints = make_endpoints({"model": backend}, Limits(rpm=settings.rpm, tpm=settings.tpm),
                               RetryConfig(max_attempts=settings.max_attempts, base_delay_s=0.2, max_delay_s=5.0),
                               say=say, concurrency=settings.concurrency)
    prompts_hash = digest([(it.id, it.request.key(backend.model)) for it in items])
    t0 = time.monotonic()
    # evals made before prompt styles and the paper parse resume
    hashed = without_added_defaults(dict(header), {"prompt_style": "persona", "parse": "strict"})
    async with Stage.in_dir(endpoints, out, settings.resume, digest(hashed, prompts_hash), say=say, what="eval",
                            check=settings.check_reachability) as stage:
        log = stage.start(RunHeader(
            stage="eval", started_at=time.time(),
            backends={"model": endpoints["model"].backend.describe()},
            details={**header, "model_spec": settings.model, "prompts_hash": prompts_hash}))
        try:
            await run_batch(items, endpoints["model"], log, stage.resume_state, settings.concurrency)
        finally:
            log.close()
    info = RunInfo(model_spec=settings.model, prompts_hash=prompts_hash, prompt_style=header.get("prompt_style"),
                   template=backend.template if isinstance(backend, EmbeddedBackendConfig) else None,
                   items_hash=digest([(it.id, it.request.key("")) for it in items]),  # the same for every model
                   requests=endpoints["model"].stats.requests, elapsed_s=round(time.monotonic() - t0, 2))
    return batch_results(out), info
