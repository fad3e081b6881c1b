"""`culturepark` command line: one subcommand per stage, each thin (parse → call → print).

Exit codes: 0 all done, 1 some conversations failed (or the run stopped early),
2 bad input (one clear line on stderr, nothing written).
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any, Sequence

import orjson

from culturepark.errors import InputError


def _print_json(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


def cmd_run(args: argparse.Namespace) -> int:
    from culturepark.console import make_logger, progress_bar
    from culturepark.runner import RunOptions, run_async

    log = make_logger()
    if args.dry_run:
        from culturepark.runner import estimate
        est = estimate(args.scenario, RunOptions(limit=args.limit, base_url=args.base_url, model=args.model,
                                                 data_dir=args.data_dir, arms=args.arm))
        if args.json:
            _print_json(est)
        else:
            cost = "unknown price" if est["cost_usd_max"] is None else f"≤ ${est['cost_usd_max']:.2f}"
            print(f"{est['conversations']} conversations, {est['requests']} requests, "
                  f"~{est['prompt_tokens_est']:,} prompt + ≤{est['completion_tokens_max']:,} completion tokens, "
                  f"{cost} (nothing sent)")
        return 0
    opts = RunOptions(out=args.out, resume=args.resume, retry_failed=args.retry_failed,
                      limit=args.limit, base_url=args.base_url, model=args.model, rpm=args.rpm,
                      tpm=args.tpm, concurrency=args.concurrency, data_dir=args.data_dir, arms=args.arm)
    show_bar = sys.stderr.isatty() and not args.json
    if args.ray:
        from culturepark.distributed import RayOptions, run_ray_async
        run = run_ray_async(args.scenario, opts, RayOptions(address=args.ray, workers=args.workers),
                            progress=progress_bar if show_bar else None, say=lambda m: log.info(m))
    else:
        run = run_async(args.scenario, opts, progress=progress_bar if show_bar else None,
                        say=lambda m: log.info(m))
    result = asyncio.run(run)
    s = result.summary
    if result.error:
        log.error("run stopped", error=result.error, next_step="fix the cause, then run again with --resume")
    if args.json:
        _print_json({"run_dir": str(result.run_dir), **s})
    else:
        cost = "unknown" if s["cost_usd"] is None else f"${s['cost_usd']:.4f}"
        print(f"{s['done']} done, {s['failed']} failed, {s['incomplete']} incomplete; "
              f"{s['turns']} turns, {s['tokens']['total']:,} tokens, cost {cost} → {result.run_dir}")
        for reason, n in s["failures_by_reason"].items():
            print(f"  failed: {n} × {reason}  (retry with --resume --retry-failed)")
    return result.exit_code


def cmd_validate(args: argparse.Namespace) -> int:
    from culturepark.runner import RunOptions, prepare

    bad = 0
    for ref in args.files:
        try:
            scenario, plan, _ = prepare(ref, RunOptions(data_dir=args.data_dir))
        except InputError as exc:
            print(f"culturepark: error: {exc}", file=sys.stderr)
            bad += 1
            continue
        line = {"file": str(ref), "ok": True, "name": scenario.name, "conversations": plan.size,
                "cultures": [c.name for c in plan.cultures], "items": len(plan.items),
                "skipped": len(plan.skipped)}
        if getattr(scenario, "kind", "") == "education":
            line["arms"] = [a.name for a in scenario.arms]
            if not args.json:
                print(f"ok  {ref}: {scenario.name}, {plan.size} learners ({len(plan.cultures)} cultures × "
                      f"{len(scenario.arms)} arms × {scenario.learners_per_arm}), test of {len(plan.items)} items")
                continue
        if args.json:
            _print_json(line)
        else:
            print(f"ok  {ref}: {scenario.name}, {plan.size} conversations "
                  f"({len(plan.cultures)} cultures × {len(plan.items)} items"
                  f"{f', {len(plan.skipped)} never asked' if plan.skipped else ''})")
    return 2 if bad else 0


def cmd_replay(args: argparse.Namespace) -> int:
    from culturepark.engine.export import assemble, conversation_rows

    assembled = assemble(Path(args.run_dir))
    shown = 0
    for row in conversation_rows(assembled):
        if args.id and row["id"] != args.id:
            continue
        if args.limit is not None and shown >= args.limit:
            break
        shown += 1
        if args.json:
            _print_json(row)
            continue
        meta = row["meta"]
        stance = f" — stance: {meta['stance_text']}" if meta.get("stance_text") else ""
        print(f"=== {row['id']} [{row['status']}{': ' + row['reason'] if row.get('reason') else ''}]{stance}")
        if meta.get("item_text"):
            print(f"    item Q{meta.get('item_id')}: {meta['item_text']}")
        for t in row["turns"]:
            print(f"{t['speaker']}: {t['text']}")
        print()
    if assembled.torn_bytes:
        print(f"(the log ends in a torn line of {assembled.torn_bytes} bytes; --resume discards it)",
              file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from culturepark.engine.export import export_run

    summary = export_run(Path(args.run_dir))
    if args.json:
        _print_json(summary)
    else:
        print(f"wrote {args.run_dir}/conversations.jsonl and summary.json "
              f"({summary['conversations']} conversations, {summary['turns']} turns)")
    return 0


def cmd_scenarios(args: argparse.Namespace) -> int:
    from culturepark.scenarios.loader import builtin_scenarios, load_scenario

    found = builtin_scenarios()
    width = max(map(len, found), default=0)
    for name, path in found.items():
        sc = load_scenario(path)
        if args.json:
            _print_json({"name": name, "path": str(path), "kind": sc.kind, "description": sc.description})
        else:
            print(f"{name:{width}s}  {sc.description}")
    return 0


def cmd_sim_server(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from culturepark.engine.sim_server import Fault, SimConfig, load_script, serve_forever

    try:
        script = load_script(Path(args.script)) if args.script else []
        faults = [Fault.model_validate(f) for f in (orjson.loads(args.faults) if args.faults else [])]
        config = SimConfig(seed=args.seed, rpm=args.rpm, tpm=args.tpm, window_s=args.window_s,
                           charge=args.charge, latency_ms=args.latency_ms, jitter_ms=args.jitter_ms,
                           fail_rate=args.fail_rate, script=script, faults=faults,
                           finetune_polls=args.finetune_polls, finetune_fail=args.finetune_fail,
                           stream_chunk_ms=args.stream_chunk_ms)
    except (OSError, ValidationError, orjson.JSONDecodeError, TypeError, AttributeError) as exc:
        raise InputError(f"sim-server: {str(exc).splitlines()[0]}") from None
    serve_forever(config, args.host, args.port)
    return 0


def cmd_refine(args: argparse.Namespace) -> int:
    from culturepark.console import make_logger
    from culturepark.scenarios.loader import ScenarioError, load_model
    from culturepark.scenarios.schema import BackendConfig
    from culturepark.trainers.refine import RefineConfig, refine_async
    from culturepark.trainers.refine.pipeline import source_backend

    log = make_logger()
    try:
        config = load_model(RefineConfig, args.scenario) if args.scenario else RefineConfig()
        if args.base_url or args.model:
            base = config.backend or source_backend(args.run_dir) or BackendConfig()
            update = {"model": args.model or base.model}
            if args.base_url:
                update.update(provider="openai", base_url=args.base_url, api="chat")
            config = config.model_copy(update={"backend": BackendConfig.model_validate(
                {**base.model_dump(exclude_unset=True), **update})})
        if args.embeddings:
            config = config.model_copy(update={"dedup": config.dedup.model_copy(update={"embeddings": args.embeddings})})
    except (ScenarioError, ValueError) as exc:
        raise InputError(str(exc)) from None
    out = args.out or args.run_dir / "refined"
    result = asyncio.run(refine_async(args.run_dir, out, config, resume=args.resume,
                                      retry_failed=args.retry_failed, say=lambda m: log.info(m)))
    s = result.summary
    if result.error:
        log.error("refine stopped", error=result.error, next_step="fix the cause, then run again with --resume")
    if args.json:
        _print_json({"out": str(out), **s})
    else:
        keys = ["conversations", "extracted", "entail", "contradict", "irrelevant", "rewritten", "rewritten_entail",
                "too_short", "deduplicated_removed", "kept", "exported"]
        print(", ".join(f"{k} {s.get(k)}" for k in keys) + f" → {out}")
        check = s.get("openai_format_check") or {}
        if check and not check.get("valid"):
            print(f"  openai format check: {check.get('error_counts')}")
    return result.exit_code


def _eval_settings(args: argparse.Namespace, model: str | None = None):
    from culturepark.benchmarks.common import EvalSettings
    return EvalSettings(model=model or args.model, base_url=args.base_url, api_key_env=args.api_key_env,
                        rpm=args.rpm, tpm=args.tpm, concurrency=args.concurrency, resume=args.resume)


def cmd_eval(args: argparse.Namespace) -> int:
    from culturepark.benchmarks import evaluate
    from culturepark.benchmarks.common import slug
    from culturepark.console import make_logger
    from culturepark.paths import resolve_data_dir

    log = make_logger()
    say = lambda m: log.info(m)  # noqa: E731
    if args.task == "education":
        from culturepark.benchmarks.education import score, table
        from culturepark.engine.log import LOG_NAME
        if not (args.run_dir / LOG_NAME).exists():
            raise InputError(f"{args.run_dir}: no {LOG_NAME} (give the run directory of an education study)")
        result = score(args.run_dir, args.data_dir, args.bootstrap)
        _print_json({k: v for k, v in result.items() if k != "per_learner"}) if args.json else print(table(result))
        return 0
    if args.task == "diversity":
        from culturepark.benchmarks.diversity import diversity_gain
        from culturepark.scenarios.factory import make_embedder
        embedder = make_embedder("openai" if args.base_url else "local", args.base_url, args.embeddings_model,
                                 args.api_key_env)
        result = asyncio.run(diversity_gain(args.new, args.reference, embedder, args.field))
        if args.out:
            evaluate.write_json(args.out / "diversity.json", result)
        _print_json(result) if args.json else print(
            f"diversity gain {result['diversity_gain']:.4f} ± {result['std']:.4f} "
            f"({result['new']} new vs {result['reference']} reference texts, {result['embeddings']})")
        return 0
    data_dir = resolve_data_dir(args.data_dir, None)
    settings = _eval_settings(args, getattr(args, "model", None) or "compare")
    if args.task == "compare":
        out = args.out or Path("evals") / "compare"
        result = asyncio.run(evaluate.compare(args.models, args.tasks, settings, data_dir, out, args.seeds,
                                              args.limit, args.samples, say))
        _print_json(result) if args.json else print(evaluate.table(result))
        return 0
    task = f"hofstede:{','.join(args.culture)}" if args.task == "hofstede" else f"moderation:{args.dataset}"
    out = args.out or Path("evals") / slug(args.model) / slug(task)
    report = asyncio.run(evaluate.run_task(settings, task, data_dir, out, args.seeds,
                                           getattr(args, "limit", None), getattr(args, "samples", 1), say))
    if args.json:
        _print_json(report)
    else:
        print(evaluate.table({"rows": [{"model": args.model, "task": task, "result": evaluate.headline(report)}]}))
        print(f"→ {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from culturepark.benchmarks.report import build

    missing = [d for d in args.dirs if not d.is_dir()]
    if missing:
        raise InputError(f"report: {missing[0]} is not a directory")
    index = build(args.dirs, args.out)
    print(f"report → {index}")
    if args.screenshot:
        from culturepark.benchmarks.report import screenshot
        try:
            print(f"screenshot → {screenshot(index, args.screenshot)}")
        except (ImportError, RuntimeError) as exc:
            print(f"culturepark: screenshot not taken: {exc}", file=sys.stderr)
            return 1
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from culturepark.console import make_logger

    log = make_logger()
    if args.method == "openai":
        from culturepark.trainers.openai_jobs import train_openai

        def show(state: dict, new_events: list[str]) -> None:
            for e in new_events:
                log.info(e, job=state["job_id"])
            if not args.json:
                print(f"  status {state['status']}, trained tokens {state['trained_tokens']}", file=sys.stderr)

        out = args.out or Path("train") / args.sft_file.stem
        state = train_openai(args.sft_file, args.model, out, suffix=args.suffix, epochs=args.epochs,
                             base_url=args.base_url, api_key_env=args.api_key_env, poll_s=args.poll_s,
                             on_update=show)
        public = {k: v for k, v in state.items() if k != "events_seen"}
        _print_json(public) if args.json else print(
            f"job {state['job_id']}: {state['status']} → model {state['fine_tuned_model']} ({out / 'train.json'})")
        return 0 if state["status"] == "succeeded" else 1
    from culturepark.trainers.lora import LoraSettings, train_lora

    settings = LoraSettings(base=args.base, epochs=args.epochs, max_steps=args.max_steps, lr=args.lr, r=args.r,
                            alpha=args.alpha, dropout=args.dropout, batch_size=args.batch_size, qlora=args.qlora,
                            seed=args.seed, merge=args.merge, template=args.template, device=args.device)
    bar = None
    if sys.stderr.isatty() and not args.json:
        from rich.progress import Progress
        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("LoRA", total=1)

    def progress(step: int, total: int, loss: float) -> None:
        if bar is not None:
            bar.update(task, total=total, completed=step, description=f"LoRA loss {loss:.3f}")

    try:
        summary = train_lora(args.sft_file, args.out, settings, progress, say=lambda m: log.info(m))
    finally:
        if bar is not None:
            bar.stop()
    _print_json(summary) if args.json else print(
        f"{summary['steps']} steps, loss {summary['first_loss']} → {summary['last_loss']}, "
        f"{summary['seconds_per_step']} s/step → {args.out} (use local:gemma3-270m+lora:{args.out})")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.bench == "throughput":
        from culturepark.benchmarks.throughput import main as bench_main
    elif args.bench == "crash-resume":
        from culturepark.benchmarks.crash_resume import main as bench_main
    elif args.bench == "ray":
        from culturepark.benchmarks.distributed import main as bench_main
    else:
        from culturepark.benchmarks.local import main as bench_main
    return bench_main(args)


def cmd_study(args: argparse.Namespace) -> int:
    from culturepark.benchmarks.study_app import serve

    def say(message: str) -> None:
        print(message, flush=True)

    asyncio.run(serve(args.scenario, args.out, args.host, args.port, args.data_dir, say=say))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="culturepark", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a scenario (YAML path or bundled name)")
    r.add_argument("scenario")
    r.add_argument("--out", type=Path)
    r.add_argument("--resume", action="store_true", help="continue the run in --out from its log")
    r.add_argument("--retry-failed", action="store_true", help="with --resume: run failed conversations again")
    r.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    r.add_argument("--model")
    r.add_argument("--rpm", type=float)
    r.add_argument("--tpm", type=float)
    r.add_argument("--concurrency", type=int)
    r.add_argument("--limit", type=int, help="run at most N conversations")
    r.add_argument("--data-dir", type=Path)
    r.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    r.add_argument("--dry-run", action="store_true", help="estimate requests, tokens and cost; send nothing")
    r.add_argument("--ray", nargs="?", const="local", metavar="auto|ADDRESS",
                   help="shard the conversations over Ray workers: alone, a Ray instance on this machine; "
                        "'auto' or HOST:PORT joins a running cluster (pip install 'culturepark[ray]')")
    r.add_argument("--workers", type=int, default=2, help="with --ray: number of workers (default 2)")
    r.add_argument("--arm", action="append", metavar="NAME=MODEL_SPEC",
                   help="education studies: a tutor arm (repeat; replaces the scenario's arms), "
                        "e.g. tuned=local:gemma3-270m+lora:DIR")
    r.set_defaults(func=cmd_run)

    rf = sub.add_parser("refine", help="extract, verify, rewrite, de-duplicate opinions; export SFT data")
    rf.add_argument("run_dir", type=Path)
    rf.add_argument("--out", type=Path, help="default: RUN_DIR/refined")
    rf.add_argument("--scenario", type=Path, help="refine config YAML (backend, limits, dedup, export)")
    rf.add_argument("--base-url", help="OpenAI-compatible server for the refinement calls")
    rf.add_argument("--model")
    rf.add_argument("--embeddings", choices=["local", "openai"])
    rf.add_argument("--resume", action="store_true")
    rf.add_argument("--retry-failed", action="store_true")
    rf.add_argument("--json", action="store_true")
    rf.set_defaults(func=cmd_refine)

    ev = sub.add_parser("eval", help="benchmarks: hofstede, moderation, diversity, compare, education")
    esub = ev.add_subparsers(dest="task", required=True)

    def model_flags(p: argparse.ArgumentParser, single: bool = True) -> None:
        if single:
            p.add_argument("--model", required=True,
                           help="local:gemma3-270m[+lora:DIR], openai:MODEL, gemini:MODEL")
        p.add_argument("--base-url", help="OpenAI-compatible server for openai: specs")
        p.add_argument("--api-key-env", help="name of the env var holding the key")
        p.add_argument("--seeds", type=int, default=3)
        p.add_argument("--out", type=Path)
        p.add_argument("--resume", action="store_true")
        p.add_argument("--data-dir", type=Path)
        p.add_argument("--rpm", type=float)
        p.add_argument("--tpm", type=float)
        p.add_argument("--concurrency", type=int, default=32)
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=cmd_eval)

    eh = esub.add_parser("hofstede", help="VSM13 in a culture's role vs published scores")
    eh.add_argument("--culture", nargs="+", required=True)
    eh.add_argument("--samples", type=int, default=1, help="answers per item and seed")
    model_flags(eh)
    em = esub.add_parser("moderation", help="yes/no moderation, macro-F1")
    em.add_argument("--dataset", required=True, help="bundled name or a spec YAML")
    em.add_argument("--limit", type=int)
    model_flags(em)
    ec = esub.add_parser("compare", help="same tasks and seeds for several models")
    ec.add_argument("--models", nargs="+", required=True)
    ec.add_argument("--tasks", nargs="+", required=True, help="hofstede:Chinese,German moderation:english_offensive")
    ec.add_argument("--limit", type=int)
    ec.add_argument("--samples", type=int, default=1)
    model_flags(ec, single=False)
    ed = esub.add_parser("diversity", help="diversity gain of NEW over a reference")
    ed.add_argument("new", type=Path)
    ed.add_argument("--reference", type=Path, required=True)
    ed.add_argument("--field")
    ed.add_argument("--base-url", help="OpenAI-compatible /v1/embeddings instead of the local MiniLM")
    ed.add_argument("--embeddings-model", default="text-embedding-3-small")
    ed.add_argument("--api-key-env", default="OPENAI_API_KEY", help="env var with the key (not needed on loopback)")
    ed.add_argument("--out", type=Path)
    ed.add_argument("--json", action="store_true")
    ed.set_defaults(func=cmd_eval)
    ee = esub.add_parser("education", help="learning gain and experience of an education study run")
    ee.add_argument("run_dir", type=Path)
    ee.add_argument("--data-dir", type=Path, help="default: the one recorded in the run's header")
    ee.add_argument("--bootstrap", type=int, default=2000, help="resamples for the 95%% intervals")
    ee.add_argument("--json", action="store_true")
    ee.set_defaults(func=cmd_eval)

    st = sub.add_parser("study", help="run an education study with real participants (web app)")
    stsub = st.add_subparsers(dest="study_command", required=True)
    ss = stsub.add_parser("serve", help="serve the study; answers go to OUT/log.jsonl as they happen")
    ss.add_argument("scenario", help="an education scenario (kind: education)")
    ss.add_argument("--out", type=Path, required=True, help="run directory; an existing one is continued")
    ss.add_argument("--host", default="127.0.0.1")
    ss.add_argument("--port", type=int, default=8800, help="0 picks a free port (printed)")
    ss.add_argument("--data-dir", type=Path)
    ss.set_defaults(func=cmd_study)

    rep = sub.add_parser("report", help="HTML page with plots of evals and runs found under DIRs")
    rep.add_argument("dirs", nargs="+", type=Path)
    rep.add_argument("--out", type=Path, default=Path("report"))
    rep.add_argument("--screenshot", type=Path, help="also save a full-page PNG (needs playwright + chromium)")
    rep.set_defaults(func=cmd_report)

    tr = sub.add_parser("train", help="fine-tune: OpenAI jobs or LoRA/QLoRA on a local model")
    tsub = tr.add_subparsers(dest="method", required=True)
    to = tsub.add_parser("openai", help="upload, create and follow an OpenAI fine-tuning job (resumable)")
    to.add_argument("sft_file", type=Path)
    to.add_argument("--model", required=True)
    to.add_argument("--suffix")
    to.add_argument("--epochs", type=int, default=3)
    to.add_argument("--out", type=Path)
    to.add_argument("--base-url")
    to.add_argument("--api-key-env", default="OPENAI_API_KEY")
    to.add_argument("--poll-s", type=float, default=10.0)
    to.add_argument("--json", action="store_true")
    to.set_defaults(func=cmd_train)
    tl = tsub.add_parser("lora", help="LoRA with peft on the embedded model or a local HF directory")
    tl.add_argument("sft_file", type=Path, help="openai_chat.jsonl from refine")
    tl.add_argument("--base", default="local:gemma3-270m")
    tl.add_argument("--out", type=Path, required=True)
    tl.add_argument("--epochs", type=float, default=3.0)
    tl.add_argument("--max-steps", type=int)
    tl.add_argument("--lr", type=float, default=2e-4)
    tl.add_argument("--r", type=int, default=64)
    tl.add_argument("--alpha", type=int, default=16)
    tl.add_argument("--dropout", type=float, default=0.1)
    tl.add_argument("--batch-size", type=int, default=4)
    tl.add_argument("--template", choices=["gemma", "chatml"], default="gemma")
    tl.add_argument("--qlora", action="store_true", help="4-bit nf4 base + paged AdamW (CUDA only)")
    tl.add_argument("--merge", action="store_true", help="also save the merged model in OUT/merged")
    tl.add_argument("--seed", type=int, default=0)
    tl.add_argument("--device", default="auto")
    tl.add_argument("--json", action="store_true")
    tl.set_defaults(func=cmd_train)

    v = sub.add_parser("validate", help="check scenario files without running them")
    v.add_argument("files", nargs="+")
    v.add_argument("--data-dir", type=Path)
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_validate)

    rp = sub.add_parser("replay", help="print the conversations of a run (also a partial one)")
    rp.add_argument("run_dir")
    rp.add_argument("--id")
    rp.add_argument("--limit", type=int)
    rp.add_argument("--json", action="store_true")
    rp.set_defaults(func=cmd_replay)

    e = sub.add_parser("export", help="write conversations.jsonl and summary.json from a log")
    e.add_argument("run_dir")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_export)

    sc = sub.add_parser("scenarios", help="list bundled scenarios")
    sc.add_argument("--json", action="store_true")
    sc.set_defaults(func=cmd_scenarios)

    s = sub.add_parser("sim-server", help="OpenAI-compatible simulator for tests and benches")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    s.add_argument("--rpm", type=float)
    s.add_argument("--tpm", type=float)
    s.add_argument("--window-s", type=float, default=1.0)
    s.add_argument("--charge", choices=["admission", "usage"], default="admission")
    s.add_argument("--latency-ms", type=float, default=0.0)
    s.add_argument("--jitter-ms", type=float, default=0.0)
    s.add_argument("--fail-rate", type=float, default=0.0)
    s.add_argument("--stream-chunk-ms", type=float, default=0.0, help="pause between chunks of a streamed reply")
    s.add_argument("--finetune-polls", type=int, default=6, help="job polls from running to done")
    s.add_argument("--finetune-fail", action="store_true", help="fine-tuning jobs end failed")
    s.add_argument("--faults", help='JSON list, e.g. \'[{"kind": "status", "status": 503, "rate": 0.1}]\'')
    s.add_argument("--script", help="YAML list of {pattern, reply} rules")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_sim_server)

    b = sub.add_parser("bench", help="benchmarks: throughput (engine vs raw/SDK), local (batching)")
    bsub = b.add_subparsers(dest="bench", required=True)
    bt = bsub.add_parser("throughput")
    bt.add_argument("--json", action="store_true")
    bt.add_argument("--conversations", type=int, default=2000)
    bt.add_argument("--turns", type=int, default=2)
    bt.add_argument("--concurrency", type=int, default=100)
    bt.add_argument("--latency-ms", type=float, default=0.0)
    bt.add_argument("--rpm", type=float)
    bt.add_argument("--tpm", type=float)
    bt.add_argument("--max-tokens", type=int, default=32)
    bt.add_argument("--baselines", default="raw", help="comma list of raw,sdk")
    bt.add_argument("--plot", type=Path, help="PNG path for requests/s over time")
    bt.set_defaults(func=cmd_bench)
    bl = bsub.add_parser("local")
    bl.add_argument("--json", action="store_true")
    bl.add_argument("--batch-size", type=int, default=16)
    bl.add_argument("--max-tokens", type=int, default=32)
    bl.add_argument("--device", default="auto")
    bl.set_defaults(func=cmd_bench)
    bc = bsub.add_parser("crash-resume", help="kill -9 runs at random moments, resume, compare with a reference")
    bc.add_argument("--trials", type=int, default=20)
    bc.add_argument("--seed", type=int, default=0)
    bc.add_argument("--latency-ms", type=float, default=40.0)
    bc.add_argument("--data-dir", help="WVS data directory (default: as for `run`)")
    bc.add_argument("--json", action="store_true", help="(output is always JSON lines)")
    bc.set_defaults(func=cmd_bench)
    br = bsub.add_parser("ray", help="single process vs Ray workers (and a killed worker) on the sim server")
    br.add_argument("--workers", type=int, default=2)
    br.add_argument("--per-item", type=int, default=10, help="conversations per (culture, item); 6 pairs")
    br.add_argument("--rpm", type=float, default=1200, help="provider budget, enforced by the sim server (0: none)")
    br.add_argument("--latency-ms", type=float, default=30.0)
    br.add_argument("--no-kill", action="store_true", help="skip the killed-worker run")
    br.add_argument("--data-dir", help="WVS data directory (default: as for `run`)")
    br.add_argument("--json", action="store_true", help="(output is always JSON lines)")
    br.set_defaults(func=cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from culturepark.engine.log import LogError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (InputError, LogError) as exc:  # bad input, or a log/run dir that cannot be used as asked
        print(f"culturepark: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("culturepark: interrupted; the log is intact — continue with --resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `culturepark replay LOG | head`: the reader has gone, which is fine
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
