"""`culturepark eval phenomena RUN_DIR --model JUDGE`: the paper's phenomena analysis.

Per finished conversation a judge answers the original's two questions, in prompts of our own
with the same intent: did the delegate's stance shift during the conversation, and do the turns
show cross-cultural understanding? Rates per culture and overall, with counts and the number of
unparseable verdicts. This is `--construct ours` (the default): one verdict per conversation on
whether the opinion changed.

`--construct paper` measures the original's construct instead (its phenomena_analysis.py): per
delegate turn after the first, with its prompts verbatim, whether the turn discusses the same topic
as the delegate's first reply (the *extend rate*) and whether it reflects cross-cultural
understanding (the *understanding ratio*), each asked once and read as it read them ('yes'
anywhere in the answer). The result names its construct (`mode`) and its questions, so the two never mix.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from culturepark.agents.meta import ConversationMeta
from culturepark.benchmarks import judge
from culturepark.benchmarks.eval_run import EvalSettings, digest, run_items
from culturepark.benchmarks.fidelity import Finished, load_run
from culturepark.benchmarks.results import PhenomenaResult
from culturepark.engine.backends.base import Request
from culturepark.engine.batch import BatchItem, BatchResult
from culturepark.engine.errors import InputError

YES_NO = ("yes", "no")
SHIFT, UNDERSTANDING = "stance_shift", "understanding"  # the two questions, as the result names them
SYSTEM = "You analyse conversations between people of different cultures. You answer strictly."
Construct = Literal["ours", "paper"]
EXTEND, UNDERSTANDING_RATIO = "extend", "understanding_ratio"  # the paper construct's two rates
PAPER_EXTEND = "Do the two paragraphs discuss same topic? Just answer with Yes, or No"
PAPER_UNDERSTAND = "Does the paragraph reflect cross-cultural understanding? Just answer with Yes, or No"


def questions(meta: ConversationMeta, transcript: str) -> dict[str, str]:
    d, c = meta.participants.delegate, meta.participants.main_contact
    head = (f"Conversation between {d.name} ({d.person}) and {c.name} ({c.person}) about: "
            f"{meta.item_text}\n\n{transcript}\n\n")
    return {SHIFT: head + f"Did {d.name} change their opinion on the topic during this conversation?",
            UNDERSTANDING: head + ("Do the speakers show understanding of each other's culture — explaining, "
                                     "asking about or acknowledging cultural differences?")}


def paper_items(rows: list[Finished], rendering: str) -> list[BatchItem]:
    """The original's questions per delegate turn after the first: same topic as the first reply?
    cross-cultural understanding? One attempt each (no validator): it read whatever came back."""
    items = []
    for row, meta in rows:
        said = [t["text"] for t in row["turns"] if t["speaker"] == meta.participants.delegate.name]
        for k, text in enumerate(said[1:], start=1):
            for name, user in ((EXTEND, f"{PAPER_EXTEND}\nParagraph 1: {said[0]}\nParagraph 2: {text}"),
                               (UNDERSTANDING_RATIO, f"{PAPER_UNDERSTAND}\nParagraph: {text}")):
                req = Request.instruction("You are a helpful assistant.", user, "Answer:", rendering, 8, 0.0,
                                          stop=["\n"])
                items.append(BatchItem(f"{row['id']}|t{k}|{name}", req))
    return items


def paper_label(res: BatchResult | None) -> str | None:
    """The original's reading: 'yes' anywhere in the answer; a call that failed is unparseable."""
    if res is None or res.text is None:
        return None
    return "yes" if "yes" in res.text.lower() else "no"


async def evaluate(run_dir: Path, out: Path, settings: EvalSettings,
                   say: Callable[[str], None] | None = None, construct: Construct = "ours") -> PhenomenaResult:
    rendering = settings.backend().rendering  # a bad spec fails before any data is read
    _, rows = load_run(Path(run_dir))
    if not rows:
        raise InputError(f"phenomena: {run_dir} has no finished conversation yet")
    if construct == "paper":
        return await _evaluate_paper(run_dir, out, settings, rows, rendering, say)
    items = []
    for row, meta in rows:
        transcript = "\n".join(f"{t['speaker']}: {t['text']}" for t in row["turns"])
        for name, text in questions(meta, transcript).items():
            items.append(BatchItem(f"{row['id']}|{name}", judge.ask(SYSTEM, text, YES_NO, rendering),
                                   judge.validator(YES_NO)))
    header = {"task": "phenomena", "source": str(run_dir), "source_hash": digest([r.row["id"] for r in rows])}
    results, info = await run_items(out, items, settings, header, say)
    verdicts: dict[str, dict[str, list[str | None]]] = defaultdict(lambda: defaultdict(list))
    for row, meta in rows:
        for name in (SHIFT, UNDERSTANDING):
            res = results.get(f"{row['id']}|{name}")
            label = judge.label_of(res.text, YES_NO) if res and res.text is not None else None
            verdicts[meta.culture][name].append(label)
            verdicts["all"][name].append(label)
    report = PhenomenaResult(**info.model_dump(), mode="ours", source=str(run_dir), conversations=len(rows),
                             by_culture={c: {q: judge.shares(v, YES_NO) for q, v in qs.items()}
                                         for c, qs in sorted(verdicts.items())})
    report.write(out / "phenomena.json")
    return report


async def _evaluate_paper(run_dir: Path, out: Path, settings: EvalSettings, rows: list[Finished], rendering: str,
                          say: Callable[[str], None] | None) -> PhenomenaResult:
    """Extend rate and understanding ratio over delegate turns (per culture and overall)."""
    items = paper_items(rows, rendering)
    header = {"task": "phenomena", "construct": "paper", "source": str(run_dir),
              "source_hash": digest([r.row["id"] for r in rows])}
    results, info = await run_items(out, items, settings, header, say)
    verdicts: dict[str, dict[str, list[str | None]]] = defaultdict(lambda: defaultdict(list))
    for item in items:
        cid, _turn, name = item.id.rsplit("|", 2)
        culture = next(meta.culture for row, meta in rows if row["id"] == cid)
        for key in (culture, "all"):
            verdicts[key][name].append(paper_label(results.get(item.id)))
    report = PhenomenaResult(**info.model_dump(), mode="paper", source=str(run_dir), conversations=len(rows),
                             by_culture={c: {q: judge.shares(v, YES_NO) for q, v in qs.items()}
                                         for c, qs in sorted(verdicts.items())})
    report.write(out / "phenomena.json")
    return report
