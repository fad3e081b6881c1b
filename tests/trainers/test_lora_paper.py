"""`train lora`'s paper-compatible settings: pad = EOS where the tokenizer has none, the constant
schedule without warm-up, the loss on the whole text, batches grouped by length, and the original's
`### System … ### Answer:` text — run end to end on a tiny random Llama with no pad token, on CPU."""
import json
import random
import re

import pytest

from culturepark.engine.chat_templates import render_chat, render_prompt
from culturepark.trainers.lora import batch_order, resolve_settings, schedule_text
from tests.conftest import run_cli

MSGS = [{"role": "system", "content": "You are a Chinese chatbot that knows Chinese culture very well."},
        {"role": "user", "content": "Do you agree that family comes first?"},
        {"role": "assistant", "content": "Yes, family comes first for me."}]


def test_the_paper_template_is_the_originals_training_text():
    prompt, answer = render_chat(MSGS, "paper")
    assert prompt + answer == ("### System: You are a Chinese chatbot that knows Chinese culture very well. Question: "
                               "Do you agree that family comes first?\n ### Answer: Yes, family comes first for me.")
    assert prompt == render_prompt(MSGS[:-1], "paper")  # the local backend prompts a tuned model the same way
    assert render_prompt(MSGS[1:2], "paper") == "### Question: Do you agree that family comes first?\n ### Answer:"


def test_the_preset_runs_a_constant_schedule_on_the_whole_text_grouped_by_length():
    s = resolve_settings("paper")
    assert (s.loss_on, s.group_by_length, s.warmup_ratio, s.schedule) == ("all", True, 0.0, "constant")
    assert schedule_text(s, 100) == "constant"
    assert schedule_text(resolve_settings(None), 100) == "linear warm-up (3 steps) then cosine"
    assert resolve_settings("paper", loss_on="answer").loss_on == "answer"  # a flag still overrides


@pytest.mark.parametrize("n", [7, 230, 1000])
def test_grouped_batches_cover_every_row_once_and_hold_similar_lengths(n):
    rng = random.Random(n)
    lengths = [rng.randint(5, 500) for _ in range(n)]
    plain = batch_order(lengths, 4, False, random.Random(1))
    grouped = batch_order(lengths, 4, True, random.Random(1))
    assert sorted(plain) == sorted(grouped) == list(range(n))
    assert lengths[grouped[0]] == max(lengths)  # the longest batch first
    for start in range(0, n, 200):  # within each group of 50 batches, longest first
        block = [lengths[j] for j in grouped[start:start + 200]]
        assert block == sorted(block, reverse=True)

    def pad_waste(order):
        return sum(max(lengths[j] for j in order[i:i + 4]) * len(order[i:i + 4]) - sum(lengths[j] for j in
                   order[i:i + 4]) for i in range(0, n, 4))
    assert pad_waste(grouped) <= pad_waste(plain)


@pytest.fixture
def tiny_llama(tmp_path):
    """A random Llama-architecture model of a few thousand weights and a word-level tokenizer with
    BOS, EOS and UNK but no pad token (as Llama-2's), generated here, offline."""
    pytest.importorskip("peft")
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    text = " ".join(m["content"] for m in MSGS) + " ### System : Question Answer No , not at all ."
    words = sorted(set(re.findall(r"\w+|[^\w\s]", text)))
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    assert tok.pad_token is None
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=1, eos_token_id=2, pad_token_id=None)
    base = tmp_path / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(base)
    tok.save_pretrained(base)
    return base, tok


def test_the_whole_text_loss_labels_every_token_but_the_answer_only_one_masks_the_prompt(tiny_llama):
    from culturepark.trainers.lora import encode, pad_as_eos

    _, tok = tiny_llama
    (ids, labels), = encode([MSGS], tok, "paper", 256, "all")
    assert labels == ids and ids[0] == tok.bos_token_id
    (ids2, labels2), = encode([MSGS], tok, "paper", 256, "answer")
    assert ids2 == ids and 0 < sum(lab != -100 for lab in labels2) < len(ids) // 2
    assert pad_as_eos(tok) and tok.pad_token_id == tok.eos_token_id == 2 and not pad_as_eos(tok)


def test_the_paper_preset_trains_a_tiny_llama_without_a_pad_token_on_cpu(tmp_path, tiny_llama):
    base, _ = tiny_llama
    sft = tmp_path / "sft.jsonl"
    rows = [MSGS, [*MSGS[:2], {"role": "assistant", "content": "No, not at all."}]]
    sft.write_text("".join(json.dumps({"messages": m}) + "\n" for m in rows * 3))
    out = tmp_path / "adapter"
    res = run_cli("train", "lora", str(sft), "--base", str(base), "--preset", "paper", "--template", "paper",
                  "--max-steps", "4", "--device", "cpu", "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["padded_with_eos"] is True
    assert summary["schedule"] == "constant" and summary["steps"] == 4 and summary["examples"] == 6
    assert summary["settings"]["loss_on"] == "all" and summary["settings"]["group_by_length"] is True
    assert summary["settings"]["preset"] == "paper" and summary["prompt_card"]["template"] == "paper"
    assert sorted(summary["target_modules"]) == ["q_proj", "v_proj"]  # peft's default for Llama, as the original
    lrs = [json.loads(line)["lr"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lrs == [2e-4] * 4  # no warm-up
    assert (out / "adapter_config.json").exists()
