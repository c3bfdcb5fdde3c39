"""Follow the channel pointer and hot-swap verified engines, off the serving path.

One thread polls ``channels/CHANNEL.json`` with a conditional GET every ``poll_interval_s``. When the
pointer names a new version:

1. **download** a serving copy (engine, tokenizer, golden set) into ``state_dir/versions/VERSION``
   (``ObjectStoreReader.fetch_version``, run in the niced fetch process ``serving.fetcher``: staged in a
   temporary folder, every file checked against the manifest and the pointer's bundle digest, renamed
   into place only when complete);
2. **verify** the local copy against its manifest again (a cached copy could have been touched);
3. **compatibility**: backend and runtime version runnable here, the inputs this server feeds, the label
   set and pair/single-text mode of the serving engine (clients depend on both);
4. **build** the engine (an ONNX Runtime session; the serving thread never waits for it);
5. **warm** every (batch size x length bucket) shape once, so first-run allocations do not hit users;
6. **golden** replay: the canary inputs recorded at build time must give the recorded predictions;
7. **swap** atomically (``EngineSet.swap``): new batches take the new engine, running ones finish on theirs.

Staging runs at the lowest priority (``swap.staging_nice``): the download in the fetch process, build,
warm-up and golden replay on one niced thread (``int8-stager``), so requests get the cores first. On a
busy machine that can starve a swap for seconds; once ``swap.late_after_s`` have passed since the pointer
moved and the swap is still staging, what is left runs at normal priority (a second fetch process, the
follower's own thread), so a new version serves within a bounded time. A server with no engine yet stages
at normal priority.

Any failure leaves the serving engine in place, is logged and counted (``swaps_total{result=...}``), and
is not retried until the pointer changes again. A pointer moved back to the previous version swaps the
still-resident previous engine back in without loading anything (rollback). If the store is unreachable
at start, the last verified local copy is served, and ``/v2/health/ready`` says so.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np

from enginekit.bundle import Manifest, verify_bundle, write_json_atomic
from enginekit.objectstore import ChannelPointer, FetchDestinationError, ObjectStoreError, ObjectStoreReader
from enginekit.runtime import IncompatibleBundleError, check_golden, check_runnable, load_engine
from enginekit.tokenization import MODEL_INPUT_NAMES, EncodedBatch
from serving.engines import EngineSet, LoadedEngine
from serving.fetcher import FetchAbandonedError, FetchWorker
from serving.osthreads import lower_priority, name_os_thread
from serving.settings import ServerSettings

logger = logging.getLogger("serving.follower")
T = TypeVar("T")

LAST_VERIFIED = "last-verified.json"
MIN_NICED_DOWNLOAD_S = 0.25
"""A late download starts at normal priority at once when less than this is left before the deadline:
started niced, it would rarely finish, and giving it up costs a new fetch process."""
PHASES = ("download", "verify", "compatibility", "build", "warm", "golden", "swap")


class SwapError(Exception):
    """A version could not be swapped in; ``phase`` says where it failed."""

    def __init__(self, phase: str, message: str) -> None:
        super().__init__(message)
        self.phase = phase


@dataclass
class FollowerStatus:
    """What ``/v2/health/ready`` reports besides the serving engine."""

    store_reachable: bool | None = None
    """None until the first poll finished."""
    store_error: str | None = None
    source_note: str | None = None
    """Set while serving a local copy because the store was unreachable at start."""
    last_swap: dict | None = None
    last_failure: dict | None = None
    polls: int = 0
    late_swaps: int = 0
    """Swaps that were still staging ``swap.late_after_s`` after the pointer moved (then finished at
    normal priority)."""


@dataclass
class SwapObserver:
    """Hooks for metrics; no-ops by default."""

    swap_result: Callable[[str], None] = lambda _result: None
    phase_seconds: Callable[[str, float], None] = lambda _phase, _seconds: None
    poll_result: Callable[[str], None] = lambda _result: None
    late: Callable[[str], None] = lambda _phase: None
    """A swap went late during this phase: the rest of it runs at normal priority."""
    serving: Callable[[LoadedEngine], None] = lambda _engine: None


def check_serving_compatibility(manifest: Manifest, serving: Manifest | None, allow_label_change: bool) -> None:
    """Runnable here, what this server can feed, and what its clients rely on; raises ``IncompatibleBundleError``."""
    check_runnable(manifest)
    fed = set(MODEL_INPUT_NAMES)
    unknown = [spec.name for spec in manifest.inputs if spec.name not in fed]
    if unknown:
        raise IncompatibleBundleError(f"the engine wants inputs {unknown}; this server feeds only {sorted(fed)}")
    if len(manifest.outputs) != 1:
        raise IncompatibleBundleError(f"the engine has {len(manifest.outputs)} outputs; one (the logits) expected")
    if len(set(manifest.labels)) != len(manifest.labels):
        raise IncompatibleBundleError("the manifest's labels are not unique")
    if serving is None:
        return
    if manifest.tokenizer.text_pair != serving.tokenizer.text_pair:
        mode = "text pairs" if manifest.tokenizer.text_pair else "single texts"
        raise IncompatibleBundleError(f"the new engine classifies {mode}, unlike the serving one: clients would break")
    if manifest.labels != serving.labels and not allow_label_change:
        raise IncompatibleBundleError(
            f"the new engine's labels {manifest.labels} differ from the serving ones {serving.labels} "
            "(set swap.allow_label_change to accept a label change)"
        )


def _lower_priority(nice: int, idle: bool) -> None:
    """Initializer of the staging thread: name it and lower its own priority (this thread only; the event
    loop, the batcher workers and the library pools keep theirs: ``serving.osthreads``)."""
    name_os_thread("int8-stager")
    logger.info("staging thread at %s", lower_priority(nice, idle=idle))


def warm_shapes(
    engine: LoadedEngine,
    batch_sizes: list[int],
    length_buckets: list[int],
    before_each: Callable[[], object] | None = None,
) -> int:
    """Run the engine once per (batch size, length) the batcher will produce; returns the number of runs.
    ``before_each`` is called before every run (the server waits there for a gap in its own traffic)."""
    runtime = engine.runtime
    manifest = runtime.manifest
    lengths = sorted({min(bound, manifest.max_seq_length) for bound in length_buckets} | {manifest.max_seq_length})
    runs = 0
    for batch in sorted({min(size, manifest.max_batch_size) for size in batch_sizes}):
        for length in lengths:
            ids = np.full((batch, length), 1000, dtype=np.int64)  # any in-vocabulary id
            ids[:, 0], ids[:, -1] = 101, 102
            ones = np.ones_like(ids)
            if before_each is not None:
                before_each()
            runtime.run(EncodedBatch(ids, ones, np.zeros_like(ids)))
            runs += 1
    return runs


class ChannelFollower:
    def __init__(
        self,
        settings: ServerSettings,
        engines: EngineSet,
        observer: SwapObserver | None = None,
        reader: ObjectStoreReader | None = None,
        serving_idle: Callable[[float], object] | None = None,
    ) -> None:
        """``serving_idle(timeout_s)`` blocks until the server has no request queued or running (or the
        timeout passes): staging calls it before each of its engine runs (``Batcher.wait_idle``)."""
        self.settings = settings
        self.serving_idle = serving_idle
        self.engines = engines
        self.observer = observer or SwapObserver()
        self.reader = reader or ObjectStoreReader(settings.store)
        swap = settings.swap
        in_child = reader is None and swap.fetch_in_subprocess
        self.fetcher = (
            FetchWorker(settings.store, nice=swap.staging_nice, idle=swap.staging_idle, timeout_s=swap.fetch_timeout_s)
            if in_child
            else None
        )
        """Downloads run in a niced child process (``serving.fetcher``) unless a reader was handed in."""
        self.late_fetcher = (
            FetchWorker(settings.store, nice=0, timeout_s=swap.fetch_timeout_s)
            if in_child and swap.staging_nice and swap.late_after_s
            else None
        )
        """A second child at normal priority: late downloads, and the first one (nothing served yet)."""
        self.stager = (
            ThreadPoolExecutor(
                1,
                thread_name_prefix="int8-stager",
                initializer=_lower_priority,
                initargs=(swap.staging_nice, swap.staging_idle),
            )
            if swap.staging_nice and settings.engine_threads == 1 and not settings.shared_thread_pool
            else None
        )
        """One niced thread for build, warm-up and golden replay. Engines with one intra-op thread start no
        threads of their own, so building one there leaves no threads at this priority to serve after the
        swap (threads inherit their creator's priority). The thread is created by the follower (normal
        priority) at start and lowers its own priority."""
        self._late_at: float | None = None
        """When the swap in progress moves to normal priority (None: never)."""
        self._late = False
        self._niced = False
        """Whether the swap in progress started niced (False while nothing is served)."""
        self.status = FollowerStatus()
        self._etag: str | None = None
        self._failed_etag: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="channel-follower", daemon=True)
        self.versions_dir = settings.swap.state_dir / "versions"
        self._phases: dict[str, float] = {}
        """Seconds of each phase of the swap in progress (reported with its result in the ready details)."""

    # ---- lifecycle

    def start(self) -> None:
        for fetcher in (self.fetcher, self.late_fetcher):
            if fetcher is not None:
                fetcher.start()
        if self.stager is not None:
            self.stager.submit(int)  # create the staging thread now, from this normal-priority thread
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for fetcher in (self.fetcher, self.late_fetcher):
            if fetcher is not None:
                fetcher.close()
        if self.stager is not None:
            self.stager.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        name_os_thread("int8-follower")
        if self.settings.swap.staging_nice and self.stager is None:
            logger.info(
                "staging at normal priority: engines with %s intra-op threads start threads that inherit the "
                "priority of the thread that builds them (only the download runs niced)",
                self.settings.engine_threads or "automatic",
            )
        first = True
        while not self._stop.is_set():
            try:
                self.poll_once(starting=first)
            except Exception:  # never let the follower die: the server keeps serving what it has
                logger.exception("unexpected error while following the channel")
            first = False
            self.engines.expire()
            self._stop.wait(self.settings.swap.poll_interval_s)

    # ---- one poll

    def poll_once(self, starting: bool = False) -> None:
        settings = self.settings
        self.status.polls += 1
        try:
            read = self.reader.poll_channel(settings.model_name, settings.channel, self._etag)
        except ObjectStoreError as error:
            self.status.store_reachable, self.status.store_error = False, str(error)
            self.observer.poll_result("error")
            logger.warning("cannot read the channel pointer: %s", error)
            if starting or self.engines.current is None:
                self._serve_last_verified(error)
            return
        self.status.store_reachable, self.status.store_error = True, None
        self.observer.poll_result("changed" if read.changed else "unchanged")
        if not read.changed:
            return
        self._etag = read.etag
        if read.pointer is None:
            logger.info("channel %s of %s has no pointer yet", settings.channel, settings.model_name)
            return
        self.follow(read.pointer)

    def follow(self, pointer: ChannelPointer) -> None:
        current = self.engines.current
        if current is not None and current.version == pointer.version and current.digest == pointer.bundle_digest:
            if self.status.source_note:
                logger.info("object store reachable again; it names the version already serving")
                self.status.source_note = None
            return
        if pointer.etag is not None and pointer.etag == self._failed_etag:
            return  # this exact pointer failed already; wait for the next move
        started = time.perf_counter()
        self._phases = {}
        # Nothing served yet: nothing to give way to, stage at normal priority from the start.
        self._late_at = started if current is None else self._deadline(pointer, started)
        self._late, self._niced = False, current is not None
        rolled_back = self.engines.rollback(pointer.version)
        if rolled_back is not None and rolled_back.digest == pointer.bundle_digest:
            seconds = time.perf_counter() - started
            self.observer.phase_seconds("swap", seconds)
            self.observer.swap_result("rollback")
            self.observer.serving(rolled_back)
            self._record_success(rolled_back, pointer, seconds, rollback=True)
            logger.info("rolled back to the resident version %s in %.3f s", pointer.version, seconds)
            return
        try:
            engine = self.stage(pointer)
        except SwapError as error:
            self._failed_etag = pointer.etag
            self.observer.swap_result(f"{error.phase}_failed")
            self.status.last_failure = {
                "version": pointer.version,
                "phase": error.phase,
                "error": str(error),
                "at": time.time(),
                "phase_seconds": dict(self._phases),
            }
            serving = current.version if current else "nothing"
            logger.error("version %s refused (%s): %s; still serving %s", pointer.version, error.phase, error, serving)
            return
        with self._phase("swap"):
            self.engines.swap(engine)
        self.observer.swap_result("success")
        self.observer.serving(engine)
        self._record_success(engine, pointer, time.perf_counter() - started, rollback=False)
        self._prune_local_copies()

    def _deadline(self, pointer: ChannelPointer, seen: float) -> float | None:
        """When a swap seen at ``seen`` (``perf_counter``) goes late: ``late_after_s`` after the pointer
        moved (its ``updated_at``), so time spent before the poll saw it counts; never before ``seen`` and
        never later than ``late_after_s`` after it (a publisher's clock ahead of ours, or no timestamp)."""
        late_after = self.settings.swap.late_after_s
        if not late_after:
            return None
        try:
            moved = datetime.fromisoformat(pointer.updated_at)
            age = (datetime.now(UTC) - moved).total_seconds()
        except (TypeError, ValueError):
            age = 0.0
        return seen + min(late_after, max(0.0, late_after - age))

    # ---- staging a version

    @contextmanager
    def _phase(self, name: str):
        began = time.perf_counter()
        try:
            yield
        except SwapError:
            raise
        except Exception as error:  # whatever breaks a phase refuses the version; serving goes on
            raise SwapError(name, f"{type(error).__name__}: {error}") from error
        finally:
            seconds = time.perf_counter() - began
            self._phases[name] = round(seconds, 4)
            self.observer.phase_seconds(name, seconds)

    def stage(self, pointer: ChannelPointer) -> LoadedEngine:
        """Download, verify, check, build, warm and replay a version; the engine it returns is ready to swap."""
        settings = self.settings
        local = self.versions_dir / pointer.version
        with self._phase("download"):
            fetch = partial(
                self._fetch_child if self.fetcher is not None else self.reader.fetch_version,
                settings.model_name,
                pointer.version,
                local,
                expected_bundle_digest=pointer.bundle_digest,
                runtime_only=True,  # a server never reads the portable graph (half of a CPU bundle's bytes)
            )
            try:
                fetched = fetch()
            except FetchDestinationError:  # a damaged or stale local copy: fetch afresh
                shutil.rmtree(local)
                fetched = fetch()
        return self._load(local, pointer.version, pointer.bundle_digest, source="channel", verified=fetched)

    def _fetch_child(
        self, model: str, version: str, local: Path, *, expected_bundle_digest: str, runtime_only: bool
    ) -> Manifest:
        assert self.fetcher is not None
        fetch = partial(self.fetcher.fetch, model, version, local, expected_bundle_digest, runtime_only=runtime_only)
        if self.late_fetcher is None or self._late_at is None:
            return fetch()
        remaining = self._late_at - time.perf_counter()
        if remaining >= MIN_NICED_DOWNLOAD_S:
            try:
                return fetch(give_up_after_s=remaining)
            except FetchAbandonedError:
                pass
        self._went_late("download")
        return self.late_fetcher.fetch(model, version, local, expected_bundle_digest, runtime_only=runtime_only)

    def _staged(self, phase: str, step: Callable[[], T]) -> T:
        """Run one step of staging on the niced thread; once the swap is late (or was never to be niced),
        here, at normal priority. A step that is still running on the niced thread when the swap goes late
        is run again here and its own result dropped (build, warm-up and golden runs have no side effects
        beyond the engine they build or run)."""
        if self.stager is None:
            return step()
        if self._late_at is not None and time.perf_counter() >= self._late_at:
            self._went_late(phase)
            return step()
        future = self.stager.submit(step)
        remaining = None if self._late_at is None else max(0.0, self._late_at - time.perf_counter())
        try:
            return future.result(timeout=remaining)
        except TimeoutError:
            if future.done():
                return future.result()
            future.cancel()
            self._went_late(phase)
            return step()

    def _went_late(self, phase: str) -> None:
        """Count a swap that goes late, once (a server with nothing to serve yet stages at normal priority
        from the start: not late)."""
        if self._late or not self._niced:
            return
        self._late = True
        self.status.late_swaps += 1
        self.observer.late(phase)
        logger.info(
            "swap still staging (%s) %.1f s after the pointer moved: finishing it at normal priority",
            phase,
            self.settings.swap.late_after_s,
        )

    def _load(
        self, local: Path, version: str, digest: str, source: str, verified: Manifest | None = None
    ) -> LoadedEngine:
        """``verified``: the manifest ``fetch_version`` just checked every file of (sha256 of 100 MB is
        ~0.1 s of a core that serving needs; each pass is done once, not again here and in the build)."""
        settings = self.settings
        with self._phase("verify"):
            manifest = verified if verified is not None else verify_bundle(local, runtime_only=True)
            if manifest.digest() != digest:
                raise SwapError("verify", f"local copy {local} has digest {manifest.digest()}, expected {digest}")
        with self._phase("compatibility"):
            serving = self.engines.current
            check_serving_compatibility(
                manifest, serving.runtime.manifest if serving else None, settings.swap.allow_label_change
            )
        # At most two engines resident: the serving one and the one being built (the previous one goes).
        self.engines.drop_previous()
        with self._phase("build"):
            build = partial(load_engine, local, threads=settings.engine_threads, verify_golden=False, verified=manifest)
            runtime = self._staged("build", build)
            engine = EngineSet.track(LoadedEngine(runtime, version, digest, local, source))
        pace = self._pace
        with self._phase("warm"):
            buckets = settings.batching.length_buckets
            self._staged("warm", partial(warm_shapes, engine, settings.swap.warm_batch_sizes, buckets, pace))
        with self._phase("golden"):
            rows = settings.swap.staging_chunk_rows
            self._staged("golden", partial(check_golden, runtime, local, chunk_rows=rows, before_each=pace))
        return engine

    def _pace(self) -> None:
        """Before each staging engine run at normal priority: let queued and running requests go first,
        for a bounded time. Not on the niced thread (the OS gives serving the cores first there, and waits
        would only lengthen the swap), nor once the swap is late (it should finish now)."""
        wait = self.settings.swap.staging_yield_ms / 1000
        if self.serving_idle is None or wait <= 0 or self._late or self.stager is not None:
            return
        self.serving_idle(wait)

    # ---- local copies

    def _record_success(self, engine: LoadedEngine, pointer: ChannelPointer, seconds: float, rollback: bool) -> None:
        self.status.last_swap = {
            "version": engine.version,
            "rollback": rollback,
            "seconds": round(seconds, 4),
            "phase_seconds": dict(self._phases),
            "late": self._late,
            "pointer_updated_at": pointer.updated_at,
            "at": time.time(),
        }
        self.status.source_note = None
        record = {
            "model": self.settings.model_name,
            "channel": self.settings.channel,
            "version": engine.version,
            "digest": engine.digest,
            "directory": str(engine.bundle_dir),
            "verified_at": time.time(),
        }
        write_json_atomic(self.settings.swap.state_dir / LAST_VERIFIED, record)

    def _serve_last_verified(self, error: Exception) -> None:
        if self.engines.current is not None:
            return
        path = self.settings.swap.state_dir / LAST_VERIFIED
        if not path.is_file():
            logger.error("object store unreachable and no verified local copy in %s: not ready", path.parent)
            return
        record = json.loads(path.read_text())
        if record.get("model") != self.settings.model_name:
            return
        self._phases = {}
        self._late_at, self._late, self._niced = time.perf_counter(), False, False  # nothing served yet
        try:
            engine = self._load(Path(record["directory"]), record["version"], record["digest"], source="local copy")
        except SwapError as failure:
            logger.error("last verified local copy %s fails now (%s): %s", record["directory"], failure.phase, failure)
            self.status.last_failure = {
                "version": record["version"],
                "phase": failure.phase,
                "error": str(failure),
                "at": time.time(),
                "phase_seconds": dict(self._phases),
            }
            return
        self.engines.swap(engine)
        self.observer.swap_result("local_copy")
        self.observer.serving(engine)
        self.status.source_note = (
            f"object store unreachable at start ({type(error).__name__}); serving the last verified local copy "
            f"{record['version']} from {record['directory']}"
        )
        logger.warning(self.status.source_note)

    def _prune_local_copies(self) -> None:
        keep = {engine.version for engine in (self.engines.current, self.engines.previous) if engine is not None}
        if not self.versions_dir.is_dir():
            return
        copies = sorted(
            (path for path in self.versions_dir.iterdir() if path.is_dir() and not path.name.startswith(".")),
            key=lambda path: path.stat().st_mtime,
            reverse=True,
        )
        spare = self.settings.swap.keep_local_versions - len(keep)
        for path in copies:
            if path.name in keep:
                continue
            if spare > 0:
                spare -= 1
                continue
            shutil.rmtree(path, ignore_errors=True)

    def snapshot(self) -> dict:
        return asdict(self.status)
