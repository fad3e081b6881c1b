"""`culturepark run --ray`: one scenario across many Ray workers, one shared rate budget.

How it divides the work:
- **Conversations** are sharded by a stable hash of their id (blake2b, not Python's salted
  `hash`), so a conversation belongs to the same worker for a given worker count.
- **Specs are streamed**, never materialised: for each shard the driver walks the plan lazily,
  making only that shard's pending specs (`plan.conversations(keep=…)`: an id that is not the
  shard's costs a hash, not a stance draw), and pushes them to the actor in chunks of
  `CHUNK`; the actor's `SpecFeed` holds a few chunks and makes the driver wait when full. One
  feeder task per shard, so an actor still waiting for a GPU holds up no other shard, and a
  replacement worker is fed by a fresh walk — the same mechanism as a first start.
- **Each worker** is a Ray actor running the ordinary asyncio engine (scheduler, endpoint,
  limiter, retries) on its shard, appending to its own log `RUN_DIR/shards/NNNN.jsonl`. The
  driver holds the run directory's lock and writes the header; readers (export, replay,
  `--resume`, refine) read the main log and every shard, so a run can be resumed with any
  worker count, or without Ray.
- **The rate budget** is split statically — each of the W busy workers limits itself to
  RPM/W and TPM/W — and rebalanced when a worker finishes: the others get the freed share.
  Nothing crosses the network per request (no limiter actor on the hot path); the cost is a
  tail where a worker with a longer queue cannot borrow an idle worker's budget until that
  worker has finished. Concurrency is the scenario's total, split the same way.
- **Progress** comes from the actors' counters over RPC; the driver reads no log while a run
  goes on (only to rebuild a dead worker's state, and to export at the end, in one streaming pass).
- **A worker that dies** (its process killed, its node lost) is replaced: the driver reads
  the logs back (cutting the dead worker's torn last line) and starts a new actor, with a new
  shard file, on what is left of that shard. Finished turns are never asked for again.
- **Local models**: each worker loads the model once and batches its conversations inside itself; on a
  cluster with GPUs each worker asks Ray for one GPU, so there is one model per GPU.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import math
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from culturepark.agents.experiment import ExperimentPlan, experiment_for
from culturepark.engine.errors import InputError
from culturepark.engine.files import atomic_write_json
from culturepark.engine.log import LogReader, new_shard_path
from culturepark.engine.records import RayInfo, TurnRecord
from culturepark.engine.resume import ResumeState, still_to_hold
from culturepark.engine.scheduler import ConversationSpec, RunStats, SchedulerConfig, SpecFeed
from culturepark.engine.stage import ShardLog, distinct
from culturepark.engine.summary import EndpointCounts, learned_by_model
from culturepark.runs.in_process import RunResult
from culturepark.runs.prepare import RunOptions, endpoint_summary, prepare
from culturepark.runs.session import Progress, Session, endpoints_for, export_after, open_session, run_session, ticking
from culturepark.scenarios.loader import parse_scenario
from culturepark.scenarios.schema import AnyScenario, Limits

WORKERS_NAME = "workers.json"
CHUNK = 256  # specs per push to a worker; its SpecFeed holds FEED_DEPTH chunks
FEED_DEPTH = 4
INSTALL_HINT = "--ray needs Ray: pip install 'culturepark[ray]'"


@dataclass
class RayOptions:
    address: str = "local"  # "local": start a Ray instance here; "auto" or HOST:PORT: join a cluster
    workers: int = 2
    max_restarts: int = 3  # replacements per run for workers that died


def shard_of(conversation_id: str, workers: int) -> int:
    digest = hashlib.blake2b(conversation_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % workers


def split_limits(limits: Limits, shares: int) -> Limits:
    """One worker's part of the provider budget when `shares` workers are busy."""
    return limits.model_copy(update={"rpm": limits.rpm / shares if limits.rpm else None,
                                     "tpm": limits.tpm / shares if limits.tpm else None})


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise InputError(INSTALL_HINT) from exc
    return ray


@dataclass
class WorkerTask:
    """What one actor is given up front: the turns its unfinished conversations already have and
    its log file. Its conversations arrive afterwards, streamed through `feed_specs`."""

    shard: int
    resume: ResumeState
    log_path: Path


class RunWorker:
    """A Ray actor (async): the normal engine on one shard. Defined plainly, wrapped lazily."""

    def __init__(self, scenario: dict[str, Any]) -> None:
        self.scenario: AnyScenario = parse_scenario(scenario, "<ray worker>")
        self.endpoints: dict[str, Any] = {}
        self.session: Session | None = None
        self.feed = SpecFeed(FEED_DEPTH)

    async def feed_specs(self, chunk: list[ConversationSpec]) -> None:
        """The driver pushes this shard's specs; waits while the feed is full (backpressure)."""
        await self.feed.put(chunk)

    async def end_feed(self) -> None:
        await self.feed.close()

    async def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname()}

    async def progress(self) -> dict[str, Any]:
        s = self.session.scheduler.stats if self.session and self.session.scheduler else None
        if s is None:
            return _zero()
        eps = distinct(self.endpoints)
        return {"done": s.done, "failed": s.failed, "turns": s.turns,
                "tokens": s.prompt_tokens + s.completion_tokens, "cost_usd": s.cost_usd,
                "rejected_cost_usd": s.rejected_cost_usd, "rate_limited": sum(e.stats.rate_limited for e in eps)}

    async def set_limits(self, limits: dict[str, Any]) -> None:
        """Rebalance: this worker's share of the budget changed (another worker finished)."""
        new = Limits.model_validate(limits)
        for ep in distinct(self.endpoints):
            ep.limiter.set_rates(new.rpm, new.tpm)

    async def run(self, task: WorkerTask, limits: dict[str, Any], concurrency: int,
                  retry_failed: bool, budget_usd: float | None) -> dict[str, Any]:
        sc = self.scenario
        experiment = experiment_for(sc)
        self.endpoints = endpoints_for(sc, experiment.backends(), limits=Limits.model_validate(limits),
                                       seed=sc.seed * 1000 + task.shard, cache_dirs=[Path(p) for p in sc.cache_from])
        async with open_session(self.endpoints, ShardLog(task.log_path, sc.output.fsync, task.resume),
                                check=False) as session:
            self.session = session
            session.start(None)
            held = await session.hold(experiment.policy(), self.feed,
                                      SchedulerConfig(concurrency=concurrency, budget_usd=budget_usd),
                                      retry_failed=retry_failed)
        return {"shard": task.shard, "error": held.error, "stop_reason": held.stats.stop_reason,
                "endpoints": [e.model_dump() for e in endpoint_summary(self.endpoints)],  # plain data across processes
                **(await self.progress())}


@dataclass
class _Slot:
    """The driver's view of one shard: its current actor and what that actor is doing."""

    shard: int
    actor: Any = None
    ref: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    log_path: Path | None = None
    logs: list[Path] = field(default_factory=list)  # every shard file this slot's actors wrote this session
    result: dict[str, Any] | None = None
    restarts: int = 0
    feeder: asyncio.Task[None] | None = None  # streams this shard's specs to the current actor


class _Progress:
    """Quacks like a Scheduler for the progress bar: counters summed over the workers."""

    def __init__(self) -> None:
        self.stats = RunStats()
        self.endpoints: dict[str, Any] = {}
        self.rate_limited = 0

    def update(self, parts: list[dict[str, Any]]) -> None:
        s = self.stats
        s.done = sum(p["done"] for p in parts)
        s.failed = sum(p["failed"] for p in parts)
        s.turns = sum(p["turns"] for p in parts)
        s.prompt_tokens = sum(p["tokens"] for p in parts)
        s.cost_usd = sum(p["cost_usd"] for p in parts)
        s.rejected_cost_usd = sum(p.get("rejected_cost_usd", 0.0) for p in parts)  # the progress line's share


@dataclass
class ShardWalk:
    """One shard's pending conversations, made lazily from the plan in chunks (see module doc).
    What ended is filtered out here, so the shard's own state needs no ended ids."""

    plan: ExperimentPlan
    state: ResumeState
    workers: int
    limit: int | None
    retry_failed: bool

    def specs(self, shard: int) -> Iterator[ConversationSpec]:
        def keep(conv_id: str) -> bool:  # the cheap test first: most ids belong to other shards
            return shard_of(conv_id, self.workers) == shard and still_to_hold(conv_id, self.state, self.retry_failed)

        for conv in self.plan.conversations(keep):
            if self.limit is not None and conv.seq >= self.limit:
                return
            yield conv

    def chunks(self, shard: int) -> Iterator[list[ConversationSpec]]:
        specs = self.specs(shard)
        while chunk := list(itertools.islice(specs, CHUNK)):
            yield chunk

    def resume(self, shard: int) -> ResumeState:
        """The turns this shard's unfinished conversations already have (bounded by concurrency)."""
        return ResumeState(turns={cid: turns for cid, turns in self.state.turns.items()
                                  if shard_of(cid, self.workers) == shard})


async def run_ray_async(scenario_ref: str | Path | AnyScenario, opts: RunOptions, ray_opts: RayOptions,
                        progress: Progress | None = None,
                        say: Callable[[str], None] | None = None) -> RunResult:
    """The driver. Same inputs and result as `run_async`; the work happens in actors."""
    say = say or (lambda _m: None)
    ray = import_ray()
    if ray_opts.workers < 1:
        raise InputError("--workers must be at least 1")
    prepared = prepare(scenario_ref, opts)
    scenario, plan, out = prepared.scenario, prepared.plan, prepared.out
    total = min(opts.limit, plan.size) if opts.limit is not None else plan.size
    # The driver checks the provider once, before anything is written, and starts no model:
    # its log holds the header only; the workers send the requests and write the shards.
    async with run_session(prepared, opts, say, start_backends=False) as session:
        _connect(ray, ray_opts)
        session.start_run(ray=RayInfo(workers=ray_opts.workers, budget="static split, rebalanced")).close()
        walk = ShardWalk(plan, session.resume_state or ResumeState(), ray_opts.workers, opts.limit,
                         opts.retry_failed)
        driver = _Driver(ray, scenario, out, ray_opts, opts.retry_failed, say)
        with ticking(progress, driver.progress, total, session.already):
            error = await driver.run(walk)
        endpoints = [EndpointCounts.model_validate(ep) for slot in driver.slots.values() if slot.result
                     for ep in slot.result["endpoints"]]
        summary, error = export_after(out, error, learned_by_model(endpoints))
    summary.endpoints = endpoints
    summary.ray = {"workers": ray_opts.workers, "restarts": sum(s.restarts for s in driver.slots.values()),
                      "shards": {str(k): s.result and {x: s.result[x] for x in ("done", "failed", "turns")}
                                 for k, s in sorted(driver.slots.items())}}
    return RunResult(out, summary, driver.stats_like(), plan.notices, error)


def _connect(ray: Any, ray_opts: RayOptions) -> None:
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    try:
        if ray_opts.address == "local":
            ray.init(num_cpus=max(os.cpu_count() or 1, ray_opts.workers), include_dashboard=False,
                     object_store_memory=100 * 1024**2, **kwargs)
        else:
            ray.init(address=ray_opts.address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise InputError(f"--ray {ray_opts.address}: cannot connect ({str(exc).splitlines()[0]})") from exc


class _Driver:
    def __init__(self, ray: Any, scenario: AnyScenario, out: Path, ray_opts: RayOptions,
                 retry_failed: bool, say: Callable[[str], None]) -> None:
        self.ray = ray
        self.scenario = scenario
        self.out = out
        self.opts = ray_opts
        self.retry_failed = retry_failed
        self.say = say
        self.slots: dict[int, _Slot] = {}
        self.progress = _Progress()
        gpus = ray.cluster_resources().get("GPU", 0)
        local = any(cfg.provider == "local" for cfg in experiment_for(scenario).backends().values())
        # One model per GPU: a local-model worker asks for a whole GPU where the cluster has them.
        if local and gpus >= 1 and ray_opts.workers > gpus:
            say(f"{ray_opts.workers} workers share {gpus:g} GPUs: a worker starts when a GPU is free "
                "(each GPU holds one model)")
        self.actor_cls = ray.remote(RunWorker).options(
            num_cpus=1, num_gpus=1 if (local and gpus >= 1) else 0, max_restarts=0)

    def _share(self) -> tuple[dict[str, Any], int]:
        busy = max(1, sum(1 for s in self.slots.values() if s.result is None))
        sc = self.scenario
        return (split_limits(sc.limits, busy).model_dump(mode="json"),
                max(1, math.ceil(sc.concurrency / busy)))

    def _budget(self, slot: _Slot) -> float | None:
        """`budget_usd` is split evenly over the shards; a replacement gets what its shard has left."""
        budget = self.scenario.budget_usd
        if budget is None:
            return None
        share = budget / max(1, len(self.slots))
        spent = sum(rec.cost_usd or 0.0 for path in slot.logs
                    for rec in LogReader(path, has_header=False).records() if isinstance(rec, TurnRecord))
        left: float = max(share - spent, 1e-9)
        return left

    def _launch(self, slot: _Slot, walk: ShardWalk, chunks: Iterator[list[ConversationSpec]]) -> None:
        limits, concurrency = self._share()
        budget = self._budget(slot)
        task = WorkerTask(slot.shard, walk.resume(slot.shard), new_shard_path(self.out))
        slot.actor = self.actor_cls.remote(self.scenario.model_dump(mode="json"))
        slot.info = {}  # known once the actor has started (it may wait for a free GPU first)
        slot.log_path = task.log_path
        slot.logs.append(task.log_path)
        slot.ref = slot.actor.run.remote(task, limits, concurrency, self.retry_failed, budget)
        if slot.feeder is not None:  # a replacement's walk supersedes the dead actor's feed
            slot.feeder.cancel()
        slot.feeder = asyncio.create_task(self._feed(slot.actor, chunks))

    async def _feed(self, actor: Any, chunks: Iterator[list[ConversationSpec]]) -> None:
        """Push a shard's specs to its actor; a dead actor ends the feed (`_supervise` replaces it)."""
        try:
            for chunk in chunks:
                await actor.feed_specs.remote(chunk)
            await actor.end_feed.remote()
        except self.ray.exceptions.RayActorError:
            return

    def _record_workers(self) -> None:
        atomic_write_json(self.out / "workers.json", {
            str(k): {**s.info, "log": str(s.log_path.relative_to(self.out)) if s.log_path else None,
                     "restarts": s.restarts, "started": bool(s.info), "finished": s.result is not None}
            for k, s in sorted(self.slots.items())})

    async def run(self, walk: ShardWalk) -> str | None:
        """A worker for every shard with something pending (found by walking to its first chunk)."""
        starts = {}
        for k in range(self.opts.workers):
            chunks = walk.chunks(k)
            first = next(chunks, None)
            if first is not None:
                self.slots[k] = _Slot(k)
                starts[k] = itertools.chain([first], chunks)
        for k, chunks in starts.items():
            self._launch(self.slots[k], walk, chunks)
        self._record_workers()
        errors: list[str] = []
        poller = asyncio.create_task(self._poll())
        try:
            await asyncio.gather(*(self._supervise(slot, walk, errors) for slot in self.slots.values()))
        finally:
            poller.cancel()
            for slot in self.slots.values():
                self._free(slot)
        self.progress.update([s.result for s in self.slots.values() if s.result])
        return "; ".join(errors) or None

    async def _supervise(self, slot: _Slot, walk: ShardWalk, errors: list[str]) -> None:
        """Wait for one shard's actor; replace it while it dies and restarts are left.

        Each shard is watched on its own, so an actor still waiting for a GPU holds up nobody else.
        """
        while slot.result is None:
            try:
                slot.info = await slot.actor.info.remote()  # returns once the actor runs
                self._record_workers()
                slot.result = await slot.ref
            except self.ray.exceptions.RayActorError as exc:
                await self._replace(slot, walk, exc, errors)
                self._record_workers()
                continue
            except self.ray.exceptions.RayTaskError as exc:  # the engine raised: report, do not retry
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                slot.result = {**_zero(), "endpoints": [], "error": f"{type(cause).__name__}: {cause}"}
            if slot.result.get("error"):
                errors.append(f"worker {slot.shard}: {slot.result['error']}")
            self._free(slot)
            self._record_workers()
            await self._rebalance()

    def _free(self, slot: _Slot) -> None:
        """End a worker whose shard is over, so its model and GPU go to a worker still waiting for one."""
        if slot.feeder is not None:
            slot.feeder.cancel()
            slot.feeder = None
        if slot.actor is not None:
            self.ray.kill(slot.actor, no_restart=True)
            slot.actor = None

    async def _replace(self, slot: _Slot, walk: ShardWalk, exc: Exception, errors: list[str]) -> None:
        cause = type(exc).__name__
        if slot.restarts >= self.opts.max_restarts:
            slot.result = {"done": 0, "failed": 0, "turns": 0, "endpoints": [], "error": cause}
            errors.append(f"worker {slot.shard} died {slot.restarts + 1} times ({cause}); "
                          "run again with --resume")
            return
        slot.restarts += 1
        self.say(f"worker {slot.shard} died ({cause}); replacing it (restart {slot.restarts})")
        reader = LogReader(self.out)
        state = ResumeState.from_records(reader.records())
        reader.cut_torn()  # the dead worker's torn last line
        again = dataclasses.replace(walk, state=state)
        self._launch(slot, again, again.chunks(slot.shard))

    async def _rebalance(self) -> None:
        limits, _ = self._share()
        live = [s for s in self.slots.values() if s.result is None]  # one not started yet gets it when it starts
        if live and (self.scenario.limits.rpm or self.scenario.limits.tpm):
            await asyncio.gather(*(s.actor.set_limits.remote(limits) for s in live),
                                 return_exceptions=True)  # a dead one is handled by the main loop

    async def _poll(self) -> None:
        while True:
            live = [s for s in self.slots.values() if s.actor is not None and s.info]  # started, running
            parts = await asyncio.gather(*(s.actor.progress.remote() for s in live), return_exceptions=True)
            counts = {s.shard: p if isinstance(p, dict) else (s.result or _zero()) for s, p in zip(live, parts)}
            self.progress.update([counts.get(k) or s.result or _zero() for k, s in self.slots.items()])
            await asyncio.sleep(0.5)

    def stats_like(self) -> Any:
        return self.progress.stats


def _zero() -> dict[str, Any]:
    return {"done": 0, "failed": 0, "turns": 0, "tokens": 0, "cost_usd": 0.0, "rejected_cost_usd": 0.0,
            "rate_limited": 0}


__all__ = ["INSTALL_HINT", "RayOptions", "run_ray_async", "shard_of", "split_limits"]
