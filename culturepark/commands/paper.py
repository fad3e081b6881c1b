"""`culturepark paper`: the paper's chain for chosen cultures — conversations, refinement, paper-format
SFT, fine-tuning, base vs tuned evaluation and a report — resumable at every step."""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from culturepark.commands.options import add_model_flags, model_from_args, shared
from culturepark.console import make_logger, print_json


class ExplainAction(argparse.Action):
    """`--explain`: like `--help`, it needs no other flag: the chain's required flags (`--culture`,
    `--out`) are not asked for once it is given (the table shows the defaults, or the flags given)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, True)
        for action in parser._actions:  # argparse checks `required` after every flag is read
            action.required = False


def register(sub: Any) -> None:
    from culturepark.runs.paper_settings import PaperChain

    p = sub.add_parser("paper", help="the paper's chain: run → refine → SFT → fine-tune → eval → report")
    add_model_flags(p, PaperChain)
    p.add_argument("--dry-run", action="store_true", help="estimate requests, tokens, cost and time; send nothing")
    p.add_argument("--screenshot", action="store_true", help="also save OUT/report/report.png (chromium)")
    p.add_argument("--explain", action=ExplainAction,
                   help="print every setting the chain uses: the paper's value, ours, and why ours differs; "
                        "run nothing (--culture and --out not needed)")
    shared(p, "--json")
    p.set_defaults(func=paper)


def paper(args: argparse.Namespace) -> int:
    from culturepark.report_page import build_paper, screenshot
    from culturepark.runs.paper_chain import estimate_chain, run_chain
    from culturepark.runs.paper_settings import PaperChain
    from culturepark.scenarios.data_dir import resolve_data_dir

    if args.explain:
        return explain(args)
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
    for r in result.rows or []:  # every row beside base and tuned, with its mode
        if r.kind in ("baseline", "direct", "generate", "verify", "diversify"):
            print(f"{r.name} [{r.mode.mode}]", {c: sc.to_json() for c, sc in r.cultures.items()})
    print(f"report → {index}")
    return 0


def explain(args: argparse.Namespace) -> int:
    """The explain table for the flags given (required ones left out are filled with placeholders:
    no setting in the table depends on them)."""
    from culturepark.runs.paper_explain import explain as rows_of
    from culturepark.runs.paper_explain import explain_text
    from culturepark.runs.paper_settings import PaperChain

    chain = model_from_args(PaperChain, args, cultures=args.cultures or ["Chinese"],
                            out=args.out or Path("paper"))
    rows = rows_of(chain)
    print_json({"settings": rows}) if args.json else print(explain_text(rows))
    return 0
