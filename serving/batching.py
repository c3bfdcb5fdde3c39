"""Dynamic batching: concurrent requests coalesced into engine batches of rows of similar token length.

Requests wait in one bounded queue (counted in rows). Worker threads (``workers``: one per core by
default, each running single-threaded engine calls; never the event loop) each take what is queued once
the first row has waited ``max_queue_delay_ms`` (or a full batch is there), tokenize it, group the rows by
token-length bucket so a short query is not padded to a long one, run each group in batches of at most
``max_batch_size`` rows on the engine that is serving when the group was taken, and answer each request
as soon as its last row is done. Every row of a request runs on the same engine, so a swap in the middle
never mixes versions inside one answer.

Back-pressure instead of growth: a request that would push the queue past ``max_queued_rows`` is refused
at once (``OverloadedError``: 503 with Retry-After), and a request still queued at its deadline is answered
``DeadlineExceededError`` (503) without running.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from serving.engines import EngineSet, LoadedEngine
from serving.osthreads import name_os_thread
from serving.settings import BatchingSettings


class OverloadedError(Exception):
    """The queue is full; retry after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceededError(Exception):
    """The request waited past its deadline and was not run."""


class NotReadyError(Exception):
    """No verified engine is loaded yet."""


@dataclass(frozen=True)
class BatchResult:
    logits: np.ndarray
    """float32 (rows, labels), in the request's row order."""
    engine: LoadedEngine
    queue_seconds: float


@dataclass(eq=False)
class _Pending:
    texts: list[str]
    pairs: list[str] | None
    future: asyncio.Future[BatchResult]
    loop: asyncio.AbstractEventLoop
    enqueued: float
    deadline: float
    logits: np.ndarray | None = None
    remaining: int = 0
    started: float = 0.0

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class BatchObserver:
    """Hooks for metrics (queue time, rows per engine call, engine seconds); no-ops by default."""

    queue_seconds: Callable[[float], None] = lambda _seconds: None
    batch_rows: Callable[[int], None] = lambda _rows: None
    engine_seconds: Callable[[float], None] = lambda _seconds: None
    batch_shape: Callable[[int, int], None] = lambda _rows, _length: None
    """(rows, padded token length) of every engine call."""


def _resolve(future: asyncio.Future, result: BatchResult | None, error: BaseException | None) -> None:
    if future.done():  # the client went away and its handler was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Batcher:
    def __init__(self, engines: EngineSet, settings: BatchingSettings, observer: BatchObserver | None = None) -> None:
        self.engines = engines
        self.settings = settings
        self.observer = observer or BatchObserver()
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._condition = threading.Condition()
        self._stopping = False
        self._running = 0
        """Workers running rows on an engine (guarded by ``_condition``)."""
        workers = settings.workers or os.cpu_count() or 1
        self._threads = [
            threading.Thread(target=self._work, name=f"batcher-{index}", daemon=True) for index in range(workers)
        ]
        self._take_rows = max(settings.max_batch_size, 4 * settings.max_batch_size // workers)
        """Rows one worker takes at most: a few batches' worth, so rows of equal length can find each other
        across requests, shared out when several workers are idle."""
        self.seconds_per_row = 0.001
        """Moving average of engine seconds per row: sizes the Retry-After hint."""

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no row is queued or running, or ``timeout_s`` has passed; True if idle.

        Staging a new engine calls this before each of its engine runs, so its work fills the gaps between
        serving batches instead of delaying them; the timeout keeps staging moving on a saturated server.
        """
        deadline = time.monotonic() + timeout_s
        with self._condition:
            while self._queue or self._running:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping:
                    return False
                self._condition.wait(remaining)
            return True

    def stop(self) -> None:
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)

    async def submit(self, texts: list[str], pairs: list[str] | None, timeout_ms: float | None) -> BatchResult:
        if self.engines.current is None:
            raise NotReadyError("no verified engine is loaded yet")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        budget = min(timeout_ms or self.settings.request_timeout_ms, self.settings.request_timeout_ms) / 1000
        pending = _Pending(texts, pairs, loop.create_future(), loop, now, now + budget)
        with self._condition:
            if self._queued_rows + len(texts) > self.settings.max_queued_rows:
                wait = max(0.05, self._queued_rows * self.seconds_per_row)
                raise OverloadedError(
                    f"the server is at capacity ({self._queued_rows} rows queued, limit "
                    f"{self.settings.max_queued_rows}); retry in {wait:.2f} s",
                    wait,
                )
            self._queue.append(pending)
            self._queued_rows += len(texts)
            self._condition.notify_all()  # the worker, whichever else waits (wait_idle) must not take its wake-up
        return await pending.future

    # ---- worker thread

    def _take(self) -> list[_Pending] | None:
        """Wait for rows, give the first one max_queue_delay_ms to gather company, take what is queued."""
        delay = self.settings.max_queue_delay_ms / 1000
        with self._condition:
            while True:
                while not self._queue and not self._stopping:
                    self._condition.wait()
                if self._stopping:
                    return None
                gather_until = self._queue[0].enqueued + delay
                while self._queued_rows < self.settings.max_batch_size and not self._stopping:
                    remaining = gather_until - time.monotonic()
                    if remaining <= 0:
                        break
                    self._condition.wait(remaining)
                if self._queue:  # another worker may have taken everything while this one waited
                    break
            taken: list[_Pending] = []
            rows = 0
            # Up to a few batches' worth, so rows of equal length can find each other across requests.
            while self._queue and (not taken or rows + len(self._queue[0]) <= self._take_rows):
                item = self._queue.popleft()
                taken.append(item)
                rows += len(item)
            self._queued_rows -= rows
            self._running += 1
            return taken

    def _work(self) -> None:
        name_os_thread("int8-batcher")
        while True:
            taken = self._take()
            if taken is None:
                return
            try:
                self._serve(taken)
            finally:
                with self._condition:
                    self._running -= 1
                    if not self._queue and not self._running:
                        self._condition.notify_all()  # wakes wait_idle (submit notifies only the workers)

    def _serve(self, taken: list[_Pending]) -> None:
        now = time.monotonic()
        live = []
        for item in taken:
            if now > item.deadline:
                waited = now - item.enqueued
                error = DeadlineExceededError(f"the request waited {1000 * waited:.0f} ms, past its deadline")
                item.loop.call_soon_threadsafe(_resolve, item.future, None, error)
            else:
                live.append(item)
        if not live:
            return
        engine = self.engines.current  # every row taken now runs on this engine
        if engine is None:
            for item in live:
                item.loop.call_soon_threadsafe(_resolve, item.future, None, NotReadyError("no engine is loaded"))
            return
        try:
            self._run(engine, live, now)
        except Exception as error:  # an engine failure fails these requests, never the worker
            for item in live:
                item.loop.call_soon_threadsafe(_resolve, item.future, None, error)

    def _run(self, engine: LoadedEngine, items: list[_Pending], started: float) -> None:
        runtime = engine.runtime
        labels = len(runtime.manifest.labels)
        owners: list[tuple[_Pending, int]] = []
        texts: list[str] = []
        pairs: list[str] | None = [] if items[0].pairs is not None else None
        for item in items:
            item.logits = np.empty((len(item), labels), dtype=np.float32)
            item.remaining = len(item)
            item.started = started
            self.observer.queue_seconds(started - item.enqueued)
            owners += [(item, row) for row in range(len(item))]
            texts += item.texts
            if pairs is not None and item.pairs is not None:
                pairs += item.pairs
        rows = runtime.encoder.tokenize(texts, pairs)
        bounds = self.settings.length_buckets
        buckets: dict[int, list[int]] = {}
        for index, tokenized in enumerate(rows):
            buckets.setdefault(bisect.bisect_left(bounds, len(tokenized)), []).append(index)
        limit = min(self.settings.max_batch_size, runtime.manifest.max_batch_size)
        for members in buckets.values():  # in order of first appearance: the oldest rows first
            for start in range(0, len(members), limit):
                chunk = members[start : start + limit]
                began = time.perf_counter()
                batch = runtime.encoder.collate([rows[i] for i in chunk])
                logits = runtime.run(batch)
                seconds = time.perf_counter() - began
                self.observer.batch_rows(len(chunk))
                self.observer.batch_shape(len(chunk), int(batch.input_ids.shape[1]))
                self.observer.engine_seconds(seconds)
                self.seconds_per_row = 0.9 * self.seconds_per_row + 0.1 * seconds / len(chunk)
                for position, index in enumerate(chunk):
                    item, row = owners[index]
                    assert item.logits is not None
                    item.logits[row] = logits[position]
                    item.remaining -= 1
                    if item.remaining == 0:
                        result = BatchResult(item.logits, engine, item.started - item.enqueued)
                        item.loop.call_soon_threadsafe(_resolve, item.future, result, None)
