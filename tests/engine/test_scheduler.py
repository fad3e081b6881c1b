"""The scheduler against a real sim server: turns, failures, resume, budget, export."""
import orjson

from culturepark.engine.backends.base import Request
from culturepark.engine.backends.openai_http import OpenAIHTTPBackend
from culturepark.engine.endpoint import Endpoint
from culturepark.engine.export import export_run
from culturepark.engine.log import RunLog, read_log
from culturepark.engine.pricing import Price
from culturepark.engine.records import EndRecord, RunHeader, StopRecord, TurnRecord
from culturepark.engine.resume import ResumeState
from culturepark.engine.retry import RetryPolicy
from culturepark.engine.scheduler import (
    ConversationSpec,
    Scheduler,
    SchedulerConfig,
    SpecFeed,
    TurnRequest,
)
from culturepark.testing.simulator import Fault


class PingPong:
    """A minimal culture-free policy: two speakers, n turns, each sees the history."""

    def __init__(self, n: int) -> None:
        self.n = n

    def next_turn(self, conv, turns):
        if len(turns) >= self.n:
            return None
        speaker = "A" if len(turns) % 2 == 0 else "B"
        history = [{"role": "user", "content": f"{conv.id} {t.text}"} for t in turns] or [
            {"role": "user", "content": f"start {conv.id}"}]
        return TurnRequest(speaker, "x", Request(messages=history, max_tokens=30))


def _convs(n):
    return [ConversationSpec(f"c{i}", i, {"i": i}) for i in range(n)]


async def _run(tmp_path, url, convs, n_turns=4, resume=None, retry_failed=False, budget=None,
               name="run", price=None, concurrency=5):
    run_dir = tmp_path / name
    run_dir.mkdir(exist_ok=True)
    log = RunLog(run_dir / "log.jsonl", fsync="never").open()
    if resume is None:
        log.append(RunHeader(run_name=name))
    backend = OpenAIHTTPBackend(url, "m", price=price)
    ep = Endpoint(backend, retry=RetryPolicy(3, 0.01, 0.02))
    sched = Scheduler(PingPong(n_turns), {"x": ep}, log, SchedulerConfig(concurrency=concurrency, budget_usd=budget))
    stats = await sched.run(convs, resume, retry_failed)
    log.close()
    await ep.aclose()
    return run_dir, stats


async def test_all_conversations_complete_with_ordered_turns(sim, tmp_path):
    url = await sim(seed=1)
    run_dir, stats = await _run(tmp_path, url, _convs(30))
    assert stats.done == 30 and stats.turns == 120 and stats.failed == 0
    summary = export_run(run_dir)
    rows = [orjson.loads(line) for line in (run_dir / "conversations.jsonl").read_bytes().splitlines()]
    assert [r["id"] for r in rows] == [f"c{i}" for i in range(30)]
    assert all([t["speaker"] for t in r["turns"]] == ["A", "B", "A", "B"] for r in rows)
    assert summary.turns == 120 and summary.cost_usd is None  # unknown price is not 0


async def test_a_failing_conversation_ends_failed_and_the_rest_go_on(sim, tmp_path):
    # one worker: the first conversation's first request meets all three 503s (max_attempts 3)
    url = await sim(seed=1, faults=[Fault(kind="status", status=503, rate=1.0, times=3)])
    run_dir, stats = await _run(tmp_path, url, _convs(10), concurrency=1)
    records = read_log(run_dir / "log.jsonl").records
    ends = {r.conversation_id: r for r in records if isinstance(r, EndRecord)}
    assert stats.failed == 1 and stats.done == 9 and len(ends) == 10
    assert ends["c0"].status == "failed" and ends["c0"].reason == "http_503" and ends["c0"].attempts == 3
    assert all(ends[f"c{i}"].status == "done" for i in range(1, 10))
    turns = [r for r in records if isinstance(r, TurnRecord)]
    assert not [t for t in turns if t.conversation_id == "c0"]  # a failed request is never a turn
    assert len(turns) == 36 and all(t.text.strip() for t in turns)


async def test_resume_gives_the_same_content_as_an_uninterrupted_run(sim, tmp_path):
    url = await sim(seed=2)
    ref_dir, _ = await _run(tmp_path, url, _convs(12), name="ref")
    export_run(ref_dir)
    # an interrupted run: cut the reference log after an arbitrary record (mid-conversation)
    cut_dir = tmp_path / "cut"
    cut_dir.mkdir()
    lines = (ref_dir / "log.jsonl").read_bytes().splitlines(keepends=True)
    (cut_dir / "log.jsonl").write_bytes(b"".join(lines[:23]) + lines[23][:17])  # + a torn line
    from culturepark.engine.log import recover
    contents = recover(cut_dir / "log.jsonl")
    assert contents.torn_bytes == 17
    state = ResumeState.from_records(contents.records)
    await _run(tmp_path, url, _convs(12), resume=state, name="cut")
    export_run(cut_dir)
    assert (cut_dir / "conversations.jsonl").read_bytes() == (ref_dir / "conversations.jsonl").read_bytes()
    turns = [r for r in read_log(cut_dir / "log.jsonl").records if isinstance(r, TurnRecord)]
    keys = [(t.conversation_id, t.index) for t in turns]
    assert len(keys) == len(set(keys)) == 48  # none lost, none duplicated


async def test_retry_failed_completes_failed_conversations(sim, tmp_path):
    url = await sim(seed=1, faults=[Fault(kind="status", status=500, rate=1.0, times=9)])
    run_dir, stats = await _run(tmp_path, url, _convs(3), name="r")
    assert stats.failed >= 1
    state = ResumeState.from_records(read_log(run_dir / "log.jsonl").records)
    _, again = await _run(tmp_path, url, _convs(3), resume=state, retry_failed=True, name="r")
    summary = export_run(run_dir)
    assert summary.done == 3 and summary.failed == 0 and again.done == stats.failed


async def test_budget_stops_cleanly_and_resumably(sim, tmp_path):
    url = await sim(seed=1)
    price = Price(1000.0, 1000.0)  # absurd price: a few turns exhaust the budget
    run_dir, stats = await _run(tmp_path, url, _convs(20), budget=0.5, price=price, name="b")
    assert stats.stop_reason == "budget_reached" and stats.done < 20
    records = read_log(run_dir / "log.jsonl").records
    assert isinstance(records[-1], StopRecord) and records[-1].reason == "budget_reached"
    # resumed without the budget, the run finishes: nothing lost, nothing asked twice
    state = ResumeState.from_records(records)
    _, again = await _run(tmp_path, url, _convs(20), resume=state, price=price, name="b")
    summary = export_run(run_dir)
    assert summary.done == 20 and summary.turns == 80 and summary.duplicate_turns_dropped == 0
    assert again.done == 20 - stats.done and summary.stops == ["budget_reached"]


async def test_conversations_are_pulled_lazily_as_workers_free_up(sim, tmp_path):
    url = await sim(seed=1)
    created = 0
    ahead = []

    class Watching(PingPong):
        def next_turn(self, conv, turns):
            if not turns:
                ahead.append(created - conv.seq)  # specs made but not yet started
            return super().next_turn(conv, turns)

    def lazy():
        nonlocal created
        for i in range(200):
            created += 1
            yield ConversationSpec(f"c{i}", i, {})

    run_dir = tmp_path / "lazy"
    run_dir.mkdir()
    log = RunLog(run_dir / "log.jsonl", fsync="never").open()
    ep = Endpoint(OpenAIHTTPBackend(url, "m"))
    stats = await Scheduler(Watching(2), {"x": ep}, log, SchedulerConfig(concurrency=5)).run(lazy())
    log.close()
    await ep.aclose()
    assert stats.done == 200 and max(ahead) <= 1  # never more than one spec made ahead of its start


async def test_specs_fed_in_chunks_run_like_a_plan_and_the_producer_stays_a_few_chunks_ahead(sim, tmp_path):
    """The Ray driver's way in: chunks pushed into a SpecFeed; a resumed feed skips what ended."""
    import asyncio

    url = await sim(seed=2)
    ref_dir, _ = await _run(tmp_path, url, _convs(40), name="ref")
    export_run(ref_dir)
    lines = (ref_dir / "log.jsonl").read_bytes().splitlines(keepends=True)
    cut_dir = tmp_path / "fed"
    cut_dir.mkdir()
    (cut_dir / "log.jsonl").write_bytes(b"".join(lines[:61]))  # some done, some mid-way
    state = ResumeState.from_records(read_log(cut_dir / "log.jsonl").records)
    feed, consumed, lead = SpecFeed(depth=2), [], []

    class Counting(PingPong):
        def next_turn(self, conv, turns):
            if not turns or conv.id not in consumed:
                consumed.append(conv.id)
            return super().next_turn(conv, turns)

    async def produce():
        convs = _convs(40)
        for start in range(0, 40, 4):
            await feed.put(convs[start:start + 4])
            lead.append(start + 4 - len(consumed))  # specs pushed but not yet begun
        await feed.close()

    log = RunLog(cut_dir / "log.jsonl", fsync="never").open()
    ep = Endpoint(OpenAIHTTPBackend(url, "m"), retry=RetryPolicy(3, 0.01, 0.02))
    sched = Scheduler(Counting(4), {"x": ep}, log, SchedulerConfig(concurrency=3))
    _, stats = await asyncio.gather(produce(), sched.run(feed, state))
    log.close()
    await ep.aclose()
    export_run(cut_dir)
    assert (cut_dir / "conversations.jsonl").read_bytes() == (ref_dir / "conversations.jsonl").read_bytes()
    assert stats.done == 40 - len(state.ended)  # the ended ones were skipped, not asked again
    assert max(lead) <= 4 * (2 + 1) + 3 + len(state.ended)  # queue depth + one chunk in hand + running


def test_resume_state_keeps_what_resuming_needs_and_nothing_more():
    def records():
        for i in range(50_000):
            cid = f"Chinese:Q{i % 50}:{i}"
            yield TurnRecord(cid, i, 0, "A", "x", "hello")
            if i % 1000 != 7:  # 50 conversations left open, 10 of them failed
                yield EndRecord(cid, i, "done")
            elif i % 5000 == 7:
                yield EndRecord(cid, i, "failed", "http_500")
    state = ResumeState.from_records(records())
    assert len(state.turns) == 50 and all(len(t) == 1 for t in state.turns.values())  # open or failed ones only
    assert len(state.ended) == 49_950 + 10
    assert state.ended.nbytes == 16 * (49_950 + 10)  # 16 bytes per ended id
    assert state.status("Chinese:Q0:0") == "done" and state.status("Chinese:Q7:7") == "failed"
    assert state.status("Chinese:Q7:1007") is None and state.status("not in the run") is None


def test_ended_ids_count_each_conversation_once_and_take_new_ends_after_a_lookup():
    from culturepark.engine.resume import EndedIds

    ended = EndedIds()
    for conv_id, status in [("a", "done"), ("b", "failed"), ("a", "failed"), ("b", "failed"), ("a", "done")]:
        ended.add(conv_id, status)
    assert len(ended) == 2 and ended.status("a") == "done" and ended.status("b") == "failed"
    ended.add("b", "done")  # after a lookup sorted the buffers in place: they still grow
    ended.add("c", "failed")
    assert len(ended) == 3 and ended.status("b") == "done" and ended.status("c") == "failed"
    assert "d" not in ended and ended.status("d") is None and len(EndedIds()) == 0


def test_latency_sample_keeps_every_value_up_to_capacity_then_a_uniform_sample_of_fixed_size():
    from culturepark.engine.scheduler import LatencySample

    small = LatencySample(capacity=100)
    for v in range(60):
        small.add(float(v))
    assert list(small) == [float(v) for v in range(60)]
    big = LatencySample(capacity=1000)
    for v in range(200_000):  # a run 200× the capacity: memory stays at the capacity
        big.add(float(v))
    assert len(big) == 1000 and big.seen == 200_000
    values = sorted(big)
    assert 80_000 < values[500] < 120_000  # the median of a uniform sample of 0..199999
    assert values[-1] > 190_000 and values[0] < 10_000  # both ends reached, not just the first values
