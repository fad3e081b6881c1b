"""Trainers: OpenAI jobs against the sim server (kill + resume), LoRA on the embedded model."""
import json
import signal
import subprocess
import sys

import orjson
import pytest

from tests.conftest import run_cli, wait_for

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


def _stats(url):
    import urllib.request
    with urllib.request.urlopen(url.removesuffix("/v1") + "/stats") as r:
        return json.loads(r.read())


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
    assert _stats(url)["by_path"]["jobs_created"] == 1  # the restart followed the same job
    assert _stats(url)["by_path"]["files_uploaded"] == 1
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
    assert json.loads(res.stdout)["resumed_existing_job"] is True and _stats(url)["by_path"]["jobs_created"] == 1


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
    res = run_cli("train", "lora", str(_sft(tmp_path / "sft.jsonl")), "--out", str(tmp_path / "a"), "--qlora")
    assert res.returncode == 2 and "needs a CUDA GPU" in res.stderr and "Drop --qlora" in res.stderr


@pytest.mark.slow
def test_lora_lowers_the_loss_and_the_adapter_changes_what_the_model_says(tmp_path):
    pytest.importorskip("peft")
    import asyncio

    from culturepark.engine.backends.base import Request
    from culturepark.engine.backends.local.backend import LocalBackend
    from culturepark.engine.chat_templates import render_chat

    sft = _sft(tmp_path / "sft.jsonl", n=4)
    out = tmp_path / "adapter"
    res = run_cli("train", "lora", str(sft), "--out", str(out), "--max-steps", "24", "--r", "8", "--lr", "1e-3",
                  "--json", timeout=900)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["last_loss"] < summary["first_loss"] / 3
    assert (out / "adapter_config.json").exists() and (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert len((out / "metrics.jsonl").read_bytes().splitlines()) == 24

    prompts = [render_chat([{"role": "system", "content": "You are a Chinese person."}, {"role": "user", "content": q},
                            {"role": "assistant", "content": a}], "gemma")[0] for q, a in QA]

    async def answers(adapter):
        backend = LocalBackend(adapter=adapter, max_batch=4)
        await backend.start()
        outs = await asyncio.gather(*(backend.complete(Request(prompt=p, max_tokens=16, temperature=0.0))
                                      for p in prompts))
        await backend.aclose()
        return [o.text for o in outs]

    base, tuned = asyncio.run(answers(None)), asyncio.run(answers(str(out)))
    assert base != tuned
    hits = lambda texts: sum(a.split()[0].strip(",.") in t for t, (_, a) in zip(texts, QA))  # noqa: E731
    assert hits(tuned) > hits(base)
