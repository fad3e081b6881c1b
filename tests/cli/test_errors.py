"""Errors become exit codes in one place (`culturepark.exit_codes`); each case goes through `main`."""
from __future__ import annotations

import pytest

from culturepark import cli
from culturepark.engine.errors import (
    AccountError,
    CorruptLogError,
    InputError,
    LogError,
    LogWriteError,
    RateLimited,
    RequestFailed,
)
from culturepark.exit_codes import exit_code

CASES = [  # (raised inside a stage, exit code or None for "a crash: the exception propagates")
    (InputError("bad.yaml: seed: Input should be a valid integer"), 2),
    (LogError("runs/x is in use by a running run"), 2),
    (CorruptLogError("runs/x/log.jsonl:4: corrupt record"), 2),
    (LogWriteError("cannot append to runs/x/log.jsonl: No space left"), 1),
    (AccountError("invalid_key:http_401", "Incorrect API key provided"), 1),
    (RequestFailed("http_500", 3), 1),
    (RateLimited("http_429"), None),
    (RuntimeError("a bug in a backend"), None),
]


@pytest.mark.parametrize("error,code", CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_each_error_has_one_exit_code_and_one_line(monkeypatch, capsys, tmp_path, error, code):
    def fail(*_args):
        raise error
    monkeypatch.setattr("culturepark.commands.logs.export_run", fail)
    if code is None:
        with pytest.raises(type(error)):  # a crash keeps its traceback (Python exits 1)
            cli.main(["export", str(tmp_path)])
        return
    assert cli.main(["export", str(tmp_path)]) == code == exit_code(error)
    err = capsys.readouterr().err
    assert err == f"culturepark: error: {error}\n"  # exactly one line, no traceback
