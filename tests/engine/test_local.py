"""The embedded model (slow: loads Gemma 3 270M; the first load converts it, ~1 min)."""
import asyncio
import json

import pytest

from culturepark.engine.backends.base import Request
from tests.conftest import run_cli

pytestmark = pytest.mark.slow
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def backend():
    from culturepark.engine.backends.local.backend import LocalBackend

    b = LocalBackend(max_batch=8, batch_wait_ms=50)
    b.load_sync()
    return b


def test_requests_decode_together_with_their_own_stops_and_max_tokens(backend):
    reqs = [Request(prompt="Wei: In China, family", max_tokens=12, temperature=0.0, stop=["\n"]),
            Request(prompt="Lily: In America, people", max_tokens=4, temperature=0.0),
            Request(prompt="A list of fruits: apple, banana,", max_tokens=20, temperature=0.0, stop=[","])]

    async def go():
        return await asyncio.gather(*(backend.complete(r) for r in reqs))

    out = asyncio.run(go())
    assert backend.decoder.stats.admitted[-1] == 3  # the three joined the batch together
    assert "\n" not in out[0].text and out[0].text.strip()
    assert out[1].usage.completion_tokens <= 4 and out[1].finish_reason == "length"
    assert "," not in out[2].text and out[2].finish_reason == "stop"


def test_label_answers_are_ranked_in_one_pass_as_an_unpadded_reading_would_rank_them(backend):
    """Left-padded batches must not change a prompt's label scores; seeds vary a sampled choice."""
    import torch

    prompts = ["Is Paris the capital of France? Answer (yes or no):",
               "A long preamble about many things, then a question. Is the sea made of stone? "
               "Think about it carefully before you answer. Answer (yes or no):"]
    greedy = [Request(prompt=p, max_tokens=3, temperature=0.0, choices=("yes", "no")) for p in prompts]
    picked = backend.choose(greedy)
    shared = [f"You judge posts the way people of a culture would. Is this offensive?\n\nPost: {p}\nAnswer:"
              for p in ("Hello", "You are all wonderful people, thank you for the lovely evening!")]
    ids = [backend._tokenizer(p)["input_ids"] for p in prompts + shared]
    padded = backend._next_token_logprobs(ids[:2])  # one batch: the short prompt is left-padded
    prompts, padded = prompts + shared, padded + backend._next_token_logprobs(ids[2:])  # read once, then per row
    tok, model = backend._tokenizer, backend._hf_model
    picked = picked + backend.choose([Request(prompt=p, max_tokens=3, temperature=0.0, choices=("yes", "no"))
                                      for p in shared])
    for p, completion, in_batch in zip(prompts, picked, padded):
        with torch.inference_mode():
            logits = model(**tok(p, return_tensors="pt")).logits[0, -1].float().log_softmax(-1)
        assert torch.allclose(in_batch, logits, atol=1e-3)
        alone = [torch.logsumexp(logits[backend._label_tokens(c)], 0) for c in ("yes", "no")]
        assert completion.text == ("yes", "no")[int(torch.argmax(torch.stack(alone)))]
        assert completion.finish_reason == "stop" and completion.usage.completion_tokens == 1
    sampled = backend.choose([Request(prompt=prompts[0], max_tokens=3, temperature=5.0, seed=s,
                                      choices=("yes", "no")) for s in range(40)])
    assert {c.text for c in sampled} == {"yes", "no"}  # a hot softmax over two labels: both come up
    again = backend.choose([Request(prompt=prompts[0], max_tokens=3, temperature=5.0, seed=s,
                                    choices=("yes", "no")) for s in range(40)])
    assert [c.text for c in again] == [c.text for c in sampled]  # the same seed, the same pick


def test_no_repeat_ngram_keeps_a_transcript_from_being_copied_word_for_word(backend):
    line = "the quick brown fox jumps over the lazy dog near the old river bank"
    prompt = f"Anna: {line}\nBen: {line}\nAnna: {line}\nBen:"
    free, guarded = backend.generate([Request(prompt=prompt, max_tokens=20, temperature=0.0, stop=["\n"])]), \
        backend.generate([Request(prompt=prompt, max_tokens=20, temperature=0.0, stop=["\n"],
                                  no_repeat_ngram_size=8)])
    assert line in free[0].text  # the small base model copies the turn, as it does in conversations
    assert line not in guarded[0].text and guarded[0].text.strip()


def test_quickstart_runs_offline_on_the_embedded_model(tmp_path):
    """Every conversation ends done, with no network: any HTTP(S) request would go to a dead proxy.

    The 270M model sometimes echoes its partner (the echo check then fails that conversation,
    issue 23), so the documented recovery — `--resume --retry-failed` — may run, at most twice.
    """
    out = tmp_path / "q"
    offline = {"HF_HUB_OFFLINE": "1", "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
               "NO_PROXY": ""}
    res = run_cli("run", "quickstart", "--out", str(out), "--limit", "2", "--json", env=offline, timeout=900)
    for _ in range(2):
        if res.returncode != 1:
            break
        res = run_cli("run", "quickstart", "--out", str(out), "--limit", "2", "--json", "--resume",
                      "--retry-failed", env=offline, timeout=900)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["done"] == 2 and summary["failed"] == 0 and summary["incomplete"] == 0
    header, *records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {b["kind"] for b in header["backends"].values()} == {"local"}
    turns = [r for r in records if r["type"] == "turn"]
    assert len(turns) == summary["turns"] >= 6
    assert all(t["text"].strip() and t["usage"]["prompt_tokens"] > 0 and t["usage"]["completion_tokens"] > 0
               for t in turns)  # real generations, counted by the model's own tokenizer
    rep = run_cli("replay", str(out))
    assert "Wei:" in rep.stdout and "Lily:" in rep.stdout
