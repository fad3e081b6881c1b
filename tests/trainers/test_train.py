"""Trainers: OpenAI jobs against the sim server (kill + resume), LoRA on the embedded model."""
import json
import signal
import subprocess
import sys

import orjson
import pytest

from tests.conftest import run_cli, run_cli_here, sim_stats, wait_for

QA = [("What is your favourite colour?", "Ultramarine, like the sea near my grandmother's village."),
      ("What do you eat for breakfast?", "Steamed buns with red bean paste, every single morning."),
      ("Who taught you to cook?", "My uncle Bao, who ran a noodle stall for forty years."),
      ("Where do you spend holidays?", "In the mountains of Guilin, walking between the rice terraces.")]


def _sft(path, n=12):
    rows = [{"messages": [{"role": "system", "content": "You are a Chinese person."},
                          {"role": "user", "content": QA[i % 4][0]}, {"role": "assistant", "content": QA[i % 4][1]}]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_openai_job_is_followed_to_the_end_and_resumed_without_a_second_job(tmp_path, sim_process):
    url = sim_process("--finetune-polls", "60")
    sft = _sft(tmp_path / "sft.jsonl")
    out = tmp_path / "train"
    cmd = [sys.executable, "-m", "culturepark.cli", "train", "openai", str(sft), "--model", "gpt-4o-mini-2024-07-18",
           "--suffix", "cp", "--out", str(out), "--base-url", url, "--poll-s", "0.02", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state_file = out / "train.json"
    wait_for(lambda: state_file.exists() and orjson.loads(state_file.read_bytes()).get("status") == "running")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    state = json.loads(res.stdout)
    assert state["status"] == "succeeded" and state["fine_tuned_model"].startswith("ft:gpt-4o-mini")
    assert state["trained_tokens"] > 0 and state["examples"] == 12 and state["job_id"] == "ftjob-sim1"
    assert sim_stats(url)["by_path"]["jobs_created"] == 1  # the restart followed the same job
    assert sim_stats(url)["by_path"]["files_uploaded"] == 1
    assert "Step 3/60" in res.stderr  # events were shown


def test_a_crash_between_create_and_record_finds_the_job_instead_of_paying_twice(tmp_path, sim_process):
    url = sim_process("--finetune-polls", "2")
    sft = _sft(tmp_path / "sft.jsonl")
    out = tmp_path / "train"
    out.mkdir()
    from openai import OpenAI

    client = OpenAI(api_key="x", base_url=url)
    fid = client.files.create(file=sft.open("rb"), purpose="fine-tune").id
    client.fine_tuning.jobs.create(training_file=fid, model="gpt-4o-mini-2024-07-18")  # then the process died
    from culturepark.trainers.openai_jobs import check_hash
    (out / "train.json").write_text(json.dumps({"sft_file_hash": check_hash(sft), "file_id": fid}))
    res = run_cli("train", "openai", str(sft), "--model", "gpt-4o-mini-2024-07-18", "--out", str(out),
                  "--base-url", url, "--poll-s", "0.01", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["resumed_existing_job"] is True and sim_stats(url)["by_path"]["jobs_created"] == 1


def test_failed_job_and_invalid_file(tmp_path, sim_process):
    url = sim_process("--finetune-polls", "2", "--finetune-fail")
    res = run_cli("train", "openai", str(_sft(tmp_path / "sft.jsonl")), "--model", "m", "--out", str(tmp_path / "t"),
                  "--base-url", url, "--poll-s", "0.01", "--json")
    assert res.returncode == 1 and json.loads(res.stdout)["error"] == "injected failure"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": ""}]}) + "\n")
    res = run_cli("train", "openai", str(bad), "--model", "m", "--out", str(tmp_path / "t2"), "--base-url", url)
    assert res.returncode == 2 and "fails the fine-tuning format check" in res.stderr
    assert not (tmp_path / "t2").exists()


def test_qlora_without_cuda_stops_at_once_with_a_clear_message(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = run_cli_here("train", "lora", str(_sft(tmp_path / "sft.jsonl")), "--out", str(tmp_path / "a"), "--qlora")
    assert res.returncode == 2 and "needs a CUDA GPU" in res.stderr and "Drop --qlora" in res.stderr




def test_the_paper_preset_sets_the_original_qlora_values_and_flags_still_override():
    from culturepark.engine.errors import InputError
    from culturepark.trainers.lora import LoraSettings, lr_schedule, resolve_settings

    s = resolve_settings("paper", epochs=None, lr=None, max_grad_norm=0.5)
    assert (s.schedule, s.warmup_ratio, s.weight_decay, s.epochs, s.batch_size) == ("constant", 0.0, 0.001, 6.0, 4)
    assert (s.compute_dtype, s.double_quant, s.target_modules, s.device_map) == ("fp16", False, "default", "auto")
    assert s.max_grad_norm == 0.5 and s.preset == "paper"  # the explicit flag wins over the preset
    assert resolve_settings(None) == LoraSettings()
    with pytest.raises(InputError):
        resolve_settings("nope")
    constant = lr_schedule(s, 100)
    assert constant(0) == constant(99) == 2e-4  # flat from the first step: transformers' "constant" has no warm-up
    warm = lr_schedule(resolve_settings("paper", warmup_ratio=0.03), 100)
    assert warm(0) == pytest.approx(2e-4 / 3) and warm(3) == warm(99) == 2e-4  # a warm-up asked for: 3 % of steps
    cosine = lr_schedule(LoraSettings(), 100)
    assert cosine(99) < 1e-6 < cosine(50) < 2e-4


def test_chat_templates_render_what_the_trainer_masks_and_the_backend_prompts():
    from culturepark.engine.chat_templates import render_chat, render_prompt

    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
            {"role": "assistant", "content": "Hello."}]
    for template in ("gemma", "chatml", "llama2"):
        prompt, _completion = render_chat(msgs, template)
        assert prompt == render_prompt(msgs[:-1], template)  # training and generation see the same prompt
    assert render_chat(msgs, "llama2") == ("<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi? [/INST]", " Hello.</s>")
    assert render_chat(msgs, "gemma")[0] == "<start_of_turn>user\nBe brief.\n\nHi?<end_of_turn>\n<start_of_turn>model\n"


@pytest.mark.slow
def test_a_base_with_its_own_chat_template_trains_and_is_prompted_in_that_template():
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    from culturepark.engine.backends.local.model import embedded_cache_dir
    from culturepark.engine.chat_templates import render_chat, render_prompt
    from culturepark.trainers.lora import LoraSettings, encode, resolve_template

    tok = AutoTokenizer.from_pretrained(embedded_cache_dir(lambda _m: None))
    assert resolve_template(LoraSettings(base="/some/hf_dir"), tok) == "gemma"  # no template of its own
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>"
                         "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
    assert resolve_template(LoraSettings(base="/some/hf_dir"), tok) == "tokenizer"
    assert resolve_template(LoraSettings(), tok) == "gemma"  # the embedded model keeps Gemma's
    msgs = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
    prompt, completion = render_chat(msgs, "tokenizer", tok)
    assert prompt == render_prompt(msgs[:1], "tokenizer", tok) == "<bos><|user|>Hi?<|end|><|assistant|>"
    assert completion == "Hello.<|end|>"
    (ids, labels), = encode([msgs], tok, "tokenizer", 64)
    assert ids.count(tok.bos_token_id) == 1  # the rendered BOS is not doubled
    assert tok.decode([i for i, lab in zip(ids, labels) if lab != -100]) == "Hello.<|end|>"


@pytest.mark.slow
def test_the_answer_only_loss_equals_the_librarys_loss_on_the_same_batch():
    pytest.importorskip("peft")
    import torch
    from peft import LoraConfig, get_peft_model

    from culturepark.engine.backends.local.model import load_model
    from culturepark.trainers.lora import answer_loss, encode

    model, tok, _ = load_model("gemma3-270m", "cpu", say=lambda _m: None, eval_mode=False)
    model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    rows = encode([[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in QA],
                  tok, "gemma", 128)
    width = max(len(i) for i, _ in rows)
    ids = torch.tensor([i + [tok.pad_token_id] * (width - len(i)) for i, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in rows])
    with torch.no_grad():
        ours = answer_loss(model, ids, mask, labels)
        theirs = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
