"""Serving settings: one typed model, filled from a YAML file and ``INT8_SERVE_*`` environment variables.

Environment variables win over the file (``INT8_SERVE_PORT=9000``, nested keys with ``__``:
``INT8_SERVE_BATCHING__MAX_BATCH_SIZE=16``). Credentials never appear here: the object store reads them
from the standard AWS chain (``enginekit.objectstore``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from enginekit import yamlio
from enginekit.objectstore import ObjectStoreSettings


class SettingsError(Exception):
    """The serving configuration is wrong; the message names the file, the key and what was expected."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LimitSettings(_Section):
    """What one request may carry. Anything beyond is refused with 4xx and a message, never truncated."""

    max_texts_per_request: int = Field(default=64, gt=0)
    max_chars_per_text: int = Field(default=2000, gt=0)
    """Characters (not tokens) per text; texts longer in tokens than the bundle's max_seq_length are
    truncated by the tokenizer as in training."""
    max_body_bytes: int = Field(default=1 << 20, gt=0)
    """Request body size (after decompression) in bytes."""


class BatchingSettings(_Section):
    """Dynamic batching: concurrent requests are coalesced into engine batches of rows of similar length."""

    max_batch_size: int = Field(default=32, gt=0)
    """Rows per engine call (capped by the bundle's max_batch_size)."""
    max_queue_delay_ms: float = Field(default=2.0, ge=0.0)
    """How long the batcher waits for more rows after the first one arrives (a latency/throughput knob)."""
    workers: int = Field(default=0, ge=0)
    """Threads that run engine batches concurrently (0: one per core). With ``engine_threads: 1`` (the
    default) each batch runs on its own thread: two cores serve two batches at once instead of one batch on
    two threads that wait for each other at every layer, and an engine has no worker threads of its own,
    so it can be built and checked at the staging priority (``swap.staging_nice``)."""
    max_queued_rows: int = Field(default=4096, gt=0)
    """Rows waiting for the engine; beyond this a request is answered 503 with Retry-After at once. Large
    enough to absorb a burst (requests that arrived during a pause); the deadline bounds the latency."""
    length_buckets: list[int] = Field(default_factory=lambda: [8, 16, 32, 64], min_length=1)
    """Token-length bucket bounds: rows are batched with rows of the same bucket, so a short query is
    not padded to a long one. Rows longer than the last bound form one more bucket."""
    request_timeout_ms: float = Field(default=2000.0, gt=0.0)
    """Deadline of a request (queueing + inference); a request past it is answered 503 and not run."""

    @field_validator("length_buckets")
    @classmethod
    def _increasing(cls, bounds: list[int]) -> list[int]:
        if sorted(set(bounds)) != bounds or bounds[0] <= 0:
            raise ValueError(f"length_buckets must be positive and strictly increasing, got {bounds}")
        return bounds


class SwapSettings(_Section):
    """Following the channel pointer and swapping engines."""

    poll_interval_s: float = Field(default=2.0, gt=0.0)
    """Seconds between conditional GETs of the channel pointer."""
    keep_previous_s: float = Field(default=600.0, ge=0.0)
    """The previous engine stays loaded this long after a swap, so a rollback (the pointer moved back)
    swaps in at once; at most two engines are resident."""
    state_dir: Path = Path(".state/serving")
    """Downloaded versions (``versions/``) and the record of the last verified one, used when the object
    store is unreachable at start."""
    keep_local_versions: int = Field(default=3, ge=2)
    """Local copies kept (the serving ones always); older ones are deleted."""
    warm_batch_sizes: list[int] = Field(default_factory=lambda: [1], min_length=1)
    """Batch sizes run once per length bucket before a new engine takes traffic (first-run allocations
    and kernel choices happen there, not on a user's request). One row per bucket is enough for ONNX
    Runtime on CPU: measured on the demo engine, the first B4/B32 run of a shape after that is no slower
    than the next ones, while warming B4 and B32 too cost ~2.5 s of both cores of a 2-core machine per
    swap, the largest part of a swap there (the golden replay then runs a full batch anyway). Add sizes
    if your runtime pays per shape (a TensorRT engine with many profiles, say)."""
    allow_label_change: bool = False
    """Refuse a version whose label set differs from the serving one's (clients read labels by name)."""
    staging_yield_ms: float = Field(default=50.0, ge=0.0)
    """When staging runs at normal priority (``staging_nice: 0``, or engines with threads of their own),
    before each engine run of a version being staged (warm-up shapes, golden replay chunks), wait up to
    this long for the server to have no request queued or running, so staging fills the gaps between
    serving batches instead of delaying them. 0: do not wait. Each staging run is a few milliseconds (one
    row per bucket, 8-row golden chunks); at 250 ms the waits alone made a swap last up to 2.3 s on a
    busy 2-core machine (BENCHMARKS.md section 7)."""
    staging_chunk_rows: int = Field(default=8, gt=0)
    """Rows per engine run of the golden replay while staging: short runs, so a request that arrives
    during one waits little."""
    fetch_in_subprocess: bool = True
    """Download and verify new versions in a child process (``serving.fetcher``), so the transfer threads
    and hashing do not share the GIL with the requests being served."""
    fetch_timeout_s: float = Field(default=600.0, gt=0.0)
    """A download that takes longer is abandoned (the version is refused until the pointer moves again)."""
    staging_nice: int = Field(default=19, ge=0, le=19)
    """OS scheduling niceness of the fetch process (download and hashing) and of the staging thread that
    builds, warms and checks new versions, so that on a busy machine requests get the cores first and
    staging takes what is left. 19, the lowest priority: next to a CPU-bound process at 10 the p99 of the
    engine's B8 batches on a 2-core machine was 17-18 ms, at 19 13-14 ms, alone 11-13 ms
    (``bench.serve_threads``). Build, warm-up and golden replay are niced only while engines have no
    intra-op worker threads (``engine_threads: 1``): those inherit the priority of the thread that builds
    the engine, and serve after the swap. 0: stage at normal priority."""
    staging_idle: bool = True
    """With ``staging_nice`` above 0, also put the fetch process and the staging thread in Linux's
    ``SCHED_IDLE`` class: a serving thread that wakes takes the core from them at once, where a niced
    thread first finishes its time slice, and they weigh a fifth of nice 19. Two threads serving B8 batches
    on a 2-core machine next to a staging loop in the same process (build an engine, run canary batches):
    serving p99 x1.49 of no staging at nice 19, x1.38 with ``SCHED_IDLE`` (``bench.serve_threads``,
    BENCHMARKS.md section 7)."""
    late_after_s: float = Field(default=1.0, ge=0.0)
    """Seconds after the pointer moved (its ``updated_at``; counted from when this server saw it if the
    clocks disagree) after which a swap still staging finishes at normal priority: the download moves to a
    second fetch process at normal priority (the niced one is stopped and restarted), the remaining steps
    to the follower's own thread, without waiting for gaps in the traffic. At the lowest priority a swap
    on a busy 2-core machine took up to 8 s; with 1.5 s here up to 3.1-3.2 s after the move, with 1.0 s
    2.6 s (BENCHMARKS.md section 7, runs 12-15); what is left of it at normal priority is a few tenths of a
    second of one core. 0: never (staging stays niced however long it
    takes; no second fetch process)."""


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INT8_SERVE_", env_nested_delimiter="__", extra="forbid", frozen=True)

    model_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    """The model whose channel this server follows (the registered model name)."""
    channel: str = Field(default="production", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    store: ObjectStoreSettings
    host: str = "127.0.0.1"
    """Bind address; 127.0.0.1 unless a deployment puts the server behind a network on purpose."""
    port: int = Field(default=8000, ge=0, le=65535)
    keep_alive_s: int = Field(default=75, gt=0)
    """How long an idle client connection stays open. Longer than the clients' and load balancers' own
    idle timeouts (aiohttp 15 s, AWS ALB 60 s): when the server closes first, a client can send on a
    connection at the moment it closes, and that request fails for nothing."""
    engine_threads: int = Field(default=1, ge=0)
    """ONNX Runtime intra-op threads per engine call (0: one per physical core). 1 by default: the
    batcher's workers (``batching.workers``) give the parallelism. With more than one, an engine has worker
    threads, which inherit the priority of the thread that builds it: the follower then stages at normal
    priority (only the download stays niced)."""
    shared_thread_pool: bool = False
    """All engines of the process (serving, previous, the one being staged) share one ONNX Runtime thread
    pool. Its threads always spin between batches (ONNX Runtime offers no switch from Python), which keeps
    the cores busy in the gaps that a low-priority download needs; off by default: each engine has its own
    pool (``engine_spinning`` applies)."""
    engine_spinning: bool = True
    """The engines' intra-op threads spin while a run is in progress and stop when it returns, so the
    cores are idle between batches and staging a new version (at a lower priority) runs there. False: they
    never spin (about 1 ms more per single-row batch on a 2-core machine). Per-session pools only."""
    malloc_arena_max: int = Field(default=2, ge=0)
    """Cap on glibc's malloc arenas in the server process (0: glibc's default, up to 8 per core). Each
    thread may otherwise allocate from a heap of its own, and what one heap frees (a swapped-out engine's
    buffers) serves only that heap's thread again: resident memory creeps up over many swaps."""
    limits: LimitSettings = LimitSettings()
    batching: BatchingSettings = BatchingSettings()
    swap: SwapSettings = SwapSettings()

    @model_validator(mode="after")
    def _no_secrets_in_the_store_settings(self) -> ServerSettings:
        if self.store.create_bucket:
            raise ValueError("store.create_bucket: a server only reads; it must not create buckets")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file (init = the YAML mapping); no .env or secrets files.
        return env_settings, init_settings


def load_settings(path: Path | None, overrides: dict[str, Any] | None = None) -> ServerSettings:
    """Settings from a YAML file (or none: environment only), then ``overrides`` (command-line flags)."""
    raw: Any = {}
    where = "environment (INT8_SERVE_*)"
    if path is not None:
        where = str(path)
        if not Path(path).is_file():
            raise SettingsError(f"serving config {path} does not exist (configs/serving/ holds the shipped ones)")
        try:
            raw = yamlio.load(Path(path).read_text()) or {}
        except yamlio.YAMLError as error:
            raise SettingsError(f"{path}: not valid YAML: {error}") from None
        if not isinstance(raw, dict):
            raise SettingsError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    raw = {**raw, **(overrides or {})}
    try:
        return ServerSettings(**raw)
    except ValidationError as error:
        problems = [
            f"  {'.'.join(str(part) for part in item['loc']) or '(top level)'}: {item['msg']}"
            + (f" (got {item['input']!r})" if item["type"] != "missing" and not isinstance(item["input"], dict) else "")
            for item in error.errors()
        ]
        raise SettingsError(f"{where}: invalid serving configuration\n" + "\n".join(problems)) from None
