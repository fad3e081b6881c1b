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
    s.add_argument("--window-s", type=positive_float, default=1.0)
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
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=sim_server)


def sim_server(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from culturepark.testing.sim_server import Fault, SimConfig, load_script, serve_forever

    try:
        script = load_script(Path(args.script)) if args.script else []
        faults = [Fault.model_validate(f) for f in (orjson.loads(args.faults) if args.faults else [])]
        config = SimConfig(seed=args.seed, rpm=args.rpm, tpm=args.tpm, window_s=args.window_s,
                           charge=args.charge, latency_ms=args.latency_ms, jitter_ms=args.jitter_ms,
                           fail_rate=args.fail_rate, script=script, faults=faults,
                           finetune_polls=args.finetune_polls, finetune_fail=args.finetune_fail,
                           stream_chunk_ms=args.stream_chunk_ms)
    except (OSError, ValidationError, orjson.JSONDecodeError, TypeError, AttributeError) as exc:
        raise InputError(f"sim-server: {str(exc).splitlines()[0]}") from exc
    serve_forever(config, args.host, args.port)
    return 0
