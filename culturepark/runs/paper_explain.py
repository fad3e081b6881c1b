"""`culturepark paper --explain`: every setting the chain uses, the paper's value, ours, and where
they differ, why. One table (`SETTINGS`); the text and the JSON are both printed from it, and each
"ours" is read from the object the chain really runs with (the scenario, the refine preset, the
LoRA preset, the chain's own settings), so the table cannot drift from the code.

The paper's values are read from the original code: Scarelette/CulturePark at commit a5dc627
(`main_cross.py`, `main.py`, `data_process.py`, `directly_generation.py`, `llama_finetune.py`,
`hofstede_test.py`) and Scarelette/CultureLLM for moderation."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from culturepark.runs.paper_settings import PaperChain


@dataclass(frozen=True)
class Setting:
    """One setting: where it acts, the paper's value, how ours is read, and why ours differs (when it does)."""

    step: str
    name: str
    paper: str
    ours: Callable[[PaperChain], str]
    why: str

    def row(self, chain: PaperChain) -> dict[str, Any]:
        ours = self.ours(chain)
        differs = ours != self.paper
        return {"step": self.step, "setting": self.name, "paper": self.paper, "ours": ours, "differs": differs,
                "why": self.why if differs else ""}


def _scenario(chain: PaperChain) -> Any:
    from culturepark.runs.paper_chain import _scenario as scenario_of
    return scenario_of(chain, chain.run_keys()[0])


def _refine(chain: PaperChain) -> Any:
    from culturepark.trainers.refine import RefineConfig
    return RefineConfig().with_preset("paper")


def _lora(chain: PaperChain) -> Any:
    from culturepark.trainers.lora import resolve_settings
    # the LoRA preset's own epochs unless --epochs (train_epochs() is the OpenAI job's count otherwise)
    return resolve_settings("paper", epochs=float(chain.epochs) if chain.epochs else None)


def _chain() -> Any:
    from culturepark.runs import paper_chain
    return paper_chain


def _words(values: Sequence[str]) -> str:
    return " + ".join(values)


def _dedup(chain: PaperChain) -> str:
    d = _refine(chain).dedup
    return f"{d.method}, keep the {d.keep} member" if d.enabled else "off"


SETTINGS: tuple[Setting, ...] = (
    Setting("conversations", "model", "gpt-3.5-turbo-0613",
            lambda c: c.model or _scenario(c).backend.model,
            "the paper scenarios name gpt-3.5-turbo (the -0613 snapshot is retired); --model picks any"),
    Setting("conversations", "temperature / max tokens", "0.7 / 168",
            lambda c: f"{_scenario(c).sampling.temperature:g} / {_scenario(c).sampling.max_tokens}", ""),
    Setting("conversations", "protocol versions", "v1 + v2", lambda c: _words(c.versions), "--versions chose fewer"),
    Setting("conversations", "modes", "cross + in", lambda c: _words(c.modes),
            "cross-cultural only by default (half the cost); --modes cross in runs the original's both"),
    Setting("conversations", "delegate's answer", "the country's average answer (Avg row)",
            lambda c: {"sample": "one sampled respondent's answer", "mean": "the country's average answer (Avg row)",
                       "mode": "the modal answer", "control": "none (control)"}[_scenario(c).stance_policy],
            "a sampled real respondent per conversation gives the culture's spread, not one answer per item"),
    Setting("refine", "refiner", "gpt-4", lambda c: c.refiner, "--refiner chose another"),
    Setting("refine", "extraction", "per utterance", lambda c: f"per {_refine(c).extract_per}", ""),
    Setting("refine", "verification", "on", lambda c: "on" if _refine(c).verify else "off", ""),
    Setting("refine", "de-duplication", "kmeans, keep the longest member", _dedup, ""),
    Setting("export", "opinions of v1 and v2", "merged per item, then 20 passes",
            lambda c: f"merged per item, then {_refine(c).export.paper_passes} passes", ""),
    Setting("train", "model fine-tuned", "gpt-3.5-turbo-0613",
            lambda c: c.tune_model if c.trainer == "openai" else "local:gemma3-270m (LoRA)",
            "OpenAI no longer fine-tunes gpt-3.5-turbo-0613: a chain naming it is refused before anything is spent"),
    Setting("train", "LoRA epochs / lr / r / alpha", "6 / 0.0002 / 64 / 16",
            lambda c: (lambda s: f"{s.epochs:g} / {s.lr:g} / {s.r} / {s.alpha}")(_lora(c)), "--epochs chose others"),
    Setting("train", "LoRA schedule / loss / group_by_length", "constant, no warm-up / whole text / on",
            lambda c: (lambda s: f"{s.schedule}{', no warm-up' if not s.warmup_ratio else ''} / "
                                 f"{'whole text' if s.loss_on == 'all' else 'answers only'} / "
                                 f"{'on' if s.group_by_length else 'off'}")(_lora(c)), ""),
    Setting("eval", "prompt style", "paper", lambda c: _chain().EVAL_PROMPT_STYLE, ""),
    Setting("eval", "Hofstede constant C", "50", lambda c: f"{_chain().HOFSTEDE_C:g}", ""),
    Setting("eval", "Hofstede MAS second weight", "25", lambda c: "35",
            "VSM13's manual gives 35; the original's 25 is a slip (ours follows the manual); "
            "`eval hofstede --mas-weight 25 --paper-arabic` re-scores a finished eval the original's way"),
    Setting("eval", "moderation parse", "paper", lambda c: _chain().MODERATION_PARSE,
            "strict reading with re-asks does not count an evasive answer as a label; `eval moderation --parse "
            "paper` gives the original's figure beside the strict one"),
    Setting("eval", "moderation rows per set", "all (the test sets)",
            lambda c: "all" if c.moderation_limit is None else str(c.moderation_limit),
            "a sample per set keeps the chain's eval cost bounded; --moderation-limit 0 for all"),
    Setting("eval", "seeds", "one run (none stated)", lambda c: str(c.seeds),
            "mean ± std over seeds says how much a figure moves"),
    Setting("rows", "baselines", "GPT-4, Gemini and other models",
            lambda c: _words(c.baselines) if c.baselines else "none",
            "each baseline costs its own evals; --baseline SPEC … adds them as rows"),
    Setting("rows", "direct generation", "10 reasons from a chatbot, Question/Answer frame",
            lambda c: "10 reasons from a chatbot, Question/Answer frame" if c.direct else "not run",
            "another run, refinement and fine-tune per culture; --direct adds the row"),
    Setting("rows", "ablation", "Generate / +Verify / +Diversify",
            lambda c: "Generate / +Verify / +Diversify" if c.ablation else "not run",
            "two more refinements and fine-tunes per culture; --ablation adds the rows"),
)


def explain(chain: PaperChain) -> list[dict[str, Any]]:
    """The table as rows: step, setting, paper, ours, differs, why."""
    return [s.row(chain) for s in SETTINGS]


def explain_text(rows: list[dict[str, Any]]) -> str:
    """The table as aligned text; a differing setting is marked `≠` and its reason follows."""
    head = {"step": "step", "setting": "setting", "paper": "paper", "ours": "ours"}
    widths = [max(len(str(r[k])) for r in [*rows, head]) for k in head]

    def line(cells: list[str], mark: str, why: str) -> str:
        text = "  ".join(c.ljust(w) for c, w in zip(cells, widths))
        return f"{mark} {text}  {why}".rstrip()
    out = [line(["step", "setting", "paper", "ours"], " ", "why ours differs")]
    out += [line([r["step"], r["setting"], r["paper"], r["ours"]], "≠" if r["differs"] else " ", r["why"])
            for r in rows]
    differing = sum(r["differs"] for r in rows)
    out.append(f"{differing} of {len(rows)} settings differ from the paper's (≠)")
    return "\n".join(out)
