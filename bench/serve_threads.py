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

``python -m bench.serve_threads --bundle .state/runs/<run>/bundle [--seconds 6]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
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
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=0, help="engine threads (0: every core)")
    parser.add_argument("--seconds", type=float, default=6.0, help="per measurement")
    parser.add_argument("--out", type=Path, default=Path("bench/results/serve-threads"))
    arguments = parser.parse_args(argv)
    if not (arguments.bundle / "manifest.json").is_file():
        print(f"error: {arguments.bundle} is not a bundle (no manifest.json)", file=sys.stderr)
        return 2
    from datetime import UTC, datetime

    from enginekit.hardware import cpu_isa, cpu_model

    threads = arguments.threads or os.cpu_count() or 1
    report = measure(arguments.bundle, threads, arguments.seconds)
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
