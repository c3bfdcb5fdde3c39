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
