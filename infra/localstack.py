"""The local stack of the embedded default: a SeaweedFS S3 server and a Prefect server on 127.0.0.1.

``up()`` is idempotent: a service whose pid is alive and whose health check passes is left alone; a
stale pid file is cleaned up; a port held by something else is reported (with the flag that moves it)
before anything starts. Both services run detached in their own session, so they outlive the command
that started them; ``down()`` stops them (Prefect first, then SeaweedFS).

Everything lives under ``state_dir`` (default ``.state/stack``)::

    s3-credentials        AWS shared-credentials file, profile ``int8-local``, mode 0600, made once
    stack.json            the ports of the last ``up`` (so ``status``/``down`` need no flags)
    seaweedfs/            SeaweedFS data (persists across restarts)
    prefect/              PREFECT_HOME of the local Prefect server (its SQLite database)
    logs/*.log, pids/*.pid

Command line::

    python -m infra.localstack up|down|status [--state-dir .state/stack] [--s3-port 8333] ...

SeaweedFS notes (``weed mini``, 4.48): it opens master, volume, filer, S3 and admin HTTP ports and a
gRPC port for each at HTTP port + 10000 (its embedded maintenance worker dials the admin at that offset
even when another gRPC port is configured, so we keep the convention). WebDAV, Iceberg and Lance
endpoints and telemetry are switched off. It saves the options of its last start in ``DIR/mini.options``;
flags given on the command line win over that file. Bucket auto-creation is switched off so that a
misspelled bucket is an error here as it would be on AWS.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

LOCAL_PROFILE = "int8-local"
"""Profile name in the generated credentials file."""
DEFAULT_STATE_DIR = Path(".state/stack")
DEFAULT_BUCKETS = ("int8-engines",)
HOST = "127.0.0.1"
GRPC_PORT_OFFSET = 10_000
"""SeaweedFS places each gRPC port at its HTTP port + 10000."""
SERVICES = ("seaweedfs", "prefect")
_STOP_TIMEOUT_S = 20.0
_POLL_INTERVAL_S = 0.25
_LOG_TAIL_LINES = 40


class LocalStackError(Exception):
    """The local stack could not be started or stopped; the message says why and what to do."""


@dataclass(frozen=True)
class StackPorts:
    """Every port the stack binds on 127.0.0.1."""

    s3: int = 8333
    """S3 API of SeaweedFS (its gRPC port is this + 10000)."""
    seaweedfs_base: int = 18340
    """SeaweedFS master, volume, filer and admin HTTP ports are base .. base+3 (gRPC at +10000), so a
    second stack with another base does not collide."""
    prefect: int = 4200
    """Prefect server API and UI."""

    def seaweedfs(self) -> dict[str, int]:
        http_ports = {
            "s3": self.s3,
            "master": self.seaweedfs_base,
            "volume": self.seaweedfs_base + 1,
            "filer": self.seaweedfs_base + 2,
            "admin": self.seaweedfs_base + 3,
        }
        grpc_ports = {f"{name}.grpc": port + GRPC_PORT_OFFSET for name, port in http_ports.items()}
        return {**http_ports, **grpc_ports}

    def check(self) -> None:
        ports = {**{f"seaweedfs {name}": port for name, port in self.seaweedfs().items()}}
        ports["prefect"] = self.prefect
        for name, port in ports.items():
            if not 1024 <= port <= 65535:
                raise LocalStackError(
                    f"{name} port {port} is outside 1024-65535; choose --s3-port below 55536 and "
                    "--seaweedfs-base-port below 55532 (gRPC ports sit at +10000)"
                )
        seen: dict[int, str] = {}
        for name, port in ports.items():
            if port in seen:
                raise LocalStackError(
                    f"{name} and {seen[port]} would both use port {port}; move --s3-port, "
                    "--seaweedfs-base-port or --prefect-port apart"
                )
            seen[port] = name


# --------------------------------------------------------------------------------------- process helpers


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _pid_alive(pid: int, executable_name: str) -> bool:
    """True if ``pid`` runs and (where /proc exists) is the program we started, not a reused pid."""
    with contextlib.suppress(ChildProcessError, OSError):
        # Reap it if it is our own exited child, so it does not linger as a zombie that looks alive.
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process reusing the pid
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return True
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        command_line = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return False
    return state != "Z" and executable_name in command_line


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR ignores sockets lingering in TIME_WAIT but still fails on a listener.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return True
    return False


def _lower_priority(niceness: int) -> None:
    """In the child, before exec: niceness for every thread it will start, and the same for its own
    session's autogroup. With ``kernel.sched_autogroup_enabled`` (the default of most distributions) the
    CPU is shared between sessions first and by niceness only inside one: a niced service in its own
    session would otherwise compete as an equal with the whole session of the process it should give way
    to. Kernels without autogroups have no file to write; that is not an error."""
    os.nice(niceness)
    with contextlib.suppress(OSError):
        Path("/proc/self/autogroup").write_text(str(niceness))


def _log_tail(log_file: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = log_file.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:])


def _find_executable(name: str) -> Path:
    """The console script installed next to this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(name)
    if found is None:
        raise LocalStackError(
            f"cannot find the `{name}` executable next to {sys.executable} or on PATH; install the project "
            "into this environment (pip install -e .[dev]) which brings it"
        )
    return Path(found)


def _signal_process_group(pid: int, signal_number: int) -> None:
    """Signal the whole group of a service we started (it leads its own session), else just the pid."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal_number)
        else:
            os.kill(pid, signal_number)


# -------------------------------------------------------------------------------------------- services


@dataclass
class _Service:
    name: str
    executable_name: str
    ports: dict[str, int]
    port_flags: str
    """How to move its ports, for messages."""
    command: Callable[[], list[str]]
    environment: Callable[[], dict[str, str]]
    healthy: Callable[[], bool]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port the OS reports free now (another process may still take it later: good enough for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def pick_stack_ports() -> StackPorts:
    """Ports for a private stack (tests, benchmarks): every SeaweedFS port, its gRPC twin and Prefect's free.

    Drawn from 20000-44999 so that +10000 stays below the ephemeral range the OS hands out.
    """
    chooser = random.Random()  # noqa: S311 - spreading ports, not security
    for _attempt in range(200):
        base = chooser.randrange(20_000, 44_980)
        ports = StackPorts(s3=base + 10, seaweedfs_base=base, prefect=base + 11)
        wanted = [*ports.seaweedfs().values(), ports.prefect]
        if all(port_is_free(port) for port in wanted):
            return ports
    raise RuntimeError("no free block of ports for a test stack")


class LocalStack:
    """SeaweedFS (S3) and a Prefect server for the local default, managed through pid files."""

    def __init__(
        self,
        state_dir: Path = DEFAULT_STATE_DIR,
        *,
        ports: StackPorts | None = None,
        buckets: Sequence[str] = DEFAULT_BUCKETS,
        services: Sequence[str] = SERVICES,
        start_timeout_s: float = 90.0,
        niceness: int = 0,
    ) -> None:
        unknown = set(services) - set(SERVICES)
        if unknown:
            raise LocalStackError(f"unknown service(s) {sorted(unknown)}; choose from {list(SERVICES)}")
        self.state_dir = Path(state_dir).absolute()
        self.ports = ports or StackPorts()
        self.ports.check()
        self.buckets = tuple(buckets)
        for bucket in self.buckets:
            if len(bucket) < 3:
                raise LocalStackError(f"bucket name {bucket!r} is too short: S3 needs at least 3 characters")
        self.service_names = tuple(name for name in SERVICES if name in services)
        self.start_timeout_s = start_timeout_s
        self.niceness = niceness
        """OS niceness the services start with (a benchmark keeps a stand-in S3 from taking the cores of
        the server it measures; 0 for the user's stack)."""
        self._s3_client_cache: Any = None
        self._children: dict[int, Any] = {}
        """Popen objects of processes this object started, kept so they are reaped, not leaked."""

    # ---- paths and endpoints

    @property
    def credentials_file(self) -> Path:
        return self.state_dir / "s3-credentials"

    @property
    def s3_url(self) -> str:
        return f"http://{HOST}:{self.ports.s3}"

    @property
    def prefect_ui_url(self) -> str:
        return f"http://{HOST}:{self.ports.prefect}"

    @property
    def prefect_api_url(self) -> str:
        return f"{self.prefect_ui_url}/api"

    def _pid_file(self, name: str) -> Path:
        return self.state_dir / "pids" / f"{name}.pid"

    def _log_file(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    def env(self) -> dict[str, str]:
        """Environment a user exports to use this stack (no secrets: they stay in the credentials file)."""
        env = {}
        if "prefect" in self.service_names:
            env["PREFECT_API_URL"] = self.prefect_api_url
        if "seaweedfs" in self.service_names:
            env["AWS_SHARED_CREDENTIALS_FILE"] = str(self.credentials_file)
            env["AWS_PROFILE"] = LOCAL_PROFILE
            env["AWS_ENDPOINT_URL_S3"] = self.s3_url
        return env

    # ---- credentials

    def ensure_credentials(self) -> None:
        """Create the credentials file once (mode 0600); later starts reuse it."""
        if self.credentials_file.exists():
            self._read_credentials()  # fail early on a damaged file
            return
        self.credentials_file.parent.mkdir(parents=True, exist_ok=True)
        parser = configparser.ConfigParser()
        parser[LOCAL_PROFILE] = {
            # AWS-like shape: 20 upper-case characters, the secret a random URL-safe token.
            "aws_access_key_id": "INT8" + secrets.token_hex(8).upper(),
            "aws_secret_access_key": secrets.token_urlsafe(30),
        }
        descriptor = os.open(self.credentials_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write("# Local SeaweedFS credentials written by `python -m infra.localstack up`.\n")
            parser.write(handle)

    def _read_credentials(self) -> tuple[str, str]:
        parser = configparser.ConfigParser()
        parser.read(self.credentials_file)
        try:
            section = parser[LOCAL_PROFILE]
            return section["aws_access_key_id"], section["aws_secret_access_key"]
        except KeyError:
            raise LocalStackError(
                f"{self.credentials_file} has no complete [{LOCAL_PROFILE}] profile; delete the file and run "
                "`python -m infra.localstack up` again (new credentials are generated)"
            ) from None

    # ---- service definitions

    def _services(self, names: Sequence[str] | None = None) -> list[_Service]:
        definitions = {"seaweedfs": self._seaweedfs, "prefect": self._prefect}
        return [definitions[name]() for name in (self.service_names if names is None else names)]

    def _seaweedfs(self) -> _Service:
        ports = self.ports.seaweedfs()

        def command() -> list[str]:
            return [
                str(_find_executable("weed")),
                "mini",
                f"-dir={self.state_dir / 'seaweedfs'}",
                f"-ip={HOST}",
                f"-ip.bind={HOST}",
                f"-s3.port={ports['s3']}",
                f"-master.port={ports['master']}",
                f"-volume.port={ports['volume']}",
                f"-filer.port={ports['filer']}",
                f"-admin.port={ports['admin']}",
                "-admin.ui=false",
                "-webdav=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.telemetry=false",
                "-s3.autoCreateBucket=false",
            ]

        def environment() -> dict[str, str]:
            access_key, secret_key = self._read_credentials()
            env = {
                key: value
                for key, value in os.environ.items()
                # The user's AWS settings must not leak into the server (weed reads some of them).
                if not key.startswith(("AWS_", "S3_"))
            }
            # weed mini enforces exactly these credentials for its S3 API.
            env["AWS_ACCESS_KEY_ID"] = access_key
            env["AWS_SECRET_ACCESS_KEY"] = secret_key
            return env

        return _Service(
            name="seaweedfs",
            executable_name="weed",
            ports=ports,
            port_flags="--s3-port / --seaweedfs-base-port",
            command=command,
            environment=environment,
            healthy=self._s3_healthy,
        )

    def _prefect(self) -> _Service:
        def command() -> list[str]:
            return [
                str(_find_executable("prefect")),
                "server",
                "start",
                "--host",
                HOST,
                "--port",
                str(self.ports.prefect),
            ]

        def environment() -> dict[str, str]:
            # A PREFECT_API_URL of the caller points clients elsewhere; the server itself does not need it.
            env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
            env["PREFECT_HOME"] = str(self.state_dir / "prefect")
            env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
            return env

        return _Service(
            name="prefect",
            executable_name="prefect",
            ports={"api": self.ports.prefect},
            port_flags="--prefect-port",
            command=command,
            environment=environment,
            healthy=self._prefect_healthy,
        )

    # ---- health checks

    def s3_client(self) -> Any:
        """A client with the stack's own keys, built once (health polling calls this often)."""
        if self._s3_client_cache is not None:
            return self._s3_client_cache
        import boto3
        import botocore.session
        from botocore.config import Config

        self._read_credentials()  # a clear error for a damaged file
        core_session = botocore.session.Session()
        # Exactly what users do with the exported env lines: our file, our profile. The explicit profile
        # also keeps the caller's AWS_PROFILE / AWS_ACCESS_KEY_ID (another account, maybe) out of the way.
        core_session.set_config_variable("credentials_file", str(self.credentials_file))
        session = boto3.session.Session(botocore_session=core_session, profile_name=LOCAL_PROFILE)
        self._s3_client_cache = session.client(
            "s3",
            endpoint_url=self.s3_url,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                retries={"mode": "standard", "max_attempts": 1},
                connect_timeout=2,
                read_timeout=5,
            ),
        )
        return self._s3_client_cache

    def _s3_healthy(self) -> bool:
        """An authenticated S3 request succeeds (proves the server is up AND takes our credentials)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.s3_client().list_buckets()
        except (BotoCoreError, ClientError, LocalStackError):
            return False
        return True

    def _prefect_healthy(self) -> bool:
        connection = http.client.HTTPConnection(HOST, self.ports.prefect, timeout=2)
        try:
            connection.request("GET", "/api/health")
            response = connection.getresponse()
            return response.status == 200 and response.read().strip() == b"true"
        except OSError:
            return False
        finally:
            connection.close()

    # ---- lifecycle

    def _running_pid(self, service: _Service) -> int | None:
        pid = _read_pid(self._pid_file(service.name))
        if pid is not None and _pid_alive(pid, service.executable_name):
            return pid
        return None

    def up(self) -> dict[str, Any]:
        """Start what is not running, wait until healthy, create the buckets; return ``status()``."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.ensure_credentials()
        services = self._services()
        to_start = [service for service in services if self._running_pid(service) is None]
        for service in to_start:
            self._pid_file(service.name).unlink(missing_ok=True)  # stale, if any
        # Check every port before starting anything, so a conflict never leaves half a stack running.
        for service in to_start:
            for port_name, port in service.ports.items():
                if _port_in_use(port):
                    raise LocalStackError(
                        f"port {port} ({service.name} {port_name}) on {HOST} is already in use by another "
                        f"process, so {service.name} cannot start. Stop that process, or choose other ports "
                        f"with {service.port_flags} (python -m infra.localstack up --help)."
                    )
        self._write_stack_file()
        starting = {service.name for service in to_start}
        for service in services:
            if service.name in starting:
                self._start(service)
            self._wait_healthy(service)
        if "seaweedfs" in self.service_names:
            self._create_buckets()
        return self.status()

    def _start(self, service: _Service) -> None:
        import subprocess

        log_file = self._log_file(service.name)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self._pid_file(service.name).parent.mkdir(parents=True, exist_ok=True)
        (self.state_dir / service.name).mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as log:
            log.write(f"\n--- starting {service.name} at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode())
            log.flush()
            process = subprocess.Popen(
                service.command(),
                cwd=self.state_dir / service.name,
                env=service.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: survives the terminal that ran `up`, and down() can signal its whole group.
                start_new_session=True,
                # Niceness before exec, so every thread the service starts inherits it (Linux: per thread).
                preexec_fn=partial(_lower_priority, self.niceness) if self.niceness else None,
            )
        self._children[process.pid] = process
        self._pid_file(service.name).write_text(f"{process.pid}\n")

    def _wait_healthy(self, service: _Service) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if service.healthy():
                return
            if self._running_pid(service) is None:
                self._pid_file(service.name).unlink(missing_ok=True)
                raise LocalStackError(
                    f"{service.name} exited while starting; last lines of {self._log_file(service.name)}:\n"
                    f"{_log_tail(self._log_file(service.name))}"
                )
            time.sleep(_POLL_INTERVAL_S)
        raise LocalStackError(
            f"{service.name} did not become healthy within {self.start_timeout_s:.0f} s (it is still "
            f"running; `python -m infra.localstack down` stops it). Last lines of "
            f"{self._log_file(service.name)}:\n"
            f"{_log_tail(self._log_file(service.name))}"
        )

    def _create_buckets(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.s3_client()
        for bucket in self.buckets:
            try:
                client.create_bucket(Bucket=bucket)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                    raise LocalStackError(f"could not create bucket {bucket!r} at {self.s3_url}: {error}") from None
            except BotoCoreError as error:
                raise LocalStackError(f"could not create bucket {bucket!r} at {self.s3_url}: {error}") from None

    def down(self) -> None:
        """Stop the services (Prefect first, then SeaweedFS): SIGTERM, wait, then SIGKILL.

        Stops every service with a pid file in this state dir, also one left out of ``services``.
        """
        for service in reversed(self._services(SERVICES)):
            pid_file = self._pid_file(service.name)
            pid = self._running_pid(service)
            if pid is not None:
                self._stop(pid, service)
            pid_file.unlink(missing_ok=True)

    def _stop(self, pid: int, service: _Service) -> None:
        _signal_process_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            if not _pid_alive(pid, service.executable_name):
                break
            time.sleep(_POLL_INTERVAL_S)
        else:
            _signal_process_group(pid, signal.SIGKILL)
            time.sleep(_POLL_INTERVAL_S)
        child = self._children.pop(pid, None)
        if child is not None:
            with contextlib.suppress(Exception):
                child.wait(timeout=5)
        if service.name == "seaweedfs":
            # weed 4.48 can leave unix sockets behind in /tmp (its fixed place) when it exits, named
            # seaweedfs-<component>-<port>.sock; the ports are this stack's, so the sockets are ours.
            for port in service.ports.values():
                for leftover in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):  # noqa: S108
                    if leftover.is_socket():
                        leftover.unlink(missing_ok=True)

    def status(self) -> dict[str, Any]:
        """Per service: running, healthy, pid, endpoints, log file; plus the env lines to export."""
        report: dict[str, Any] = {"state_dir": str(self.state_dir)}
        for service in self._services():
            pid = self._running_pid(service)
            entry: dict[str, Any] = {
                "running": pid is not None,
                "healthy": pid is not None and service.healthy(),
                "pid": pid,
                "ports": service.ports,
                "log": str(self._log_file(service.name)),
            }
            if service.name == "seaweedfs":
                entry["s3_url"] = self.s3_url
                entry["buckets"] = list(self.buckets)
                entry["credentials_file"] = str(self.credentials_file)
                entry["profile"] = LOCAL_PROFILE
            else:
                entry["ui_url"] = self.prefect_ui_url
                entry["api_url"] = self.prefect_api_url
            report[service.name] = entry
        report["env"] = self.env()
        return report

    def _write_stack_file(self) -> None:
        payload = {
            "ports": asdict(self.ports),
            "buckets": list(self.buckets),
            "services": list(self.service_names),
        }
        (self.state_dir / "stack.json").write_text(json.dumps(payload, indent=2) + "\n")


# ------------------------------------------------------------------------------------------------- CLI


def _stack_from_arguments(arguments: argparse.Namespace) -> LocalStack:
    """Flags win; otherwise the ports/buckets of the last ``up`` in this state dir; otherwise defaults."""
    state_dir = Path(arguments.state_dir)
    remembered: dict[str, Any] = {}
    stack_file = state_dir / "stack.json"
    if stack_file.is_file():
        with contextlib.suppress(ValueError, OSError):
            remembered = json.loads(stack_file.read_text())
    ports = {**StackPorts().__dict__, **remembered.get("ports", {})}
    for field_name, flag_value in (
        ("s3", arguments.s3_port),
        ("seaweedfs_base", arguments.seaweedfs_base_port),
        ("prefect", arguments.prefect_port),
    ):
        if flag_value is not None:
            ports[field_name] = flag_value
    services = remembered.get("services", list(SERVICES))
    if arguments.no_prefect:
        services = ["seaweedfs"]
    return LocalStack(
        state_dir,
        ports=StackPorts(**ports),
        buckets=arguments.bucket or remembered.get("buckets", DEFAULT_BUCKETS),
        services=services,
        start_timeout_s=arguments.timeout,
    )


def _print_report(report: dict[str, Any]) -> None:
    for name in SERVICES:
        entry = report.get(name)
        if entry is None:
            continue
        state = "healthy" if entry["healthy"] else ("running, NOT healthy" if entry["running"] else "stopped")
        pid = f" (pid {entry['pid']})" if entry["pid"] else ""
        print(f"{name}: {state}{pid}; log {entry['log']}")
        if name == "seaweedfs":
            print(f"  S3 endpoint:   {entry['s3_url']}  buckets: {', '.join(entry['buckets'])}")
            print(f"  credentials:   {entry['credentials_file']} (profile {entry['profile']})")
        else:
            print(f"  Prefect UI:    {entry['ui_url']}")
            print(f"  Prefect API:   {entry['api_url']}")
    print("\n# to use this stack from a shell:")
    for key, value in report["env"].items():
        print(f"export {key}={value}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.localstack",
        description="Start, stop or inspect the local SeaweedFS S3 + Prefect server stack.",
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", default=str(DEFAULT_STATE_DIR), help="where data, logs, pids live")
    parser.add_argument("--s3-port", type=int, default=None, help="S3 port (default 8333)")
    parser.add_argument(
        "--seaweedfs-base-port",
        type=int,
        default=None,
        help="first of SeaweedFS's internal ports base..base+3, gRPC at +10000 (default 18340)",
    )
    parser.add_argument("--prefect-port", type=int, default=None, help="Prefect server port (default 4200)")
    parser.add_argument(
        "--bucket", action="append", help=f"bucket to create (repeatable; default {DEFAULT_BUCKETS[0]})"
    )
    parser.add_argument("--no-prefect", action="store_true", help="manage SeaweedFS only")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for health on up")
    arguments = parser.parse_args(argv)
    try:
        stack = _stack_from_arguments(arguments)
        if arguments.command == "up":
            _print_report(stack.up())
            return 0
        if arguments.command == "down":
            stack.down()
            print(f"stopped the local stack in {stack.state_dir} (data kept)")
            return 0
        report = stack.status()
        _print_report(report)
        return 0 if all(report[name]["healthy"] for name in stack.service_names) else 1
    except LocalStackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
