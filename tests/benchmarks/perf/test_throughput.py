"""The bench's mechanics on a small run (no timing thresholds: those belong to the bench itself)."""
import argparse

from culturepark.benchmarks.perf.throughput import bench, plot


def _args(**kw):
    base = {"conversations": 40, "turns": 2, "concurrency": 10, "latency_ms": 0.0, "rpm": None, "tpm": None,
                "max_tokens": 16, "baselines": "raw,sdk", "json": True, "plot": None}
    base.update(kw)
    return argparse.Namespace(**base)


async def test_engine_and_both_baselines_run_and_numbers_agree():
    result, timelines = await bench(_args())
    for key in ("requests", "turns", "errors", "requests_per_s", "raw_requests_per_s", "ratio_vs_raw",
                "sdk_requests_per_s", "ratio_vs_sdk", "ceiling_requests_per_s", "utilization",
                "rate_limited_fraction", "p50_ms", "p99_ms", "cpu_ms_per_turn", "peak_rss_mb"):
        assert key in result
    assert result["turns"] == result["requests"] == 80 and result["errors"] == 0
    assert result["raw_errors"] == 0 and result["sdk_errors"] == 0
    assert abs(result["ratio_vs_raw"] - result["requests_per_s"] / result["raw_requests_per_s"]) < 0.01
    assert result["ceiling_requests_per_s"] is None and result["utilization"] is None
    assert sum(timelines["engine"]) == 80 and sum(timelines["raw"]) == 80
    assert result["p50_ms"] <= result["p99_ms"]


async def test_limited_run_reports_a_ceiling_and_stays_under_it():
    result, _ = await bench(_args(conversations=30, rpm=1200, baselines=""))  # 20 requests/s
    assert result["ceiling_requests_per_s"] == 20.0
    assert result["raw_requests_per_s"] is None and result["ratio_vs_sdk"] is None
    assert result["rate_limited_fraction"] == 0.0
    assert result["utilization"] <= 1.5  # 60 requests in ~2.5 s (one 0.5 s burst, then 20/s)


def test_plot_writes_a_png(tmp_path):
    path = tmp_path / "t.png"
    plot({"engine": [10, 20, 15], "raw": [12, 22, 14]}, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
