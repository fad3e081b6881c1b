"""`culturepark bench`: engine performance — throughput, the local model, crash-resume, Ray."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from culturepark.commands import non_negative_float, positive_float, positive_int
from culturepark.commands.options import shared

ALWAYS_JSON = "(output is always JSON lines)"


def register(sub: Any) -> None:
    b = sub.add_parser("bench", help="benchmarks: throughput (engine vs raw/SDK), local (batching)")
    bsub = b.add_subparsers(dest="bench", required=True)
    bt = bsub.add_parser("throughput")
    shared(bt, "--json")
    bt.add_argument("--conversations", type=positive_int, default=2000)
    bt.add_argument("--turns", type=positive_int, default=2)
    shared(bt, "--concurrency", default=100)
    shared(bt, "--latency-ms", default=0.0)
    shared(bt, "--rpm", "--tpm")
    bt.add_argument("--max-tokens", type=positive_int, default=32)
    bt.add_argument("--baselines", default="raw", help="comma list of raw,sdk")
    bt.add_argument("--plot", type=Path, help="PNG path for requests/s over time")
    bt.add_argument("--unstated-limits", action="store_true",
                    help="the server enforces --rpm/--tpm, the engine is not told them (headers or AIMD)")
    bt.add_argument("--no-limit-headers", action="store_true", help="the server sends no x-ratelimit-* headers")
    bt.add_argument("--window-s", type=positive_float, default=1.0, help="the server's limit window (60: per minute)")
    bt.add_argument("--start-empty", action="store_true", help="the server's windows start with no credit")
    bt.add_argument("--halve-after-s", type=positive_float, help="the server halves its limits this far in")
    bt.add_argument("--warmup-s", type=non_negative_float, default=60.0,
                    help="429s and utilization are measured after this")
    bt.set_defaults(func=bench)
    bl = bsub.add_parser("local")
    shared(bl, "--json")
    bl.add_argument("--batch-size", type=positive_int, default=16)
    bl.add_argument("--max-tokens", type=positive_int, default=32)
    shared(bl, "--device")
    bl.add_argument("--weights", choices=["fp16", "fp16-int8-head", "fp32"], default="fp16",
                    help="CPU weights (README: the embedded model)")
    bl.set_defaults(func=bench)
    bc = bsub.add_parser("crash-resume", help="kill -9 runs at random moments, resume, compare with a reference")
    bc.add_argument("--trials", type=positive_int, default=20)
    shared(bc, "--seed")
    shared(bc, "--latency-ms", default=40.0)
    shared(bc, "--data-dir")
    shared(bc, "--json", help=ALWAYS_JSON)
    bc.set_defaults(func=bench)
    br = bsub.add_parser("ray", help="single process vs Ray workers (and a killed worker) on the sim server")
    br.add_argument("--workers", type=positive_int, default=2)
    br.add_argument("--per-item", type=positive_int, default=10, help="conversations per (culture, item); 6 pairs")
    br.add_argument("--rpm", type=non_negative_float, default=1200,
                    help="provider budget, enforced by the sim server (0: none)")
    shared(br, "--latency-ms", default=30.0)
    br.add_argument("--no-kill", action="store_true", help="skip the killed-worker run")
    shared(br, "--data-dir")
    shared(br, "--json", help=ALWAYS_JSON)
    br.set_defaults(func=bench)
    bk = bsub.add_parser("cost", help="standard vs prompt_cache_key vs flex vs --batch-api on the sim server; "
                                      "a killed batch run; a pilot estimate against the full run")
    bk.add_argument("--conversations", type=positive_int, default=200)
    bk.add_argument("--pilot", type=positive_int, default=20)
    bk.add_argument("--flex-unavailable-rate", type=non_negative_float, default=0.05)
    bk.add_argument("--no-kill", action="store_true", help="skip the killed --batch-api run")
    shared(bk, "--data-dir")
    shared(bk, "--json", help=ALWAYS_JSON)
    bk.set_defaults(func=bench)
    bs = bsub.add_parser("scale", help="N conversations x T turns: run killed halfway, resume, export; peak RSS each")
    bs.add_argument("--conversations", type=positive_int, default=100_000)
    bs.add_argument("--turns", type=positive_int, default=2)
    shared(bs, "--data-dir")
    bs.add_argument("--work", help="where the run directory goes (default: the system's temporary directory)")
    bs.add_argument("--ray-workers", type=positive_int, default=0, metavar="W",
                    help="also run it on a local Ray instance with W workers; compare the exports")
    shared(bs, "--json", help=ALWAYS_JSON)
    bs.set_defaults(func=bench)


def bench(args: argparse.Namespace) -> int:
    if args.bench == "throughput":
        from culturepark.benchmarks.perf.throughput import main
    elif args.bench == "crash-resume":
        from culturepark.benchmarks.perf.crash_resume import main
    elif args.bench == "ray":
        from culturepark.benchmarks.perf.ray_workers import main
    elif args.bench == "cost":
        from culturepark.benchmarks.perf.cost import main
    elif args.bench == "scale":
        from culturepark.benchmarks.perf.scale import main
    else:
        from culturepark.benchmarks.perf.local_model import main
    return int(main(args))
