"""The bench's mechanics on a small run (no timing thresholds: those belong to the bench itself)."""
import argparse

import pytest

from culturepark.benchmarks.perf.throughput import bench, plot


def _args(**kw):
    base = {"conversations": 40, "turns": 2, "concurrency": 10, "latency_ms": 0.0, "rpm": None, "tpm": None,
                "max_tokens": 16, "baselines": "raw,sdk", "json": True, "plot": None, "unstated_limits": False,
                "no_limit_headers": False, "window_s": 1.0, "start_empty": False, "halve_after_s": None,
                "warmup_s": 60.0}
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


@pytest.mark.slow  # a whole stage end to end: CI only, not the fast lane
async def test_unstated_limits_are_learned_or_found_and_a_halving_is_reported(tmp_path):
    from culturepark.benchmarks.perf.throughput import plot_granted

    headers, _ = await bench(_args(conversations=30, rpm=1200, baselines="", unstated_limits=True, warmup_s=0.5))
    assert headers["limits"] == "headers" and headers["learned_limits"] == {"rpm": 1200.0}
    assert headers["errors"] == 0 and headers["turns"] == 60
    found, _ = await bench(_args(conversations=40, rpm=1200, baselines="", unstated_limits=True, no_limit_headers=True,
                                 latency_ms=100.0, warmup_s=0.5, halve_after_s=2.0))
    assert found["limits"] == "none" and found["learned_limits"] == {} and found["errors"] == 0
    assert found["concurrency_ceiling"]["maximum"] == 10 and found["halved_at_s"] == 2.0
    assert "recovery_s" in found and len(found["granted_per_s"]) >= 2
    plot_granted(found, tmp_path / "granted.png")
    assert (tmp_path / "granted.png").stat().st_size > 0
