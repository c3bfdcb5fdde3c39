"""Download and verify versions in a long-lived, niced child process: ``python -m serving.fetcher``.

The server stages new versions while it serves. Inside its own process a download runs through boto3's
transfer threads and sha256 passes whose Python work shares the GIL with the event loop and the batcher,
and no OS priority helps with that (BENCHMARKS.md section 7: the download was the largest phase of a swap
and the one that delayed requests). Here the same ``ObjectStoreReader.fetch_version`` runs in a separate
process at a lower priority; the server waits for its answer without holding the GIL.

The child starts once, with the server (importing boto3 and building a client costs about a second of a
core: paid while the server starts, not during each swap on a busy machine, where a niced process gets
only what serving leaves), and then serves one request per line:

- the command line carries the store settings (JSON), the niceness and whether to use ``SCHED_IDLE``;
  credentials come from the environment the server passes down (the standard AWS chain), never from a request;
- request (one JSON line on stdin): ``{"model", "version", "dest", "digest", "runtime_only"}``;
- answer (one JSON line on stdout): ``{"digest": ...}`` on success, else ``{"error": KIND, "message": ...}``
  where KIND is ``destination`` (``dest`` exists but is not a valid bundle) or the exception's class.

A child that dies or does not answer within the timeout is killed; the next fetch starts a new one. A
fetch given up early (``give_up_after_s``: the server finishes a late swap through a second child at
normal priority) stops the child, removes its partial download and starts a new child at once.
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from enginekit.bundle import Manifest, read_manifest
from enginekit.objectstore import FetchDestinationError, ObjectStoreError, ObjectStoreSettings
from serving.osthreads import lower_priority

logger = logging.getLogger("serving.fetcher")


class FetchProcessError(ObjectStoreError):
    """The fetch failed in the child process, or the child did; the message says what and where."""


class FetchAbandonedError(Exception):
    """A fetch was given up after ``give_up_after_s`` (not a failure of the version: the caller fetches it
    another way). The child was stopped and a new one started; nothing was left in the destination."""


class FetchWorker:
    """The server's end of the child process. One fetch at a time (the follower stages one version)."""

    def __init__(
        self, store: ObjectStoreSettings, *, nice: int = 0, idle: bool = False, timeout_s: float = 600.0
    ) -> None:
        self.store = store
        self.nice = nice
        self.idle = idle
        self.timeout_s = timeout_s
        self._process: subprocess.Popen[str] | None = None
        self._answers: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> FetchWorker:
        """Start the child now (the server does this at start, before it takes traffic)."""
        with self._lock:
            self._ensure_started()
        return self

    def _ensure_started(self) -> subprocess.Popen[str]:
        if self._closed:
            raise FetchProcessError("the fetch process was stopped with the server; nothing is fetched any more")
        if self._process is not None and self._process.poll() is None:
            return self._process
        command = [
            sys.executable,
            "-m",
            "serving.fetcher",
            self.store.model_dump_json(),
            str(self.nice),
            str(int(self.idle)),
        ]
        # stderr is the server's own: the child's log lines land next to the server's.
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self._answers = queue.Queue()
        assert process.stdout is not None
        threading.Thread(
            target=_read_lines, args=(process.stdout, self._answers), name="fetcher-answers", daemon=True
        ).start()
        self._process = process
        return process

    def fetch(
        self,
        model: str,
        version: str,
        dest: Path,
        digest: str,
        *,
        runtime_only: bool = False,
        give_up_after_s: float | None = None,
    ) -> Manifest:
        """``fetch_version`` in the child; the verified manifest of ``dest``, or the child's error.

        ``give_up_after_s``: without an answer by then, stop the child, remove its partial download, start a
        new child for the next fetch and raise ``FetchAbandonedError`` (the follower then fetches the version at
        normal priority: ``swap.late_after_s``)."""
        request = {
            "model": model,
            "version": version,
            "dest": str(dest),
            "digest": digest,
            "runtime_only": runtime_only,
        }
        with self._lock:
            process = self._ensure_started()
            assert process.stdin is not None
            try:
                process.stdin.write(json.dumps(request) + "\n")
                process.stdin.flush()
                line = self._answers.get(
                    timeout=self.timeout_s if give_up_after_s is None else min(self.timeout_s, give_up_after_s)
                )
            except (BrokenPipeError, OSError):
                line = None
            except queue.Empty:
                self._kill()
                if give_up_after_s is not None and give_up_after_s < self.timeout_s:
                    _remove_partial_copies(dest)
                    self._ensure_started()  # ready for the next fetch; it starts in the background
                    message = f"fetching {model}/{version} not done after {give_up_after_s:.2f} s"
                    raise FetchAbandonedError(message) from None
                raise FetchProcessError(
                    f"fetching {model}/{version} took longer than {self.timeout_s:.0f} s; the fetch process was "
                    "stopped and the version refused"
                ) from None
            if line is None:  # the child is gone
                code = process.wait()
                self._process = None
                raise FetchProcessError(
                    f"the fetch process exited with code {code} while fetching {model}/{version} "
                    "(its log is in the server's stderr); a new one starts with the next fetch"
                )
        try:
            answer: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            answer = {"error": "protocol", "message": f"unreadable answer {line[:200]!r}"}
        if "digest" in answer:
            manifest = read_manifest(dest)
            if manifest.digest() != digest or answer["digest"] != digest:
                raise FetchProcessError(f"{dest} holds bundle {manifest.digest()}, expected {digest}")
            return manifest
        if answer.get("error") == "destination":
            raise FetchDestinationError(str(answer.get("message")))
        raise FetchProcessError(f"{answer.get('error')}: {answer.get('message')}")

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def close(self) -> None:
        """Stop the child: end of input lets it exit; a child that does not is killed. Not under the lock:
        a fetch still waiting for its answer gets "the fetch process exited" instead of holding up a stop."""
        self._closed = True
        process, self._process = self._process, None
        if process is None:
            return
        try:
            assert process.stdin is not None
            process.stdin.close()
            process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None


def _remove_partial_copies(dest: Path) -> None:
    """What a stopped ``fetch_version`` leaves: its ``.<name>.partial-*`` staging folders next to ``dest``."""
    if dest.parent.is_dir():
        for partial in dest.parent.glob(f".{dest.name}.partial-*"):
            shutil.rmtree(partial, ignore_errors=True)


def _read_lines(stream: IO[str], answers: queue.Queue[str | None]) -> None:
    for line in stream:
        answers.put(line.strip())
    answers.put(None)  # end of output: the child exited


def _serve(store: ObjectStoreSettings) -> int:
    from enginekit.objectstore import ObjectStoreReader

    reader = ObjectStoreReader(store)
    reader.client  # noqa: B018 (build the boto3 client now, while the server is starting)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            manifest = reader.fetch_version(
                request["model"],
                request["version"],
                Path(request["dest"]),
                expected_bundle_digest=request["digest"],
                runtime_only=bool(request.get("runtime_only")),
            )
            answer: dict[str, Any] = {"digest": manifest.digest()}
        except FetchDestinationError as error:
            answer = {"error": "destination", "message": str(error)}
        except Exception as error:  # every failure goes back to the server as what and where
            answer = {"error": type(error).__name__, "message": str(error)}
        print(json.dumps(answer), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print(
            "usage: python -m serving.fetcher STORE_SETTINGS_JSON NICENESS IDLE(0|1) (started by the server)",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.WARNING, format="fetcher: %(levelname)s %(message)s")
    # Before any thread exists: boto3's transfer threads inherit it.
    lower_priority(int(args[1]), idle=args[2] == "1")
    return _serve(ObjectStoreSettings.model_validate_json(args[0]))


if __name__ == "__main__":
    sys.exit(main())
