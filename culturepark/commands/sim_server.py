"""`culturepark sim-server`: the OpenAI-compatible simulator (limits, latency, faults) for tests and benches."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from culturepark.commands import count, positive_int
from culturepark.commands.options import add_model_flags, model_values
from culturepark.engine.errors import InputError

if TYPE_CHECKING:
    from culturepark.testing.sim_config import SimConfig

# SimConfig's fields that are flags (the others: --faults, --script, --reply-tokens, or not on the CLI)
SIM_FLAGS = ["rpm", "tpm", "window_s", "start_empty", "charge", "latency_ms", "jitter_ms", "fail_rate",
             "stream_chunk_ms", "finetune_polls", "finetune_fail", "prompt_cache", "prompt_cache_min_tokens",
             "flex_unavailable_rate",
             "flex_latency_factor", "batch_delay_s", "batch_line_fail_rate", "batch_expire_rate", "seed", "logprobs"]


def register(sub: Any) -> None:
    sub.add_parser("sim-server", help="OpenAI-compatible simulator for tests and benches", build=_flags)


def _flags(s: argparse.ArgumentParser) -> None:
    """The simulator's flags: `SimConfig`'s fields (built when `sim-server` is chosen)."""
    from culturepark.testing.sim_config import SimConfig

    s.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    s.add_argument("--port", type=count, default=0, help="0 picks a free port (printed)")
    add_model_flags(s, SimConfig, SIM_FLAGS)
    s.add_argument("--no-limit-headers", action="store_true",
                   help="send no x-ratelimit-* headers (a server that keeps its limits to itself)")
    s.add_argument("--faults", help='JSON list, e.g. \'[{"kind": "status", "status": 503, "rate": 0.1}]\'')
    s.add_argument("--script", help="YAML list of {pattern, reply} rules")
    s.add_argument("--reply-tokens", type=positive_int, nargs=2, metavar=("MIN", "MAX"), default=(12, 60),
                   help="length of unscripted replies (real chat replies run 80-170 tokens)")
    s.set_defaults(func=sim_server)


def sim_server(args: argparse.Namespace) -> int:
    from culturepark.testing.simulator import serve_forever

    serve_forever(sim_config(args), args.host, args.port)
    return 0


def sim_config(args: argparse.Namespace) -> SimConfig:
    """The simulator's settings from `sim-server`'s parsed flags (also how the tests start one
    inside their own process with the same flags)."""
    from pydantic import ValidationError

    from culturepark.testing.sim_config import Fault, SimConfig
    from culturepark.testing.simulator import load_script

    try:
        script = load_script(Path(args.script)) if args.script else []
        faults = [Fault.model_validate(f) for f in (orjson.loads(args.faults) if args.faults else [])]
        return SimConfig(**model_values(SimConfig, args, SIM_FLAGS), script=script, faults=faults,
                         rate_limit_headers=not args.no_limit_headers,
                         min_reply_tokens=min(args.reply_tokens), max_reply_tokens=max(args.reply_tokens))
    except (OSError, ValidationError, orjson.JSONDecodeError, TypeError, AttributeError) as exc:
        raise InputError(f"sim-server: {str(exc).splitlines()[0]}") from exc
