"""Benchmark commands stay runnable (they are commands, not timed tests: only their output shape and
internal consistency are checked here)."""

import json


def test_ptq_compare_measures_every_variant_on_a_run_directory(tiny_build):
    from bench.ptq_compare import main

    run_dir = tiny_build.bundle_dir.parent  # data/, teacher/, student/ like a flow run directory
    assert main([str(run_dir), "--calibration-batches", "2", "--batch-size", "16"]) == 0
    result = json.loads((run_dir / "ptq_compare.json").read_text())
    variants = [row["variant"] for row in result["rows"]]
    assert variants[:5] == ["PTQ max", "PTQ percentile 99.9", "PTQ percentile 99.99", "PTQ mse", "PTQ entropy"]
    assert variants[5].startswith("the run's student")
    for row in result["rows"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["agreement"] <= 1.0
        assert abs(row["delta_points"] - 100 * (row["accuracy"] - result["teacher_accuracy"])) < 1e-6
    assert "| PTQ entropy |" in (run_dir / "ptq_compare.md").read_text()
