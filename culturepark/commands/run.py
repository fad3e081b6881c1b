"""`culturepark run` and `culturepark validate`: scenarios → conversations (or a check of them)."""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from culturepark.commands import count, positive_int
from culturepark.commands.options import SHARED, model_from_args, shared
from culturepark.console import make_logger, print_json, progress_bar, progress_lines
from culturepark.engine.errors import InputError


def register(sub: Any) -> None:
    r = sub.add_parser("run", help="run a scenario (YAML path or bundled name)")
    r.add_argument("scenario", nargs="?", help="a YAML path or bundled name (not with --fork)")
    shared(r, "--out", help="the run directory (default: runs/NAME-TIME)")
    shared(r, "--resume", "--retry-failed", "--base-url")
    shared(r, "--model", help="the model every backend asks for: a name at the backend's provider, or "
                              "PROVIDER:NAME (openai, gemini, anthropic) to send remote backends to that provider")
    shared(r, "--rpm", "--tpm", "--concurrency")
    shared(r, "--limit", help="run at most N conversations")
    shared(r, "--data-dir")
    shared(r, "--json", help="print the summary as one JSON line")
    r.add_argument("--dry-run", action="store_true", help="estimate requests, tokens and cost; send nothing")
    r.add_argument("--pilot", type=positive_int, metavar="N",
                   help="with --dry-run: run N real conversations (into --out) and project tokens, cache hits, "
                        "cost per tier and time for the whole scenario from them")
    r.add_argument("--service-tier", choices=["standard", "flex"],
                   help="flex: half price, slower, sometimes refused (OpenAI; Gemini where it takes it)")
    r.add_argument("--batch-api", action="store_true",
                   help="send each round of turns through the provider's /v1/batches (half price, within 24 h)")
    r.add_argument("--ray", nargs="?", const="local", metavar="auto|ADDRESS",
                   help="shard the conversations over Ray workers: alone, a Ray instance on this machine; "
                        "'auto' or HOST:PORT joins a running cluster (pip install 'culturepark[ray]')")
    r.add_argument("--workers", type=positive_int, default=2, help="with --ray: number of workers (default 2)")
    r.add_argument("--fork", type=Path, metavar="RUN_DIR",
                   help="continue RUN_DIR's conversations after their first --at turns under a changed scenario")
    r.add_argument("--at", type=count, metavar="K", help="with --fork: turns kept from the source run")
    r.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="with --fork: change the scenario, e.g. main_contact=German or backend.model=gpt-4o")
    shared(r, "--arm", help=f"education studies: {SHARED['--arm']['help']}")
    r.set_defaults(func=run)

    v = sub.add_parser("validate", help="check scenario files without running them")
    v.add_argument("files", nargs="+")
    shared(v, "--data-dir", "--json")
    v.set_defaults(func=validate)
    register_scenarios(sub)


def _options(args: argparse.Namespace) -> Any:
    from culturepark.runs.prepare import RunOptions

    return model_from_args(RunOptions, args)


def pilot(args: argparse.Namespace) -> int:
    from culturepark.runs.pilot import pilot_async

    log = make_logger()
    bar = progress_bar if sys.stderr.isatty() and not args.json else progress_lines
    est = asyncio.run(pilot_async(args.scenario, _options(args), args.pilot, bar, lambda m: log.info(m)))
    if args.json:
        print_json(est)
        return 0
    p, proj = est["pilot"], est["projected"]
    money = {k: "unknown" if v is None else f"${v:,.2f}" for k, v in proj["cost_usd_by_tier"].items()}
    when = "within the batch window" if proj["duration_s"] is None else \
        f"~{proj['duration_s'] / 60:.0f} min (bound by {proj['duration_bound']})"
    print(f"pilot: {p['conversations']} conversations ({p['done']} done) → {p['run_dir']}")
    print(f"projected for {proj['conversations']:,} conversations: {proj['turns']:,} requests, "
          f"{proj['tokens']['prompt']:,} prompt tokens ({proj['cache']['hit_rate']:.0%} cached) + "
          f"{proj['tokens']['completion']:,} completion, {when}")
    print(f"cost: {money['standard']} standard ({money['standard_uncached']} without caching), "
          f"{money['flex']} flex, {money['batch']} batch; this scenario: {proj['tier']}")
    return 0


def dry_run(args: argparse.Namespace) -> int:
    from culturepark.runs.estimate import estimate

    if args.pilot is not None:
        return pilot(args)
    est = estimate(args.scenario, _options(args))
    if args.json:
        print_json(est)
        return 0
    cost = "unknown price" if est["cost_usd_max"] is None else f"≤ ${est['cost_usd_max']:.2f}"
    print(f"{est['conversations']} conversations, {est['requests']} requests, "
          f"~{est['prompt_tokens_est']:,} prompt + ≤{est['completion_tokens_max']:,} completion tokens, "
          f"{cost} (nothing sent)")
    return 0


def run(args: argparse.Namespace) -> int:
    if (args.scenario is None) == (args.fork is None):
        raise InputError("run: give a scenario, or --fork RUN_DIR --at K (not both)")
    if args.fork is not None and (args.at is None or args.ray or args.resume or args.dry_run):
        raise InputError("run --fork needs --at K, and takes no --ray, --resume or --dry-run")
    if args.fork is None and (args.at is not None or args.set):
        raise InputError("run: --at and --set go with --fork")
    if args.batch_api and (args.ray or args.service_tier == "flex"):
        raise InputError("run --batch-api takes no --ray and no --service-tier flex (a batch is its own tier)")
    if args.pilot is not None and not args.dry_run:
        raise InputError("run --pilot N goes with --dry-run")
    if args.dry_run:
        return dry_run(args)
    log = make_logger()
    opts = _options(args)
    if args.fork is not None:
        from culturepark.runs.fork import fork
        args.scenario, opts = fork(args.fork, args.at, args.set, opts)
    bar = progress_bar if sys.stderr.isatty() and not args.json else progress_lines
    if args.ray:
        from culturepark.runs.on_ray import RayOptions, run_ray_async
        job = run_ray_async(args.scenario, opts, RayOptions(address=args.ray, workers=args.workers),
                            progress=bar, say=lambda m: log.info(m))
    else:
        from culturepark.runs.in_process import run_async
        job = run_async(args.scenario, opts, progress=bar, say=lambda m: log.info(m))
    result = asyncio.run(job)
    s = result.summary
    if result.error:
        log.error("run stopped", error=result.error, next_step="fix the cause, then run again with --resume")
    if args.json:
        print_json({"run_dir": str(result.run_dir), **s.to_json()})
        return result.exit_code
    cost = "unknown" if s.cost_usd is None else f"${s.cost_usd:.4f}"
    print(f"{s.done} done, {s.failed} failed, {s.incomplete} incomplete; "
          f"{s.turns} turns, {s.tokens.total:,} tokens, cost {cost} → {result.run_dir}")
    for reason, n in s.failures_by_reason.items():
        print(f"  failed: {n} × {reason}  (retry with --resume --retry-failed)")
    return result.exit_code


def validate(args: argparse.Namespace) -> int:
    from culturepark.runs.prepare import RunOptions, prepare

    bad = 0
    for ref in args.files:
        try:
            prepared = prepare(ref, RunOptions(data_dir=args.data_dir))
        except InputError as exc:
            print(f"culturepark: error: {exc}", file=sys.stderr)
            bad += 1
            continue
        plan = prepared.plan
        facts, text = prepared.experiment.describe(plan)
        if args.json:
            print_json({"file": str(ref), "ok": True, "name": prepared.scenario.name,
                        "cultures": [c.name for c in plan.cultures], "skipped": len(plan.skipped), **facts})
        else:
            print(f"ok  {ref}: {prepared.scenario.name}, {text}")
    return 2 if bad else 0


def register_scenarios(sub: Any) -> None:
    sc = sub.add_parser("scenarios", help="list bundled scenarios")
    shared(sc, "--json")
    sc.set_defaults(func=scenarios)


def scenarios(args: argparse.Namespace) -> int:
    from culturepark.scenarios.loader import builtin_scenarios, load_scenario

    found = builtin_scenarios()
    width = max(map(len, found), default=0)
    for name, path in found.items():
        sc = load_scenario(path)
        if args.json:
            print_json({"name": name, "path": str(path), "kind": sc.kind, "description": sc.description})
        else:
            print(f"{name:{width}s}  {sc.description}")
    return 0
