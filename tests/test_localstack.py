"""The local stack: real SeaweedFS and Prefect server processes on free ports in a temporary state dir.

The tests of this module run in order on one stack: up, up again, status, then down.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.localstack import LOCAL_PROFILE, LocalStack, LocalStackError, main
from tests.s3_fixtures import pick_stack_ports


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    local_stack = LocalStack(
        tmp_path_factory.mktemp("stack"),
        ports=pick_stack_ports(),
        buckets=("int8-engines",),
        start_timeout_s=60,
    )
    try:
        yield local_stack
    finally:
        local_stack.down()


def _pids(report: dict) -> tuple[int, int]:
    return report["seaweedfs"]["pid"], report["prefect"]["pid"]


def test_up_starts_healthy_services_with_private_credentials(stack: LocalStack) -> None:
    report = stack.up()

    assert report["seaweedfs"]["healthy"] and report["prefect"]["healthy"]
    assert stack.credentials_file.stat().st_mode & 0o777 == 0o600
    assert f"[{LOCAL_PROFILE}]" in stack.credentials_file.read_text()
    assert (stack.state_dir / "logs" / "seaweedfs.log").is_file()
    assert report["env"]["PREFECT_API_URL"] == f"http://127.0.0.1:{stack.ports.prefect}/api"


def test_second_up_reuses_the_running_processes_and_credentials(stack: LocalStack) -> None:
    first = stack.status()
    credentials = stack.credentials_file.read_text()

    again = stack.up()
    # A second command on the same state dir (a fresh object, as a new CLI invocation) does the same.
    from_another_command = LocalStack(stack.state_dir, ports=stack.ports, buckets=("int8-engines",)).up()

    assert _pids(again) == _pids(first) == _pids(from_another_command)
    assert stack.credentials_file.read_text() == credentials


def test_cli_status_prints_endpoints_and_env_but_not_the_secret(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    # No port flags: the CLI takes them from the state dir's stack.json written by `up`.
    exit_code = main(["status", "--state-dir", str(stack.state_dir)])

    output = capsys.readouterr().out
    secret = next(
        line.split("=", 1)[1].strip()
        for line in stack.credentials_file.read_text().splitlines()
        if line.startswith("aws_secret_access_key")
    )
    assert exit_code == 0
    assert stack.s3_url in output and stack.prefect_ui_url in output
    assert f"export PREFECT_API_URL={stack.prefect_api_url}" in output
    assert f"export AWS_SHARED_CREDENTIALS_FILE={stack.credentials_file}" in output
    assert f"export AWS_PROFILE={LOCAL_PROFILE}" in output
    assert secret not in output


def test_a_pid_file_naming_another_program_is_not_taken_for_the_service(tmp_path: Path) -> None:
    other = LocalStack(tmp_path, ports=pick_stack_ports(), services=("seaweedfs",))
    (tmp_path / "pids").mkdir()
    (tmp_path / "pids" / "seaweedfs.pid").write_text(f"{os.getpid()}\n")  # alive, but it is pytest

    assert other.status()["seaweedfs"]["running"] is False


@pytest.mark.parametrize(("service", "flag"), [("seaweedfs", "--s3-port"), ("prefect", "--prefect-port")])
def test_a_taken_port_is_reported_before_anything_starts(tmp_path: Path, service: str, flag: str) -> None:
    ports = pick_stack_ports()
    taken = ports.s3 if service == "seaweedfs" else ports.prefect
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        blocked = LocalStack(tmp_path, ports=ports, services=(service,))

        with pytest.raises(LocalStackError, match=rf"port {taken} .*already in use.*{flag}"):
            blocked.up()

    assert not (tmp_path / "pids" / f"{service}.pid").exists()


def test_down_stops_both_processes(stack: LocalStack) -> None:
    seaweedfs_pid, prefect_pid = _pids(stack.status())

    stack.down()

    report = stack.status()
    assert not report["seaweedfs"]["running"] and not report["prefect"]["running"]
    assert not list((stack.state_dir / "pids").glob("*.pid"))
    for pid in (seaweedfs_pid, prefect_pid):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_niceness_reaches_every_thread_of_a_service(tmp_path: Path) -> None:
    """Linux keeps niceness per thread: the service must start niced, not be reniced by pid afterwards."""
    import os

    niced = LocalStack(tmp_path, ports=pick_stack_ports(), services=("seaweedfs",), niceness=3, start_timeout_s=60)
    try:
        pid = niced.up()["seaweedfs"]["pid"]
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        threads = list(Path(f"/proc/{pid}/task").iterdir())
        nice_values = {int((task / "stat").read_text().rsplit(")", 1)[1].split()[16]) for task in threads}
        assert len(threads) > 1 and nice_values == {min(ours + 3, 19)}
        # its session's autogroup too, where the kernel has them: shared by niceness across sessions
        group = Path(f"/proc/{pid}/autogroup")
        if group.is_file() and Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1":
            assert group.read_text().split()[-1] == "3", group.read_text()
    finally:
        niced.down()
