"""What a person sees on the terminal: structlog events and a rich progress bar (TTY only)."""
from __future__ import annotations

import asyncio
import sys
from typing import Any, TextIO

import orjson
import structlog

from culturepark.engine.stage import distinct


def make_logger(stream: TextIO | None = None) -> Any:
    stream = stream or sys.stderr
    return structlog.wrap_logger(
        structlog.PrintLogger(stream),
        processors=[structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="%H:%M:%S"),
                    structlog.dev.ConsoleRenderer(colors=stream.isatty())])


def cache_share(stats: Any, suffix: str = "cached  ") -> str:
    """The share of prompt tokens the provider's prompt cache served so far ("62% cached"); nothing
    while no token was cached (the embedded model, a provider without caching, the first turns)."""
    if not stats.cached_prompt_tokens:
        return ""
    return f"{stats.cached_prompt_tokens / stats.prompt_tokens:.0%} {suffix}"


def rejected_share(stats: Any, suffix: str = "  ") -> str:
    """What replies billed but rejected (an echo, an unparseable answer) cost so far, and their share
    of the spend ("rejected $0.0123 (4%)"); nothing while none was rejected."""
    spent = stats.rejected_cost_usd
    if not spent:
        return ""
    return f"rejected ${spent:.4f} ({spent / stats.cost_usd:.0%}){suffix}" if stats.cost_usd else ""


async def progress_bar(scheduler: Any, total: int, already: int, stream: TextIO | None = None) -> None:
    """Refresh twice a second from the scheduler's counters; nothing on the hot path."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(file=stream or sys.stderr)
    columns = [TextColumn("[bold]conversations"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("run", total=total, completed=already, info="")
        while True:
            s = scheduler.stats
            eps = distinct(scheduler.endpoints)
            limited = sum(e.stats.rate_limited for e in eps)
            rate = s.turns / s.elapsed_s if s.elapsed_s > 0 else 0.0
            cost = f"${s.cost_usd:.4f}" if s.cost_unknown_turns == 0 else f"≥${s.cost_usd:.4f}"
            info = (f"{rate:6.1f} turns/s  {s.prompt_tokens + s.completion_tokens:,} tok  "
                    f"{cache_share(s)}429s {limited}  {cost}  {rejected_share(s)}failed {s.failed}")
            bar.update(task, completed=already + s.done + s.failed, info=info)
            try:
                await asyncio.sleep(0.5)
            except asyncio.CancelledError:
                s = scheduler.stats
                bar.update(task, completed=already + s.done + s.failed, info=info)
                raise


async def progress_lines(scheduler: Any, total: int, already: int, stream: TextIO | None = None,
                         every_s: float = 5.0) -> None:
    """For logs and pipes (no terminal to redraw a bar on): one line every `every_s` seconds, and a
    last one when the run ends, with done/failed/turns/ETA."""
    out = stream or sys.stderr

    def line() -> None:
        s = scheduler.stats
        finished = s.done + s.failed
        left = total - already - finished
        rate = finished / s.elapsed_s if s.elapsed_s > 0 else 0.0
        eta = f"{left / rate:.0f}s" if rate > 0 and left > 0 else ("0s" if left <= 0 else "?")
        out.write(f"progress: {already + finished}/{total} conversations ({s.done} done, {s.failed} failed "
                  f"this session), {s.turns} turns, {cache_share(s, 'of prompt tokens cached, ')}"
                  f"{rejected_share(s, ', ')}"
                  f"{s.elapsed_s:.0f}s elapsed, ETA {eta}\n")
        out.flush()
    while True:
        try:
            await asyncio.sleep(every_s)
        except asyncio.CancelledError:
            line()
            raise
        line()


def print_json(obj: Any) -> None:
    """One JSON line on stdout (for `--json`: a machine reads it)."""
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()
