"""`culturepark train openai`: validate → upload → create job → follow → `train.json`.

The openai SDK is used here (not a hot path). Paying twice is the failure that matters:
`train.json` is written after every step, and a restarted command first looks for the job
it may already have created (by the uploaded file's id) before creating one.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from culturepark.engine.errors import InputError
from culturepark.engine.files import file_sha256
from culturepark.trainers.sft import check_openai_chat
from culturepark.trainers.summaries import OpenAIJobState

FINAL = ("succeeded", "failed", "cancelled")


def estimate_cost(tokens: int, epochs: int, model: str) -> float | None:
    """Training is billed per trained token (tokens × epochs); we know inference prices only,
    so a cost is given only when a training price is configured (OPENAI_TRAINING_PRICE_PER_1M)."""
    per_1m = os.environ.get("OPENAI_TRAINING_PRICE_PER_1M")
    if per_1m:
        return round(tokens * epochs * float(per_1m) / 1e6, 4)
    return None


def train_openai(sft_file: Path, model: str, out: Path, suffix: str | None = None, epochs: int = 3,
                 base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY", poll_s: float = 10.0,
                 on_update: Callable[[OpenAIJobState, list[str]], None] | None = None) -> OpenAIJobState:
    if not Path(sft_file).is_file():
        raise InputError(f"train openai: {sft_file} not found")
    check = check_openai_chat(sft_file)
    if not check.valid:
        raise InputError(f"train openai: {sft_file} fails the fine-tuning format check: {check.error_counts}")
    from culturepark.scenarios.endpoints import api_key_for
    from culturepark.scenarios.schema import RemoteBackendConfig

    target = RemoteBackendConfig.model_validate({"provider": "openai", "model": model, "api_key_env": api_key_env,
                                                 **({"base_url": base_url} if base_url else {})})
    key = api_key_for(target) or "no-key-on-loopback"  # the SDK insists on a string
    from openai import OpenAI

    client = OpenAI(api_key=key, base_url=base_url, max_retries=5)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "train.json"
    state = OpenAIJobState.read(path) if path.exists() else OpenAIJobState()
    file_hash = check_hash(sft_file)
    if state.model_fields_set and state.sft_file_hash != file_hash:
        raise InputError(f"train openai: {path} belongs to a different SFT file; choose another --out")
    _update(state, sft_file=str(sft_file), sft_file_hash=file_hash, base_model=model, epochs=epochs, suffix=suffix,
            examples=check.examples, tokens=check.tokens_total, token_counter=check.token_counter,
            estimated_cost_usd=estimate_cost(check.tokens_total, epochs, model))
    state.write(path)
    if not state.file_id:
        with open(sft_file, "rb") as fh:
            state.file_id = client.files.create(file=fh, purpose="fine-tune").id
        state.write(path)
    if not state.job_id:
        existing = [j for j in client.fine_tuning.jobs.list(limit=100).data if j.training_file == state.file_id]
        if existing:  # created before a crash, never recorded: follow it, do not pay twice
            state.job_id = existing[0].id
            state.resumed_existing_job = True
        else:
            job = client.fine_tuning.jobs.create(training_file=state.file_id, model=model, suffix=suffix,
                                                 hyperparameters={"n_epochs": epochs})
            state.job_id = job.id
        state.write(path)
    job_id = state.job_id
    seen: set[str] = set(state.events_seen or [])
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        events = client.fine_tuning.jobs.list_events(job_id, limit=50).data
        new = [e.message for e in reversed(events) if e.id not in seen]
        seen.update(e.id for e in events)
        _update(state, status=job.status, trained_tokens=job.trained_tokens, fine_tuned_model=job.fine_tuned_model,
                events_seen=sorted(seen), error=job.error.message if job.error and job.error.message else None)
        state.write(path)
        if on_update:
            on_update(state, new)
        if job.status in FINAL:
            return state
        time.sleep(poll_s)


def _update(state: OpenAIJobState, **values: object) -> None:
    """Set fields as `dict.update` did: each one is then written, even when None."""
    for name, value in values.items():
        setattr(state, name, value)


def check_hash(path: Path) -> str:
    return file_sha256(path)[:16]
