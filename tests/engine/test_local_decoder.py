"""The local decode loop gives what `generate` gives, greedily, whatever joins or leaves its batch.

Slow: loads Gemma 3 270M. Each case drives the decoder's steps from the test's own thread
(`_admit`, `_step`), so which rows share a step is fixed by the test, not by timing.
"""
from concurrent.futures import Future

import pytest

from culturepark.engine.backends.base import Request

pytestmark = pytest.mark.slow
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

SHORT = "Wei: In China, family"
MEDIUM = "Interviewer: Do you agree that men make better political leaders than women do?\nHans:"
# past Gemma 3's 512-token sliding window, so the sliding layers' masks matter
LONG = "Interview transcript.\n" + "".join(f"Anna: Point {i} is that the family matters most.\n" for i in range(60)) + "Ben:"


@pytest.fixture(scope="module")
def loaded():
    from culturepark.engine.backends.local.backend import LocalBackend

    backend = LocalBackend(max_batch=8)
    backend.load_sync()
    return backend._hf_model, backend._tokenizer


def _reference(model, tok, prompt: str, n: int) -> str:
    """`generate`'s greedy continuation, one prompt alone (no padding, its own cache)."""
    enc = tok(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False, top_k=None, top_p=None)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def _decoder(model, tok):
    from culturepark.engine.backends.local.decoder import Decoder

    return Decoder(model, tok, eos_ids={-1})  # no EOS: every row runs to its max_tokens


def _drive(decoder, joins: dict[int, list[Request]]) -> list[Future]:
    """Admit `joins[k]` before step k, step until every row is done; the futures, in join order."""
    futures: list[Future] = []
    with torch.inference_mode():
        for k in range(10_000):
            for r in joins.get(k, []):
                futures.append(Future())
                decoder._admit([(r, r.prompt, futures[-1])])
            if not decoder.rows and k >= max(joins):
                return futures
            if decoder.rows:
                decoder._step()
    raise AssertionError("the decoder did not finish")


def test_rows_of_different_lengths_decode_as_each_would_alone(loaded):
    model, tok = loaded
    decoder = _decoder(model, tok)
    reqs = [Request(prompt=p, max_tokens=n, temperature=0.0) for p, n in ((SHORT, 12), (MEDIUM, 6), (LONG, 10))]
    with torch.inference_mode():
        futures = [Future() for _ in reqs]
        decoder._admit(list(zip(reqs, [r.prompt for r in reqs], futures)))
        while decoder.rows:
            decoder._step()
    assert decoder.stats.admitted == [2, 1]  # the two short prompts read in one padded pass, the long one alone
    for r, f in zip(reqs, futures):
        assert f.result().text == _reference(model, tok, r.prompt, r.max_tokens)
    assert decoder.stats.steps == 11  # the 12-token row; the others left the batch earlier


def test_a_row_that_joins_mid_batch_and_one_that_leaves_early_change_nobody_s_text(loaded):
    model, tok = loaded
    decoder = _decoder(model, tok)
    first, second, third = (Request(prompt=SHORT, max_tokens=20, temperature=0.0),
                            Request(prompt=MEDIUM, max_tokens=4, temperature=0.0),
                            Request(prompt=LONG, max_tokens=8, temperature=0.0))
    futures = _drive(decoder, {0: [first], 3: [second], 5: [third]})
    assert decoder.stats.peak_rows == 3
    for r, f in zip((first, second, third), futures):
        assert f.result().text == _reference(model, tok, r.prompt, r.max_tokens)


def test_a_conversation_s_next_turn_reads_only_its_new_tokens(loaded):
    """Turn n+1's prompt begins with turn n's prompt and reply: their keys and values are reused
    (reported as cached prompt tokens), and the reply is the one a fresh reading gives."""
    model, tok = loaded
    decoder = _decoder(model, tok)
    turn1 = Request(prompt=MEDIUM, max_tokens=10, temperature=0.0)
    reply = _drive(decoder, {0: [turn1]})[0].result()
    prompt2 = f"{MEDIUM}{reply.text}\nInterviewer: Why do you say so?\nHans:"
    turn2 = Request(prompt=prompt2, max_tokens=10, temperature=0.0)
    second = _drive(decoder, {0: [turn2]})[0].result()
    n_prompt1 = len(tok(MEDIUM)["input_ids"])
    assert second.usage.cached_tokens >= n_prompt1 and decoder.stats.reused_tokens == second.usage.cached_tokens
    assert second.usage.cached_tokens < second.usage.prompt_tokens
    assert second.text == _reference(model, tok, prompt2, 10)


def test_a_seeded_sample_does_not_depend_on_its_batch_mates(loaded):
    model, tok = loaded
    alone = _drive(_decoder(model, tok), {0: [Request(prompt=SHORT, max_tokens=12, temperature=0.9, seed=3)]})
    decoder = _decoder(model, tok)
    crowded = _drive(decoder, {0: [Request(prompt=SHORT, max_tokens=12, temperature=0.9, seed=3),
                                   Request(prompt=SHORT + " life", max_tokens=12, temperature=0.9, seed=4)]})
    assert crowded[0].result().text == alone[0].result().text


def test_a_model_without_sliding_layers_decodes_as_generate_does(loaded):
    """Any causal LM directory can be the local model: a tiny random Llama (one 4-D mask, no window)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tok = loaded
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    model = LlamaForCausalLM(config).eval()
    decoder = _decoder(model, tok)
    reqs = [Request(prompt=p, max_tokens=6, temperature=0.0) for p in (SHORT, MEDIUM)]
    futures = _drive(decoder, {0: reqs[:1], 2: reqs[1:]})
    for r, f in zip(reqs, futures):
        assert f.result().text == _reference(model, tok, r.prompt, 6)


def test_a_cancelled_request_leaves_the_batch_and_the_others_go_on(loaded):
    model, tok = loaded
    decoder = _decoder(model, tok)
    keep, drop = (Request(prompt=SHORT, max_tokens=10, temperature=0.0),
                  Request(prompt=MEDIUM, max_tokens=10, temperature=0.0))
    futures = [Future(), Future()]
    with torch.inference_mode():
        decoder._admit([(keep, keep.prompt, futures[0]), (drop, drop.prompt, futures[1])])
        decoder._step()
        assert futures[1].cancel()  # the caller gave up (asyncio cancels the concurrent future)
        decoder._step()
        assert len(decoder.rows) == 1
        while decoder.rows:
            decoder._step()
    assert futures[0].result().text == _reference(model, tok, SHORT, 10)


def test_a_failed_step_fails_its_requests_and_the_loop_serves_the_next(loaded, monkeypatch):
    from culturepark.engine.errors import FatalBackendError

    model, tok = loaded
    decoder = _decoder(model, tok)
    real_forward = decoder._forward
    calls = iter([RuntimeError("out of memory"), None])

    def failing_once(*args):
        if (exc := next(calls, None)) is not None:
            raise exc
        return real_forward(*args)

    monkeypatch.setattr(decoder, "_forward", failing_once)
    try:
        first = decoder.submit(Request(prompt=SHORT, max_tokens=4, temperature=0.0), SHORT)
        assert isinstance(first.exception(timeout=60), FatalBackendError)
        assert "out of memory" in str(first.exception())
        second = decoder.submit(Request(prompt=SHORT, max_tokens=4, temperature=0.0), SHORT)
        assert second.result(timeout=60).text == _reference(model, tok, SHORT, 4)
    finally:
        decoder.close()
