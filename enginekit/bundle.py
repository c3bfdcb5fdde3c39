"""The engine bundle: the one unit that is validated, registered, published, fetched and served.

A bundle is a directory::

    manifest.json          # this module's ``Manifest``; never listed in its own ``files``
    model.qdq.onnx         # portable QDQ ONNX (input of every backend build)
    engine/...             # the backend's engine file(s)
    tokenizer/...          # tokenizer files (tokenizer.json at least)
    golden.json            # canary inputs + expected outputs recorded at build time

Every file is listed in the manifest with its size and sha256; ``verify_bundle`` refuses a bundle whose
files differ from the manifest in any way (missing, extra, resized, changed, or a path escaping the
bundle). The bundle *digest* is the sha256 of the canonical manifest JSON, so it changes whenever any
file or any recorded fact changes.

A *serving copy* holds only ``runtime_files`` (engine, tokenizer, golden set): a server never reads the
portable graph, the largest file of a CPU bundle. ``verify_bundle(..., runtime_only=True)`` checks such a
copy: the runtime files must all be there and match; any other listed file may be absent, and is checked
if present; files the manifest does not list are refused either way.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1
_HASH_CHUNK_BYTES = 1 << 20

Backend = Literal["onnxruntime", "tensorrt"]
FileRole = Literal["onnx_qdq", "engine", "tokenizer", "golden", "report", "other"]


class BundleError(Exception):
    """A bundle is malformed, corrupt or cannot run here. The message says what and where."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _inside_bundle(value: str, what: str) -> str:
    pure = PurePosixPath(value)
    if pure.is_absolute() or ".." in pure.parts or value in ("", ".") or "\\" in value:
        raise ValueError(f"{what} {value!r} must be relative and stay inside the bundle")
    return value


class FileEntry(_Strict):
    path: str
    """POSIX path relative to the bundle root."""
    size: int = Field(ge=0)
    """Bytes."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    role: FileRole = "other"

    @field_validator("path")
    @classmethod
    def _relative_inside_bundle(cls, value: str) -> str:
        _inside_bundle(value, "file path")
        if value == MANIFEST_NAME:
            raise ValueError("the manifest cannot list itself")
        return value


class TensorSpec(_Strict):
    name: str
    dtype: str
    """numpy dtype name, e.g. ``int64`` or ``float32``."""
    shape: list[int | str]
    """Static sizes as ints, dynamic axes by name (``batch``, ``sequence``)."""


class TokenizerSpec(_Strict):
    directory: str = "tokenizer"
    """Inside the bundle; its tokenizer.json must be one of the manifest's files."""
    max_length: int = Field(gt=0)
    """Sequences are truncated to this many tokens, special tokens included."""
    text_pair: bool = False
    """Whether the model takes (text, text_pair) inputs."""

    @field_validator("directory")
    @classmethod
    def _directory_inside_bundle(cls, value: str) -> str:
        return _inside_bundle(value, "tokenizer directory")


class RuntimeRequirements(_Strict):
    backend: Backend
    onnxruntime_version: str | None = None
    execution_provider: str | None = None
    graph_optimization_level: str | None = None
    tensorrt_version: str | None = None
    gpu_name: str | None = None
    compute_capability: str | None = None
    """``major.minor`` of the GPU the TensorRT engine was built for."""
    tensorrt_profiles: list[dict[str, int]] | None = None
    """TensorRT optimization profiles (batch x sequence ranges) in the engine, in profile-index order."""
    tensorrt_fp16: bool | None = None
    build_cpu: str | None = None
    """CPU model of the machine that built the engine (``/proc/cpuinfo`` model name)."""
    build_isa: list[str] | None = None
    """The build CPU's instruction-set extensions that change ONNX Runtime's kernels (AVX2, AVX-512, VNNI,
    AMX...). A server on another CPU runs other kernels: the golden tolerance is measured for that."""


class GoldenSpec(_Strict):
    file: str = "golden.json"
    count: int = Field(ge=1)
    atol: float = Field(gt=0)
    """Largest absolute logit difference tolerated when replaying the golden set (argmax must be equal)."""
    atol_basis: str | None = None
    """How ``atol`` was set: the logit differences measured at build time between numerically different
    executions of the same graph (see ``tasks/engine_build.py``), times a safety factor."""
    min_margin: float | None = None
    """Smallest top-1 minus top-2 logit gap among the canaries: kept well above ``atol``, so kernel
    differences between CPUs cannot flip a canary's predicted label."""


class Lineage(_Strict):
    data_fingerprint: str
    config_hash: str
    code_version: str
    mlflow_run_id: str | None = None
    flow_run_id: str | None = None


class Manifest(_Strict):
    schema_version: int = SCHEMA_VERSION
    model_name: str
    backend: Backend
    precision: Literal["int8", "fp16", "fp32"]
    portable_onnx: str
    engine_file: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    max_batch_size: int = Field(gt=0)
    max_seq_length: int = Field(gt=0)
    labels: list[str] = Field(min_length=2)
    tokenizer: TokenizerSpec
    runtime: RuntimeRequirements
    golden: GoldenSpec
    files: list[FileEntry]
    lineage: Lineage
    metrics: dict[str, float] = Field(default_factory=dict)
    created_at: str

    def file(self, path: str) -> FileEntry:
        for entry in self.files:
            if entry.path == path:
                return entry
        raise BundleError(f"manifest of {self.model_name} lists no file {path!r}")

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        """sha256 of the canonical manifest: identifies the bundle's whole content."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def updated(self, **changes: Any) -> Manifest:
        """A copy with ``changes`` applied and re-validated (the model is frozen)."""
        return Manifest.model_validate({**self.model_dump(mode="json"), **changes})


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def describe_files(bundle_dir: Path, roles: dict[str, FileRole]) -> list[FileEntry]:
    """Size and sha256 of every file under ``bundle_dir`` except the manifest, in a stable order.

    ``roles`` maps a relative path, or a directory prefix ending in ``/``, to its role.
    """
    entries = []
    for path in sorted(p for p in bundle_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(bundle_dir).as_posix()
        if relative == MANIFEST_NAME:
            continue
        role: FileRole = roles.get(relative, "other")
        for prefix, prefix_role in roles.items():
            if prefix.endswith("/") and relative.startswith(prefix):
                role = prefix_role
        entries.append(FileEntry(path=relative, size=path.stat().st_size, sha256=sha256_file(path), role=role))
    return entries


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON so that readers see the old file or the whole new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; these files are meant to be shared and published
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp_name).replace(path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_manifest(bundle_dir: Path, manifest: Manifest) -> Path:
    path = bundle_dir / MANIFEST_NAME
    write_json_atomic(path, manifest.model_dump(mode="json"))
    return path


def parse_manifest(text: str, where: str) -> Manifest:
    """Parse manifest JSON text; ``where`` names its origin (a path or an object URI) for errors."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise BundleError(f"{where}: not valid JSON ({error})") from None
    if not isinstance(raw, dict):
        raise BundleError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{where}: manifest schema_version {version!r} is not supported by this code "
            f"(supports {SCHEMA_VERSION}); upgrade the pipeline package or rebuild the bundle"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors())
        raise BundleError(f"{where}: invalid manifest: {problems}") from None


def read_manifest(bundle_dir: Path) -> Manifest:
    path = bundle_dir / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{bundle_dir}: no {MANIFEST_NAME}; this directory is not an engine bundle")
    return parse_manifest(path.read_text(), str(path))


def runtime_files(manifest: Manifest) -> frozenset[str]:
    """The listed files a runtime reads to serve: the engine file(s), the tokenizer and the golden set."""
    tokenizer_prefix = manifest.tokenizer.directory.rstrip("/") + "/"
    return frozenset(
        entry.path
        for entry in manifest.files
        if entry.path in (manifest.engine_file, manifest.golden.file)
        or entry.path.startswith(tokenizer_prefix)
        or entry.role in ("engine", "tokenizer", "golden")
    )


def verify_bundle(bundle_dir: Path, *, hashed: Mapping[str, str] | None = None, runtime_only: bool = False) -> Manifest:
    """Check every file against the manifest; return the manifest or raise ``BundleError``.

    Refuses missing, extra, resized and changed files, so a bundle that verifies is exactly what was built.
    ``hashed``: sha256 by path of files the caller has just hashed itself (a download that checked each
    file as it landed), so they are not read a second time; every other file is hashed here.
    ``runtime_only``: a serving copy; listed files outside ``runtime_files`` may be absent.
    """
    manifest = read_manifest(bundle_dir)
    hashed = hashed or {}
    problems = []
    listed = {entry.path for entry in manifest.files}
    needed = runtime_files(manifest) if runtime_only else listed
    for entry in manifest.files:
        path = bundle_dir / entry.path
        if not path.is_file():
            if entry.path in needed:
                problems.append(f"missing file {entry.path}")
        elif path.stat().st_size != entry.size:
            problems.append(f"{entry.path}: size {path.stat().st_size} != manifest {entry.size}")
        elif (hashed.get(entry.path) or sha256_file(path)) != entry.sha256:
            problems.append(f"{entry.path}: sha256 differs from manifest (corrupt or modified)")
    for path in bundle_dir.rglob("*"):
        relative = path.relative_to(bundle_dir).as_posix()
        if path.is_file() and relative != MANIFEST_NAME and relative not in listed:
            problems.append(f"unexpected file {relative} (not in manifest)")
    tokenizer_file = f"{manifest.tokenizer.directory.rstrip('/')}/tokenizer.json"
    for required in (manifest.portable_onnx, manifest.engine_file, manifest.golden.file, tokenizer_file):
        if required not in listed:
            problems.append(f"manifest names {required!r} but does not list it in files")
    if problems:
        raise BundleError(f"bundle {bundle_dir} failed verification: " + "; ".join(problems))
    return manifest
