"""`culturepark` command line: one subcommand per stage, each thin (parse → call → print).

Each stage's options and handler live in `culturepark/commands/<stage>.py`; this module
only assembles the parser and turns errors into exit codes (`culturepark.exit_codes`).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from culturepark.commands import (
    bench,
    data,
    dataset,
    evaluate,
    logs,
    paper,
    refine,
    report,
    run,
    sim_server,
    study,
    train,
)
from culturepark.commands.options import OneLineParser
from culturepark.engine.errors import CultureparkError
from culturepark.exit_codes import EXIT_INTERRUPTED, EXIT_OK, exit_code

COMMANDS = [run, refine, train, evaluate, paper, study, report, dataset, data, logs, sim_server, bench]


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="culturepark", description="Run the CulturePark protocol at scale: "
                                "run, refine, train, eval, report (each stage one subcommand).")
    sub = p.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or EXIT_OK)
    except CultureparkError as exc:
        code = exit_code(exc)
        if code is None:
            raise  # not bad input and not a stopped run: a crash keeps its traceback (exit 1)
        print(f"culturepark: error: {exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("culturepark: interrupted; the log is intact — continue with --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `culturepark replay LOG | head`: the reader has gone, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
