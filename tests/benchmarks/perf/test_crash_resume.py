"""The crash-resume proof itself runs (three trials here; `bench crash-resume --trials 20` for the note)."""
import pytest

from culturepark.benchmarks.perf.crash_resume import bench


@pytest.mark.slow  # a whole stage end to end: CI only, not the fast lane
def test_three_kill_9_trials_lose_and_duplicate_nothing(tmp_path, tiny_data):
    results, summary = bench(trials=3, seed=1, data_dir=tiny_data, latency_ms=30, work=tmp_path)
    assert summary["kills"] >= 3 and summary["kills_in_export"] >= 1  # trial 2 aims at the export
    assert results[1]["runs"] >= 2  # trial 1 is killed in its first second; the same command line continues it
    assert summary["lost_turns"] == 0 and summary["duplicate_turns"] == 0 and summary["identical"] == 3
    assert summary["reference_turns"] == 108
