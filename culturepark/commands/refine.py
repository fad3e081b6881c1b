"""`culturepark refine`: a finished run → verified, de-duplicated SFT data."""
from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from culturepark.commands.options import add_model_flags, shared
from culturepark.console import make_logger, print_json

SUMMARY_KEYS = ["conversations", "extracted", "entail", "contradict", "irrelevant", "rewritten", "rewritten_entail",
                "too_short", "deduplicated_removed", "kept", "exported"]


def register(sub: Any) -> None:
    sub.add_parser("refine", help="extract, verify, rewrite, de-duplicate opinions; export SFT data", build=_flags)


def _flags(rf: argparse.ArgumentParser) -> None:
    """`refine`'s flags; those of the config's fields come from its models (built when chosen)."""
    from culturepark.trainers.refine.config import REFINE_PRESETS, DedupConfig, ExportConfig

    rf.add_argument("run_dir", type=Path)
    shared(rf, "--out", help="default: RUN_DIR/refined")
    rf.add_argument("--scenario", type=Path, help="refine config YAML (backend, limits, dedup, export)")
    rf.add_argument("--preset", choices=list(REFINE_PRESETS),
                    help="paper: gpt-4 refiner, both speakers of in-cultural runs, paper-format export")
    add_model_flags(rf, ExportConfig, ["format"], unset=True, presets={"paper": REFINE_PRESETS["paper"]["export"]})
    shared(rf, "--base-url", help="OpenAI-compatible server for the refinement calls")
    shared(rf, "--model", help="the refiner's model (default: the config's, else the source run's)")
    add_model_flags(rf, DedupConfig, ["embeddings"], unset=True)
    rf.add_argument("--extract-per", choices=["conversation", "utterance"],
                    help="one extraction per conversation (ours) or per utterance (the original's; the paper preset)")
    rf.add_argument("--no-verify", action="store_true",
                    help="no verification calls: opinions go on as extracted (the paper's Generate ablation)")
    rf.add_argument("--no-dedup", action="store_true", help="keep near-duplicates (the ablation before +Diversify)")
    shared(rf, "--resume", "--retry-failed", "--json")
    rf.set_defaults(func=refine)


def refine(args: argparse.Namespace) -> int:
    from culturepark.scenarios.loader import load_config
    from culturepark.trainers.refine import RefineConfig, refine_async
    from culturepark.trainers.refine.pipeline import source_backend

    log = make_logger()
    config = load_config(RefineConfig, args.scenario) if args.scenario else RefineConfig()
    config = config.with_preset(args.preset)
    if args.format:
        config = config.model_copy(update={"export": config.export.model_copy(update={"format": args.format})})
    config = config.with_flags(source_backend(args.run_dir), args.base_url, args.model, args.embeddings)
    config = config.with_switches(args.extract_per, verify=not args.no_verify, dedup=not args.no_dedup)
    out = args.out or args.run_dir / "refined"
    result = asyncio.run(refine_async(args.run_dir, out, config, resume=args.resume,
                                      retry_failed=args.retry_failed, say=lambda m: log.info(m)))
    s = result.summary
    exit_code: int = result.exit_code
    if result.error:
        log.error("refine stopped", error=result.error, next_step="fix the cause, then run again with --resume")
    if args.json:
        print_json({"out": str(out), **result.to_json()})
        return exit_code
    if s is None:
        return exit_code
    print(", ".join(f"{k} {getattr(s, k)}" for k in SUMMARY_KEYS) + f" → {out}")
    check = s.openai_format_check
    if check and not check.valid:
        print(f"  openai format check: {check.error_counts}")
    return exit_code
