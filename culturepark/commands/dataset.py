"""`culturepark dataset`: build a dataset folder (splits, card, manifest) from runs and refinements;
verify one against its manifest."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from culturepark.commands.options import add_model_flags, model_values, shared
from culturepark.console import print_json
from culturepark.exit_codes import EXIT_FAILED

SETTINGS_FLAGS = ["seed", "validation", "test", "holdout_items", "format", "shard_rows", "license"]


def register(sub: Any) -> None:
    ds = sub.add_parser("dataset", help="build a dataset folder datasets.load_dataset reads; verify one")
    dsub = ds.add_subparsers(dest="action", required=True)
    dsub.add_parser("build", help="runs and refinements → splits (held-out items), card, manifest",
                    build=_build_flags)
    dv = dsub.add_parser("verify", help="recompute the manifest's hashes (files and sources); exit 1 on a change")
    dv.add_argument("folder", type=Path)
    shared(dv, "--json")
    dv.set_defaults(func=verify)


def _build_flags(p: argparse.ArgumentParser) -> None:
    from culturepark.dataset.models import BuildSettings, Gates

    p.add_argument("inputs", nargs="+", type=Path, metavar="RUN_OR_REFINE_DIR",
                   help="a run directory (its refinement at RUN/refined is taken when there), or a refine directory")
    shared(p, "--out", required=True, help="the dataset folder (replaced if it holds an earlier build)")
    add_model_flags(p, BuildSettings, SETTINGS_FLAGS)
    add_model_flags(p, Gates)
    p.add_argument("--evals", nargs="+", type=Path, default=[], metavar="DIR",
                   help="folders holding eval fidelity / diversity results for these runs (the run directories "
                        "themselves are always searched)")
    shared(p, "--json")
    p.set_defaults(func=build)


def build(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from culturepark.dataset.build import build as build_dataset
    from culturepark.dataset.models import BuildSettings, Gates
    from culturepark.engine.errors import InputError

    try:
        settings = BuildSettings.model_validate({**model_values(BuildSettings, args, SETTINGS_FLAGS),
                                                 "gates": Gates.model_validate(model_values(Gates, args))})
    except ValidationError as exc:
        raise InputError(f"dataset build: {exc.errors()[0]['msg']}") from exc
    if settings.validation + settings.test >= 1:
        raise InputError("dataset build: --validation plus --test must leave a share for train")
    built = build_dataset(list(args.inputs), args.out, settings, list(args.evals))
    m = built.manifest
    if args.json:
        print_json({"out": str(built.out), "rows": m.rows, "heldout_items": m.heldout_items,
                    "trained_items": m.trained_items, "drops": m.drops})
        return 0
    for cfg, splits in m.rows.items():
        print(f"{cfg}: " + ", ".join(f"{sp} {n}" for sp, n in splits.items()))
    dropped = {k: v for counts in m.drops.values() for k, v in counts.items() if v}
    print(f"held-out items: {' '.join('Q' + q for q in m.heldout_items) or 'none'}; dropped: "
          + (", ".join(f"{k} {v}" for k, v in dropped.items()) or "nothing"))
    print(f"→ {built.out}")
    return 0


def verify(args: argparse.Namespace) -> int:
    from culturepark.dataset.verify import VerifyFailed
    from culturepark.dataset.verify import verify as verify_folder

    try:
        done = verify_folder(args.folder)
    except VerifyFailed as exc:
        if args.json:
            print_json({"ok": False, "changed": str(exc)})
        print(f"culturepark: dataset verify: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print_json({"ok": True, "files": done.files, "sources_checked": done.sources_checked, "notes": done.notes})
        return 0
    for note in done.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"ok: {done.files} files and {done.sources_checked} source(s) match the manifest")
    return 0
