"""The command surface: config errors and data errors end with a clear message, not a traceback."""

import os
import socket
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


def cli_environment(tmp_path, **extra):
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    environment.update(
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # the temporary Prefect server gets 20 s to start by default: too little on a busy 2-core machine
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        **extra,
    )
    return environment


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
        env=cli_environment(tmp_path),
    )
    assert result.returncode == 1, result.stderr[-2000:]
    expected = f"error: DataError: data source {missing}: no such file or directory"
    assert expected in result.stderr.splitlines()


def test_run_with_unreachable_prefect_api_says_what_to_do(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--config", str(ROOT / "configs" / "demo.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=cli_environment(tmp_path, PREFECT_API_URL=f"http://127.0.0.1:{port}/api"),
    )
    assert result.returncode == 1
    assert f"error: Prefect API http://127.0.0.1:{port}/api is unreachable" in result.stderr
    assert "Traceback" not in result.stderr
