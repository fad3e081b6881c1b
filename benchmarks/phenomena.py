"""`culturepark eval phenomena RUN_DIR --model JUDGE`: the paper's phenomena analysis.

Per finished conversation a judge answers the original's two questions, in prompts of our own
with the same intent: did the delegate's stance shift during the conversation, and do the turns
show cross-cultural understanding? Rates per culture and overall, with counts and the number of
unparseable verdicts.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from culturepark.agents.meta import ConversationMeta
from culturepark.benchmarks import judge
from culturepark.benchmarks.eval_run import EvalSettings, digest, run_items
from culturepark.benchmarks.fidelity import load_run
from culturepark.benchmarks.results import PhenomenaResult
from culturepark.engine.batch import BatchItem
from culturepark.engine.errors import InputError

YES_NO = ("yes", "no")
SHIFT, UNDERSTANDING = "stance_shift", "understanding"  # the two questions, as the result names them
SYSTEM = "You analyse conversations between people of different cultures. You answer strictly."


def questions(meta: ConversationMeta, transcript: str) -> dict[str, str]:
    d, c = meta.participants.delegate, meta.participants.main_contact
    head = (f"Conversation between {d.name} ({d.person}) and {c.name} ({c.person}) about: "
            f"{meta.item_text}\n\n{transcript}\n\n")
    return {SHIFT: head + f"Did {d.name} change their opinion on the topic during this conversation?",
            UNDERSTANDING: head + ("Do the speakers show understanding of each other's culture — explaining, "
                                     "asking about or acknowledging cultural differences?")}


async def evaluate(run_dir: Path, out: Path, settings: EvalSettings,
                   say: Callable[[str], None] | None = None) -> PhenomenaResult:
    rendering = settings.backend().rendering  # a bad spec fails before any data is read
    _, rows = load_run(Path(run_dir))
    if not rows:
        raise InputError(f"phenomena: {run_dir} has no finished conversation yet")
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
    report = PhenomenaResult(**info.model_dump(), source=str(run_dir), conversations=len(rows),
                             by_culture={c: {q: judge.shares(v, YES_NO) for q, v in qs.items()}
                                         for c, qs in sorted(verdicts.items())})
    report.write(out / "phenomena.json")
    return report
