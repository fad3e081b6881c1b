"""`culturepark bench local`: generation speed of the embedded model, alone and in a batch.

Single-stream: requests one after another (batch 1). Batched: the same number of distinct
prompts submitted concurrently, so they decode together in the continuous batch. Greedy
decoding with no stop sequence, so every request generates the same number of tokens and the
rates compare like with like. `--weights` compares the CPU weight formats in one sitting.
"""
from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import orjson

from culturepark.engine.backends.base import Request
from culturepark.engine.backends.local.backend import LocalBackend

TOPICS = ["family", "work", "religion", "science", "neighbours", "money", "education", "tradition",
          "freedom", "health", "friends", "government", "children", "history", "honesty", "duty"]


def prompts(n: int) -> list[str]:
    return [f"Wei and Lily talk about {TOPICS[i % len(TOPICS)]} in their cultures.\n"
            f"Lily: What do you think about {TOPICS[i % len(TOPICS)]}?\nWei:" for i in range(n)]


async def measure(batch_size: int, max_tokens: int, device: str, weights: str = "fp16",
                  single_n: int = 4) -> dict[str, Any]:
    backend = LocalBackend(device=device, max_batch=batch_size, batch_wait_ms=20, weights=weights)
    await backend.start()
    reqs = [Request(prompt=p, max_tokens=max_tokens, temperature=0.0) for p in prompts(batch_size)]
    await backend.complete(reqs[0])  # warm-up (first call allocates)
    t0 = time.perf_counter()
    single_tokens = 0
    for r in reqs[:single_n]:
        single_tokens += (await backend.complete(r)).usage.completion_tokens
    single_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = await asyncio.gather(*(backend.complete(r) for r in reqs))
    batched_s = time.perf_counter() - t0
    batched_tokens = sum(c.usage.completion_tokens for c in results)
    assert backend.decoder is not None
    stats = backend.decoder.stats
    await backend.aclose()
    single = single_tokens / single_s
    batched = batched_tokens / batched_s
    return {"single_tokens_per_s": round(single, 2), "batched_tokens_per_s": round(batched, 2),
            "speedup": round(batched / single, 2), "batch_size": batch_size,
            "joined_together": stats.admitted[-3:], "peak_rows": stats.peak_rows, "weights": weights,
            "max_tokens": max_tokens, "device": backend.device,
            "single_requests": single_n, "batched_tokens": batched_tokens}


def main(args: argparse.Namespace) -> int:
    result = asyncio.run(measure(args.batch_size, args.max_tokens, args.device, args.weights))
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        for k, v in result.items():
            print(f"{k:22s} {v}")
    return 0
