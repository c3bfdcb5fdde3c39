"""Prometheus metrics of one server (its own registry: several servers in one test process do not mix)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics

from serving.batching import BatchObserver
from serving.engines import EngineSet, LoadedEngine
from serving.follower import SwapObserver

_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_SWAP_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class ServerMetrics:
    def __init__(self, engines: EngineSet) -> None:
        disable_created_metrics()  # no *_created twin series: they double the scrape for nothing here
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "int8_requests", "HTTP requests by endpoint and status code", ["endpoint", "code"], registry=registry
        )
        self.failures = Counter(
            "int8_request_failures",
            "Requests answered with an error, by endpoint and reason",
            ["endpoint", "reason"],
            registry=registry,
        )
        self.latency = Histogram(
            "int8_request_latency_seconds",
            "Time from request arrival to response, by endpoint",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_time = Histogram(
            "int8_queue_time_seconds",
            "Time a request waited for the engine",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.engine_time = Histogram(
            "int8_engine_batch_seconds", "Engine time per batch", buckets=_LATENCY_BUCKETS, registry=registry
        )
        self.batch_size = Histogram(
            "int8_batch_size_rows", "Rows per engine batch", buckets=_BATCH_BUCKETS, registry=registry
        )
        self.version = Info("int8_serving_version", "The engine version serving now", registry=registry)
        self.swaps = Counter("int8_swaps", "Engine swaps by result", ["result"], registry=registry)
        self.late_swaps = Counter(
            "int8_swaps_late",
            "Swaps still staging swap.late_after_s after the pointer was seen, by the phase they were in "
            "(the rest ran at normal priority)",
            ["phase"],
            registry=registry,
        )
        self.swap_phase = Histogram(
            "int8_swap_phase_seconds",
            "Duration of each phase of a swap (download, verify, compatibility, build, warm, golden, swap)",
            ["phase"],
            buckets=_SWAP_BUCKETS,
            registry=registry,
        )
        self.polls = Counter("int8_channel_polls", "Channel pointer polls by result", ["result"], registry=registry)
        self.resident = Gauge("int8_resident_engines", "Engines loaded in this process", registry=registry)
        self.resident.set_function(lambda: engines.resident)
        self.local_copy = Gauge(
            "int8_serving_local_copy",
            "1 while serving the last verified local copy because the object store was unreachable at start",
            registry=registry,
        )
        self.queued_rows = Gauge("int8_queued_rows", "Rows waiting for the engine", registry=registry)

    def batch_observer(self) -> BatchObserver:
        return BatchObserver(
            queue_seconds=self.queue_time.observe,
            batch_rows=self.batch_size.observe,
            engine_seconds=self.engine_time.observe,
        )

    def swap_observer(self) -> SwapObserver:
        def serving(engine: LoadedEngine) -> None:
            manifest = engine.runtime.manifest
            self.version.info(
                {
                    "model": manifest.model_name,
                    "version": engine.version,
                    "bundle_digest": engine.digest,
                    "backend": manifest.backend,
                    "source": engine.source,
                }
            )
            self.local_copy.set(1 if engine.source == "local copy" else 0)

        return SwapObserver(
            swap_result=lambda result: self.swaps.labels(result).inc(),
            late=lambda phase: self.late_swaps.labels(phase).inc(),
            phase_seconds=lambda phase, seconds: self.swap_phase.labels(phase).observe(seconds),
            poll_result=lambda result: self.polls.labels(result).inc(),
            serving=serving,
        )
