"""`culturepark paper`: the paper's chain for chosen cultures — conversations, refinement, paper-format
SFT, fine-tuning, base vs tuned evaluation and a report — resumable at every step."""
from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from culturepark.commands.options import add_model_flags, model_from_args, shared
from culturepark.console import make_logger, print_json


def register(sub: Any) -> None:
    from culturepark.runs.paper_settings import PaperChain

    p = sub.add_parser("paper", help="the paper's chain: run → refine → SFT → fine-tune → eval → report")
    add_model_flags(p, PaperChain)
    p.add_argument("--dry-run", action="store_true", help="estimate requests, tokens, cost and time; send nothing")
    p.add_argument("--screenshot", action="store_true", help="also save OUT/report/report.png (chromium)")
    shared(p, "--json")
    p.set_defaults(func=paper)


def paper(args: argparse.Namespace) -> int:
    from culturepark.report_page import build_paper, screenshot
    from culturepark.runs.paper_chain import estimate_chain, run_chain
    from culturepark.runs.paper_settings import PaperChain
    from culturepark.scenarios.data_dir import resolve_data_dir

    chain = model_from_args(PaperChain, args)
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
