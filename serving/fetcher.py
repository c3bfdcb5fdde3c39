"""Download and verify one version in a child process: ``python -m serving.fetcher`` (request on stdin).

The server stages new versions while it serves. Inside its own process a 100-MB download runs through
boto3's transfer threads and sha256 passes whose Python work shares the GIL with the event loop and the
batcher, and no OS priority helps with that (measured in BENCHMARKS.md section 7: the download was the
largest phase of a swap and the one that delayed requests). Here the same ``ObjectStoreReader.fetch_version``
runs in a separate, niced process; the server waits for it without holding the GIL.

Request (JSON on stdin): ``{"store": ObjectStoreSettings, "model", "version", "dest", "digest", "nice"}``.
Answer (the last line of stdout, JSON): ``{"digest": ...}`` on success, else ``{"error": KIND, "message":
...}`` where KIND is ``destination`` (``dest`` exists but is not a valid bundle) or the exception's class.
Credentials come from the environment the server passes down (the standard AWS chain), never the request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from enginekit.bundle import Manifest, read_manifest
from enginekit.objectstore import FetchDestinationError, ObjectStoreError, ObjectStoreSettings


class FetchProcessError(ObjectStoreError):
    """The child process failed; the message is its own (what and where)."""


def fetch_in_child(
    store: ObjectStoreSettings,
    model: str,
    version: str,
    dest: Path,
    digest: str,
    *,
    nice: int = 0,
    timeout_s: float = 600.0,
) -> Manifest:
    """``fetch_version`` in a child process; the verified manifest of ``dest``, or the child's error."""
    request = {
        "store": store.model_dump(mode="json"),
        "model": model,
        "version": version,
        "dest": str(dest),
        "digest": digest,
        "nice": nice,
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", "serving.fetcher"],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise FetchProcessError(f"fetching {model}/{version} took longer than {timeout_s:.0f} s; gave up") from None
    lines = done.stdout.strip().splitlines()
    try:
        answer: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        answer = {}
    if "digest" in answer and done.returncode == 0:
        manifest = read_manifest(dest)
        if manifest.digest() != digest or answer["digest"] != digest:
            raise FetchProcessError(f"{dest} holds bundle {manifest.digest()}, expected {digest}")
        return manifest
    if answer.get("error") == "destination":
        raise FetchDestinationError(answer["message"])
    if "error" in answer:
        raise FetchProcessError(f"{answer['error']}: {answer['message']}")
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    raise FetchProcessError(f"the fetch process for {model}/{version} exited {done.returncode}: {tail}")


def main() -> int:
    request = json.loads(sys.stdin.read())
    if request.get("nice"):
        os.nice(int(request["nice"]))
    from enginekit.objectstore import ObjectStoreReader

    try:
        manifest = ObjectStoreReader(ObjectStoreSettings.model_validate(request["store"])).fetch_version(
            request["model"], request["version"], Path(request["dest"]), expected_bundle_digest=request["digest"]
        )
    except FetchDestinationError as error:
        print(json.dumps({"error": "destination", "message": str(error)}))
        return 3
    except Exception as error:  # every failure goes back to the server as what and where
        print(json.dumps({"error": type(error).__name__, "message": str(error)}))
        return 1
    print(json.dumps({"digest": manifest.digest()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
