"""`culturepark sim-server`: the OpenAI-compatible simulator (limits, latency, faults) for tests and benches."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson

from culturepark.commands import count, non_negative_float, positive_float, positive_int
from culturepark.engine.errors import InputError


def register(sub: Any) -> None:
    s = sub.add_parser("sim-server", help="OpenAI-compatible simulator for tests and benches")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=count, default=0, help="0 picks a free port (printed)")
    s.add_argument("--rpm", type=positive_float)
    s.add_argument("--tpm", type=positive_float)
    s.add_argument("--window-s", type=positive_float, default=1.0,
                   help="the limits' window: 1 (as providers enforce), 60 for per-minute buckets")
    s.add_argument("--start-empty", action="store_true", help="the windows start with no credit")
    s.add_argument("--no-limit-headers", action="store_true",
                   help="send no x-ratelimit-* headers (a server that keeps its limits to itself)")
    s.add_argument("--charge", choices=["admission", "usage"], default="admission")
    s.add_argument("--latency-ms", type=non_negative_float, default=0.0)
    s.add_argument("--jitter-ms", type=non_negative_float, default=0.0)
    s.add_argument("--fail-rate", type=non_negative_float, default=0.0)
    s.add_argument("--stream-chunk-ms", type=non_negative_float, default=0.0,
                   help="pause between chunks of a streamed reply")
    s.add_argument("--finetune-polls", type=positive_int, default=6, help="job polls from running to done")
    s.add_argument("--finetune-fail", action="store_true", help="fine-tuning jobs end failed")
    s.add_argument("--faults", help='JSON list, e.g. \'[{"kind": "status", "status": 503, "rate": 0.1}]\'')
    s.add_argument("--script", help="YAML list of {pattern, reply} rules")
    s.add_argument("--prompt-cache", action="store_true",
                   help="cache prompt prefixes by OpenAI's rules (cached_tokens in usage)")
    s.add_argument("--flex-unavailable-rate", type=non_negative_float, default=0.0,
                   help='share of service_tier "flex" requests refused with 429 resource unavailable')
    s.add_argument("--flex-latency-factor", type=positive_float, default=3.0, help="flex requests are this much slower")
    s.add_argument("--batch-delay-s", type=non_negative_float, default=1.0,
                   help="a batch is done this long after creation")
    s.add_argument("--batch-line-fail-rate", type=non_negative_float, default=0.0)
    s.add_argument("--batch-expire-rate", type=non_negative_float, default=0.0)
    s.add_argument("--reply-tokens", type=positive_int, nargs=2, metavar=("MIN", "MAX"), default=(12, 60),
                   help="length of unscripted replies (real chat replies run 80-170 tokens)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=sim_server)


def sim_server(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from culturepark.testing.simulator import Fault, SimConfig, load_script, serve_forever

    try:
        script = load_script(Path(args.script)) if args.script else []
        faults = [Fault.model_validate(f) for f in (orjson.loads(args.faults) if args.faults else [])]
        config = SimConfig(seed=args.seed, rpm=args.rpm, tpm=args.tpm, window_s=args.window_s,
                           start_empty=args.start_empty, rate_limit_headers=not args.no_limit_headers,
                           charge=args.charge, latency_ms=args.latency_ms, jitter_ms=args.jitter_ms,
                           fail_rate=args.fail_rate, script=script, faults=faults,
                           finetune_polls=args.finetune_polls, finetune_fail=args.finetune_fail,
                           stream_chunk_ms=args.stream_chunk_ms, min_reply_tokens=min(args.reply_tokens),
                           max_reply_tokens=max(args.reply_tokens), prompt_cache=args.prompt_cache,
                           flex_unavailable_rate=args.flex_unavailable_rate,
                           flex_latency_factor=args.flex_latency_factor, batch_delay_s=args.batch_delay_s,
                           batch_line_fail_rate=args.batch_line_fail_rate, batch_expire_rate=args.batch_expire_rate)
    except (OSError, ValidationError, orjson.JSONDecodeError, TypeError, AttributeError) as exc:
        raise InputError(f"sim-server: {str(exc).splitlines()[0]}") from exc
    serve_forever(config, args.host, args.port)
    return 0
