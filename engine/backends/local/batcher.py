"""Micro-batching for label scoring: concurrent requests whose answer is a label share one pass.

Requests are collected for a few milliseconds (or until `max_batch`) and run as one batch
in a worker thread, so the event loop stays free and many conversations share the CPU/GPU.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from culturepark.engine.backends.base import Completion, Request


@dataclass(slots=True)
class _Pending:
    request: Request
    future: asyncio.Future[Completion]


class MicroBatcher:
    """Collect requests for up to `wait_ms` (or `max_batch`) and run them as one batch."""

    def __init__(self, run_batch: Callable[[list[Request]], list[Completion]], max_batch: int = 16,
                 wait_ms: float = 5.0) -> None:
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000.0
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="culturepark-generate")
        self.batches: list[int] = []

    async def submit(self, request: Request) -> Completion:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._loop())
        fut: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(request, fut))
        return await fut

    async def _loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.wait_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            live = [p for p in batch if not p.future.done()]
            if not live:
                continue
            self.batches.append(len(live))
            try:
                results = await loop.run_in_executor(self._executor, self.run_batch,
                                                     [p.request for p in live])
            except Exception as exc:  # a failed batch fails its requests, not the loop
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            for p, res in zip(live, results):
                if not p.future.done():
                    p.future.set_result(res)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._executor.shutdown(wait=False, cancel_futures=True)


T = TypeVar("T")


def length_chunks(items: list[T], size: Callable[[T], int], max_spread: float = 1.5, slack: int = 0) -> list[list[T]]:
    """`items` (sorted by `size`) cut where the largest would exceed `max_spread` × the smallest
    (+ `slack`): a batch is padded to its longest row, so similar lengths waste little compute."""
    chunks: list[list[T]] = []
    for item in items:
        if chunks and size(item) <= max_spread * max(1, size(chunks[-1][0])) + slack:
            chunks[-1].append(item)
        else:
            chunks.append([item])
    return chunks
