"""`culturepark eval`: hofstede, moderation, compare, diversity, education."""
from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from culturepark.commands import positive_int
from culturepark.commands.options import shared
from culturepark.console import make_logger, print_json
from culturepark.engine.errors import InputError


def _model_flags(p: argparse.ArgumentParser, single: bool = True) -> None:
    if single:
        shared(p, "--model", required=True, help="local:gemma3-270m[+lora:DIR], openai:MODEL, gemini:MODEL")
    shared(p, "--base-url", help="OpenAI-compatible server for openai: specs")
    shared(p, "--api-key-env", "--seeds", "--out", "--resume", "--data-dir", "--rpm", "--tpm")
    shared(p, "--concurrency", default=32)
    p.add_argument("--prompt-style", choices=["paper", "persona"],
                   help="paper: the original's culture chatbot and multiple choice; default: the style a tuned "
                        "model's adapter was trained in, else persona")
    shared(p, "--json")


def _parse_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--parse", choices=["strict", "paper"], default="strict",
                   help="moderation: strict (default): yes/no, re-asked until readable; paper: the original's "
                        "question and label words from the spec, one attempt, read leniently (both F1s shown)")


def _hofstede_compat_flags(p: argparse.ArgumentParser) -> None:
    """The original's Hofstede scoring options (`HofstedePaperCompat` declares them), off by default;
    added when the subcommand is first used, so `culturepark --help` loads no benchmark module."""
    from culturepark.benchmarks.results import HofstedePaperCompat
    from culturepark.commands.options import add_model_flags

    add_model_flags(p, HofstedePaperCompat)


def _hofstede_compat(args: argparse.Namespace) -> Any:
    from culturepark.benchmarks.results import HofstedePaperCompat
    from culturepark.commands.options import model_from_args

    return model_from_args(HofstedePaperCompat, args)


def register(sub: Any) -> None:
    ev = sub.add_parser("eval", help="benchmarks: hofstede, moderation, wvs, fidelity, phenomena, content, "
                                         "diversity, compare, compare-runs, education")
    esub = ev.add_subparsers(dest="task", required=True)
    eh = esub.add_parser("hofstede", help="VSM13 in a culture's role vs published scores",
                         build=_hofstede_compat_flags)
    eh.add_argument("--culture", nargs="+", required=True)
    eh.add_argument("--samples", type=positive_int, default=1, help="answers per item and seed")
    eh.add_argument("--constant", type=float, default=0.0, metavar="C",
                    help="add C to every index before the distance (the paper: 50); scoring only")
    _model_flags(eh)
    eh.set_defaults(func=single_task)
    em = esub.add_parser("moderation", help="yes/no moderation, macro-F1")
    em.add_argument("--dataset", required=True, help="bundled name or a spec YAML")
    shared(em, "--limit", help="the first N rows of the dataset")
    _parse_flag(em)
    _model_flags(em)
    em.set_defaults(func=single_task)
    ew = esub.add_parser("wvs", help="WVS items as multiple choice vs the culture's real respondents")
    ew.add_argument("--culture", nargs="+", required=True)
    ew.add_argument("--items", nargs="+", help="WVS item ids (default: all 50)")
    ew.add_argument("--trained-items", nargs="+", default=[], help="items used in training: reported apart")
    ew.add_argument("--temperature", type=float, default=0.7)
    ew.add_argument("--samples", type=positive_int,
                    help="answers per item and culture whose distribution is set against the respondents' "
                         "(default: one per seed)")
    ew.add_argument("--method", choices=["auto", "probs", "samples"], default="auto",
                    help="answer distributions from the model's answer probabilities (probs: label scores, "
                         "logprobs), from --samples answers (samples), or probs with samples where a backend "
                         "gives none (auto)")
    _model_flags(ew)
    ew.set_defaults(func=single_task)
    ef = esub.add_parser("fidelity", help="ask each delegate its seed item again: did it hold its stance?")
    ef.add_argument("run_dir", type=Path)
    shared(ef, "--model", help="default: the run's delegate model")
    shared(ef, "--base-url", help="OpenAI-compatible server (default: the run's)")
    ef.add_argument("--before-after", action="store_true", help="also ask before the conversation: the drift")
    ef.add_argument("--temperature", type=float, default=0.0)
    ef.add_argument("--judge", metavar="SPEC", help="a blind judge model: reads only the turns (speaker names) with "
                                                    "the item, names the code the delegate's turns express")
    ef.add_argument("--judge-base-url", help="the judge's OpenAI-compatible server (default: --base-url)")
    ef.add_argument("--judge-api-key-env", help="env var holding the judge's API key")
    ef.add_argument("--per-turn", action="store_true", help="with --judge: the drift curve (the judge on the "
                                                            "delegate's turns up to k, for each k)")
    ef.add_argument("--control", type=Path, metavar="RUN", help="with --judge: a run of the same plan with "
                                                                "stance_policy: control; reports the lift over it")
    shared(ef, "--out", "--resume", "--json")
    ef.set_defaults(func=fidelity)
    for name, source, helptext in (("phenomena", "run_dir", "a judge on stance shift and cross-cultural understanding"),
                                   ("content", "refine_dir", "a judge classifies kept opinions: belief, norm, custom")):
        ej = esub.add_parser(name, help=helptext)
        ej.add_argument(source, type=Path)
        shared(ej, "--model", required=True, help="the judge: openai:MODEL, gemini:MODEL or local:…")
        shared(ej, "--base-url", "--api-key-env")
        shared(ej, "--concurrency", default=32)
        shared(ej, "--out", "--resume", "--json")
        if name == "content":
            ej.add_argument("--second-level", action="store_true",
                            help="also the original's sub-categories of each kind (religious belief, legal norm, …)")
        if name == "phenomena":
            ej.add_argument("--construct", choices=["ours", "paper"], default="ours",
                            help="ours (default): per conversation, did the stance shift; paper: the original's "
                                 "extend rate and understanding ratio per delegate turn")
        ej.set_defaults(func=judged)
    er = esub.add_parser("compare-runs", help="two runs side by side: fidelity, phenomena, diversity (a direct run: "
                                              "diversity of its reasons only, it has no conversation)")
    er.add_argument("run_a", type=Path)
    er.add_argument("run_b", type=Path)
    shared(er, "--model", help="fidelity: ask with this model (default: each run's delegate model)")
    shared(er, "--base-url")
    er.add_argument("--judge", help="phenomena too, with this judge model spec")
    shared(er, "--out", "--json")
    er.set_defaults(func=compare_runs)
    ec = esub.add_parser("compare", help="same tasks and seeds for several models", build=_hofstede_compat_flags)
    ec.add_argument("--models", nargs="+", required=True)
    ec.add_argument("--tasks", nargs="+", required=True, help="hofstede:Chinese,German moderation:english_offensive")
    shared(ec, "--limit", help="moderation: the first N rows of each dataset")
    ec.add_argument("--samples", type=positive_int, default=1)
    ec.add_argument("--constant", type=float, default=0.0, metavar="C", help="Hofstede's C (the paper: 50)")
    _parse_flag(ec)
    _model_flags(ec, single=False)
    ec.set_defaults(func=compare)
    ed = esub.add_parser("diversity", help="diversity gain of NEW over a reference")
    ed.add_argument("new", type=Path, nargs="+", help="one or more files or run directories (e.g. CulturePark and "
                                                      "direct-generation data): one row each against the same "
                                                      "reference; a run directory gives a conversation run's "
                                                      "delegate turns or a direct run's reasons, one per line")
    ed.add_argument("--reference", type=Path, required=True, help="a file or a run directory, read the same way")
    ed.add_argument("--field", help="the JSONL files' text field (run directories are read by their kind)")
    shared(ed, "--base-url", help="OpenAI-compatible /v1/embeddings instead of the local MiniLM")
    ed.add_argument("--embeddings-model", default="text-embedding-3-small")
    shared(ed, "--api-key-env", default="OPENAI_API_KEY", help="env var with the key (not needed on loopback)")
    shared(ed, "--out", "--json")
    ed.set_defaults(func=diversity)
    ee = esub.add_parser("education", help="learning gain and experience of an education study run")
    ee.add_argument("run_dir", type=Path)
    shared(ee, "--data-dir", help="default: the one recorded in the run's header")
    ee.add_argument("--bootstrap", type=positive_int, default=2000, help="resamples for the 95%% intervals")
    shared(ee, "--json")
    ee.set_defaults(func=education)


def _settings(args: argparse.Namespace, model: str) -> Any:
    from culturepark.benchmarks.eval_run import EvalSettings
    return EvalSettings(model=model, base_url=args.base_url, api_key_env=args.api_key_env,
                        rpm=args.rpm, tpm=args.tpm, concurrency=args.concurrency, resume=args.resume,
                        prompt_style=args.prompt_style)


def _show(args: argparse.Namespace, name: str, result: Any, out: Path | None) -> int:
    """A result as JSON (--json) or as its evaluation's summary lines, then where it was written."""
    from culturepark.benchmarks.evaluation import EVALUATIONS

    if args.json:
        print_json(result.to_json())
        return 0
    print("\n".join(EVALUATIONS[name].summary(result)))
    if out is not None:
        print(f"→ {out}")
    return 0


def single_task(args: argparse.Namespace) -> int:
    from culturepark.benchmarks.compare import EvalTask, row_for, run_task, table
    from culturepark.benchmarks.eval_run import slug
    from culturepark.scenarios.data_dir import resolve_data_dir

    log = make_logger()
    task = (EvalTask(args.task, tuple(args.culture)) if args.task in ("hofstede", "wvs")
            else EvalTask("moderation", (args.dataset,)))
    out = args.out or Path("evals") / slug(args.model) / slug(str(task))
    if args.task != "wvs":
        report = asyncio.run(run_task(_settings(args, args.model), task, resolve_data_dir(args.data_dir, None), out,
                                      args.seeds, getattr(args, "limit", None), getattr(args, "samples", 1),
                                      lambda m: log.info(m), getattr(args, "constant", 0.0),
                                      getattr(args, "parse", "strict"),
                                      _hofstede_compat(args) if args.task == "hofstede" else None))
    else:
        from culturepark.benchmarks import wvs_items
        report = asyncio.run(wvs_items.evaluate(_settings(args, args.model), list(args.culture),
                                                resolve_data_dir(args.data_dir, None), out, args.seeds, args.items,
                                                args.trained_items, args.temperature, lambda m: log.info(m),
                                                args.samples, args.method))
    if args.json:
        print_json(report.to_json())
        return 0
    from culturepark.benchmarks.results import CompareResult, WvsResult
    print(table(CompareResult(models=[args.model], tasks=[str(task)], seeds=args.seeds, limit=None,
                              rows=[row_for(args.model, task, report)])))
    if isinstance(report, WvsResult) and report.trained_items:  # never scored on what it was taught unsaid
        from culturepark.benchmarks.compare import distribution_text
        for culture, v in report.cultures.items():
            for name, part in (("held out", v.held_out), ("trained", v.trained)):
                if part.distribution:
                    print(f"{culture} {name}:{distribution_text(part.distribution).removeprefix(',')}")
    print(f"→ {out}")
    return 0


def compare(args: argparse.Namespace) -> int:
    from culturepark.benchmarks.compare import compare as compare_models
    from culturepark.benchmarks.compare import table
    from culturepark.scenarios.data_dir import resolve_data_dir

    log = make_logger()
    out = args.out or Path("evals") / "compare"
    result = asyncio.run(compare_models(args.models, args.tasks, _settings(args, "compare"),
                                        resolve_data_dir(args.data_dir, None), out, args.seeds, args.limit,
                                        args.samples, lambda m: log.info(m), args.constant, args.parse,
                                        _hofstede_compat(args)))
    print_json(result.to_json()) if args.json else print(table(result))
    return 0


def fidelity(args: argparse.Namespace) -> int:
    from culturepark.benchmarks.eval_run import slug
    from culturepark.benchmarks.fidelity import StanceJudgeSpec, evaluate

    log = make_logger()
    out = args.out or Path("evals") / "fidelity" / slug(args.run_dir.resolve().name)
    if (args.per_turn or args.control) and not args.judge:
        raise InputError("eval fidelity: --per-turn and --control need --judge SPEC")
    judge = StanceJudgeSpec(args.judge, args.judge_base_url or args.base_url, args.judge_api_key_env, args.per_turn,
                            args.control) if args.judge else None
    report = asyncio.run(evaluate(args.run_dir, out, args.model, args.base_url, args.before_after, args.temperature,
                                  args.resume, lambda m: log.info(m), judge))
    return _show(args, "fidelity", report, out)


def judged(args: argparse.Namespace) -> int:
    from culturepark.benchmarks import content, phenomena
    from culturepark.benchmarks.eval_run import EvalSettings, slug

    log = make_logger()
    source = args.run_dir if args.task == "phenomena" else args.refine_dir
    out = args.out or Path("evals") / args.task / slug(source.resolve().name)
    settings = EvalSettings(model=args.model, base_url=args.base_url, api_key_env=args.api_key_env,
                            concurrency=args.concurrency, resume=args.resume)
    if args.task == "phenomena":
        found = asyncio.run(phenomena.evaluate(source, out, settings, lambda m: log.info(m), args.construct))
        return _show(args, args.task, found, out)
    kept = asyncio.run(content.evaluate(source, out, settings, lambda m: log.info(m), args.second_level))
    return _show(args, args.task, kept, out)


def compare_runs(args: argparse.Namespace) -> int:
    from culturepark.benchmarks.compare_runs import compare_runs as run_both
    from culturepark.benchmarks.eval_run import slug

    log = make_logger()
    out = args.out or Path("evals") / "compare-runs" / f"{slug(args.run_a.resolve().name)}-vs-"\
        f"{slug(args.run_b.resolve().name)}"
    r = asyncio.run(run_both(args.run_a, args.run_b, out, args.model, args.base_url, args.judge,
                             lambda m: log.info(m)))
    return _show(args, "compare-runs", r, out)


def diversity(args: argparse.Namespace) -> int:
    from culturepark.benchmarks.diversity import diversity_gains
    from culturepark.benchmarks.results import DiversityResult
    from culturepark.scenarios.endpoints import make_embedder

    embedder = make_embedder("openai" if args.base_url else "local", args.base_url, args.embeddings_model,
                             args.api_key_env)
    rows = asyncio.run(diversity_gains(args.new, args.reference, embedder, args.field))  # closes the embedder
    result = DiversityResult(rows=rows)  # one row is written as that row alone, as before
    if args.out:
        result.write(args.out / "diversity.json")
    return _show(args, "diversity", result, None)


def education(args: argparse.Namespace) -> int:
    from culturepark.benchmarks.education import score, table
    from culturepark.engine.log import LOG_NAME

    if not (args.run_dir / LOG_NAME).exists():
        raise InputError(f"{args.run_dir}: no {LOG_NAME} (give the run directory of an education study)")
    result = score(args.run_dir, args.data_dir, args.bootstrap)
    if args.json:
        print_json({k: v for k, v in result.to_json().items() if k != "per_learner"})
    else:
        print(table(result))
    return 0
