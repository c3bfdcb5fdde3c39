"""Dynamic batching on the real tiny engine: concurrent requests coalesce, rows of similar length share a
batch, every answer equals the engine's own, a full queue refuses at once and a late request is not run."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from serving.batching import Batcher, BatchObserver, DeadlineExceededError, NotReadyError, OverloadedError
from serving.engines import EngineSet, LoadedEngine
from serving.settings import BatchingSettings

SHORT = ["rain", "shoes", "news", "sunny", "deal", "oslo"]
LONG = [f"weather forecast for the coming weekend in paris and then berlin and tokyo number {i}" for i in range(6)]


@pytest.fixture(scope="module")
def engine(tiny_build):
    from enginekit.runtime import load_engine

    return LoadedEngine(load_engine(tiny_build.bundle_dir, threads=1), "v1", "digest", tiny_build.bundle_dir)


def _batcher(engine, shapes, **settings):
    engines = EngineSet(keep_previous_s=60)
    engines.swap(engine)
    observer = BatchObserver(batch_shape=lambda rows, length: shapes.append((rows, length)))
    return Batcher(engines, BatchingSettings(**settings), observer)


def test_concurrent_requests_coalesce_by_length_and_get_the_engines_own_answers(engine):
    from enginekit.runtime import predict_logits

    shapes: list[tuple[int, int]] = []
    batcher = _batcher(engine, shapes, max_queue_delay_ms=50, length_buckets=[8, 16, 32])
    batcher.start()

    async def many():
        requests = [[text] for text in SHORT + LONG]  # one text per request, short and long interleaved
        return await asyncio.gather(*(batcher.submit(texts, None, None) for texts in requests))

    try:
        results = asyncio.run(many())
    finally:
        batcher.stop()
    expected = predict_logits(engine.runtime, SHORT + LONG)
    got = np.concatenate([result.logits for result in results])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert all(result.engine is engine for result in results)
    assert len(shapes) == 2 and sorted(rows for rows, _ in shapes) == [6, 6]  # 12 requests, 2 engine calls
    short_length = max(len(engine.runtime.encoder.tokenize([text])[0]) for text in SHORT)
    assert min(length for _, length in shapes) == short_length  # short queries not padded to the long ones


def test_a_full_queue_refuses_at_once_and_a_late_request_is_not_run(engine):
    shapes: list[tuple[int, int]] = []
    batcher = _batcher(engine, shapes, max_queued_rows=4, request_timeout_ms=1)

    async def scenario():
        with pytest.raises(OverloadedError, match="at capacity") as full:
            await batcher.submit(SHORT, None, None)  # 6 rows > 4 queued rows allowed
        assert full.value.retry_after_s > 0
        batcher.start()  # the worker starts after the request's 1 ms deadline has passed
        pending = asyncio.ensure_future(batcher.submit(SHORT[:2], None, None))
        await asyncio.sleep(0.05)
        return pending

    async def late():
        pending = await scenario()
        with pytest.raises(DeadlineExceededError, match="past its deadline"):
            await pending

    try:
        asyncio.run(late())
    finally:
        batcher.stop()


def test_no_engine_means_not_ready():
    batcher = Batcher(EngineSet(keep_previous_s=1), BatchingSettings())
    with pytest.raises(NotReadyError):
        asyncio.run(batcher.submit(["q"], None, None))


class _SlowRuntime:
    """The tiny engine, 0.3 s slower per run: long enough to observe a busy worker."""

    def __init__(self, runtime):
        self.manifest, self.encoder, self._runtime = runtime.manifest, runtime.encoder, runtime

    def run(self, batch):
        import time

        time.sleep(0.3)
        return self._runtime.run(batch)


def test_wait_idle_waits_for_queued_and_running_rows_without_delaying_them(engine):
    import threading
    import time

    slow = LoadedEngine(_SlowRuntime(engine.runtime), "v1", "digest", engine.bundle_dir)
    engines = EngineSet(keep_previous_s=60)
    engines.swap(slow)
    batcher = Batcher(engines, BatchingSettings(max_queue_delay_ms=1))
    assert batcher.wait_idle(0.01)  # nothing queued or running
    batcher.start()
    waits: list[tuple[bool, float]] = []

    def staging():  # what the channel follower does before each of its engine runs
        began = time.monotonic()
        waits.append((batcher.wait_idle(0.05), time.monotonic() - began))
        waits.append((batcher.wait_idle(5.0), time.monotonic() - began))

    async def one_request():
        task = asyncio.ensure_future(batcher.submit(["rain"], None, None))
        await asyncio.sleep(0.1)  # the worker is now running it
        waiter = threading.Thread(target=staging)
        waiter.start()
        began = time.monotonic()
        result = await task
        return result, time.monotonic() - began, waiter

    try:
        result, seconds, waiter = asyncio.run(one_request())
        waiter.join(timeout=10)
    finally:
        batcher.stop()
    assert result.engine is slow and seconds < 0.5  # the waiting thread did not hold the request up
    (busy, busy_seconds), (idle, idle_seconds) = waits
    assert not busy and 0.04 <= busy_seconds < 0.3  # gave up after its timeout while the row ran
    assert idle and idle_seconds < 1.0  # returned once the row was done, long before its 5-s timeout


def test_staging_runs_call_the_pacing_hook_before_every_engine_run(engine, tiny_build):
    from enginekit.runtime import check_golden
    from serving.follower import warm_shapes

    calls: list[int] = []
    runs = warm_shapes(engine, [1, 2], [8, 16], before_each=lambda: calls.append(1))
    longest = engine.runtime.manifest.max_seq_length
    assert runs == len(calls) == 2 * len({min(bound, longest) for bound in (8, 16)} | {longest})
    calls.clear()
    whole = check_golden(engine.runtime, tiny_build.bundle_dir)
    chunked = check_golden(engine.runtime, tiny_build.bundle_dir, chunk_rows=3, before_each=lambda: calls.append(1))
    golden_rows = engine.runtime.manifest.golden.count
    assert len(calls) == -(-golden_rows // 3) and abs(chunked - whole) < 1e-4
