"""Flags derived from settings models (`culturepark.commands.options`): what a user types reaches
the model field by field, a flag left out means the model's default (or the preset's), and the
models' bounds and choices are checked while parsing (exit 2, one line)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from culturepark import cli
from culturepark.commands.options import model_from_args
from culturepark.engine.chat_templates import PromptCard
from culturepark.runs.paper_chain import PaperChain
from culturepark.runs.prepare import RunOptions
from culturepark.trainers import lora
from culturepark.trainers.summaries import LoraSummary


def _parse(*argv: str) -> Any:
    return cli.build_parser().parse_args(list(argv))


def test_paper_flags_build_the_chain_with_its_defaults() -> None:
    chain = model_from_args(PaperChain, _parse("paper", "--culture", "Chinese", "German", "--out", "o"))
    assert chain == PaperChain(cultures=["Chinese", "German"], out=Path("o"))


def test_paper_flags_reach_every_field() -> None:
    chain = model_from_args(PaperChain, _parse(
        "paper", "--culture", "Arabic", "--out", "o", "--model", "m", "--refiner", "r", "--base-url", "u",
        "--versions", "v2", "--modes", "cross", "in", "--limit", "4", "--rpm", "60", "--tpm", "1000", "--trainer", "lora", "--tune-model", "t",
        "--epochs", "2", "--lora-max-steps", "5", "--seeds", "1", "--moderation-limit", "0", "--data-dir", "d",
        "--poll-s", "0.5", "--baseline", "openai:gpt-4", "gemini:gemini-2.0-flash", "--direct", "--ablation"))
    assert chain.model_dump() == {
        "cultures": ["Arabic"], "out": Path("o"), "model": "m", "refiner": "r", "base_url": "u", "versions": ["v2"],
        "modes": ["cross", "in"], "limit": 4, "rpm": 60.0, "tpm": 1000.0, "trainer": "lora", "tune_model": "t", "epochs": 2,
        "lora_max_steps": 5, "seeds": 1, "moderation_limit": None, "data_dir": Path("d"), "poll_s": 0.5,
        "baselines": ["openai:gpt-4", "gemini:gemini-2.0-flash"], "direct": True, "ablation": True}


def test_run_flags_fill_run_options() -> None:
    opts = model_from_args(RunOptions, _parse(
        "run", "quickstart", "--out", "o", "--resume", "--retry-failed", "--limit", "3", "--base-url", "u",
        "--model", "m", "--rpm", "5", "--concurrency", "2", "--arm", "a=local:x", "--arm", "b=local:y",
        "--service-tier", "flex"))
    assert opts == RunOptions(out=Path("o"), resume=True, retry_failed=True, limit=3, base_url="u", model="m",
                              rpm=5.0, concurrency=2, arms=["a=local:x", "b=local:y"], service_tier="flex")
    assert model_from_args(RunOptions, _parse("run", "quickstart")) == RunOptions()


@pytest.mark.parametrize(("flags", "expected"), [
    ([], lora.LoraSettings()),
    (["--preset", "paper"], lora.resolve_settings("paper")),
    (["--preset", "paper", "--epochs", "1", "--no-double-quant", "--schedule", "cosine"],
     lora.resolve_settings("paper", epochs=1.0, double_quant=False, schedule="cosine")),
    (["--lr", "1e-3", "--target-modules", "q_proj, v_proj", "--qlora", "--merge", "--seed", "4", "--template", "chatml",
      "--base", "/hf", "--device", "cpu"],
     lora.LoraSettings(lr=1e-3, target_modules=["q_proj", "v_proj"], qlora=True, merge=True, seed=4,
                       template="chatml", base="/hf", device="cpu")),
    (["--target-modules", "default"], lora.LoraSettings(target_modules="default")),
    (["--loss-on", "all", "--group-by-length", "--template", "paper"],
     lora.LoraSettings(loss_on="all", group_by_length=True, template="paper")),
])
def test_train_lora_flags_become_the_settings(flags: list[str], expected: lora.LoraSettings,
                                              monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[lora.LoraSettings] = []

    def fake_train(sft_file: Path, out: Path, settings: lora.LoraSettings, *rest: Any, **kw: Any) -> LoraSummary:
        seen.append(settings)
        return LoraSummary(base=settings.base, sft_file=str(sft_file), examples=1, steps=1, trainable_params=1,
                           first_loss=1.0, last_loss=0.5, seconds_per_step=0.1, device="cpu", schedule="constant",
                           target_modules=[], compute_dtype_used="fp32", prompt_card=PromptCard(template="chatml"),
                           settings=settings.model_dump(mode="json"))

    monkeypatch.setattr(lora, "train_lora", fake_train)
    assert cli.main(["train", "lora", str(tmp_path / "sft.jsonl"), "--out", str(tmp_path / "o"), *flags]) == 0
    assert seen == [expected]


def test_a_flag_left_out_under_a_preset_keeps_the_preset_value() -> None:
    s = lora.resolve_settings("paper")
    assert (s.schedule, s.max_grad_norm, s.double_quant, s.epochs) == ("constant", 0.3, False, 6.0)


@pytest.mark.parametrize("argv", [
    ["paper", "--culture", "C", "--out", "o", "--epochs", "0"],
    ["paper", "--culture", "C", "--out", "o", "--moderation-limit", "-1"],
    ["paper", "--culture", "C", "--out", "o", "--versions", "v3"],
    ["paper", "--culture", "C", "--out", "o", "--poll-s", "0"],
    ["train", "lora", "f", "--out", "o", "--dropout", "-0.1"],
    ["train", "lora", "f", "--out", "o", "--template", "nope"],
    ["train", "lora", "f", "--out", "o", "--batch-size", "1.5"],
    ["refine", "r", "--export-format", "csv"],
])
def test_model_bounds_and_choices_are_checked_while_parsing(argv: list[str], capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and argv[-2] in err


def test_help_states_the_models_defaults_and_preset_values(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["train", "lora", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "peak learning rate (default 0.0002)" in text
    assert "gradient clipping (default 1.0; paper preset: 0.3)" in text


def test_sim_server_flags_fill_the_sim_config() -> None:
    from culturepark.commands.options import model_values
    from culturepark.commands.sim_server import SIM_FLAGS
    from culturepark.testing.sim_config import SimConfig

    args = _parse("sim-server", "--rpm", "60", "--charge", "usage", "--prompt-cache", "--fail-rate", "0.5",
                  "--seed", "3", "--flex-latency-factor", "2")
    cfg = SimConfig(**model_values(SimConfig, args, SIM_FLAGS))
    assert (cfg.rpm, cfg.charge, cfg.prompt_cache, cfg.fail_rate, cfg.seed, cfg.flex_latency_factor) == (
        60.0, "usage", True, 0.5, 3, 2.0)
    assert SimConfig(**model_values(SimConfig, _parse("sim-server"), SIM_FLAGS)) == SimConfig()
