"""A real serving process on loopback for tests: settings file, start, wait, stop, and a publisher that
moves the channel it follows (the project's own publishing code against the session's SeaweedFS)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.bundle_variants import derive_bundle
from tasks.publish import CHANNEL_ABSENT, ObjectStorePublisher
from tests.s3_fixtures import LocalS3, free_port

ROOT = Path(__file__).resolve().parent.parent


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout=30):
    """(status, headers, body) of one request; HTTP errors are answers too, not exceptions."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def post_json(url: str, payload: Any, timeout=30):
    return http("POST", url, json.dumps(payload).encode(), {"Content-Type": "application/json"}, timeout)


@dataclass
class ServerProcess:
    directory: Path
    settings: dict[str, Any]
    python: str = sys.executable
    cwd: Path = ROOT
    process: subprocess.Popen | None = None
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    def start(self, wait_ready: bool = True, timeout: float = 60.0) -> ServerProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "serve.yaml"
        config.write_text(yaml.safe_dump({**self.settings, "port": self.port}))
        log = self.log_path.open("a")
        self.process = subprocess.Popen(
            [self.python, "-m", "serving", "--config", str(config)],
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        path = "/v2/health/ready" if wait_ready else "/v2/health/live"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                status, _headers, _body = http("GET", self.url + path, timeout=2)
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not {'ready' if wait_ready else 'live'} after {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def log(self) -> str:
        return self.log_path.read_text()[-4000:] if self.log_path.exists() else ""

    def get(self, path: str):
        return http("GET", self.url + path)

    def ready(self) -> dict[str, Any]:
        return json.loads(self.get("/v2/health/ready")[2])

    def wait_for_version(self, version: str, timeout: float = 30.0) -> float:
        """Seconds until ``/v2/health/ready`` names ``version``."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            status, _headers, body = self.get("/v2/health/ready")
            if status == 200 and json.loads(body).get("version") == version:
                return time.monotonic() - started
            time.sleep(0.05)
        raise TimeoutError(f"version {version} not serving after {timeout} s: {self.ready()}\n{self.log()}")

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample from /metrics (0 when absent)."""
        text = self.get("/metrics")[2].decode()
        wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            sample, _, value = line.rpartition(" ")
            metric, _, label_text = sample.partition("{")
            if metric == name and ",".join(sorted(label_text.rstrip("}").split(","))) == wanted:
                return float(value)
        return 0.0


def server_settings(seaweedfs: LocalS3, model_name: str, state_dir: Path, **overrides: Any) -> dict[str, Any]:
    store = seaweedfs.settings(max_attempts=1, connect_timeout_s=1.0, read_timeout_s=5.0).model_dump(mode="json")
    settings: dict[str, Any] = {
        "model_name": model_name,
        "channel": "production",
        "store": store,
        "engine_threads": 1,
        "swap": {"poll_interval_s": 0.25, "state_dir": str(state_dir), "keep_previous_s": 600.0},
    }
    for key, value in overrides.items():
        settings[key] = {**settings.get(key, {}), **value} if isinstance(value, dict) else value
    return settings


class ChannelPublisher:
    """Publishes variants of one real bundle and moves the channel, as the pipeline would."""

    def __init__(self, seaweedfs: LocalS3, model_name: str, bundle: Path, work: Path, channel: str = "production"):
        self.seaweedfs = seaweedfs
        self.store = ObjectStorePublisher(seaweedfs.settings())
        self.model_name = model_name
        self.bundle = bundle
        self.work = work
        self.channel = channel
        self.count = 0

    def publish(self, kind: str = "fresh", move: bool = True) -> str:
        self.count += 1
        version = f"v{self.count}-{kind.replace('_', '-')}"
        directory = derive_bundle(self.bundle, self.work / version, version, kind)
        self.store.publish_version(self.model_name, version, directory)
        if move:
            self.move(version)
        return version

    def move(self, version: str) -> None:
        current = self.store.read_channel(self.model_name, self.channel)
        etag = current.etag if current is not None and current.etag else CHANNEL_ABSENT
        self.store.move_channel(self.model_name, self.channel, version, expected_etag=etag, reason="test")
