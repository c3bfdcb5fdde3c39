"""The command surface: config errors and data errors end with a clear message, not a traceback."""

import subprocess
import sys
from pathlib import Path

from flows.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_check_config_accepts_shipped_configs(capsys):
    assert main(["check-config", str(ROOT / "configs" / "demo.yaml")]) == 0
    assert "ok (model query-intent-int8" in capsys.readouterr().out


def test_bad_override_exits_2_with_the_key(capsys):
    try:
        main(["check-config", str(ROOT / "configs" / "demo.yaml"), "--set", "teacher.training.epochz=1"])
    except SystemExit as exit_:
        assert exit_.code == 2
    else:
        raise AssertionError("expected SystemExit")
    assert "teacher.training.epochz: unknown key" in capsys.readouterr().err


def test_run_with_missing_data_reports_the_path_and_exits_1(tmp_path):
    missing = tmp_path / "nope.csv"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "run",
            "--config",
            str(ROOT / "configs" / "demo.yaml"),
            "--set",
            f"data.source={missing}",
            "--set",
            f"work_dir={tmp_path / 'runs'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    expected = f"error: DataError: data source {missing}: no such file or directory"
    assert expected in result.stderr.splitlines()
