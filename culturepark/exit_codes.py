"""The one place where errors become exit codes (the tree itself: `culturepark.engine.errors`).

    0    everything done
    1    some conversations failed, the run stopped early, or a crash (a traceback is printed)
    2    bad input: one clear line on stderr, nothing written (InputError and its subclasses)
    130  interrupted (Ctrl-C); the log is intact, continue with --resume
"""
from __future__ import annotations

from culturepark.engine.errors import AccountError, CultureparkError, InputError, LogWriteError, RequestFailed

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def exit_code(exc: CultureparkError) -> int | None:
    """The exit code for an error that reached the command line, printed as one line: bad
    input is 2; a write error, a provider refusing the account or a request given up after its
    retries (outside a conversation, which would just end failed) stopped the stage: 1.
    None: a crash, shown with its traceback."""
    if isinstance(exc, InputError):
        return EXIT_BAD_INPUT
    if isinstance(exc, (LogWriteError, AccountError, RequestFailed)):  # stopped on purpose: --resume continues
        return EXIT_FAILED
    return None


__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "InputError", "exit_code"]
