"""Benchmark commands stay runnable (they are commands, not timed tests: only their output shape and
internal consistency are checked here)."""

import json
import shutil


def test_accuracy_table_scores_every_variant_of_a_run_on_test(tiny_build, tmp_path):
    from bench.accuracy_table import main
    from enginekit.config import SensitivityConfig
    from tasks.variants import choose_int8_variant, measure_ptq_baselines

    run = tmp_path / "run"
    for stage in ("data", "teacher"):  # the json files hold absolute paths: copies point at the real build
        (run / stage).mkdir(parents=True)
        shutil.copy(tiny_build.bundle_dir.parent / stage / f"{stage}.json", run / stage)
    config = tiny_build.config.quantize.model_copy(
        update={"ptq_baselines": ["max", "entropy"], "sensitivity": SensitivityConfig(enabled=False)}
    )
    ptq = measure_ptq_baselines(config, tiny_build.teacher, tiny_build.data, run / "ptq")
    choice = choose_int8_variant(
        config, tiny_build.teacher, ptq, tiny_build.student, None, tiny_build.data, run / "variants", lambda _: None
    )
    assert main([str(run)]) == 0
    result = json.loads((run / "accuracy_table.json").read_text())
    assert [row["name"] for row in result["rows"]] == [c.name for c in choice.candidates]
    assert result["chosen"] == choice.chosen.name and result["reference"]["rows"] == tiny_build.data.rows["test"]
    for row in result["rows"]:
        assert 0.0 <= row["eval_accuracy"] <= 1.0 and 0.0 <= row["agreement"] <= 1.0
        assert abs(row["delta_points"] - 100 * (row["eval_accuracy"] - result["reference"]["accuracy"])) < 1e-6
    table = (run / "accuracy_table.md").read_text()
    assert "on the test split" in table and "| PTQ entropy | ptq |" in table and "chosen on eval" in table


def test_accuracy_table_refuses_a_directory_that_is_not_a_run(tmp_path, capsys):
    from bench.accuracy_table import main

    assert main([str(tmp_path)]) == 2
    assert "not a finished run directory" in capsys.readouterr().err


def test_engines_bench_prints_every_row_and_the_targets(tiny_build, tmp_path):
    from bench import engines
    from enginekit.config import SensitivityConfig
    from tasks.variants import choose_int8_variant, measure_ptq_baselines

    run = tmp_path / "run"
    for stage in ("data", "teacher"):
        (run / stage).mkdir(parents=True)
        shutil.copy(tiny_build.bundle_dir.parent / stage / f"{stage}.json", run / stage)
    config = tiny_build.config.quantize.model_copy(
        update={"ptq_baselines": ["max"], "sensitivity": SensitivityConfig(enabled=False)}
    )
    ptq = measure_ptq_baselines(config, tiny_build.teacher, tiny_build.data, run / "ptq")
    choose_int8_variant(
        config, tiny_build.teacher, ptq, tiny_build.student, None, tiny_build.data, run / "variants", lambda _: None
    )
    shutil.copytree(tiny_build.bundle_dir, run / "bundle")
    assert engines.main([str(run), "--threads", "1"]) == 0
    result = json.loads((run / "engines_bench.json").read_text())
    names = [row["name"] for row in result["rows"]]
    assert names[:4] == [
        "PyTorch FP32 eager",
        "ONNX Runtime FP32",
        "ONNX Runtime FP32, transformer fusions",
        "ONNX Runtime dynamic INT8 (fused graph)",
    ]
    assert any(name.startswith("shipped engine bundle") for name in names) and result["peak_gops"] > 0
    for row in result["rows"]:
        if row["rows_per_s"] is not None:
            assert row["p50_ms"] <= row["p99_ms"] and 0 <= row["accuracy"] <= 1 and row["rows_per_s"] > 0
    table = (run / "engines_bench.md").read_text()
    assert "Targets (shipped engine, this run):" in table and table.count("- ") >= 4


def test_tensorrt_check_says_what_is_missing_here(capsys):
    import importlib.util

    import pytest

    from bench.tensorrt_check import main

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: the check would run for real")
    assert main([]) == 2
    assert "no `tensorrt` package here" in capsys.readouterr().err
