"""`culturepark study serve`: the education study with real participants (web app)."""
from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
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
    ss.add_argument("--trusted-proxy", action="append", metavar="ADDRESS",
                    help="a reverse proxy (IP or network, repeat) whose X-Forwarded-Proto/Host/For are believed; "
                         "see docs/study-app/README.md for an nginx setup with TLS")
    ss.add_argument("--pilot", action="store_true",
                    help="admit participants although human.researcher, contact or approval is unset (a test run; "
                         "every page says it is a pilot)")
    ss.set_defaults(func=serve)
    se = stsub.add_parser("erase", help="remove every record of one participant from a study's run directory")
    se.add_argument("run_dir", type=Path, help="the study's --out directory (the server must be stopped)")
    se.add_argument("--participant", required=True, metavar="ID", help="the participant's id (p-…)")
    se.set_defaults(func=erase)


def serve(args: argparse.Namespace) -> int:
    from culturepark.study.serve import serve as serve_study

    def say(message: str) -> None:
        print(message, flush=True)

    asyncio.run(serve_study(args.scenario, args.out, args.host, args.port, args.data_dir, say=say,
                            base_url=args.base_url, model=args.model, arms=args.arms,
                            trusted_proxies=args.trusted_proxy, pilot=args.pilot))
    return 0


def erase(args: argparse.Namespace) -> int:
    from culturepark.study.erase import erase as erase_participant

    erase_participant(args.run_dir, args.participant, say=lambda m: print(m, flush=True))
    return 0
