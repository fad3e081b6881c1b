"""`culturepark train`: OpenAI fine-tuning jobs, or LoRA/QLoRA with peft on a local model."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from culturepark.commands import positive_float, positive_int
from culturepark.commands.options import add_model_flags, model_values, shared
from culturepark.console import make_logger, print_json

# Flags a preset may set: left out, they are None, so the preset (or the default) decides.
LORA_PRESET_FLAGS = ["epochs", "max_steps", "lr", "r", "alpha", "dropout", "batch_size", "warmup_ratio", "schedule",
                     "max_grad_norm", "weight_decay", "compute_dtype", "double_quant", "target_modules", "device_map",
                     "template", "prompt_style", "qlora", "merge", "loss_on", "group_by_length"]


def register(sub: Any) -> None:
    tr = sub.add_parser("train", help="fine-tune: OpenAI jobs or LoRA/QLoRA on a local model")
    tsub = tr.add_subparsers(dest="method", required=True)
    to = tsub.add_parser("openai", help="upload, create and follow an OpenAI fine-tuning job (resumable)")
    to.add_argument("sft_file", type=Path)
    shared(to, "--model", required=True, help="the model to fine-tune, e.g. gpt-4o-mini-2024-07-18")
    to.add_argument("--suffix")
    to.add_argument("--epochs", type=positive_int, default=3)
    shared(to, "--out", help="the job's state directory (default: train/SFT_FILE_STEM)")
    shared(to, "--base-url")
    shared(to, "--api-key-env", default="OPENAI_API_KEY")
    to.add_argument("--poll-s", type=positive_float, default=10.0, help="seconds between polls of the job")
    shared(to, "--json")
    to.set_defaults(func=train_openai)
    tsub.add_parser("lora", help="LoRA with peft on the embedded model or a local HF directory", build=_lora_flags)


def _lora_flags(tl: argparse.ArgumentParser) -> None:
    """`train lora`'s flags: `LoraSettings`' fields (built when `train lora` is chosen)."""
    from culturepark.trainers.lora import PRESETS, LoraSettings

    tl.add_argument("sft_file", type=Path, help="openai_chat.jsonl from refine")
    add_model_flags(tl, LoraSettings, ["base"])
    shared(tl, "--out", required=True, help="the adapter directory")
    tl.add_argument("--preset", choices=list(PRESETS), help="the original QLoRA run's settings; flags still override")
    add_model_flags(tl, LoraSettings, LORA_PRESET_FLAGS, unset=True, presets=PRESETS)
    add_model_flags(tl, LoraSettings, ["seed", "device"])
    shared(tl, "--json")
    tl.set_defaults(func=train_lora)


def train_openai(args: argparse.Namespace) -> int:
    from culturepark.trainers.openai_jobs import train_openai as run_job
    from culturepark.trainers.summaries import OpenAIJobState

    log = make_logger()

    def show(state: OpenAIJobState, new_events: list[str]) -> None:
        for e in new_events:
            log.info(e, job=state.job_id)
        if not args.json:
            print(f"  status {state.status}, trained tokens {state.trained_tokens}", file=sys.stderr)

    out = args.out or Path("train") / args.sft_file.stem
    state = run_job(args.sft_file, args.model, out, suffix=args.suffix, epochs=args.epochs, base_url=args.base_url,
                    api_key_env=args.api_key_env, poll_s=args.poll_s, on_update=show)
    public = {k: v for k, v in state.to_json().items() if k != "events_seen"}
    print_json(public) if args.json else print(
        f"job {state.job_id}: {state.status} → model {state.fine_tuned_model} ({out / 'train.json'})")
    return 0 if state.status == "succeeded" else 1


def train_lora(args: argparse.Namespace) -> int:
    from culturepark.trainers.lora import LoraSettings, resolve_settings
    from culturepark.trainers.lora import train_lora as run_lora

    log = make_logger()
    settings = resolve_settings(args.preset, **model_values(LoraSettings, args, ["base", "seed", "device"]),
                                **model_values(LoraSettings, args, LORA_PRESET_FLAGS, unset=True))
    bar = None
    if sys.stderr.isatty() and not args.json:
        from rich.progress import Progress
        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("LoRA", total=1)

    def progress(step: int, total: int, loss: float) -> None:
        if bar is not None:
            bar.update(task, total=total, completed=step, description=f"LoRA loss {loss:.3f}")

    try:
        summary = run_lora(args.sft_file, args.out, settings, progress, say=lambda m: log.info(m))
    finally:
        if bar is not None:
            bar.stop()
    print_json(summary.to_json()) if args.json else print(
        f"{summary.steps} steps, loss {summary.first_loss} → {summary.last_loss}, "
        f"{summary.seconds_per_step} s/step → {args.out} (use local:gemma3-270m+lora:{args.out})")
    return 0
