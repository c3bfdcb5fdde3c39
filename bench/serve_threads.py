"""How a bundle's ONNX Runtime engine shares a small machine: thread spinning and background priority.

Two measurements, side by side in one process, for the server's settings ``engine_spinning`` and
``swap.staging_nice`` (BENCHMARKS.md section 7):

1. **Spinning.** The engine runs B1, B8 and B32 batches of 16 tokens at an 80% duty cycle (each run is
   followed by a sleep of a quarter of its time, as a server at 80% load), with its intra-op threads
   spinning between runs (ONNX Runtime's default), spinning only inside a run
   (``session.force_spinning_stop``), or never. Reported: median run time and the cores the process used.
   Cores held above the duty cycle's share are cores that a lower-priority job cannot have.
2. **A background job at a lower priority.** The same duty cycle at B8 while another process burns a
   core (a busy loop, or sha256 over the engine file as a download's hashing does) at niceness 10 or 19.
3. **A staging thread in the server's process** (``swap.staging_nice`` and ``swap.staging_idle``): two
   threads serve B8 batches of 16 tokens on one-threaded engines as the server's batcher workers do (a
   random 2-10 ms pause, then a run), while a third thread loops over what staging does (build an engine
   from the bundle's file, run canary batches of 16 x 32) at niceness 19, or at 19 in the ``SCHED_IDLE``
   class, or is absent. The three take turns in blocks of a few seconds, in alternating order, so a change
   of the machine's speed falls on all three. Reported: the serving runs' p50/p99 and how late the
   serving threads woke up.

``python -m bench.serve_threads --bundle .state/runs/<run>/bundle [--seconds 6] [--staging-rounds 12]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

SPIN_MODES = {
    "spin between runs (ONNX Runtime default)": {"session.intra_op.allow_spinning": "1"},
    "spin inside a run only (engine_spinning: true)": {
        "session.intra_op.allow_spinning": "1",
        "session.force_spinning_stop": "1",
    },
    "never spin (engine_spinning: false)": {"session.intra_op.allow_spinning": "0"},
}


def _session(bundle: Path, threads: int, config: dict[str, str]) -> Any:
    import onnxruntime as ort

    from enginekit.bundle import read_manifest
    from enginekit.runtime_onnx import precise_int8

    options = ort.SessionOptions()
    precise_int8(options)
    options.intra_op_num_threads = threads
    for key, value in config.items():
        options.add_session_config_entry(key, value)
    engine = bundle / read_manifest(bundle).engine_file
    return ort.InferenceSession(str(engine), options, providers=["CPUExecutionProvider"])


def _feed(session: Any, rows: int, length: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(rows)
    ids = rng.integers(1000, 2000, (rows, length)).astype(np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if any(item.name == "token_type_ids" for item in session.get_inputs()):
        feed["token_type_ids"] = np.zeros_like(ids)
    return feed


def duty_cycle(session: Any, rows: int, seconds: float, duty: float = 0.8) -> dict[str, float]:
    """Run ``rows``-row batches for ``seconds``, idle (1-duty)/duty of each run's time after it."""
    feed = _feed(session, rows)
    session.run(None, feed)
    times = []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    end = wall0 + seconds
    while time.perf_counter() < end:
        began = time.perf_counter()
        session.run(None, feed)
        took = time.perf_counter() - began
        times.append(took)
        time.sleep(took * (1 - duty) / duty)
    wall = time.perf_counter() - wall0
    return {
        "median_ms": 1000 * statistics.median(times),
        "p99_ms": 1000 * sorted(times)[int(0.99 * (len(times) - 1))],
        "cores": (time.process_time() - cpu0) / wall,
        "runs": len(times),
    }


def _background(kind: str, nice: int, engine_file: Path) -> subprocess.Popen:
    code = {
        "busy loop": "x = 0\nwhile True:\n    x += 1",
        "sha256 of the engine file": (
            f"import hashlib\ndata = open({str(engine_file)!r}, 'rb').read()\n"
            "while True:\n    hashlib.sha256(data).digest()"
        ),
    }[kind]
    return subprocess.Popen(["nice", "-n", str(nice), sys.executable, "-c", code])


def measure(bundle: Path, threads: int, seconds: float) -> dict[str, Any]:
    from enginekit.bundle import read_manifest

    report: dict[str, Any] = {"spinning": {}, "background": []}
    for mode, config in SPIN_MODES.items():
        session = _session(bundle, threads, config)
        report["spinning"][mode] = {f"B{rows}": duty_cycle(session, rows, seconds) for rows in (1, 8, 32)}
    session = _session(bundle, threads, SPIN_MODES["spin inside a run only (engine_spinning: true)"])
    engine_file = bundle / read_manifest(bundle).engine_file
    cases = [("none", None)] + [
        (kind, nice) for nice in (10, 19) for kind in ("busy loop", "sha256 of the engine file")
    ]
    for kind, nice in [*cases, ("none, again", None)]:
        process = _background(kind, nice, engine_file) if nice is not None else None
        try:
            time.sleep(0.5 if process else 0.0)
            result = duty_cycle(session, 8, seconds)
        finally:
            if process is not None:
                process.kill()
                process.wait()
        report["background"].append({"job": kind, "nice": nice, **result})
    return report


STAGING_MODES = ("no staging", "nice 19", "nice 19 + SCHED_IDLE")


def staging_priority(bundle: Path, rounds: int, block_s: float) -> dict[str, dict[str, float]]:
    """Measurement 3 of the module's docstring: per mode, serving runs, p50/p99 of run and of wake-up delay
    + run (ms), and p99 of the wake-up delay alone."""
    from serving.osthreads import lower_priority

    quiet = {"session.intra_op.allow_spinning": "0"}
    serving = _session(bundle, 1, quiet)
    feed, canary = _feed(serving, 8), _feed(serving, 16, length=32)
    state = {"mode": STAGING_MODES[0], "stop": False}
    samples: dict[str, list[tuple[float, float]]] = {mode: [] for mode in STAGING_MODES}

    def stage(mode: str, idle: bool) -> None:
        lower_priority(19, idle=idle)
        while not state["stop"]:
            if state["mode"] != mode:
                time.sleep(0.01)
                continue
            engine = _session(bundle, 1, quiet)
            for _ in range(5):
                if state["mode"] != mode:
                    break
                engine.run(None, canary)

    def serve(seed: int) -> None:
        pauses = random.Random(seed)
        while not state["stop"]:
            pause = pauses.uniform(0.002, 0.010)
            due = time.perf_counter() + pause
            time.sleep(pause)
            woke = time.perf_counter()
            mode = state["mode"]
            serving.run(None, feed)
            samples[mode].append((woke - due, time.perf_counter() - woke))

    threads = [
        threading.Thread(target=stage, args=(STAGING_MODES[1], False), daemon=True),
        threading.Thread(target=stage, args=(STAGING_MODES[2], True), daemon=True),
        *(threading.Thread(target=serve, args=(seed,), daemon=True) for seed in (1, 2)),
    ]
    for thread in threads:
        thread.start()
    try:
        for round_ in range(rounds):
            for mode in STAGING_MODES if round_ % 2 == 0 else STAGING_MODES[::-1]:
                state["mode"] = mode
                time.sleep(block_s)
    finally:
        state["stop"] = True
        for thread in threads:
            thread.join()
    report = {}
    for mode, pairs in samples.items():
        wake = np.array([1000 * late for late, _ in pairs])
        run = np.array([1000 * took for _, took in pairs])
        report[mode] = {
            "runs": len(pairs),
            "run_p50_ms": float(np.percentile(run, 50)) if len(run) else float("nan"),
            "run_p99_ms": float(np.percentile(run, 99)) if len(run) else float("nan"),
            "wake_p99_ms": float(np.percentile(wake, 99)) if len(wake) else float("nan"),
            "total_p99_ms": float(np.percentile(wake + run, 99)) if len(run) else float("nan"),
        }
    return report


def render(report: dict[str, Any]) -> str:
    lines = [
        f"Command: `{report['command']}`; {report['date']}; {report['machine']}; {report['threads']} engine threads.",
        "",
        "| intra-op threads | B1 median ms | B1 cores | B8 median ms | B8 cores | B32 median ms | B32 cores |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, sizes in report["spinning"].items():
        cells = " | ".join(f"{r['median_ms']:.2f} | {r['cores']:.2f}" for r in sizes.values())
        lines.append(f"| {mode} | {cells} |")
    base = statistics.mean(r["median_ms"] for r in report["background"] if r["nice"] is None)
    lines += [
        "",
        f"B8 at an 80% duty cycle next to a background process (engine spinning inside runs only; "
        f"{report['threads']} threads):",
        "",
        "| background job | niceness | B8 median ms | vs no job | B8 p99 ms |",
        "|---|---|---|---|---|",
    ]
    for r in report["background"]:
        nice = "—" if r["nice"] is None else str(r["nice"])
        lines.append(
            f"| {r['job']} | {nice} | {r['median_ms']:.2f} | x{r['median_ms'] / base:.2f} | {r['p99_ms']:.2f} |"
        )
    staging = report.get("staging")
    if staging:
        base = staging[STAGING_MODES[0]]["total_p99_ms"]
        lines += [
            "",
            f"Two threads serving B8 batches on one-threaded engines next to a staging thread in the same "
            f"process ({report['staging_rounds']} rounds of {report['staging_block_s']:g} s per mode, "
            "interleaved):",
            "",
            "| staging thread | serving runs | run p50 ms | run p99 ms | wake-up delay p99 ms "
            "| wake-up + run p99 ms | vs no staging |",
            "|---|---|---|---|---|---|---|",
        ]
        for mode, r in staging.items():
            lines.append(
                f"| {mode} | {r['runs']} | {r['run_p50_ms']:.2f} | {r['run_p99_ms']:.2f} | {r['wake_p99_ms']:.2f} "
                f"| {r['total_p99_ms']:.2f} | x{r['total_p99_ms'] / base:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=0, help="engine threads (0: every core)")
    parser.add_argument("--seconds", type=float, default=6.0, help="per measurement")
    parser.add_argument("--staging-rounds", type=int, default=12, help="rounds of measurement 3 (0: skip it)")
    parser.add_argument("--staging-block-seconds", type=float, default=3.0, help="per mode and round")
    parser.add_argument("--out", type=Path, default=Path("bench/results/serve-threads"))
    arguments = parser.parse_args(argv)
    if not (arguments.bundle / "manifest.json").is_file():
        print(f"error: {arguments.bundle} is not a bundle (no manifest.json)", file=sys.stderr)
        return 2
    from datetime import UTC, datetime

    from enginekit.hardware import cpu_isa, cpu_model

    threads = arguments.threads or os.cpu_count() or 1
    report = measure(arguments.bundle, threads, arguments.seconds)
    if arguments.staging_rounds > 0:
        report["staging"] = staging_priority(
            arguments.bundle, arguments.staging_rounds, arguments.staging_block_seconds
        )
    report.update(staging_rounds=arguments.staging_rounds, staging_block_s=arguments.staging_block_seconds)
    report.update(
        command="python -m bench.serve_threads " + " ".join(sys.argv[1:] if argv is None else argv),
        date=datetime.now(UTC).strftime("%Y-%m-%d"),
        machine=f"{cpu_model()} ({', '.join(cpu_isa())}), {os.cpu_count()} cores",
        threads=threads,
    )
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    markdown = render(report)
    arguments.out.with_suffix(".md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
