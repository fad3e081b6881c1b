"""`run --ray` with the embedded model: one model per GPU, and workers beyond the GPUs wait for one.

Ray is told the machine has one GPU (a logical resource; torch still runs on the CPU here), so
the two local-model workers cannot hold a model at the same time: the second starts only when
the first has finished and been ended. Before workers were ended as their shard finished, the
second waited for the GPU forever.
"""
import asyncio

import orjson
import pytest
import yaml

from culturepark.engine.log import shard_paths
from tests.conftest import scenario_dict

ray = pytest.importorskip("ray")
pytest.importorskip("transformers")
# xdist_group: one Ray cluster at a time, on one test worker (with tests/runs/test_on_ray.py).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]


@pytest.fixture
def one_gpu_ray():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, object_store_memory=80 * 1024**2,
             log_to_driver=False)
    yield
    ray.shutdown()


def test_local_model_workers_take_turns_on_the_only_gpu(tmp_path, tiny_data, one_gpu_ray):
    from culturepark.runs.on_ray import RayOptions, run_ray_async
    from culturepark.runs.prepare import RunOptions

    spec = scenario_dict(backend={"provider": "local", "model": "gemma3-270m", "max_batch": 4},
                         sampling={"temperature": 0.7, "max_tokens": 12}, turns=2, conversations_per_item=2)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    said = []
    run = run_ray_async(path, RunOptions(out=tmp_path / "r", data_dir=tiny_data), RayOptions(workers=2),
                        say=said.append)
    result = asyncio.run(asyncio.wait_for(run, timeout=400))  # a worker left waiting for the GPU fails, not hangs
    assert result.summary.done + result.summary.failed == 8
    assert any("2 workers share 1 GPUs" in m for m in said)
    shards = shard_paths(tmp_path / "r")
    assert len(shards) == 2
    spans = sorted((min(ts), max(ts)) for ts in
                   ([r["t"] for r in map(orjson.loads, p.read_bytes().splitlines()) if r["type"] in ("turn", "end")]
                    for p in shards))
    assert spans[0][1] <= spans[1][0]  # one model on the GPU at a time: the second shard began after the first ended
