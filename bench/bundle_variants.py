"""Versions of one real engine bundle for swap tests and the serving load test.

Each variant is a complete, self-consistent bundle directory (its manifest lists every file's size and
sha256), so it passes the publisher's own checks and reaches the object store like any gated bundle; what
makes the bad ones bad is only caught where a server must catch it:

- ``fresh``: the same engine under a new digest (a retrained model that happens to compute the same);
- ``incompatible``: the manifest asks for another ONNX Runtime release (refused by the compatibility check);
- ``golden_mismatch``: golden outputs that the engine does not produce (refused by the canary replay);
- a **corrupt** version is not a bundle: publish a good one, then change bytes of a stored object
  (``corrupt_stored_object``), as a disk or a rogue writer would; the download's checksum check refuses it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from enginekit.bundle import describe_files, read_manifest, utc_now_iso, write_manifest


def derive_bundle(source: Path, destination: Path, label: str, kind: str = "fresh") -> Path:
    """Copy ``source`` to ``destination`` as variant ``kind`` (see the module docstring); ``label`` makes
    the digest unique (it lands in the lineage)."""
    if destination.exists():
        shutil.rmtree(destination)
    shutil.copytree(source, destination)
    manifest = read_manifest(destination)
    roles = {entry.path: entry.role for entry in manifest.files}
    lineage = manifest.lineage.model_dump(mode="json")
    changes: dict[str, Any] = {
        "lineage": {**lineage, "config_hash": f"{lineage['config_hash']}-{label}"},
        "created_at": utc_now_iso(),
    }
    if kind == "incompatible":
        changes["runtime"] = {**manifest.runtime.model_dump(mode="json"), "onnxruntime_version": "1.19.0"}
    elif kind == "golden_mismatch":
        golden_path = destination / manifest.golden.file
        golden = json.loads(golden_path.read_text())
        golden["logits"] = [[-value for value in row] for row in golden["logits"]]  # every argmax moves
        golden_path.write_text(json.dumps(golden))
    elif kind != "fresh":
        raise ValueError(f"unknown bundle variant {kind!r}")
    changes["files"] = [entry.model_dump() for entry in describe_files(destination, roles)]
    write_manifest(destination, manifest.updated(**changes))
    return destination


def corrupt_stored_object(client: Any, bucket: str, key: str) -> None:
    """Flip bytes of a stored object in place (same size), bypassing the publisher's checks."""
    body = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    for position in range(0, len(body), max(1, len(body) // 16)):
        body[position] ^= 0xFF
    client.put_object(Bucket=bucket, Key=key, Body=bytes(body))
