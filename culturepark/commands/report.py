"""`culturepark report`: an HTML page with the plots of the evals and runs found under DIRs."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from culturepark.commands.options import shared
from culturepark.engine.errors import InputError


def register(sub: Any) -> None:
    rep = sub.add_parser("report", help="HTML page with plots of evals and runs found under DIRs")
    rep.add_argument("dirs", nargs="+", type=Path)
    shared(rep, "--out", default=Path("report"), help="the report directory (default: report)")
    rep.add_argument("--screenshot", type=Path, help="also save a full-page PNG (needs playwright + chromium)")
    rep.set_defaults(func=report)


def report(args: argparse.Namespace) -> int:
    from culturepark.report_page import build, screenshot

    missing = [d for d in args.dirs if not d.is_dir()]
    if missing:
        raise InputError(f"report: {missing[0]} is not a directory")
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"report --out {args.out}: exists and is not a directory")
    index = build(args.dirs, args.out)
    print(f"report → {index}")
    if args.screenshot:
        try:
            print(f"screenshot → {screenshot(index, args.screenshot)}")
        except (ImportError, RuntimeError) as exc:
            print(f"culturepark: screenshot not taken: {exc}", file=sys.stderr)
            return 1
    return 0
