"""Benchmark commands stay runnable (they are commands, not timed tests: only their output shape and
internal consistency are checked here)."""

import json
import shutil
from pathlib import Path

import pytest


def test_accuracy_table_scores_every_variant_of_a_run_on_test(tiny_build, tmp_path):
    from bench.accuracy_table import main
    from tasks.config import SensitivityConfig
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
    from tasks.config import SensitivityConfig
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


def test_teacher_grid_trains_every_cell_and_compares_the_default_recipe(tmp_path, capsys):
    import yaml

    from bench.teacher_grid import main
    from tests.conftest import tiny_config_mapping, write_intent_dataset

    mapping = tiny_config_mapping(write_intent_dataset(tmp_path / "source", train=120, evaluation=30), tmp_path)
    mapping["teacher"]["training"].update(epochs=4, learning_rate=1e-3)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(mapping))
    arguments = ["--config", str(config), "--epochs", "1", "2", "--learning-rates", "1e-3", "3e-3"]
    arguments += ["--work", str(tmp_path / "work"), "--cells", str(tmp_path / "cells"), "--out", str(tmp_path / "grid")]
    assert main(arguments) == 0
    result = json.loads((tmp_path / "grid.json").read_text())
    cells = {(cell["epochs"], cell["learning_rate"]): cell for cell in result["cells"]}
    assert sorted(cells) == [(1, 1e-3), (1, 3e-3), (2, 1e-3), (2, 3e-3)]
    for (epochs, rate), cell in cells.items():
        assert cell["epochs_trained"] == epochs and cell["stop_reason"] == "planned" and cell["learning_rate"] == rate
        assert round(cell["eval_accuracy"], 4) == max(cell["curve"]) and 0 <= cell["test_accuracy"] <= 1
    assert result["default"]["stop_reason"] in ("plateau", "ceiling") and result["default"]["learning_rate"] == 1e-3
    best = max(cell["eval_accuracy"] for cell in cells.values())
    table = (tmp_path / "grid.md").read_text()
    assert f"{100 * (result['default']['eval_accuracy'] - best):+.2f} points" in table
    assert not any((tmp_path / "work").glob("*/*/model"))  # cell weights are not kept
    capsys.readouterr()
    assert main(arguments) == 0  # a second call reuses every finished cell
    assert capsys.readouterr().out.count("reusing the finished cell") == 5
    assert len(list((tmp_path / "cells").glob("*/*.json"))) == 5  # the summaries a grid continues from
    # A candidate recipe against the same grid: only it trains, under its own name; so does a cell whose
    # summary was damaged (it is trained again, not trusted or crashed on).
    damaged = next((tmp_path / "cells").glob("*/e1-lr0.001.json"))
    damaged.write_text(damaged.read_text()[:40])
    # And one kept from an older revision of the training loop (a change to what its schedule trains).
    stale = next((tmp_path / "cells").glob("*/e2-lr0.003.json"))
    assert json.loads(stale.read_text())["schedule_revision"] >= 1
    stale.write_text(json.dumps({**json.loads(stale.read_text()), "schedule_revision": 0}))
    assert main([*arguments, "--set", "teacher.training.plateau_reductions=1"]) == 0
    output = capsys.readouterr().out
    assert output.count("reusing the finished cell") == 2 and "candidate-plateau_reductions1: " in output
    assert "e1-lr0.001: unreadable summary" in output and json.loads(damaged.read_text())["epochs_trained"] == 1
    assert "e2-lr0.003: kept from revision 0 of the training loop" in output
    assert json.loads(stale.read_text())["schedule_revision"] >= 1
    assert "with `teacher.training.plateau_reductions=1`" in (tmp_path / "grid.md").read_text()


def test_golden_variation_measures_the_bundle_through_other_kernels(tiny_build, capsys):
    from bench.golden_variation import main

    assert main([str(tiny_build.bundle_dir.parent)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["rows"] == tiny_build.data.rows["test"] and set(result["paths"]) == {
        "portable, unoptimized",
        "portable, ORT all",
    }
    for path in result["paths"].values():
        assert 0 <= path["mean"] <= path["p99"] <= path["max"] and path["label_changes"] >= 0
    assert result["canaries"]["min_margin"] > 2 * result["canaries"]["atol"]
    modes = result["engine_int8_gemm"]  # both GEMM paths side by side, measured against exact arithmetic
    assert len(modes) == 2 and all(mode["seconds"] > 0 and mode["max"] >= mode["p99"] >= 0 for mode in modes.values())
    exact = modes["exact (x64quantprecision, as served)"]
    assert (exact["max"], exact["label_changes"]) == (
        result["paths"]["portable, unoptimized"]["max"],
        result["paths"]["portable, unoptimized"]["label_changes"],
    )


def test_golden_variation_refuses_a_directory_that_is_not_a_run(tmp_path, capsys):
    from bench.golden_variation import main

    assert main([str(tmp_path)]) == 2
    assert "not a finished run directory" in capsys.readouterr().err


def test_serve_load_runs_every_phase_and_reports_the_targets(tiny_build, tmp_path):
    """A short run of the load test (3 swaps, 1-second phases): the command works end to end and no
    request fails; the speed targets themselves are for the full run (BENCHMARKS.md)."""
    from bench.serve_load import main

    out = tmp_path / "load"
    arguments = ["--bundle", str(tiny_build.bundle_dir), "--swaps", "3", "--phase-seconds", "1.5"]
    arguments += ["--saturation-seconds", "1", "--poll", "0.25", "--threads", "1", "--gap-seconds", "0.5"]
    arguments += ["--out", str(out)]
    assert main(arguments) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    results = [move["result"] for move in report["moves"]]
    assert results.count("served") == 3 and results.count("rollback") == 1
    assert sorted(r for r in results if r.startswith("refused")) == [
        "refused (compatibility)",
        "refused (download)",
        "refused (golden)",
    ]
    assert report["failed_requests"] == 0 and report["total_requests"] > 0
    assert report["raw_engine_b32_rows_per_s"] > 0 and report["saturation"]["rows_per_s"] > 0
    table = out.with_suffix(".md").read_text()
    assert "| target | result | measured |" in table and table.count("| PASS |") + table.count("| FAIL |") == 6
    # where a swap's time goes, from the server's own histogram: every staging went through download
    metrics = report["server_metrics"]
    assert metrics['int8_swap_phase_seconds_count{phase="download"}'] >= 6
    assert "Mean seconds per phase of a swap" in table and "warm " in table and "golden " in table
    # where the cores went during the swaps: the server's threads by name, its engine counters
    swaps = report["cpu"]["swaps"]
    assert swaps["server_cores"] > 0 and "int8-batcher" in swaps["server_threads_cores"]
    assert swaps["rows_per_s"] > 0 and swaps["engine_ms_per_row"] > 0
    assert "Where the cores went" in table and "Seconds per phase of each served swap" in table
    assert report["raw_engine_passes"]["start"] and report["raw_engine_passes"]["end"]
    # the swap phase split into requests sent while staging and in the quiet gaps between moves
    phases = report["phases"]
    staging, between = phases["swaps: staging"]["requests"], phases["swaps: between moves"]["requests"]
    assert staging > 0 and between > 0 and staging + between == phases["swaps"]["requests"]
    # steady state: every request sent while nothing was staging, in the same run
    outside = phases["before"]["requests"] + between + phases["after"]["requests"]
    assert phases["steady: no staging"]["requests"] == outside
    # the staging time split by the server's phases: disjoint spans inside the staging windows
    from bench.serve_load import SWAP_PHASES

    by_phase = [p["requests"] for name, p in phases.items() if name.startswith("swaps: ") and name[7:] in SWAP_PHASES]
    assert by_phase and sum(by_phase) <= staging
    # the run in 10-s windows: every request in one window, the staging share where staging happened
    timeline = report["timeline"]
    assert sum(w["requests"] for w in timeline) == report["total_requests"]
    assert any(w["staging_share"] > 0 for w in timeline) and "windows of 10 s" in table


def test_serve_load_lays_each_swap_phase_back_from_the_server_record():
    from bench.serve_load import SWAP_PHASES, _phase_windows
    from serving.follower import PHASES

    assert SWAP_PHASES == PHASES  # the bench's copy (its clients must not import the server) is current

    move = {
        "moved_at": 100.0,
        "server_swap": {"at": 110.0, "phase_seconds": {"download": 3.0, "build": 1.0, "golden": 2.0}},
    }
    assert _phase_windows(move) == [
        ("poll wait", 100.0, 104.0),
        ("download", 104.0, 107.0),
        ("build", 107.0, 108.0),
        ("golden", 108.0, 110.0),
    ]
    refused = {"moved_at": 5.0, "server_failure": {"at": 7.5, "phase_seconds": {"download": 0.5}}}
    assert _phase_windows(refused) == [("poll wait", 5.0, 7.0), ("download", 7.0, 7.5)]
    assert _phase_windows({"moved_at": 1.0, "result": "timeout"}) == []


def test_the_run_report_gives_programs_its_stage_times(tiny_build, tmp_path, monkeypatch):
    """``run-report.json`` next to the markdown: what ``bench.gpu_flow`` reads (no table parsing)."""
    import tasks.run_report as run_report
    from tasks.run_report import StageTime, stage_seconds_from, write_run_report

    stages = [StageTime("train-teacher", 23.4), StageTime("ptq-baselines", 139.0), StageTime("ptq-baselines", 1.5)]
    monkeypatch.setattr(run_report, "stage_times", lambda _flow_run: (stages, 240.0))
    report = write_run_report("m", tmp_path, tiny_build.teacher, None, "a-flow-run", {})
    assert stage_seconds_from(tmp_path / "run-report.json") == {"train-teacher": 23.4, "ptq-baselines": 140.5}
    assert "| ptq-baselines | 139 |" in Path(report.path).read_text()


def test_gpu_flow_splits_the_global_batch_over_processes(tmp_path):
    import pytest

    from bench.gpu_flow import _TRAINING_SECTIONS, training_overrides
    from tasks.config import load_config

    assert training_overrides(Path("configs/demo.yaml"), [], 1) == []
    overrides = training_overrides(Path("configs/demo.yaml"), [], 2)
    one, two = load_config("configs/demo.yaml"), load_config("configs/demo.yaml", overrides)
    for section in _TRAINING_SECTIONS:
        first, second = one, two
        for part in section.split("."):
            first, second = getattr(first, part), getattr(second, part)
        assert (second.processes, second.batch_size * 2) == (2, first.batch_size)
    with pytest.raises(SystemExit, match="does not split evenly over 3 processes"):
        training_overrides(Path("configs/demo.yaml"), ["teacher.training.batch_size=32"], 3)


def test_gpu_flow_refuses_more_processes_than_gpus_and_a_missing_config(tmp_path, capsys):
    import torch

    from bench.gpu_flow import main

    assert main(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert "error: config" in capsys.readouterr().err
    gpus = torch.cuda.device_count()
    asked = max(2, gpus + 1)  # one process never needs a GPU
    assert main(["--processes", str(asked), "--state-dir", str(tmp_path / "s"), "--out", str(tmp_path / "o")]) == 2
    assert f"needs as many CUDA GPUs; this machine has {gpus}" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()  # refused before any server started


def test_student_recipe_retrains_the_smaller_student_and_scores_both_on_eval_and_test(tiny_build, tmp_path, capsys):
    import yaml

    from bench.student_recipe import main
    from tasks.quantize import train_student

    root = tiny_build.bundle_dir.parent
    run = tmp_path / "run"
    run.mkdir()
    for stage in ("data", "teacher", "student"):
        (run / stage).symlink_to(root / stage)
    small = tiny_build.config.quantize.smaller_student
    train_student(
        tiny_build.config.quantize,
        tiny_build.teacher,
        tiny_build.data,
        run / "smaller-student",
        log=lambda _: None,
        calibration=tiny_build.student.calibration,
        student_layers=small.layer_indices(tiny_build.teacher.num_layers),
        distill_training=small.distill_training,
    )
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_build.config.model_dump(mode="json", by_alias=True)))
    assert main([str(run), "--config", str(config)]) == 2  # no recipe given
    assert "--set" in capsys.readouterr().err
    override = "quantize.smaller_student.distill_training.epochs=2"
    assert main([str(run), "--config", str(config), "--set", override]) == 0
    table = capsys.readouterr().out
    result = json.loads((run / "student-recipes" / "distill_training.epochs=2.json").read_text())
    assert [row["name"] for row in result["rows"]] == ["the run's own smaller student", f"with {override}"]
    for row in result["rows"]:
        for split in ("eval", "test"):
            score = row[split]
            assert 0 <= score["accuracy"] <= 1 and score["ci"][0] <= score["delta_points"] <= score["ci"][1]
            assert score["delta_points"] == pytest.approx(100 * (score["accuracy"] - score["teacher"]))
    assert "FP32 distillation of the new student: 2 epochs" in table


def test_student_recipe_refuses_a_run_without_a_smaller_student(tmp_path, capsys):
    from bench.student_recipe import main

    assert main([str(tmp_path), "--set", "quantize.smaller_student.layers=[0]"]) == 2
    assert "missing data/data.json" in capsys.readouterr().err


def test_distill_cost_times_the_teacher_against_the_student_step(tiny_build, tmp_path, capsys):
    import re

    from bench.distill_cost import main

    root = tiny_build.bundle_dir.parent
    assert main([str(tmp_path)]) == 2
    assert "missing data/data.json" in capsys.readouterr().err
    assert main([str(root), "--batches", "0"]) == 2
    assert "--batches" in capsys.readouterr().err
    assert main([str(root), "--batches", "3", "--batch-size", "8", "--layers", "0"]) == 0
    line = capsys.readouterr().out
    match = re.search(
        r"teacher forward ([\d.]+) s, student forward\+backward\+step ([\d.]+) s, teacher share (\d+)%", line
    )
    assert match and "3 batches of 8, student layers [0]" in line, line
    teacher, student, share = float(match[1]), float(match[2]), int(match[3])
    assert student > 0 and abs(share - 100 * teacher / (teacher + student)) <= 1


def test_training_speed_measures_each_change_against_what_it_replaced(tiny_build, tmp_path, capsys):
    import re

    from bench.training_speed import main

    root = tiny_build.bundle_dir.parent
    assert main([str(tmp_path)]) == 2
    assert "missing data/data.json" in capsys.readouterr().err
    assert main([str(root), "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err
    assert main([str(root), "--steps", "2", "--quantizers", "2"]) == 0
    table = capsys.readouterr().out
    tokens = re.search(r"batch tokens per epoch .*? \| (\d+) \(.*?\) \| (\d+) \(", table)
    assert tokens and int(tokens[2]) <= int(tokens[1]), table
    steps = re.search(r"AdamW default vs fused\) \| (\d+) ms \| (\d+) ms \| x([\d.]+)", table)
    assert steps and int(steps[1]) > 0 and int(steps[2]) > 0, table
    cache = re.search(
        r"forward vs cache; cache of \d+ MiB built once in [\d.]+ s\) \| ([\d.]+) ms \| ([\d.]+) ms", table
    )
    assert cache and float(cache[1]) > 0, table
    assert "2 activation histograms (2/2 identical)" in table, table


def test_serve_threads_measures_spin_modes_and_background_priority(tiny_build, tmp_path):
    from bench.serve_threads import SPIN_MODES, STAGING_MODES, main

    out = tmp_path / "threads"
    arguments = ["--bundle", str(tiny_build.bundle_dir), "--seconds", "0.2", "--threads", "2", "--out", str(out)]
    arguments += ["--staging-rounds", "1", "--staging-block-seconds", "0.3"]
    assert main(arguments) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert set(report["spinning"]) == set(SPIN_MODES)
    for sizes in report["spinning"].values():
        assert set(sizes) == {"B1", "B8", "B32"} and all(r["runs"] > 0 and r["cores"] > 0 for r in sizes.values())
    jobs = {(r["job"], r["nice"]) for r in report["background"]}
    assert ("busy loop", 19) in jobs and ("sha256 of the engine file", 10) in jobs and ("none", None) in jobs
    assert set(report["staging"]) == set(STAGING_MODES)
    assert all(r["runs"] > 0 and r["run_p99_ms"] >= r["run_p50_ms"] > 0 for r in report["staging"].values())
    markdown = out.with_suffix(".md").read_text()
    assert "| background job | niceness |" in markdown and "| nice 19 + SCHED_IDLE |" in markdown


def test_serve_threads_refuses_a_folder_that_is_not_a_bundle(tmp_path, capsys):
    from bench.serve_threads import main

    assert main(["--bundle", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.parametrize("bad", ["swap.staging_nice", "=3", "swap..nice=1", "workers=[1"])
def test_serve_load_refuses_a_malformed_server_setting_in_one_line(bad, capsys):
    from bench.serve_load import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--server-set", bad])
    assert exit_info.value.code == 2
    assert "error: argument --server-set" in capsys.readouterr().err


def test_serve_load_reads_a_server_setting_as_yaml():
    from bench.serve_load import server_setting

    assert server_setting("swap.staging_nice=19") == ("swap.staging_nice", 19)
    assert server_setting("engine_spinning=false") == ("engine_spinning", False)


def test_serve_load_says_how_many_swaps_went_late_and_where():
    from bench.serve_load import _late_swaps

    metrics = {
        'int8_swaps_late_total{phase="download"}': 3.0,
        'int8_swaps_late_total{phase="build"}': 1.0,
        'int8_swaps_late_total{phase="golden"}': 0.0,
        'int8_swaps_total{result="success"}': 20.0,
    }
    said = _late_swaps({"server_metrics": metrics})
    assert "4 swaps finished at normal priority" in said and "3 in download, 1 in build" in said
    assert "golden" not in said and _late_swaps({"server_metrics": {}}) == ""


def test_serve_load_timeline_splits_the_run_into_windows_with_their_staging_share():
    from bench.serve_load import _timeline, _timeline_summary

    # (sent, done, status, version): 10 requests a second for 30 s, staging during 12-17 s, 503s at 25 s
    records = [(t / 10, t / 10 + 0.05, 503 if 250 <= t < 255 else 200, "v") for t in range(300)]
    timeline = _timeline(records, lambda sent: 12 <= sent < 17)
    assert [w["start_s"] for w in timeline] == [0.0, 10.0, 20.0]
    assert [w["requests"] for w in timeline] == [100, 100, 100] and [w["failed"] for w in timeline] == [0, 0, 5]
    assert [w["staging_share"] for w in timeline] == [0.0, 0.5, 0.0]
    assert timeline[0]["p99_ms"] == pytest.approx(50.0)
    said = _timeline_summary(timeline)
    assert "1 windows had failed requests" in said and "share of their requests sent while staging: 0%" in said
