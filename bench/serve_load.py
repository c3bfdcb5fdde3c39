"""Serving under load while the channel moves: throughput, latency through swaps, failures, memory.

One run, everything on loopback, bounded in requests and time:

1. a private SeaweedFS; every version published up front with the project's own publisher (``fresh``
   copies of one real bundle, plus a corrupt, an incompatible and a canary-failing one);
2. the server (``python -m serving``) following the channel;
3. **raw engine**: the same bundle's engine in this process, B32 batches of the same texts (rows/s);
4. **saturation**: a closed-loop client process keeping many requests in flight (rows/s the server sustains);
5. **open loop** at ``--load`` x saturation (Poisson arrivals, a separate client process) for three phases:
   *before* (no swaps), *swaps* (the channel moved to each published version in turn, the bad ones and one
   rollback among them, each move waiting until the server serves it or refuses it), *after*;
6. the report: requests, failures, throughput, p50/p99 per phase, time from each pointer move to the first
   response of the new version, the rollback's in-server swap time, the RSS of the server and its fetch
   process after the 2nd and the 100th swap; the issue's targets with PASS/FAIL.

    python -m bench.serve_load [--bundle .state/runs/<run>/bundle] [--swaps 100] [--load 0.7]

Writes ``<out>.json`` and ``<out>.md`` (default ``bench/results/serve-load``). The client subcommands
(``client-open``, ``client-closed``) are what the run starts in separate processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.cpu_timeline import CpuTimeline

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------------ clients


async def _post(client: Any, url: str, texts: list[str]) -> tuple[int, str]:
    try:
        async with client.post(url, json={"texts": texts}) as response:
            await response.read()
            return response.status, response.headers.get("x-model-version", "")
    except Exception as error:  # a refused or dropped connection is a failed request too
        return -1, type(error).__name__


def _session(connections: int) -> Any:
    import aiohttp

    # Idle connections are dropped by the client (30 s) before the server would close them (75 s).
    connector = aiohttp.TCPConnector(limit=connections, force_close=False, keepalive_timeout=30)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30))


async def _open_loop(url: str, rate: float, duration: float, texts: list[str], per_request: int, out: Path) -> None:
    """Poisson arrivals at ``rate`` until ``duration`` passes or ``<out>.stop`` appears (the run's signal)."""
    stop_file = out.with_suffix(".stop")
    rng = random.Random(7)
    records: list[tuple[float, float, int, str]] = []
    async with _session(256) as client:

        async def one(batch: list[str]) -> None:
            sent = time.time()
            status, version = await _post(client, url, batch)
            records.append((sent, time.time(), status, version))

        tasks = []
        started = time.monotonic()
        next_at = 0.0
        while next_at < duration and not stop_file.exists():
            delay = started + next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one([rng.choice(texts) for _ in range(per_request)])))
            next_at += rng.expovariate(rate)
        await asyncio.gather(*tasks)
    out.write_text(json.dumps(records))


async def _closed_loop(url: str, concurrency: int, duration: float, texts: list[str], per_request: int, out: Path):
    rng = random.Random(11)
    done = {"requests": 0, "failed": 0}
    async with _session(concurrency) as client:
        warm_until = time.monotonic() + 2.0
        end = warm_until + duration

        async def worker() -> None:
            while time.monotonic() < end:
                status, _version = await _post(client, url, [rng.choice(texts) for _ in range(per_request)])
                if time.monotonic() > warm_until:
                    done["requests"] += 1
                    done["failed"] += status != 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    out.write_text(json.dumps({**done, "seconds": duration, "rows_per_s": done["requests"] * per_request / duration}))


def _client_main(arguments: argparse.Namespace) -> int:
    texts = json.loads(Path(arguments.texts).read_text())
    if arguments.command == "client-open":
        asyncio.run(
            _open_loop(arguments.url, arguments.rate, arguments.duration, texts, arguments.per_request, arguments.out)
        )
    else:
        asyncio.run(
            _closed_loop(
                arguments.url, arguments.concurrency, arguments.duration, texts, arguments.per_request, arguments.out
            )
        )
    return 0


# --------------------------------------------------------------------------------------------- the run


def _texts_for(bundle: Path) -> list[str]:
    """Real rows of the run the bundle came from (its test split), else the bundle's canaries."""
    data = bundle.parent / "data" / "dataset"
    if data.is_dir():
        from datasets import load_from_disk

        return list(load_from_disk(str(data))["test"]["text"])
    return json.loads((bundle / "golden.json").read_text())["texts"]


def raw_engine_rows_per_s(bundle: Path, texts: list[str], threads: int, seconds: float = 5.0) -> dict[str, Any]:
    """B32 rows/s of the bundle's engine on the same fixed batches each time; ``per_pass``: rows/s of each
    pass over the batches, whose spread is the machine's own speed variation over the measurement."""
    from enginekit.runtime import load_engine

    engine = load_engine(bundle, threads=threads)
    rng = random.Random(3)
    batches = [engine.encoder.encode([rng.choice(texts) for _ in range(32)]) for _ in range(8)]
    for batch in batches[:4]:
        engine.run(batch)
    passes: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        began = time.perf_counter()
        for batch in batches:
            engine.run(batch)
        passes.append(32 * len(batches) / (time.perf_counter() - began))
    return {"rows_per_s": len(passes) * 32 * len(batches) / (time.perf_counter() - started), "per_pass": passes}


def _rss_by_process(pid: int) -> dict[str, float]:
    """Resident memory, MiB, of the server itself and of each child (``pid:command``)."""
    found: dict[str, float] = {}

    def own(process: int) -> float:
        for line in Path(f"/proc/{process}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    try:
        found["server"] = own(pid)
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
                name = next((part.decode() for part in command if part.startswith(b"serving.")), command[0].decode())
                nice = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[16]
                found[f"{child}:{name} (nice {nice})"] = own(int(child))
    except OSError:  # a process ended meanwhile
        pass
    return found


def _rss_mib(pid: int) -> float:
    """Resident memory of the server and its children (the fetch process), MiB."""
    total = 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
        children = {
            int(child)
            for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()
        }
    except OSError:  # the process ended meanwhile
        return total
    return total + sum(_rss_mib(child) for child in children)


def _get_json(url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


def _ready(url: str) -> dict:
    import urllib.error

    try:
        return _get_json(url + "/v2/health/ready")
    except urllib.error.HTTPError as error:
        return json.loads(error.read())


def _percentiles(latencies: list[float]) -> dict[str, float | None]:
    if not latencies:
        return {"p50_ms": None, "p99_ms": None}
    ordered = sorted(latencies)
    return {
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
    }


def run(arguments: argparse.Namespace) -> dict[str, Any]:
    import yaml

    from bench.bundle_variants import corrupt_stored_object, derive_bundle
    from enginekit.bundle import read_manifest
    from enginekit.hardware import cpu_isa, cpu_model
    from infra.localstack import LOCAL_PROFILE, LocalStack, free_port, pick_stack_ports
    from tasks.publish import CHANNEL_ABSENT, ObjectStorePublisher

    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    bundle = Path(arguments.bundle)
    model = read_manifest(bundle).model_name
    texts = _texts_for(bundle)
    (work / "texts.json").write_text(json.dumps(texts))
    threads = arguments.threads or os.cpu_count() or 1
    # The S3 server stands in for a remote store, which answers at full speed and takes none of the server's
    # cores. On one machine it cannot do both: at normal priority (the default) it answers at full speed and
    # its cores count against serving (the p99 measured is pessimistic); niced (--s3-nice 19) it takes only
    # idle cycles and a busy server starves its own downloads, the late ones at normal priority too
    # (BENCHMARKS.md section 7, run 13).
    stack = LocalStack(
        work / "stack",
        ports=pick_stack_ports(),
        buckets=("int8-engines",),
        services=("seaweedfs",),
        niceness=arguments.s3_nice,
    )
    stack.up()
    server: subprocess.Popen | None = None
    report: dict[str, Any] = {
        "command": "python -m bench.serve_load " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{cpu_model()} ({', '.join(cpu_isa())}), {os.cpu_count()} cores",
        "bundle": str(bundle),
        "model": model,
    }
    try:
        store_settings = {
            "endpoint_url": stack.s3_url,
            "bucket": "int8-engines",
            "aws_profile": LOCAL_PROFILE,
            "credentials_file": str(stack.credentials_file),
        }
        from enginekit.objectstore import ObjectStoreSettings

        publisher = ObjectStorePublisher(ObjectStoreSettings(**store_settings))
        # ---- every version up front: the swap phase only moves the pointer
        plan: list[tuple[str, str]] = [("v000", "fresh")]
        fresh = [f"v{i:03d}" for i in range(1, arguments.swaps + 1)]
        bad_at = {len(fresh) // 4: "corrupt", len(fresh) // 2: "incompatible", 3 * len(fresh) // 4: "golden_mismatch"}
        for index, version in enumerate(fresh):
            plan.append((version, "fresh"))
            if index in bad_at:
                plan.append((f"bad-{bad_at[index]}", bad_at[index]))
            if index == len(fresh) // 3:
                plan.append((fresh[index - 1], "rollback"))
        started = time.perf_counter()
        for version, kind in plan:
            if kind == "rollback":
                continue
            directory = derive_bundle(
                bundle, work / "bundles" / version, version, "fresh" if kind == "corrupt" else kind
            )
            publisher.publish_version(model, version, directory)
            shutil.rmtree(directory)
            if kind == "corrupt":
                key = publisher.version_prefix(model, version) + read_manifest(bundle).engine_file
                corrupt_stored_object(stack.s3_client(), "int8-engines", key)
        report["publish_seconds"] = time.perf_counter() - started
        publisher.move_channel(model, "production", "v000", expected_etag=CHANNEL_ABSENT, reason="load test start")

        # ---- the server
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        settings = {
            "model_name": model,
            "store": store_settings,
            "port": port,
            "swap": {
                "poll_interval_s": arguments.poll,
                "state_dir": str(work / "serving"),
            },
        }
        for path, value in arguments.server_set:  # KEY.PATH=YAML-VALUE, e.g. swap.staging_nice=19
            *parents, leaf = path.split(".")
            section = settings
            for part in parents:
                section = section.setdefault(part, {})
            section[leaf] = value
        (work / "serve.yaml").write_text(yaml.safe_dump(settings))
        log = (work / "server.log").open("w")
        server = subprocess.Popen(
            [sys.executable, "-m", "serving", "--config", str(work / "serve.yaml"), "--log-level", "warning"],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while _ready_version(url) != "v000":
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"server not ready: {(work / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)

        timeline = CpuTimeline(url, server.pid)
        weed_pid = work / "stack" / "pids" / "seaweedfs.pid"
        if weed_pid.is_file():
            timeline.add("s3 server", int(weed_pid.read_text().strip()))
        timeline.start()

        # ---- raw engine and saturation, side by side in this run
        raw = raw_engine_rows_per_s(bundle, texts, threads)
        report["raw_engine_b32_rows_per_s"], report["raw_engine_passes"] = raw["rows_per_s"], {"start": raw["per_pass"]}
        per = arguments.texts_per_request
        saturation_started = time.time()
        saturation = _client(work, "client-closed", url, per, duration=arguments.saturation_seconds, concurrency=64)
        windows = {"saturation": (saturation_started + 2.5, time.time())}  # past the client's 2-s warm-up
        report["saturation"] = saturation
        report["saturation_ratio"] = saturation["rows_per_s"] / report["raw_engine_b32_rows_per_s"]
        single = _client(work, "client-closed", url, 1, duration=arguments.saturation_seconds, concurrency=64)
        report["saturation_single_text_requests"] = single

        # ---- open loop through the swaps
        rate = arguments.load * saturation["rows_per_s"] / per
        report["offered_requests_per_s"] = rate
        budget = arguments.phase_seconds * 2 + arguments.max_swap_seconds
        client = _start_client(work, url, per, rate, budget)
        timeline.add("load client", client.pid)
        time.sleep(arguments.phase_seconds)
        moves, rss, rss_parts = [], {}, {}
        pacing = random.Random(0)  # the same gaps in every run
        swap_started = time.time()
        for version, kind in plan[1:]:
            before = _ready(url)
            moved_at = time.time()
            current = publisher.read_channel(model, "production")
            publisher.move_channel(model, "production", version, expected_etag=current.etag, reason=f"load {kind}")
            outcome = _await_outcome(url, version, kind, before, timeout=arguments.poll + 30)
            moves.append({"version": version, "kind": kind, "moved_at": moved_at, "settled_at": time.time(), **outcome})
            successes = sum(1 for move in moves if move["result"] in ("served", "rollback"))
            if successes in (2, 100) and str(successes) not in rss:
                time.sleep(1.0)
                rss[str(successes)] = _rss_mib(server.pid)
                rss_parts[str(successes)] = _rss_by_process(server.pid)
            if time.time() - swap_started > arguments.max_swap_seconds:
                break
            # Quiet time: the same load with no staging, as a reference. Plus a random fraction of the poll
            # interval: the server polls every `poll` s from the end of its last swap, so a fixed gap would
            # land every move just after a poll (each waiting a whole interval; a real pointer moves at any
            # phase of the poll, half an interval on average).
            time.sleep(arguments.gap_seconds + pacing.uniform(0, arguments.poll))
        if not moves:  # --swaps 0, the control run: the middle window is as long as the others, no move
            time.sleep(arguments.phase_seconds)
        swap_ended = time.time()
        time.sleep(arguments.phase_seconds)
        windows.update(
            before=(swap_started - arguments.phase_seconds, swap_started),
            swaps=(swap_started, swap_ended),
            after=(swap_ended, time.time()),
        )
        timeline.stop()
        report["cpu"] = {name: timeline.summarise(*window) for name, window in windows.items()}
        rss["end"] = _rss_mib(server.pid)
        rss_parts["end"] = _rss_by_process(server.pid)
        (work / "open.stop").touch()
        client.wait(timeout=120)
        # The same raw measurement again, the server idle: how far the machine's own speed moved in the run.
        report["raw_engine_passes"]["end"] = raw_engine_rows_per_s(bundle, texts, threads)["per_pass"]
        records = json.loads((work / "open.json").read_text())
        report.update(_summarise(records, moves, swap_started, swap_ended, arguments.phase_seconds))
        report["moves"] = moves
        report["rss_mib"] = rss
        report["rss_mib_by_process"] = rss_parts
        report["server_metrics"] = _swap_metrics(url)
    finally:
        if server is not None:
            server.terminate()
            server.wait(20)
        stack.down()
        if not arguments.keep:
            shutil.rmtree(work, ignore_errors=True)
    return report


def _ready_version(url: str) -> str | None:
    try:
        return _ready(url).get("version")
    except OSError:
        return None


def _await_outcome(url: str, version: str, kind: str, before: dict, timeout: float) -> dict:
    """Wait until the server serves ``version`` or reports a new failure for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = _ready(url)
        if ready.get("version") == version:
            swap = ready.get("last_swap") or {}
            return {"result": "rollback" if swap.get("rollback") else "served", "server_swap": swap}
        failure = ready.get("last_failure") or {}
        if failure.get("version") == version and failure != (before.get("last_failure") or {}):
            return {"result": f"refused ({failure.get('phase')})", "server_failure": failure}
        # Not faster: this process and the server's readiness handler take cores from the requests being
        # measured (at 50 checks/s, requests sent while staging were measurably slower than in the gaps).
        time.sleep(0.1)
    return {"result": "timeout"}


def _client_command(work: Path, command: str, url: str, per: int, duration: float, out: Path) -> list[str]:
    """A client in its own process (its CPU is not the server's, and the GIL is not shared)."""
    program = [sys.executable, "-m", "bench.serve_load", command, "--url", url + "/v1/classify"]
    options = ["--texts", str(work / "texts.json"), "--per-request", str(per), "--duration", str(duration)]
    return [*program, *options, "--out", str(out)]


def _client(work: Path, command: str, url: str, per: int, duration: float, concurrency: int) -> dict:
    out = work / f"{command}-{per}.json"
    arguments = [*_client_command(work, command, url, per, duration, out), "--concurrency", str(concurrency)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run(arguments, check=True, cwd=ROOT, timeout=duration + 120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(out.read_text())
    # On a small machine the load generator takes cores the server would use: say how many.
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    result["client_cores"] = cpu / (time.perf_counter() - began)
    return result


def _start_client(work: Path, url: str, per: int, rate: float, duration: float) -> subprocess.Popen:
    arguments = _client_command(work, "client-open", url, per, duration, work / "open.json")
    return subprocess.Popen([*arguments, "--rate", str(rate)], cwd=ROOT)


SWAP_PHASES = ("download", "verify", "compatibility", "build", "warm", "golden", "swap")
"""The server's phases of a swap, in order (``serving.follower.PHASES``; not imported: the bench's
client processes must not import the server)."""


def server_setting(text: str) -> tuple[str, Any]:
    """``--server-set KEY.PATH=YAML-VALUE`` as (path, value); argparse turns an error into one line."""
    import yaml

    path, equals, value = text.partition("=")
    if not equals or not path or any(not part.isidentifier() for part in path.split(".")):
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY.PATH=VALUE, e.g. swap.staging_nice=19")
    try:
        return path, yaml.safe_load(value)
    except yaml.YAMLError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: the value is not YAML ({error.__class__.__name__})") from None


def _phase_windows(move: dict) -> list[tuple[str, float, float]]:
    """(phase, start, end) wall-clock spans of one move's staging, from the server's record of it."""
    record = move.get("server_swap") or move.get("server_failure") or {}
    durations, ended = record.get("phase_seconds") or {}, record.get("at")
    if not durations or ended is None:
        return []
    start = ended - sum(durations.values())
    spans = [("poll wait", move["moved_at"], start)]
    for name in SWAP_PHASES:
        if name in durations:
            spans.append((name, start, start + durations[name]))
            start += durations[name]
    return spans


def _summarise(records: list, moves: list[dict], swap_started: float, swap_ended: float, phase: float) -> dict:
    def phase_of(sent: float) -> str:
        if sent < swap_started:
            return "before"
        return "swaps" if sent <= swap_ended else "after"

    staging = [(move["moved_at"], move["settled_at"]) for move in moves]

    def staged(sent: float) -> bool:
        return any(start <= sent <= end for start, end in staging)

    groups = {name: [r for r in records if phase_of(r[0]) == name] for name in ("before", "swaps", "after")}
    # The swap phase split in two: requests sent while a version was being staged, and those sent in the
    # quiet gaps between moves (the same load at the same time of the run, without staging).
    groups["swaps: staging"] = [r for r in groups["swaps"] if staged(r[0])]
    groups["swaps: between moves"] = [r for r in groups["swaps"] if not staged(r[0])]
    # Steady state: every request of the run sent while no version was staging (before, between moves,
    # after). The machine's own speed drifts by tens of percent over a minute (BENCHMARKS.md section 7),
    # so one window before the swaps is a poor reference; these are the same minutes as the staging.
    groups["steady: no staging"] = groups["before"] + groups["swaps: between moves"] + groups["after"]
    # The staging time split by the server's own phases (each move's phase durations, laid back from the
    # time it recorded the result): which phase delays the requests sent while it runs.
    windows = [window for move in moves for window in _phase_windows(move)]
    for name in ("poll wait", *SWAP_PHASES):
        spans = [(start, end) for phase, start, end in windows if phase == name]
        chosen = [r for r in groups["swaps: staging"] if any(start <= r[0] < end for start, end in spans)]
        if chosen:
            groups[f"swaps: {name}"] = chosen
    phases: dict[str, dict[str, Any]] = {}
    for name, chosen in groups.items():
        ok = [r for r in chosen if r[2] == 200]
        span = (max(r[0] for r in chosen) - min(r[0] for r in chosen)) if len(chosen) > 1 else 0.0
        phases[name] = {
            "requests": len(chosen),
            "failed": len(chosen) - len(ok),
            "requests_per_s": len(ok) / span if span and name in ("before", "swaps", "after") else None,
            **_percentiles([r[1] - r[0] for r in ok]),
        }
    to_first = []
    for move in moves:
        if move["result"] not in ("served", "rollback"):
            continue
        answered = [r[1] for r in records if r[3] == move["version"] and r[1] >= move["moved_at"] and r[2] == 200]
        if answered:
            move["first_response_s"] = min(answered) - move["moved_at"]
            to_first.append(move["first_response_s"])
    failures = [r for r in records if r[2] != 200]
    return {
        "timeline": _timeline(records, staged),
        "phases": phases,
        "total_requests": len(records),
        "failed_requests": len(failures),
        "failures_by_status": dict(Counter(str(r[2]) if r[2] != -1 else r[3] for r in failures).most_common()),
        "failure_examples": failures[:5],
        "first_response_after_move_s": {
            "min": min(to_first, default=None),
            "median": statistics.median(to_first) if to_first else None,
            "max": max(to_first, default=None),
        },
        "phase_seconds": phase,
    }


def _timeline(records: list, staged: Callable[[float], bool], window_s: float = 10.0) -> list[dict[str, Any]]:
    """The run in windows of ``window_s`` by send time: requests, failures, p99 and the share of requests
    sent while a version was staging. It tells a failure or a slow stretch that came with staging from one
    that came with the machine (saturated with nothing staging)."""
    if not records:
        return []
    first = min(r[0] for r in records)
    windows: dict[int, list] = {}
    for record in records:
        windows.setdefault(int((record[0] - first) // window_s), []).append(record)
    timeline = []
    for index in sorted(windows):
        chosen = windows[index]
        ok = [r[1] - r[0] for r in chosen if r[2] == 200]
        timeline.append(
            {
                "start_s": index * window_s,
                "requests": len(chosen),
                "failed": len(chosen) - len(ok),
                "p99_ms": _percentiles(ok)["p99_ms"],
                "staging_share": round(sum(1 for r in chosen if staged(r[0])) / len(chosen), 3),
            }
        )
    return timeline


def _timeline_summary(timeline: list[dict[str, Any]]) -> str:
    """One paragraph: where the failures and the slowest windows were, and how much staging they held."""
    if not timeline:
        return ""
    failing = [w for w in timeline if w["failed"]]
    share = statistics.mean(w["staging_share"] for w in timeline)
    worst = sorted((w for w in timeline if w["p99_ms"] is not None), key=lambda w: -w["p99_ms"])[:5]
    text = f"The run in {len(timeline)} windows of 10 s (JSON: `timeline`): {len(failing)} windows had failed requests"
    if failing:
        text += (
            f" (share of their requests sent while staging: {statistics.mean(w['staging_share'] for w in failing):.0%})"
        )
    text += f"; across all windows {share:.0%} of requests were sent while staging. The five windows with the "
    text += "highest p99: " + ", ".join(
        f"{w['p99_ms']:.0f} ms at {w['start_s']:.0f} s ({w['staging_share']:.0%} staging)" for w in worst
    )
    return text + "."


def _swap_metrics(url: str) -> dict[str, float]:
    """The server's swap, failure and residency samples, keyed ``name{label="value",...}``."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    wanted = (
        "int8_swaps_total",
        "int8_swaps_late_total",
        "int8_resident_engines",
        "int8_request_failures_total",
        "int8_swap_phase_seconds_sum",
        "int8_swap_phase_seconds_count",
    )
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                labels = ",".join(f'{key}="{value}"' for key, value in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def swap_phase_means(metrics: dict[str, float]) -> dict[str, float]:
    """Mean seconds per swap phase, from the server's ``int8_swap_phase_seconds`` histogram."""
    means = {}
    for sample, total in metrics.items():
        if sample.startswith("int8_swap_phase_seconds_sum{"):
            count = metrics.get(sample.replace("_sum{", "_count{"), 0.0)
            phase = sample.partition('phase="')[2].partition('"')[0]
            if count:
                means[phase] = total / count
    return means


def _number(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _late_swaps(report: dict[str, Any]) -> str:
    """How many swaps went late (``swap.late_after_s``), by the phase they were in."""
    late = {
        key.split('phase="', 1)[1].split('"', 1)[0]: int(value)
        for key, value in report.get("server_metrics", {}).items()
        if key.startswith("int8_swaps_late_total{") and value
    }
    if not late:
        return ""
    phases = ", ".join(f"{count} in {phase}" for phase, count in late.items())
    return f"; {sum(late.values())} swaps finished at normal priority after swap.late_after_s ({phases})"


def _failure_kinds(report: dict[str, Any]) -> str:
    kinds = report.get("failures_by_status") or {}
    return (" (" + ", ".join(f"{count} x {kind}" for kind, count in kinds.items()) + ")") if kinds else ""


def render(report: dict[str, Any], poll: float) -> str:
    phases = report["phases"]
    served = [m for m in report["moves"] if m["result"] == "served"]
    rollbacks = [m for m in report["moves"] if m["result"] == "rollback"]
    refused = [m for m in report["moves"] if m["result"].startswith("refused")]
    rollback_swap = max((m["server_swap"].get("seconds", 0.0) for m in rollbacks), default=None)
    steady = phases.get("steady: no staging") or phases["before"]
    steady_p99 = steady["p99_ms"] or 0.0
    staging_p99 = (phases.get("swaps: staging") or phases["swaps"])["p99_ms"]
    rss = report["rss_mib"]
    first = report["first_response_after_move_s"]
    checks = [  # (target, met, measured)
        ("server saturation >= 90% of the raw engine's B32 rows/s", report["saturation_ratio"] >= 0.9,
         f"{report['saturation']['rows_per_s']:.0f} vs {report['raw_engine_b32_rows_per_s']:.0f} rows/s "
         f"(x{report['saturation_ratio']:.2f})"),
        (">= 20 swaps plus the bad publishes, 0 failed requests",
         len(served) >= 20 and len(refused) >= 3 and report["failed_requests"] == 0,
         f"{len(served)} swaps, {len(rollbacks)} rollback, {len(refused)} refused, "
         f"{report['failed_requests']} failed of {report['total_requests']}{_failure_kinds(report)}"),
        ("p99 while a swap is staging <= 1.5 x steady-state p99 (no staging, same run)",
         (staging_p99 or 1e9) <= 1.5 * steady_p99,
         f"{_number(staging_p99)} ms vs {steady_p99:.1f} ms (x{(staging_p99 or 0) / (steady_p99 or 1):.2f}); "
         f"the whole swap phase {_number(phases['swaps']['p99_ms'])} ms, the window before the swaps "
         f"{_number(phases['before']['p99_ms'])} ms"),
        ("new version serving within poll interval + 2 s", (first["max"] or 1e9) <= poll + 2.0,
         f"max {_number(first['max'], 2)} s, median {_number(first['median'], 2)} s (poll {poll:g} s)"
         f"{_late_swaps(report)}"),
        ("rollback to the resident previous version <= 1 s after the pointer is seen",
         rollback_swap is not None and rollback_swap <= 1.0, f"{_number(rollback_swap, 4)} s in the server"),
        ("RSS after 100 swaps within +10% of RSS after the second", "100" in rss and rss["100"] <= 1.1 * rss["2"],
         f"{_number(rss.get('2'), 0)} MiB -> {_number(rss.get('100'), 0)} MiB (end {rss['end']:.0f} MiB)"),
    ]  # fmt: skip
    lines = [
        f"Command: `{report['command']}`; {report['date']}; {report['machine']}; bundle `{report['bundle']}`.",
        "",
        "| phase | requests | failed | requests/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, p in phases.items():
        lines.append(
            f"| {name} | {p['requests']} | {p['failed']} | {_number(p['requests_per_s'])} | {_number(p['p50_ms'])} | "
            f"{_number(p['p99_ms'])} |"
        )
    lines += ["", "| target | result | measured |", "|---|---|---|"]
    lines += [f"| {name} | {'PASS' if ok else 'FAIL'} | {detail} |" for name, ok, detail in checks]
    sat1 = report["saturation_single_text_requests"]["rows_per_s"]
    lines += [
        "",
        f"Requests of {report['texts_per_request']} texts; "
        f"open-loop rate {report['offered_requests_per_s']:.1f} requests/s; single-text requests saturate at "
        f"{sat1:.0f} rows/s. The load client itself used {report['saturation'].get('client_cores', 0):.2f} "
        f"of the machine's {os.cpu_count()} cores while measuring saturation. Publishing every version up "
        f"front took {report['publish_seconds']:.0f} s.",
    ]
    cpu = report.get("cpu") or {}
    if any(cpu.values()):
        lines += [
            "",
            "Where the cores went (once-a-second samples of /proc and the server's counters; "
            f"{os.cpu_count()} cores in all):",
            "",
            "| window | server cores (top threads) | other processes, cores | engine busy | rows/s | rows per "
            "engine call | engine ms per row | mean queue ms |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, window in cpu.items():
            if not window:
                continue
            threads = list(window["server_threads_cores"].items())[:4]
            top = ", ".join(f"{thread} {cores:.2f}" for thread, cores in threads)
            others = ", ".join(f"{process} {cores:.2f}" for process, cores in window["other_cores"].items()) or "—"
            lines.append(
                f"| {name} | {window['server_cores']:.2f} ({top}) | {others} | {window['engine_busy']:.2f} | "
                f"{window['rows_per_s']:.0f} | {_number(window['rows_per_engine_call'])} | "
                f"{_number(window['engine_ms_per_row'], 2)} | {_number(window['mean_queue_ms'])} |"
            )
    passes = report.get("raw_engine_passes") or {}
    if passes.get("start") and passes.get("end"):
        spread = ", ".join(
            f"{when} {min(values):.0f}–{max(values):.0f} (median {statistics.median(values):.0f})"
            for when, values in passes.items()
        )
        lines += [
            "",
            f"The raw engine's B32 rows/s per pass over the same fixed batches, at the start and again at the "
            f"end with the server idle: {spread}. Their spread is the machine's own speed variation.",
        ]
    by_process = report.get("rss_mib_by_process") or {}
    if by_process:
        moments = [moment for moment in ("2", "100", "end") if moment in by_process]
        names = sorted({name for moment in moments for name in by_process[moment]}, key=lambda n: (n != "server", n))
        lines += [
            "",
            "Resident memory by process, MiB ("
            + ", ".join(f"after {m}" if m != "end" else "end" for m in moments)
            + "): "
            + "; ".join(
                f"{name.split(':', 1)[-1]} " + " → ".join(f"{by_process[m].get(name, 0):.0f}" for m in moments)
                for name in names
            )
            + ".",
        ]
    per_swap: dict[str, list[float]] = {}
    for move in served:
        for phase, seconds in (move.get("server_swap") or {}).get("phase_seconds", {}).items():
            per_swap.setdefault(phase, []).append(seconds)
    if per_swap:
        lines += [
            "",
            "Seconds per phase of each served swap (from the server's ready details), median / max: "
            + ", ".join(
                f"{phase} {statistics.median(values):.2f} / {max(values):.2f}" for phase, values in per_swap.items()
            )
            + ".",
        ]
    means = swap_phase_means(report.get("server_metrics", {}))
    if means:
        lines += [
            "",
            "Mean seconds per phase of a swap in the server (every staging, refused ones included): "
            + ", ".join(f"{phase} {seconds:.2f}" for phase, seconds in means.items())
            + ".",
        ]
    summary = _timeline_summary(report.get("timeline", []))
    if summary:
        lines += ["", summary]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command")
    for name in ("client-open", "client-closed"):
        client = commands.add_parser(name)
        client.add_argument("--url", required=True)
        client.add_argument("--texts", required=True)
        client.add_argument("--per-request", type=int, default=1)
        client.add_argument("--duration", type=float, required=True)
        client.add_argument("--rate", type=float, default=10.0)
        client.add_argument("--concurrency", type=int, default=32)
        client.add_argument("--out", type=Path, required=True)
    parser.add_argument("--bundle", default=None, help="default: the newest run's bundle under .state/runs")
    parser.add_argument(
        "--swaps",
        type=int,
        default=100,
        help="fresh versions moved to (plus 3 bad ones, 1 rollback); 0: a control run, the same load and no move",
    )
    parser.add_argument("--load", type=float, default=0.7, help="open-loop rate as a share of saturation")
    parser.add_argument("--texts-per-request", type=int, default=8)
    parser.add_argument("--poll", type=float, default=1.0, help="the server's poll interval, seconds")
    parser.add_argument("--threads", type=int, default=0, help="engine threads (0: every core)")
    parser.add_argument("--phase-seconds", type=float, default=15.0, help="before/after phases")
    parser.add_argument(
        "--gap-seconds", type=float, default=5.0, help="quiet time after each move settles, before the next move"
    )
    parser.add_argument("--saturation-seconds", type=float, default=10.0)
    parser.add_argument(
        "--s3-nice", type=int, default=0, help="niceness of the stand-in S3 server and its autogroup (0-19)"
    )
    parser.add_argument(
        "--server-set",
        action="append",
        type=server_setting,
        default=[],
        metavar="KEY=VALUE",
        help="a server setting for this run, e.g. swap.staging_nice=19 or engine_spinning=true (repeatable)",
    )
    parser.add_argument("--max-swap-seconds", type=float, default=600.0, help="time bound of the swap phase")
    parser.add_argument("--out", type=Path, default=Path("bench/results/serve-load"))
    parser.add_argument("--keep", action="store_true", help="keep the work folder (server log, raw records)")
    arguments = parser.parse_args(argv)
    if arguments.command:
        return _client_main(arguments)
    if arguments.bundle is None:
        bundles = sorted(Path(".state/runs").glob("*/bundle/manifest.json"))
        if not bundles:
            print("error: no bundle under .state/runs; run `make run` first or pass --bundle", file=sys.stderr)
            return 2
        arguments.bundle = str(bundles[-1].parent)
    report = run(arguments)
    report["texts_per_request"] = arguments.texts_per_request
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str))
    markdown = render(report, arguments.poll)
    arguments.out.with_suffix(".md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
