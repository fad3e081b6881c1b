"""`culturepark study serve`: the education study with real participants (web app)."""
from __future__ import annotations

import argparse
import asyncio
from typing import Any

from culturepark.commands import count
from culturepark.commands.options import shared


def register(sub: Any) -> None:
    st = sub.add_parser("study", help="run an education study with real participants (web app)")
    stsub = st.add_subparsers(dest="study_command", required=True)
    ss = stsub.add_parser("serve", help="serve the study; answers go to OUT/log.jsonl as they happen")
    ss.add_argument("scenario", help="an education scenario (kind: education)")
    shared(ss, "--out", required=True, help="run directory; an existing one is continued")
    ss.add_argument("--host", default="127.0.0.1")
    ss.add_argument("--port", type=count, default=8800, help="0 picks a free port (printed)")
    shared(ss, "--data-dir")
    shared(ss, "--base-url", help="send every tutor to this OpenAI-compatible server (as `run --base-url`)")
    shared(ss, "--model", help="the model every tutor asks for (a pilot against one model)")
    shared(ss, "--arm")
    ss.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    from culturepark.study.serve import serve as serve_study

    def say(message: str) -> None:
        print(message, flush=True)

    asyncio.run(serve_study(args.scenario, args.out, args.host, args.port, args.data_dir, say=say,
                            base_url=args.base_url, model=args.model, arms=args.arms))
    return 0
