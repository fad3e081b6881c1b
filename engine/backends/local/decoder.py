"""The local model's decode loop: continuous batching over one padded batch, and each
conversation's keys and values kept between its turns.

Why (measured on 2 CPU cores, Gemma 3 270M, quickstart-sized prompts):
- `generate` ran a batch until its longest row ended, so a 10-token reply waited for a 40-token
  one; here a row leaves as soon as it is done and a waiting request joins at the next step.
- Every turn re-read the whole history (prefill of 8 × 370 tokens: 5.7 s); here a new request
  starts from the stored keys and values of its longest finished beginning (`kv.PrefixStore`).
- Sampling with `torch.multinomial` over the 262k-token vocabulary took 6 ms a row (an
  exponential draw per token); the inverse CDF draws from the same distribution in 0.3 ms.
(The weights themselves: `model.convert_for_cpu_inference`.)

Sampling is the model's distribution at the request's temperature (no top-k/top-p), each row
with its own generator seeded from its request, so a reply does not depend on its batch-mates'
random draws. `no_repeat_ngram_size` bans, as `generate` does, any token that would repeat an
n-gram of the whole sequence, prompt included.
"""
from __future__ import annotations

import hashlib
import queue
import threading
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

import torch

from culturepark.engine.backends.base import Completion, Request
from culturepark.engine.backends.local.batcher import length_chunks
from culturepark.engine.backends.local.kv import BatchKV, PrefixStore
from culturepark.engine.backends.local.model import cache_keyword
from culturepark.engine.errors import FatalBackendError
from culturepark.engine.records import Usage

PREFIX_TOKENS_KEPT = 32_000  # finished rows' keys and values kept: 37 KB a token for Gemma 3 270M (1.2 GB)
STOP_TAIL_TOKENS = 8  # a stop sequence is looked for in the text of the last tokens
_CLOSE = object()


class NgramBan:
    """The tokens that would complete an n-gram already in the sequence, kept up to date as it
    grows (`generate`'s no_repeat_ngram_size re-scans the sequence at every step). It holds the
    sequence's last n-1 tokens itself, so a step costs one lookup and one insert."""

    def __init__(self, n: int, tokens: list[int]) -> None:
        self.n = n
        self.seen: dict[tuple[int, ...], set[int]] = {}
        for i in range(len(tokens) - n + 1):
            self.seen.setdefault(tuple(tokens[i:i + n - 1]), set()).add(tokens[i + n - 1])
        self.tail = tokens[max(0, len(tokens) - n + 1):]  # the n-1 tokens a next token would follow

    def banned(self) -> set[int]:
        if len(self.tail) < self.n - 1:
            return set()
        return self.seen.get(tuple(self.tail), set())

    def push(self, token: int) -> None:
        if len(self.tail) == self.n - 1:
            self.seen.setdefault(tuple(self.tail), set()).add(token)
        self.tail.append(token)
        del self.tail[:max(0, len(self.tail) - self.n + 1)]


@dataclass(slots=True)
class Row:
    """One request being decoded (hot state: a dataclass, not a model)."""

    request: Request
    future: Future[Completion]
    prompt_ids: list[int]
    stops: list[str]
    generator: torch.Generator | None
    ban: NgramBan | None
    reused: int = 0
    prefix: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # the reused keys and values, until admitted
    source: int | None = None  # the stored entry they came from
    generated: list[int] = field(default_factory=list)

    @property
    def tokens(self) -> list[int]:
        return self.prompt_ids + self.generated


@dataclass
class DecoderStats:
    """What the loop did, for tests and `bench local`."""

    steps: int = 0
    admitted: list[int] = field(default_factory=list)  # rows that joined together, per admission
    prompt_tokens: int = 0
    reused_tokens: int = 0
    peak_rows: int = 0


class Decoder:
    """A worker thread that decodes every submitted request in one batch rows join and leave."""

    def __init__(self, model: Any, tokenizer: Any, *, max_batch: int = 16, wait_ms: float = 5.0,
                 eos_ids: set[int] | None = None, lock: threading.Lock | None = None,
                 prefix_tokens: int = PREFIX_TOKENS_KEPT) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.body = getattr(model, model.base_model_prefix)
        self.max_batch, self.wait_s = max_batch, wait_ms / 1000.0
        self.lock = lock or threading.Lock()
        cfg = model.config
        self.layer_types: list[str] | None = getattr(cfg, "layer_types", None)
        self.window: int | None = getattr(cfg, "sliding_window", None)
        self.softcap: float | None = getattr(cfg, "final_logit_softcapping", None)
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.cache_arg = cache_keyword(self.body)
        self.sdpa = getattr(cfg, "_attn_implementation", "sdpa") == "sdpa"
        self.head = model.get_output_embeddings()
        self.eos_ids = eos_ids or {tokenizer.eos_token_id}
        self.store = PrefixStore(prefix_tokens)
        self.stats = DecoderStats()
        self.rows: list[Row] = []
        self.batch: BatchKV | None = None
        self._calls = 0
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None

    # -- the caller's side --------------------------------------------------
    def submit(self, request: Request, prompt: str) -> Future[Completion]:
        """Queue a request (its prompt already rendered); the future holds its `Completion`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="culturepark-decode", daemon=True)
            self._thread.start()
        future: Future[Completion] = Future()
        self._inbox.put((request, prompt, future))
        return future

    def close(self) -> None:
        if self._thread is not None:
            self._inbox.put(_CLOSE)
            self._thread.join(timeout=60)
            self._thread = None

    # -- the worker thread --------------------------------------------------
    def _loop(self) -> None:
        while True:
            arrivals = self._take()
            if arrivals is None:
                self._fail_all(FatalBackendError("local_decoder_closed"))
                return
            try:
                with self.lock, torch.inference_mode():
                    if arrivals:
                        self._admit(arrivals)
                    if self.rows:
                        self._step()
            except Exception as exc:  # e.g. out of memory: the rows in flight fail, the loop goes on
                failure = FatalBackendError(f"local_generate_error: {str(exc).splitlines()[0][:120]}")
                for _, _, future in arrivals:  # those that had not joined yet
                    _settle(future, error=failure)
                self._fail_all(failure)

    def _take(self) -> list[tuple[Request, str, Future[Completion]]] | None:
        """New requests for the next step: when idle, wait for one and gather more for `wait_s`;
        when busy, whatever has arrived, up to the free rows."""
        room = self.max_batch - len(self.rows)
        taken: list[Any] = []
        if not self.rows:
            taken.append(self._inbox.get())
            deadline = time.monotonic() + self.wait_s
            try:
                while len(taken) < room and taken[-1] is not _CLOSE:
                    taken.append(self._inbox.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                pass
        else:
            while len(taken) < room and not self._inbox.empty():
                taken.append(self._inbox.get_nowait())
        if any(t is _CLOSE for t in taken):
            return None
        return [t for t in taken if not t[2].cancelled()]

    def _fail_all(self, exc: Exception) -> None:
        for row in self.rows:
            _settle(row.future, error=exc)
        self.rows, self.batch = [], None

    # -- admission: reuse, prefill, merge ------------------------------------
    def _admit(self, arrivals: list[tuple[Request, str, Future[Completion]]]) -> None:
        joiners = [self._new_row(*a) for a in arrivals]
        joiners.sort(key=_to_read)
        for chunk in length_chunks(joiners, _to_read, slack=32):
            kv = BatchKV.from_prefixes([r.prefix for r in chunk], len(self.body.layers), self.kv_heads, self.head_dim,
                                       self.model.dtype, self.model.device)
            new = [r.prompt_ids[r.reused:] for r in chunk]
            width = max(len(x) for x in new)
            ids = torch.full((len(chunk), width), self.tokenizer.pad_token_id, dtype=torch.long)
            valid = torch.zeros(len(chunk), width, dtype=torch.bool)
            positions = torch.zeros(len(chunk), width, dtype=torch.long)
            for i, (row, x) in enumerate(zip(chunk, new)):
                ids[i, width - len(x):] = torch.tensor(x)
                valid[i, width - len(x):] = True
                positions[i, width - len(x):] = torch.arange(row.reused, len(row.prompt_ids))
            logits = self._forward(kv, ids, valid, positions)
            if self.batch is None:
                self.batch = kv
            else:
                self.batch.extend(kv)
            for row in chunk:
                row.prefix = None
            self.rows.extend(chunk)
            self.stats.admitted.append(len(chunk))
            self._sampled(len(self.rows) - len(chunk), logits)
        self.stats.peak_rows = max(self.stats.peak_rows, len(self.rows))

    def _new_row(self, request: Request, prompt: str, future: Future[Completion]) -> Row:
        ids = self.tokenizer(prompt)["input_ids"]
        reused, prefix, source = self.store.longest_prefix(ids)
        self.stats.prompt_tokens += len(ids)
        self.stats.reused_tokens += reused
        # Seeded from the request, its prompt and a call counter: reproducible for a fixed
        # schedule, and a retried request samples anew instead of repeating the rejected reply.
        self._calls += 1
        generator = None
        if request.temperature > 0:
            digest = hashlib.blake2b(f"{self._calls}:{request.seed}:{prompt}".encode(), digest_size=8).digest()
            generator = torch.Generator().manual_seed(int.from_bytes(digest, "big"))
        ban = NgramBan(request.no_repeat_ngram_size, ids) if request.no_repeat_ngram_size else None
        return Row(request, future, ids, list(request.stop or []), generator, ban, reused, prefix, source)

    # -- one step -----------------------------------------------------------
    def _step(self) -> None:
        assert self.batch is not None
        rows = len(self.rows)
        ids = torch.tensor([[r.generated[-1]] for r in self.rows], dtype=torch.long)
        positions = torch.tensor([[len(r.prompt_ids) + len(r.generated) - 1] for r in self.rows])
        logits = self._forward(self.batch, ids, torch.ones(rows, 1, dtype=torch.bool), positions)
        self.stats.steps += 1
        self._sampled(0, logits)

    def _forward(self, kv: BatchKV, ids: torch.Tensor, valid: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Read `ids` (new slots of every row of `kv`); the next-token logits of each row."""
        dev = self.model.device
        kv.append_slots(valid.to(dev), positions.to(dev))
        masks = kv.masks(ids.shape[1], self.window)
        if not self.sdpa:  # eager attention adds its mask
            masks = {k: torch.zeros(m.shape, dtype=self.model.dtype, device=dev).masked_fill(
                ~m, torch.finfo(self.model.dtype).min) for k, m in masks.items()}
        mask: Any = masks if self.layer_types else masks["sliding_attention" if self.window else "full_attention"]
        hidden = self.body(input_ids=ids.to(dev), attention_mask=mask, position_ids=positions.to(dev),
                           use_cache=True, **{self.cache_arg: kv}).last_hidden_state[:, -1]
        kv.advance()
        logits = self.head(hidden).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        out: torch.Tensor = logits
        return out

    def _sampled(self, first: int, logits: torch.Tensor) -> None:
        """Pick the next token of rows `first:` from their logits; then finish the rows that are done."""
        for i, row in enumerate(self.rows[first:]):
            scores = logits[i]
            if row.ban is not None and (banned := row.ban.banned()):
                scores[list(banned)] = float("-inf")
            if row.generator is None:
                token = int(torch.argmax(scores))
            else:
                # inverse CDF: the same distribution as torch.multinomial, 20x cheaper over 262k tokens
                cdf = torch.cumsum(torch.softmax(scores / row.request.temperature, -1), 0)
                draw = torch.rand(1, generator=row.generator) * cdf[-1]
                token = min(int(torch.searchsorted(cdf, draw)), len(cdf) - 1)
            row.generated.append(token)
            if row.ban is not None:
                row.ban.push(token)
        done = [i for i, r in enumerate(self.rows) if r.future.cancelled() or self._finished(r)]
        if not done:
            return
        assert self.batch is not None
        for i in done:
            row = self.rows[i]
            if not row.future.cancelled():
                self.store.put(row.tokens[:-1], self.batch.row_kv(i), replaces=row.source)
                _settle(row.future, result=self._completion(row))
        keep = [i for i in range(len(self.rows)) if i not in set(done)]
        self.rows = [self.rows[i] for i in keep]
        if keep:
            self.batch.keep(keep)
        else:
            self.batch = None

    def _finished(self, row: Row) -> bool:
        if row.generated[-1] in self.eos_ids or len(row.generated) >= row.request.max_tokens:
            return True
        if not row.stops:
            return False
        tail = self.tokenizer.decode(row.generated[-STOP_TAIL_TOKENS:], skip_special_tokens=True)
        return any(s in tail for s in row.stops)

    def _completion(self, row: Row) -> Completion:
        raw = self.tokenizer.decode(row.generated, skip_special_tokens=True)
        finish = "stop" if row.generated[-1] in self.eos_ids else "length"
        cut = min((i for s in row.stops if (i := raw.find(s)) >= 0), default=-1)
        text = raw[:cut] if cut >= 0 else raw
        if cut >= 0:
            finish = "stop"
        n_completion = len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0
        return Completion(text=text, finish_reason=finish, usage=Usage(len(row.prompt_ids), n_completion, row.reused))


def _settle(future: Future[Completion], result: Completion | None = None, error: Exception | None = None) -> None:
    """Resolve a request's future unless its caller gave up on it (cancelled from the event loop's
    thread, possibly between a check here and the call: that must not fail the batch)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            assert result is not None, "_settle needs a result or an error"
            future.set_result(result)
    except InvalidStateError:
        pass


def _to_read(row: Row) -> int:
    """Tokens a joining row's prefill reads: its prompt beyond the reused beginning."""
    return len(row.prompt_ids) - row.reused
