"""Every billed token counted: a reply rejected by validation and re-asked was billed, so its usage
and cost are recorded (on the turn that followed it, or on the failed conversation's end) and the
summary's cost equals the sim server's bill, with `rejected_cost_usd` and its share shown."""
import itertools

import pytest

from culturepark.engine.backends.base import Request
from culturepark.engine.backends.openai_http import OpenAIHTTPBackend
from culturepark.engine.endpoint import Endpoint
from culturepark.engine.export import export_run
from culturepark.engine.log import RunLog, read_log
from culturepark.engine.pricing import Price
from culturepark.engine.records import EndRecord, RunHeader, TurnRecord
from culturepark.engine.retry import RetryPolicy
from culturepark.engine.scheduler import ConversationSpec, Scheduler, SchedulerConfig, TurnRequest
from tests.conftest import sim_stats_async

PRICE = Price(2.0, 8.0)  # $ per 1M input, output tokens


class Rejecting:
    """`n` turns a conversation; the validator rejects the first reply of every `every`-th turn (all
    replies for conversation ids in `always`), as an echo check would, and each is asked again."""

    def __init__(self, n: int, every: int, always: frozenset[str] = frozenset()) -> None:
        self.n, self.every, self.always = n, every, always

    def next_turn(self, conv, turns):
        if len(turns) >= self.n:
            return None
        history = [{"role": "user", "content": f"{conv.id} {t.text}"} for t in turns] or [
            {"role": "user", "content": f"start {conv.id}"}]
        replies = itertools.count()
        third = (conv.seq * self.n + len(turns)) % self.every == 0

        def validate(_text: str) -> str | None:
            first = next(replies) == 0
            return "echo_reply" if conv.id in self.always or (third and first) else None
        return TurnRequest("A", "x", Request(messages=history, max_tokens=30), validate=validate)


async def _bill(url: str) -> tuple[float, dict]:
    stats = await sim_stats_async(url)
    return PRICE.cost(stats["prompt_tokens"], stats["completion_tokens"]), stats


async def _run(tmp_path, url, policy, convs, scenario=None):
    log = RunLog(tmp_path / "log.jsonl", fsync="never").open()
    log.append(RunHeader(run_name="r", backends={"x": {"price": PRICE.describe()}}, scenario=scenario))
    ep = Endpoint(OpenAIHTTPBackend(url, "m", price=PRICE), retry=RetryPolicy(3, 0.01, 0.02))
    sched = Scheduler(policy, {"x": ep}, log, SchedulerConfig(concurrency=3))
    stats = await sched.run(convs)
    log.close()
    await ep.aclose()
    return stats, ep


@pytest.mark.parametrize("always", [frozenset(), frozenset({"c2"})], ids=["every third", "one always rejected"])
async def test_rejected_replies_are_in_the_bill_the_summary_and_the_progress(sim, tmp_path, always):
    url = await sim(seed=3)
    convs = [ConversationSpec(f"c{i}", i, {}) for i in range(6)]
    stats, ep = await _run(tmp_path, url, Rejecting(4, 3, always), convs)
    bill, server = await _bill(url)
    summary = export_run(tmp_path)
    records = read_log(tmp_path / "log.jsonl").records
    turns = [r for r in records if isinstance(r, TurnRecord)]
    ends = [r for r in records if isinstance(r, EndRecord) and r.rejected is not None]

    assert server["ok"] - len(turns) == ep.stats.rejected_replies >= 8  # every third of 24 turns, or more
    rejected = [t.rejected for t in turns if t.rejected] + [e.rejected for e in ends]
    for field in ("prompt_tokens", "completion_tokens"):  # every token the server counted is in the log
        assert sum(getattr(u, field) for u in rejected) + sum(getattr(t.usage, field) for t in turns) == server[field]
    assert summary.cost_usd == pytest.approx(bill, rel=1e-4)  # the bill, rejected replies included
    assert stats.cost_usd == pytest.approx(bill, rel=1e-6)  # what progress shows
    kept = sum(t.cost_usd for t in turns)
    assert summary.rejected_cost_usd == pytest.approx(bill - kept, rel=1e-4) and summary.rejected_cost_usd > 0
    assert stats.rejected_cost_usd == pytest.approx(bill - kept, rel=1e-6)
    assert summary.rejected_cost_share == round(summary.rejected_cost_usd / summary.cost_usd, 4)
    split = summary.cost_split_usd
    assert split is not None and split.uncached_input + split.output == pytest.approx(bill, rel=1e-4)
    if always:
        assert stats.failed == 1 and len(ends) == 1 and ends[0].role == "x"
        assert ends[0].rejected.completion_tokens > 0 and ends[0].rejected_cost_usd > 0
    else:
        assert stats.failed == 0 and not ends


async def test_the_report_shows_the_rejected_cost_and_its_share_of_the_run(sim, tmp_path):
    from culturepark.report_page import build

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    await _run(run_dir, await sim(seed=3), Rejecting(4, 3), [ConversationSpec(f"c{i}", i, {}) for i in range(6)],
               scenario={"name": "r"})  # a conversation run, as the report finds them
    summary = export_run(run_dir)
    assert summary.rejected_cost_usd and summary.rejected_cost_share
    page = build([run_dir], tmp_path / "report").read_text()
    assert "rejected (USD, share of cost)" in page
    shown = f"<td>{summary.rejected_cost_usd:.4f} ({100 * summary.rejected_cost_share:.1f} %)</td>"
    assert shown in page
