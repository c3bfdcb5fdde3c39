"""Where the cores went during a load test: a once-a-second timeline of CPU time and server counters.

``CpuTimeline`` samples, in a thread of the load-test process:

- CPU seconds of the server process and of each of its threads, summed by OS thread name
  (``serving.osthreads`` names the batcher and the follower; a thread takes the name of the thread that
  created it, so an engine's ONNX Runtime workers show as ``int8-follower``, the tokenizer pool as the
  interpreter's name), of the server's children (the fetch process), of the stand-in S3 server and of
  the load client;
- the server's own counters from ``/metrics``: engine seconds and rows (batch-size histogram sums), queue
  time, rows queued.

``summarise(start, end)`` turns the samples of a window into rates: cores used by each, the engine's busy
share, rows per engine call, engine milliseconds per row and mean queue time. Comparing the windows of a
run (before, during and after swaps) tells whether the engine got slower per row (something took its
cores), ran less (the batcher or event loop was the bottleneck) or simply had more to do.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

_COUNTERS = {
    "int8_engine_batch_seconds_sum": "engine_seconds",
    "int8_engine_batch_seconds_count": "engine_calls",
    "int8_batch_size_rows_sum": "rows",
    "int8_queue_time_seconds_sum": "queue_seconds",
    "int8_queue_time_seconds_count": "queued_requests",
}


def _cpu_seconds(stat_path: Path) -> float | None:
    try:
        fields = stat_path.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14 and 15 of stat)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(child) for child in (task / "children").read_text().split()]
    except OSError:
        return found
    return found + [grandchild for child in found for grandchild in _children(child)]


def process_cpu_seconds(pid: int) -> float:
    return _cpu_seconds(Path(f"/proc/{pid}/stat")) or 0.0


def children_cpu_seconds(pid: int) -> float:
    """CPU seconds of the live descendants of ``pid``."""
    return sum(process_cpu_seconds(child) for child in _children(pid))


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds per live thread of ``pid``, keyed ``<tid>:<name>`` (tids are not reused within a run;
    names repeat: an engine's worker threads take the name of the thread that created them)."""
    per_thread: dict[str, float] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return per_thread
    for task in tasks:
        seconds = _cpu_seconds(task / "stat")
        try:
            name = (task / "comm").read_text().strip()
        except OSError:
            continue
        if seconds is None:
            continue
        if task.name == str(pid):
            name = "main (event loop)"
        per_thread[f"{task.name}:{name}"] = seconds
    return per_thread


def server_counters(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in _COUNTERS and not sample.labels:
                values[_COUNTERS[sample.name]] = sample.value
    return values


@dataclass
class Sample:
    at: float
    server_threads: dict[str, float]
    server_total: float
    """The whole server process, threads that exited since included (each swap frees an engine's pool)."""
    processes: dict[str, float]
    counters: dict[str, float]


@dataclass
class CpuTimeline:
    url: str
    server_pid: int
    others: dict[str, int] = field(default_factory=dict)
    """Other processes to account for, by name (the S3 server, the load client)."""
    interval_s: float = 1.0
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-timeline", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def add(self, name: str, pid: int) -> None:
        self.others[name] = pid

    def sample(self) -> None:
        processes = {"server children (fetch process)": children_cpu_seconds(self.server_pid)}
        processes.update({name: process_cpu_seconds(pid) for name, pid in dict(self.others).items()})
        try:
            counters = server_counters(self.url)
        except OSError:
            counters = {}
        threads = thread_cpu_seconds(self.server_pid)
        total = process_cpu_seconds(self.server_pid)
        self.samples.append(Sample(time.time(), threads, total, processes, counters))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def summarise(self, start: float, end: float) -> dict | None:
        """Rates over the samples nearest the window ``[start, end]`` (wall-clock seconds)."""
        inside = [sample for sample in self.samples if start <= sample.at <= end]
        if len(inside) < 2:
            return None
        first, last = inside[0], inside[-1]
        span = last.at - first.at

        def rate(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
            return {
                name: round((after[name] - before.get(name, 0.0)) / span, 3)
                for name in after
                if after[name] - before.get(name, 0.0) > 0.005 * span
            }

        by_name: dict[str, float] = {}
        for key, cores in rate(first.server_threads, last.server_threads).items():
            name = key.partition(":")[2]
            by_name[name] = round(by_name.get(name, 0.0) + cores, 3)
        total = round((last.server_total - first.server_total) / span, 3)
        exited = round(total - sum(by_name.values()), 3)
        if exited > 0.005:
            by_name["threads that exited"] = exited
        threads = dict(sorted(by_name.items(), key=lambda kv: -kv[1]))
        delta = {name: last.counters.get(name, 0.0) - first.counters.get(name, 0.0) for name in _COUNTERS.values()}
        calls, rows = delta["engine_calls"], delta["rows"]
        return {
            "seconds": round(span, 1),
            "server_cores": total,
            "server_threads_cores": threads,
            "other_cores": rate(first.processes, last.processes),
            "engine_busy": round(delta["engine_seconds"] / span, 3),
            "rows_per_s": round(rows / span, 1),
            "rows_per_engine_call": round(rows / calls, 1) if calls else None,
            "engine_ms_per_row": round(1000 * delta["engine_seconds"] / rows, 3) if rows else None,
            "mean_queue_ms": (
                round(1000 * delta["queue_seconds"] / delta["queued_requests"], 1) if delta["queued_requests"] else None
            ),
        }
