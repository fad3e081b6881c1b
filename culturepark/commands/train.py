"""`culturepark train`: OpenAI fine-tuning jobs, or LoRA/QLoRA with peft on a local model."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from culturepark.commands import non_negative_float, positive_float, positive_int
from culturepark.console import make_logger, print_json


def register(sub: Any) -> None:
    tr = sub.add_parser("train", help="fine-tune: OpenAI jobs or LoRA/QLoRA on a local model")
    tsub = tr.add_subparsers(dest="method", required=True)
    to = tsub.add_parser("openai", help="upload, create and follow an OpenAI fine-tuning job (resumable)")
    to.add_argument("sft_file", type=Path)
    to.add_argument("--model", required=True)
    to.add_argument("--suffix")
    to.add_argument("--epochs", type=positive_int, default=3)
    to.add_argument("--out", type=Path)
    to.add_argument("--base-url")
    to.add_argument("--api-key-env", default="OPENAI_API_KEY")
    to.add_argument("--poll-s", type=positive_float, default=10.0)
    to.add_argument("--json", action="store_true")
    to.set_defaults(func=train_openai)
    tl = tsub.add_parser("lora", help="LoRA with peft on the embedded model or a local HF directory")
    tl.add_argument("sft_file", type=Path, help="openai_chat.jsonl from refine")
    tl.add_argument("--base", default="local:gemma3-270m")
    tl.add_argument("--out", type=Path, required=True)
    tl.add_argument("--preset", choices=["paper"], help="the original QLoRA run's settings; flags still override")
    tl.add_argument("--epochs", type=positive_float, help="default 3 (paper preset: 6)")
    tl.add_argument("--max-steps", type=positive_int)
    tl.add_argument("--lr", type=positive_float, help="default 2e-4")
    tl.add_argument("--r", type=positive_int, help="default 64")
    tl.add_argument("--alpha", type=positive_int, help="default 16")
    tl.add_argument("--dropout", type=non_negative_float, help="default 0.1")
    tl.add_argument("--batch-size", type=positive_int, help="default 4")
    tl.add_argument("--warmup-ratio", type=non_negative_float, help="default 0.03")
    tl.add_argument("--schedule", choices=["cosine", "constant"], help="after warm-up; default cosine")
    tl.add_argument("--max-grad-norm", type=positive_float, help="default 1.0 (paper preset: 0.3)")
    tl.add_argument("--weight-decay", type=non_negative_float, help="default 0.01 (paper preset: 0.001)")
    tl.add_argument("--compute-dtype", choices=["bf16", "fp16"], help="CUDA only; default bf16")
    tl.add_argument("--double-quant", action=argparse.BooleanOptionalAction, help="QLoRA; default on")
    tl.add_argument("--target-modules", help="'all-linear' (default), 'default' (peft's), or comma-separated names")
    tl.add_argument("--device-map", choices=["single", "auto"], help="'auto' spreads a QLoRA base over GPUs")
    tl.add_argument("--template", choices=["auto", "gemma", "chatml", "llama2", "tokenizer"],
                    help="auto (default): gemma for the embedded model, else the base tokenizer's own template")
    tl.add_argument("--prompt-style", help="recorded in the adapter's prompt card; default: the SFT format.json")
    tl.add_argument("--qlora", action="store_true", help="4-bit nf4 base + paged AdamW (CUDA only)")
    tl.add_argument("--merge", action="store_true", help="also save the merged model in OUT/merged")
    tl.add_argument("--seed", type=int, default=0)
    tl.add_argument("--device", default="auto")
    tl.add_argument("--json", action="store_true")
    tl.set_defaults(func=train_lora)


def train_openai(args: argparse.Namespace) -> int:
    from culturepark.engine.summaries import OpenAIJobState
    from culturepark.trainers.openai_jobs import train_openai as run_job

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
    from culturepark.trainers.lora import resolve_settings
    from culturepark.trainers.lora import train_lora as run_lora

    log = make_logger()
    targets = args.target_modules
    if targets and targets not in ("all-linear", "default"):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    settings = resolve_settings(
        args.preset, base=args.base, epochs=args.epochs, max_steps=args.max_steps, lr=args.lr, r=args.r,
        alpha=args.alpha, dropout=args.dropout, batch_size=args.batch_size, warmup_ratio=args.warmup_ratio,
        schedule=args.schedule, max_grad_norm=args.max_grad_norm, weight_decay=args.weight_decay,
        compute_dtype=args.compute_dtype, double_quant=args.double_quant, target_modules=targets,
        device_map=args.device_map, template=args.template, prompt_style=args.prompt_style,
        qlora=args.qlora or None, seed=args.seed, merge=args.merge or None, device=args.device)
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
