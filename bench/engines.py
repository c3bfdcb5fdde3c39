"""Side-by-side engine benchmark on this machine (issue 4): what each way of serving the model costs.

    python -m bench.engines                      # the newest finished run under .state/runs
    python -m bench.engines .state/runs/<run> [--threads N] [--out FILE.md]

Rows, all on the same machine, threads and inputs, in one process:

* PyTorch FP32 eager (``torch.inference_mode``): the baseline a user would run;
* ONNX Runtime FP32 (the teacher exported to ONNX, ``ORT_ENABLE_ALL``);
* ONNX Runtime FP32 with ORT's transformer optimizer (fused attention, SkipLayerNorm, GELU);
* ONNX Runtime dynamic INT8 (``quantize_dynamic`` on the fused FP32 graph: weights INT8, activations
  quantized on the fly);
* ONNX Runtime INT8 from PTQ (the run's best calibrated student, QDQ) and from KD-QAT (its trained
  student, QDQ), and the engine bundle the run shipped (``load_engine``: what serving runs);
* TensorRT rows where ``tensorrt`` and a CUDA GPU exist (otherwise the row says why not).

Columns: B1 latency p50/p99 for a 16-token query, B32 throughput at 32 tokens, test accuracy, and the
share of this machine's INT8 GEMM peak the engine reaches at B32 (encoder Linear work only: the peak is a
plain ``MatMulInteger`` in ONNX Runtime at the same M x K x N shapes, measured in this same run). Speed
targets (issue 4) are checked against the numbers measured here, as ratios within this one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from enginekit.runtime_onnx import precise_int8

LATENCY_TOKENS = 16
THROUGHPUT_TOKENS = 32
THROUGHPUT_BATCH = 32
HEADER = (
    "| engine | B1 p50 ms ({latency} tok) | B1 p99 ms | B{batch} rows/s ({tokens} tok) | × PyTorch | × ORT FP32 "
    "| test accuracy | share of INT8 GEMM peak |"
)


@dataclass
class Row:
    name: str
    p50_ms: float | None = None
    p99_ms: float | None = None
    rows_per_s: float | None = None
    accuracy: float | None = None
    gemm_share: float | None = None
    note: str = ""


def fixed_batches(encoder, texts: list[str], batch: int, tokens: int, count: int) -> list[dict[str, np.ndarray]]:
    """``count`` batches of ``batch`` real test queries, each truncated / padded to exactly ``tokens``."""
    needed = batch * count
    encoded = encoder.encode([texts[index % len(texts)] for index in range(needed)])  # small splits repeat
    feeds = []
    for start in range(0, needed, batch):
        feed = {}
        for name, array in encoded.as_feed().items():
            part = array[start : start + batch, :tokens]
            if part.shape[1] < tokens:
                part = np.pad(part, ((0, 0), (0, tokens - part.shape[1])))
            feed[name] = np.ascontiguousarray(part)
        feeds.append(feed)
    return feeds


def time_runner(run: Callable[[dict[str, np.ndarray]], object], latency: list, throughput: list) -> tuple:
    for feed in latency[:5] + throughput[:2]:
        run(feed)
    samples = []
    for index in range(200):
        started = time.perf_counter()
        run(latency[index % len(latency)])
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    rows, started = 0, time.perf_counter()
    for index in range(30):
        run(throughput[index % len(throughput)])
        rows += THROUGHPUT_BATCH
    return statistics.median(samples), samples[int(0.99 * len(samples)) - 1], rows / (time.perf_counter() - started)


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    precise_int8(options)  # as the product's runtime (enginekit.runtime_onnx)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda feed: session.run(None, feed)[0]


def int8_gemm_peak_gops(threads: int, shapes: list[tuple[int, int, int]], work: Path) -> float:
    """Best INT8 GEMM rate of ONNX Runtime here: a plain MatMulInteger (uint8 x int8 -> int32)."""
    import onnx
    from onnx import TensorProto, helper

    best = 0.0
    for m, k, n in shapes:
        graph = helper.make_graph(
            [helper.make_node("MatMulInteger", ["a", "b"], ["c"])],
            "gemm",
            [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
            [helper.make_tensor_value_info("c", TensorProto.INT32, [m, n])],
            [
                helper.make_tensor(
                    "b",
                    TensorProto.INT8,
                    [k, n],
                    np.random.randint(-127, 127, (k, n)).astype(np.int8).tobytes(),
                    raw=True,
                )
            ],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        path = work / f"gemm_{m}_{k}_{n}.onnx"
        onnx.save(model, str(path))
        run = ort_session(path, threads)
        feed = {"a": np.random.randint(0, 255, (m, k)).astype(np.uint8)}
        for _ in range(5):
            run(feed)
        iterations, started = 50, time.perf_counter()
        for _ in range(iterations):
            run(feed)
        best = max(best, 2 * m * k * n * iterations / (time.perf_counter() - started) / 1e9)
    return best


def linear_gops_per_sequence(config, tokens: int, layers: int | None = None) -> float:
    """Encoder Linear work per sequence (2 ops per multiply-add): Q, K, V, O and the two FFN matrices."""
    hidden, inner = config.hidden_size, config.intermediate_size
    per_token = 2 * (4 * hidden * hidden + 2 * hidden * inner)
    return per_token * tokens * (layers or config.num_hidden_layers) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, nargs="?", default=None)
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default (physical cores)")
    parser.add_argument("--out", type=Path, default=None)
    arguments = parser.parse_args(argv)
    from bench.accuracy_table import DEFAULT_RUNS, newest_run

    run = arguments.run_dir or newest_run(DEFAULT_RUNS)
    if not (run / "variants" / "variants.json").is_file() or not (run / "bundle" / "manifest.json").is_file():
        print(f"error: {run} is not a finished run directory (variants/ and bundle/ expected)", file=sys.stderr)
        return 2
    import torch

    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    with torch.inference_mode():
        return _bench(run, torch.get_num_threads(), arguments.out)


def _bench(run: Path, threads: int, out: Path | None) -> int:
    import onnxruntime as ort
    import torch

    from enginekit.runtime import load_engine
    from enginekit.tokenization import TextEncoder
    from tasks.data import PreparedData
    from tasks.engine_build import transformer_fusions
    from tasks.export import export_onnx
    from tasks.modeling import SplitBatches, accuracy
    from tasks.quantize import StudentResult, load_student
    from tasks.teacher import TeacherResult

    work = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    data = PreparedData(**json.loads((run / "data" / "data.json").read_text()))
    teacher_result = TeacherResult(**json.loads((run / "teacher" / "teacher.json").read_text()))
    variants = json.loads((run / "variants" / "variants.json").read_text())
    encoder = TextEncoder(teacher_result.tokenizer_dir, teacher_result.max_seq_length)
    test = SplitBatches.from_dataset(data.load()["test"])
    texts = list(test.texts)
    latency = fixed_batches(encoder, texts, 1, LATENCY_TOKENS, 64)
    throughput = fixed_batches(encoder, texts, THROUGHPUT_BATCH, THROUGHPUT_TOKENS, 8)
    accuracy_batches = [(b.as_feed(), labels) for b, labels in test.iterate(encoder, 64)]

    def measure(name: str, run_feed, layers: int | None = None, note: str = "") -> Row:
        p50, p99, rate = time_runner(run_feed, latency, throughput)
        predictions = np.concatenate([np.asarray(run_feed(feed)).argmax(-1) for feed, _ in accuracy_batches])
        gold = np.concatenate([labels for _, labels in accuracy_batches])
        row = Row(name, p50, p99, rate, accuracy(predictions, gold), note=note)
        row.gemm_share = None if layers == -1 else rate * linear_gops_per_sequence(config, THROUGHPUT_TOKENS, layers)
        print(f"{name}: p50 {p50:.2f} ms, {rate:.0f} rows/s", file=sys.stderr)
        return row

    teacher = teacher_result.load("cpu")
    config = teacher.config
    rows = [
        measure("PyTorch FP32 eager", lambda feed: teacher(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits)
    ]
    fp32 = work / "teacher.fp32.onnx"
    export_onnx(teacher, encoder, fp32, 17)
    rows.append(measure("ONNX Runtime FP32", ort_session(fp32, threads)))

    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    fused = work / "teacher.fused.onnx"
    optimize_model(
        str(fp32), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size
    ).save_model_to_file(str(fused))
    rows.append(measure("ONNX Runtime FP32, transformer fusions", ort_session(fused, threads)))
    dynamic = work / "teacher.dynamic-int8.onnx"
    from onnx import TensorProto

    quantize_dynamic(
        str(fused),
        str(dynamic),
        weight_type=QuantType.QInt8,
        per_channel=True,
        extra_options={"DefaultTensorType": TensorProto.FLOAT},  # fused contrib ops defeat shape inference
    )
    rows.append(measure("ONNX Runtime dynamic INT8 (fused graph)", ort_session(dynamic, threads)))

    by_kind = {c["kind"]: c for c in reversed(variants["candidates"])}
    ptq = max((c for c in variants["candidates"] if c["kind"] == "ptq"), key=lambda c: c["eval_accuracy"])
    for label, candidate in (
        ("ONNX Runtime INT8, PTQ " + ptq["student"]["calibration"], ptq),
        ("ONNX Runtime INT8, KD-QAT", by_kind.get("kd_qat")),
    ):
        if candidate is None:
            continue
        student = StudentResult(**candidate["student"])
        path = work / f"{candidate['kind']}.qdq.onnx"
        export_onnx(load_student(student, teacher_result), encoder, path, 17)
        rows.append(measure(label, ort_session(path, threads)))
        if candidate["kind"] == "kd_qat":  # what the engine build adds: ORT's transformer fusions on the QDQ graph
            fused_qdq = work / "kd_qat.fused.onnx"
            transformer_fusions(path, fused_qdq)
            rows.append(measure(label + " + transformer fusions", ort_session(fused_qdq, threads)))
    small = by_kind.get("smaller_student")
    if small:
        student = StudentResult(**small["student"])
        path = work / "smaller.qdq.onnx"
        export_onnx(load_student(student, teacher_result), encoder, path, 17)
        rows.append(
            measure(
                f"ONNX Runtime INT8, smaller student ({len(student.student_layers or [])} layers)",
                ort_session(path, threads),
                len(student.student_layers or []),
            )
        )

    engine = load_engine(run / "bundle", threads=threads)
    from enginekit.tokenization import EncodedBatch

    shipped_layers = (
        len(
            StudentResult(
                **next(c for c in variants["candidates"] if c["name"] == variants["chosen"])["student"]
            ).student_layers
            or []
        )
        or None
    )
    rows.append(
        measure(
            f"shipped engine bundle ({variants['chosen']})",
            lambda feed: engine.run(EncodedBatch(**feed)),
            shipped_layers,
        )
    )
    rows.append(Row("TensorRT FP16 / INT8", note=_tensorrt_note()))

    shapes = [
        (THROUGHPUT_BATCH * THROUGHPUT_TOKENS, config.hidden_size, config.intermediate_size),
        (THROUGHPUT_BATCH * THROUGHPUT_TOKENS, config.intermediate_size, config.hidden_size),
        (THROUGHPUT_BATCH * THROUGHPUT_TOKENS, config.hidden_size, config.hidden_size),
    ]
    peak = int8_gemm_peak_gops(threads, shapes, work)
    for row in rows:
        if row.gemm_share is not None:
            row.gemm_share = row.gemm_share / peak
    table = render(rows, peak, threads, ort.__version__, torch.__version__, run)
    print(table)
    target = out or (run / "engines_bench.md")
    target.write_text(table)
    target.with_suffix(".json").write_text(
        json.dumps({"peak_gops": peak, "threads": threads, "rows": [asdict(r) for r in rows]}, indent=2)
    )
    return 0


def _tensorrt_note() -> str:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return "not measured: no `tensorrt` package on this machine (python -m bench.tensorrt_check on a GPU box)"
    return "run python -m bench.tensorrt_check on this GPU machine"


def render(rows: list[Row], peak: float, threads: int, ort_version: str, torch_version: str, run: Path) -> str:
    import platform

    base = rows[0]
    ort_fp32 = rows[1]
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {threads} threads; onnxruntime {ort_version}, "
        f"torch {torch_version}. Run: {run.name}.",
        f"INT8 GEMM peak (MatMulInteger, this run): {peak:.0f} GOPS.",
        "",
        HEADER.format(latency=LATENCY_TOKENS, batch=THROUGHPUT_BATCH, tokens=THROUGHPUT_TOKENS),
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row.rows_per_s is None:
            lines.append(f"| {row.name} | — | — | — | — | — | — | {row.note} |")
            continue
        lines.append(
            f"| {row.name} | {row.p50_ms:.2f} | {row.p99_ms:.2f} | {row.rows_per_s:.0f} "
            f"| ×{row.rows_per_s / base.rows_per_s:.2f} "
            f"| ×{row.rows_per_s / ort_fp32.rows_per_s:.2f} | {100 * row.accuracy:.2f}% | "
            f"{'' if row.gemm_share is None else f'{100 * row.gemm_share:.0f}%'} |"
        )
    shipped = next(r for r in rows if r.name.startswith("shipped"))
    targets = [
        ("throughput ≥ 5× PyTorch FP32 eager (B32)", shipped.rows_per_s / base.rows_per_s, 5.0, True),
        ("throughput ≥ 3× ORT FP32 (B32)", shipped.rows_per_s / ort_fp32.rows_per_s, 3.0, True),
        ("B1 p50 ≤ 1.5 ms (16 tokens)", shipped.p50_ms, 1.5, False),
        ("≥ 50% of the INT8 GEMM peak (B32)", 100 * (shipped.gemm_share or 0.0), 50.0, True),
    ]
    lines += ["", "Targets (shipped engine, this run):", ""]
    for name, value, goal, higher in targets:
        met = value >= goal if higher else value <= goal
        lines.append(f"- {name}: {value:.2f} — {'met' if met else 'MISSED'}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
