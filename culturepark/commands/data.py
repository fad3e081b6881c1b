"""`culturepark data wvs`: the official WVS wave-7 release → the data directory this project reads."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from culturepark.commands.options import shared
from culturepark.console import print_json


def register(sub: Any) -> None:
    d = sub.add_parser("data", help="prepare research data: the WVS wave-7 release for any country")
    dsub = d.add_subparsers(dest="what", required=True)
    w = dsub.add_parser("wvs", help="WVS wave-7 cross-national release (CSV) → per-country files")
    w.add_argument("release", type=Path, help="e.g. WVS_Cross-National_Wave_7_csv_v6_0.csv")
    shared(w, "--out", required=True, help="a data directory: OUT/wvs/… (use it as --data-dir)")
    w.add_argument("--items-from", type=Path, help="data directory whose wvs/questions.jsonl names the items "
                                                    "(default: the configured data directory)")
    w.add_argument("--pool", action="append", dest="pools", default=[], metavar="NAME=ALPHA3,ALPHA3,…",
                   help="also a culture pooled from several countries' respondents, as they are (each respondent "
                        "once), e.g. Arabic=EGY,IRQ,JOR,LBN,LBY,MAR,TUN (the original's Arabic); repeatable. A "
                        "culture's name is written under its file name (Arabic → Arab_world_7_countries.csv)")
    shared(w, "--json")
    w.set_defaults(func=wvs)


def wvs(args: argparse.Namespace) -> int:
    from culturepark.agents.wvs_release import convert, parse_pool
    from culturepark.scenarios.data_dir import resolve_data_dir

    pools = [parse_pool(p) for p in args.pools]  # malformed: refused before the release is opened
    summary = convert(args.release, args.out, args.items_from or resolve_data_dir(None, None), pools)
    for line in summary["warnings"]:
        print(line, file=sys.stderr)
    if args.json:
        print_json(summary)
        return 0
    for name, c in summary["countries"].items():
        never = f", never asked: {', '.join(c['never_asked'])}" if c["never_asked"] else ""
        print(f"{name} ({c['alpha3']}): {c['respondents']} respondents{never}")
    for name, p in summary.get("pools", {}).items():
        never = f", never asked: {', '.join(p['never_asked'])}" if p["never_asked"] else ""
        each = ", ".join(f"{a} {n}" for a, n in p["countries"].items())
        print(f"pool {name} → {p['file']}: {p['respondents']} respondents ({each}){never}; {p['weighting']}")
    print(f"→ {args.out / 'wvs'} (use --data-dir {args.out})")
    return 0
