"""Engine build stage: portable QDQ ONNX → backend engine → engine bundle (enginekit.bundle).

ONNX Runtime (CPU) backend: the engine file is the QDQ graph optimized offline by ORT at the configured
level; ORT fuses each Q/DQ + MatMul into integer kernels (MatMulIntegerToFloat) there. The manifest
records the ORT version that wrote it (the runtime refuses another major.minor).

TensorRT (GPU) backend (``engine.backend: tensorrt``): the QDQ graph, its non-quantized ops turned FP16
by modelopt's ONNX autocast, built into a strongly typed engine (``tasks/tensorrt_build.py``); the
manifest records the TensorRT version, the GPU and the optimization profiles (the runtime refuses others).

Both: the bundle keeps the portable QDQ ONNX, the tokenizer and a golden set — canary test texts, their
token ids and the engine's own logits — replayed before any use of the bundle.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from enginekit.bundle import (
    GoldenSpec,
    Lineage,
    Manifest,
    RuntimeRequirements,
    TensorSpec,
    TokenizerSpec,
    describe_files,
    utc_now_iso,
    verify_bundle,
    write_json_atomic,
    write_manifest,
)
from enginekit.lineage import code_version
from enginekit.runtime import check_golden, load_engine, predict_logits
from enginekit.tokenization import MODEL_INPUT_NAMES
from tasks.config import EngineConfig
from tasks.data import PreparedData
from tasks.export import ONNX_FILE, OUTPUT_NAME, ExportResult
from tasks.teacher import TeacherResult

ENGINE_FILE = "engine/model.ort.onnx"
TENSORRT_ENGINE_FILE = "engine/model.plan"
TENSORRT_GOLDEN_ATOL = 1e-2
"""FP16 parts: the engine's logits are replayed on the same GPU, but tactics may differ between loads."""
GOLDEN_FILE = "golden.json"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


@dataclass(frozen=True)
class BundleResult:
    directory: str
    digest: str


def transformer_fusions(source: Path, destination: Path) -> dict[str, int]:
    """ONNX Runtime's transformer optimizer on the QDQ graph: residual Add + LayerNorm → SkipLayerNormalization,
    bias + GELU → BiasGelu. The Q/DQ-wrapped MatMuls are left alone (no attention fusion through Q/DQ), so
    the INT8 arithmetic is unchanged and outputs are identical. Measured on the 2-core dev machine
    (BENCHMARKS.md section 5): FP32 graph B32 +12%, B1 -28%; QDQ graph B1 -4%, B32 within noise."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(source), model_type="bert", num_heads=0, hidden_size=0, opt_level=0)
    optimized.save_model_to_file(str(destination))
    return {name: count for name, count in optimized.get_fused_operator_statistics().items() if count}


def optimize_for_onnxruntime(source: Path, destination: Path, level: str, threads: int, fusions: bool = True) -> str:
    """The engine file: (transformer fusions, then) ORT's offline graph optimizations at ``level``."""
    import onnxruntime as ort

    if fusions:
        fused = destination.with_name("transformer-fused.onnx")
        destination.parent.mkdir(parents=True, exist_ok=True)
        transformer_fusions(source, fused)
        try:
            return optimize_for_onnxruntime(fused, destination, level, threads, fusions=False)
        finally:
            fused.unlink(missing_ok=True)

    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[level]
    options.intra_op_num_threads = threads
    destination.parent.mkdir(parents=True, exist_ok=True)
    options.optimized_model_filepath = str(destination)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    return ort.__version__


def golden_rows(data: PreparedData, count: int, seed: int = 7) -> tuple[list[str], list[str] | None]:
    """A fixed, seeded sample of test rows, sorted short-to-long so it spans query lengths."""
    test = data.load()["test"]
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(test), size=min(count, len(test)), replace=False).tolist())
    texts = [test[i]["text"] for i in picked]
    pairs = [test[i]["text_pair"] for i in picked] if data.text_pair else None
    order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
    return [texts[i] for i in order], ([pairs[i] for i in order] if pairs else None)


def build_bundle(
    config: EngineConfig,
    model_name: str,
    exported: ExportResult,
    teacher: TeacherResult,
    data: PreparedData,
    lineage: Lineage,
    out_dir: Path,
    log=print,
) -> BundleResult:
    out_dir = Path(out_dir)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)

    shutil.copy2(exported.onnx_path, staging / ONNX_FILE)
    golden_atol = config.golden_atol
    if config.backend == "tensorrt":
        engine_file = TENSORRT_ENGINE_FILE
        runtime = _build_tensorrt(config, staging, teacher.max_seq_length, log)
        golden_atol = max(golden_atol, TENSORRT_GOLDEN_ATOL)
        described = f"TensorRT {runtime.tensorrt_version} on {runtime.gpu_name}"
    else:
        engine_file = ENGINE_FILE
        ort_version = optimize_for_onnxruntime(
            staging / ONNX_FILE,
            staging / ENGINE_FILE,
            config.graph_optimization,
            config.intra_op_threads,
            config.transformer_fusions,
        )
        runtime = RuntimeRequirements(
            backend="onnxruntime",
            onnxruntime_version=ort_version,
            execution_provider="CPUExecutionProvider",
            graph_optimization_level=config.graph_optimization,
        )
        described = f"onnxruntime {ort_version}, {config.graph_optimization} optimizations" + (
            " + transformer fusions" if config.transformer_fusions else ""
        )
    tokenizer_dir = staging / "tokenizer"
    tokenizer_dir.mkdir()
    for name in _TOKENIZER_FILES:
        if (teacher.tokenizer_dir / name).is_file():
            shutil.copy2(teacher.tokenizer_dir / name, tokenizer_dir / name)

    dynamic = ["batch", "sequence"]
    manifest = Manifest(
        model_name=model_name,
        backend=config.backend,
        precision="int8",
        portable_onnx=ONNX_FILE,
        engine_file=engine_file,
        inputs=[TensorSpec(name=name, dtype="int64", shape=dynamic) for name in MODEL_INPUT_NAMES],
        outputs=[TensorSpec(name=OUTPUT_NAME, dtype="float32", shape=["batch", len(data.labels)])],
        max_batch_size=config.max_batch_size,
        max_seq_length=teacher.max_seq_length,
        labels=data.labels,
        tokenizer=TokenizerSpec(max_length=teacher.max_seq_length, text_pair=data.text_pair),
        runtime=runtime,
        golden=GoldenSpec(file=GOLDEN_FILE, count=min(config.golden_set_size, data.rows["test"]), atol=golden_atol),
        files=[],
        lineage=lineage,
        created_at=utc_now_iso(),
    )
    # Record golden outputs with the engine itself, then describe every file (golden.json included).
    write_json_atomic(staging / GOLDEN_FILE, {"texts": [], "input_ids": [], "logits": []})
    write_manifest(staging, manifest.updated(files=[f.model_dump() for f in describe_files(staging, {})]))
    engine = load_engine(staging, threads=config.intra_op_threads, verify_golden=False)
    texts, pairs = golden_rows(data, config.golden_set_size)
    logits = predict_logits(engine, texts, pairs)
    golden = {
        "texts": texts,
        "input_ids": engine.encoder.encode(texts, pairs).input_ids.tolist(),
        "logits": logits.tolist(),
    }
    if pairs is not None:
        golden["text_pairs"] = pairs
    write_json_atomic(staging / GOLDEN_FILE, golden)
    roles = {ONNX_FILE: "onnx_qdq", engine_file: "engine", "tokenizer/": "tokenizer", GOLDEN_FILE: "golden"}
    manifest = manifest.updated(files=[f.model_dump() for f in describe_files(staging, roles)])
    write_manifest(staging, manifest)

    verify_bundle(staging)
    check_golden(load_engine(staging, threads=config.intra_op_threads, verify_golden=False), staging)
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    log(f"engine bundle {out_dir}: {described}, {len(texts)} golden rows, digest {manifest.digest()[:12]}")
    return BundleResult(directory=str(out_dir), digest=manifest.digest())


def _build_tensorrt(config: EngineConfig, staging: Path, max_seq: int, log) -> RuntimeRequirements:
    from tasks.tensorrt_build import build_engine_file, fp16_graph

    source = staging / ONNX_FILE
    work = staging.with_name(staging.name + ".trt-work")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        if config.tensorrt.fp16:
            fp16_graph(source, work / "model.fp16.onnx")
            source = work / "model.fp16.onnx"
        (staging / TENSORRT_ENGINE_FILE).parent.mkdir(parents=True, exist_ok=True)
        return build_engine_file(
            source,
            staging / TENSORRT_ENGINE_FILE,
            config.tensorrt,
            MODEL_INPUT_NAMES,
            config.max_batch_size,
            max_seq,
            log,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


@task(name="build-int8-engine", cache_policy=NO_CACHE, persist_result=False)
def build_engine_task(
    config: EngineConfig,
    model_name: str,
    exported: ExportResult,
    teacher: TeacherResult,
    data: PreparedData,
    config_hash: str,
    out_dir: str,
) -> BundleResult:
    lineage = Lineage(data_fingerprint=data.fingerprint, config_hash=config_hash, code_version=code_version())
    return build_bundle(config, model_name, exported, teacher, data, lineage, Path(out_dir), log=get_run_logger().info)
