"""The embedded local model as a `Backend`: generation through the continuous-batching decoder,
labels ranked by their next-token scores.

Loading lives in `model.py`, the decode loop in `decoder.py` (its keys and values in `kv.py`),
the label scorer's micro-batching in `batcher.py`. Chat requests to a model tuned with a
chat template are rendered with that template (`chat_templates.render_prompt`, the trainer's
rendering) and stop at its end-of-answer marker; an untuned base model gets a transcript.
"""
from __future__ import annotations

import asyncio
import copy
import dataclasses
import hashlib
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any

from culturepark.engine.backends.base import Completion, Request
from culturepark.engine.backends.local.batcher import MicroBatcher, length_chunks
from culturepark.engine.backends.local.decoder import Decoder
from culturepark.engine.backends.local.model import EMBEDDED_MODEL, cache_keyword, load_model
from culturepark.engine.backends.local.packed import convert_for_cpu_inference
from culturepark.engine.chat_templates import END_OF_ANSWER, Template, render_prompt
from culturepark.engine.pricing import Price
from culturepark.engine.records import Usage

LABEL_SCORES_KEPT = 8192  # (prompt, labels) → label scores: a few floats each
MIN_SHARED_TOKENS = 16  # a shorter common prefix is not worth a pass of its own
PREFIXES_KEPT = 4  # prompt beginnings whose keys and values are kept between batches


def messages_as_transcript(messages: list[dict[str, str]]) -> str:
    """Fallback for chat requests to a base model without a chat template."""
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"


class LocalBackend:
    """`Backend` for the embedded model; `model` is 'gemma3-270m' or a local HF directory."""

    name = "local"
    can_stream = checks_reachable = False  # in-process: nothing to reach, replies come whole

    def __init__(self, model: str = EMBEDDED_MODEL, *, device: str = "auto", max_batch: int = 16,
                 batch_wait_ms: float = 5.0, price: Price | None = Price(0.0, 0.0),
                 adapter: str | None = None, template: Template | None = None, weights: str = "fp16") -> None:
        self.base_model = model
        self.adapter = adapter
        self.template = template
        self.model = f"{model}+lora:{adapter}" if adapter else model  # also the cache key's model
        self.device = device
        self.price = price
        self._hf_model: Any = None
        self._tokenizer: Any = None
        self._label_cache: dict[str, list[int]] = {}
        self._cache_name = ""  # the model's keyword for its KV cache (`cache_keyword`), once loaded
        self._prefixes: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._label_scores: OrderedDict[tuple[str, tuple[str, ...]], tuple[Any, int]] = OrderedDict()
        # (prompt, labels) → each label's probability as the answer (`Request.label_probs`), when asked
        self._label_probs: OrderedDict[tuple[str, tuple[str, ...]], dict[str, float] | None] = OrderedDict()
        self.batcher = MicroBatcher(self._choose_locked, max_batch=max_batch, wait_ms=batch_wait_ms)
        self.batch_wait_ms = batch_wait_ms
        self.weights = weights
        self.decoder: Decoder | None = None
        self._model_lock = threading.Lock()  # the decoder's thread and the label scorer's share the model

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "local", "model": self.model, "adapter": self.adapter, "template": self.template,
                               "device": self.device, "max_batch": self.batcher.max_batch, "weights": self.weights}
        if self.price is not None:
            out["price"] = self.price.describe()
        return out

    async def start(self) -> None:
        if self._hf_model is None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self.load_sync)

    def load_sync(self) -> None:
        if self._hf_model is None:
            model, self._tokenizer, self.device = load_model(self.base_model, self.device, adapter=self.adapter)
            self._hf_model = convert_for_cpu_inference(model, self.weights)
            self._cache_name = cache_keyword(model)

    async def complete(self, request: Request) -> Completion:
        if self._hf_model is None:
            await self.start()
        t0 = time.perf_counter()
        if request.choices:
            completion = await self.batcher.submit(request)
        else:
            completion = await asyncio.wrap_future(self._submit(request))
        completion.latency_ms = (time.perf_counter() - t0) * 1000.0
        return completion

    # -- labels (the micro-batcher's worker thread) ---------------------------
    def _choose_locked(self, requests: list[Request]) -> list[Completion]:
        with self._model_lock:
            return self.choose(requests)

    def choose(self, requests: list[Request]) -> list[Completion]:
        """Requests whose answer is a label: one forward pass per distinct prompt, no decoding.

        Why: a short-answer evaluation spent most of its time decoding and re-asking — a small base
        model often answers neither "yes" nor "no", and each unparseable reply was retried. Here
        each label is scored by the log-probability of its first token (any of its spellings: with
        or without a leading space, capitalised) right after the prompt, as lm-evaluation-harness
        ranks choices. Greedy at temperature 0; else sampled from the labels' softmax at that
        temperature with the request's seed, so seeds still differ. The same prompt under several
        seeds is read once (its label scores are kept for the next `LABEL_SCORES_KEPT` prompts),
        and prompts go through in length order, so little is padding.
        """
        import torch

        prompts = [self._prompt_text(r) for r in requests]
        keys = [(p, r.choices or ()) for p, r in zip(prompts, requests)]
        wanted = {k for k, r in zip(keys, requests) if r.label_probs and k not in self._label_probs}
        labels_of: dict[str, set[tuple[str, ...]]] = {}
        for p, labels in keys:
            if (p, labels) not in self._label_scores or (p, labels) in wanted:
                labels_of.setdefault(p, set()).add(labels)
        tokens = {p: self._tokenizer(p)["input_ids"] for p in sorted(labels_of, key=len)}
        shared = _common_prefix(list(tokens.values())) if len(tokens) > 1 else 0
        for chunk in length_chunks(list(tokens), len):
            for p, logp in zip(chunk, self._next_token_logprobs([tokens[p] for p in chunk], shared)):
                for labels in labels_of[p]:
                    self._label_scores[(p, labels)] = (torch.stack(
                        [torch.logsumexp(logp[self._label_tokens(c)], 0) for c in labels]), len(tokens[p]))
                    if (p, labels) in wanted:
                        self._label_probs[(p, labels)] = self._probs(tokens[p], logp, labels)
        for cache in (self._label_scores, self._label_probs):
            while len(cache) > LABEL_SCORES_KEPT:
                cache.popitem(last=False)
        results = []
        for r, key in zip(requests, keys):
            p = key[0]
            ranked, n_prompt = self._label_scores[key]
            self._label_scores.move_to_end(key)
            if r.temperature > 0:
                gen = torch.Generator().manual_seed(int.from_bytes(
                    hashlib.blake2b(f"{r.seed}:{p}".encode(), digest_size=4).digest(), "big"))
                pick = int(torch.multinomial(torch.softmax(ranked / r.temperature, 0), 1, generator=gen))
            else:
                pick = int(torch.argmax(ranked))
            results.append(Completion(text=key[1][pick], finish_reason="stop", usage=Usage(n_prompt, 1),
                                      label_probs=self._label_probs.get(key) if r.label_probs else None))
        return results

    def _probs(self, ids: list[int], logp: Any, labels: tuple[str, ...]) -> dict[str, float] | None:
        """Each label's probability as the model's answer (its spellings' summed, not renormalised): the
        probability of its first token that is not blank, at the answer position. A tokenizer that splits
        digits writes " 3" as a blank then "3", so after "Answer:" most of the mass is on the blank: a label
        gets P(its token) + P(blank) × P(its token | prompt + blank) — the second read in one more pass,
        the rule the OpenAI-compatible path follows (`logprobs.py`: the first non-blank position). None when
        two labels begin with the same token ("1" and "10" on such a tokenizer): one position cannot tell
        them apart."""
        firsts = [self._answer_tokens(c) for c in labels]
        if any(a & b for i, a in enumerate(firsts) for b in firsts[i + 1:]):
            return None
        probs = [float(logp[sorted(f)].exp().sum()) for f in firsts]
        blanks = sorted({t for c in labels for t in self._label_tokens(c) if self._blank(t)})
        if blanks:
            for b, after in zip(blanks, self._next_token_logprobs([[*ids, b] for b in blanks], 0)):
                pb = float(logp[b].exp())
                probs = [x + pb * float(after[sorted(f)].exp().sum()) for x, f in zip(probs, firsts)]
        return dict(zip(labels, probs))

    def _blank(self, token: int) -> bool:
        return not self._tokenizer.decode([token]).strip()

    def _answer_tokens(self, label: str) -> set[int]:
        """The first token that is not blank of each spelling of a label."""
        out = set()
        for s in {label, f" {label}", label.capitalize(), f" {label.capitalize()}"}:
            ids = self._tokenizer(s, add_special_tokens=False)["input_ids"]
            out.update(next(([t] for t in ids if not self._blank(t)), []))
        return out

    def _next_token_logprobs(self, ids: list[list[int]], shared: int | None = None) -> list[Any]:
        """The log-probabilities of the next token after each prompt (its token ids). The prompts of
        one evaluation share their instructions, so the `shared` tokens they all begin with (default:
        as many as these prompts share) are read once — and kept for the next batch with the same
        beginning — and their keys and values reused by every row (prefix caching). The rest of each
        row is left-padded into one batch, its positions counting its real tokens only."""
        import torch

        if shared is None:
            shared = len(ids[0]) if len(ids) > 1 else 0  # a lone prompt has no beginning to share
        shared = min(_common_prefix(ids), shared)
        if shared < MIN_SHARED_TOKENS:
            shared = 0
        rows, width = len(ids), max(len(x) for x in ids) - shared
        inputs = torch.full((rows, width), self._tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros(rows, shared + width, dtype=torch.long)
        mask[:, :shared] = 1
        positions = torch.zeros(rows, width, dtype=torch.long)
        for r, x in enumerate(ids):
            n = len(x) - shared
            inputs[r, width - n:] = torch.tensor(x[shared:])
            mask[r, shared + width - n:] = 1
            positions[r, width - n:] = torch.arange(shared, shared + n)
        dev = self._hf_model.device
        reuse: dict[str, Any] = {}
        with torch.inference_mode():
            if shared:
                cache = copy.deepcopy(self._prefix_cache(tuple(ids[0][:shared])))
                cache.batch_repeat_interleave(rows)
                reuse = {self._cache_name: cache, "cache_position": torch.arange(shared, shared + width, device=dev)}
            logits = self._hf_model(input_ids=inputs.to(dev), attention_mask=mask.to(dev),
                                    position_ids=positions.to(dev), logits_to_keep=1, **reuse).logits[:, -1, :]
        return list(torch.log_softmax(logits.float(), -1))

    def _prefix_cache(self, prefix: tuple[int, ...]) -> Any:
        """The keys and values of a prompt beginning, computed once (a few MB for a few kept)."""
        import torch

        if prefix not in self._prefixes:
            out = self._hf_model(input_ids=torch.tensor([prefix], device=self._hf_model.device), use_cache=True,
                                 logits_to_keep=1)  # (its logits are not needed: one position)
            self._prefixes[prefix] = out[self._cache_name]
            while len(self._prefixes) > PREFIXES_KEPT:
                self._prefixes.popitem(last=False)
        self._prefixes.move_to_end(prefix)
        return self._prefixes[prefix]

    def _label_tokens(self, label: str) -> list[int]:
        """The first token of each spelling of a label the model might write next."""
        if label not in self._label_cache:
            spellings = {label, f" {label}", label.capitalize(), f" {label.capitalize()}"}
            ids = {self._tokenizer(s, add_special_tokens=False)["input_ids"][0] for s in spellings if s.strip()}
            self._label_cache[label] = sorted(ids)
        return self._label_cache[label]

    # -- generation (the decoder's thread) -------------------------------------
    def generate(self, requests: list[Request]) -> list[Completion]:
        """Decode `requests` from a plain thread (tests, benches): the same loop `complete` feeds."""
        futures = [self._submit(r) for r in requests]
        return [f.result() for f in futures]

    def _submit(self, request: Request) -> Future[Completion]:
        """To the decoder; a chat request to a tuned model also stops at its end-of-answer marker."""
        if request.prompt is None and self.template in END_OF_ANSWER:
            request = dataclasses.replace(request, stop=(request.stop or []) + [END_OF_ANSWER[self.template]])
        future: Future[Completion] = self._decoder_ready().submit(request, self._prompt_text(request))
        return future

    def _decoder_ready(self) -> Decoder:
        if self.decoder is None:
            self.load_sync()
            tok, model = self._tokenizer, self._hf_model
            eos = model.generation_config.eos_token_id
            eos_ids = {tok.eos_token_id, *(eos if isinstance(eos, list) else [eos] if eos is not None else [])}
            if self.template in END_OF_ANSWER:  # the end-of-answer marker, when it is one token, ends a row like EOS
                end_id = tok.convert_tokens_to_ids(END_OF_ANSWER[self.template])
                if isinstance(end_id, int) and end_id != tok.unk_token_id:
                    eos_ids.add(end_id)
            self.decoder = Decoder(model, tok, max_batch=self.batcher.max_batch, wait_ms=self.batch_wait_ms,
                                   eos_ids=eos_ids, lock=self._model_lock)
        return self.decoder

    def _prompt_text(self, r: Request) -> str:
        if r.prompt is not None:
            prompt: str = r.prompt
            return prompt
        if self.template:
            # a rendered BOS is left to the tokenizer (which adds one), as in training
            rendered: str = render_prompt(r.messages or [], self.template, self._tokenizer)
            return rendered.removeprefix(self._tokenizer.bos_token or "\0")
        return messages_as_transcript(r.messages or [])

    async def aclose(self) -> None:
        await self.batcher.aclose()
        if self.decoder is not None:
            await asyncio.to_thread(self.decoder.close)
            self.decoder = None


def _common_prefix(ids: list[list[int]]) -> int:
    """Tokens every row begins with, leaving each row at least its last token to read."""
    limit = min(len(x) for x in ids) - 1
    n = 0
    while n < limit and all(x[n] == ids[0][n] for x in ids):
        n += 1
    return n
