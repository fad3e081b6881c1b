"""`culturepark paper`: the paper's chain for chosen cultures — conversations, refinement, paper-format
SFT, fine-tuning, base vs tuned evaluation and a report — resumable at every step."""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from culturepark.commands import count, positive_float, positive_int
from culturepark.console import make_logger, print_json


def register(sub: Any) -> None:
    p = sub.add_parser("paper", help="the paper's chain: run → refine → SFT → fine-tune → eval → report")
    p.add_argument("--culture", nargs="+", required=True)
    p.add_argument("--out", type=Path, required=True, help="every step's run directory goes here (resumable)")
    p.add_argument("--model", help="the conversations' model (default: the paper's gpt-3.5-turbo)")
    p.add_argument("--refiner", default="gpt-4", help="GPT-4-class refiner (default gpt-4)")
    p.add_argument("--base-url", help="one OpenAI-compatible server for every call")
    p.add_argument("--versions", nargs="+", choices=["v1", "v2"], default=["v1", "v2"])
    p.add_argument("--limit", type=positive_int, help="conversations per version")
    p.add_argument("--rpm", type=positive_float, help="the conversations' RPM limit (default: the paper scenarios')")
    p.add_argument("--tpm", type=positive_float, help="the conversations' TPM limit")
    p.add_argument("--trainer", choices=["openai", "lora"], default="openai")
    p.add_argument("--tune-model", default="gpt-3.5-turbo-0613", help="openai: the model to fine-tune")
    p.add_argument("--epochs", type=positive_int, default=3)
    p.add_argument("--lora-max-steps", type=positive_int)
    p.add_argument("--seeds", type=positive_int, default=3)
    p.add_argument("--moderation-limit", type=count, default=200)
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--poll-s", type=positive_float, default=10.0)
    p.add_argument("--dry-run", action="store_true", help="estimate requests, tokens, cost and time; send nothing")
    p.add_argument("--screenshot", action="store_true", help="also save OUT/report/report.png (chromium)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=paper)


def paper(args: argparse.Namespace) -> int:
    from culturepark.benchmarks.report_page import build_paper, screenshot
    from culturepark.runs.paper_chain import PaperChain, estimate_chain, run_chain
    from culturepark.scenarios.data_dir import resolve_data_dir

    chain = PaperChain(cultures=args.culture, out=args.out, model=args.model, refiner=args.refiner,
                       base_url=args.base_url, versions=args.versions, limit=args.limit, rpm=args.rpm, tpm=args.tpm,
                       trainer=args.trainer,
                       tune_model=args.tune_model, epochs=args.epochs, lora_max_steps=args.lora_max_steps,
                       seeds=args.seeds, moderation_limit=args.moderation_limit or None, data_dir=args.data_dir,
                       poll_s=args.poll_s)
    if args.dry_run:
        est = estimate_chain(chain)
        print_json(est) if args.json else print(
            f"{est['requests']} requests, about ${est['cost_usd_est']} "
            f"({'complete' if est['cost_complete'] else 'some prices unknown'}), "
            f"{est['minutes_at_rpm_est']} min at {est['rpm']:g} RPM; not estimated: {est['not_estimated']}")
        return 0
    log = make_logger()
    result = asyncio.run(run_chain(chain, resolve_data_dir(args.data_dir, None), lambda m: log.info(m)))
    index = build_paper(result, args.out / "report")
    if args.screenshot:
        try:
            screenshot(index, args.out / "report" / "report.png")
        except (ImportError, RuntimeError) as exc:
            print(f"culturepark: screenshot not taken: {exc}", file=sys.stderr)
    if args.json:
        print_json({"report": str(index), **result.to_json()})
        return 0
    for row in result.table:
        print(row.culture, {k: v for k, v in row.to_json().items() if k != "culture"})
    print(f"report → {index}")
    return 0
