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
from enginekit.hardware import cpu_isa, cpu_model
from enginekit.lineage import code_version
from enginekit.runtime import EngineRuntime, check_golden, load_engine, predict_logits
from enginekit.runtime_onnx import precise_int8
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
    # no PRECISE_INT8 here: the written engine keeps S8 weights; each runtime sets it at load
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    return ort.__version__


def compact_embedding_tables(engine_file: Path, min_elements: int = 1 << 16) -> list[str]:
    """Store every large FP32 table read by a ``Gather`` whose values lie on the INT8 row grid of
    ``tasks.quantize.round_embeddings_to_int8`` as INT8 plus one FP32 scale per row: ``Gather(table, ids)``
    becomes ``Cast(Gather(q, ids)) * Gather(scales, ids)``, which gives back exactly the same FP32 values
    (power-of-two scales). Tables off the grid (a student loaded without ``embedding_int8``, position
    embeddings) are left as they are. Rewrites ``engine_file`` in place; returns the tables compacted."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from tasks.quantize import int8_row_grid

    model = onnx.load(str(engine_file))
    tables = {item.name: item for item in model.graph.initializer}
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    nodes, compacted = [], []
    for node in model.graph.node:
        table = tables.get(node.input[0]) if node.op_type == "Gather" and len(node.input) == 2 else None
        axis = next((attribute.i for attribute in node.attribute if attribute.name == "axis"), 0)
        if (
            table is None
            or table.data_type != TensorProto.FLOAT
            or len(table.dims) != 2
            or table.dims[0] * table.dims[1] < min_elements
            or axis != 0
            or readers[table.name] != 1
        ):
            nodes.append(node)
            continue
        values = numpy_helper.to_array(table)
        if not np.array_equal(int8_row_grid(values), values):
            nodes.append(node)
            continue
        largest = np.abs(values.astype(np.float64)).max(axis=1, keepdims=True)
        scales = np.where(largest > 0, np.exp2(np.ceil(np.log2(np.maximum(largest, 1e-300) / 127.0))), 1.0)
        codes = np.rint(values / scales).astype(np.int8)
        assert np.array_equal(codes.astype(np.float32) * scales.astype(np.float32), values)
        base, out = table.name, node.output[0]
        model.graph.initializer.remove(table)
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(codes, base + ".int8"),
                numpy_helper.from_array(scales.astype(np.float32), base + ".scale"),
            ]
        )
        nodes += [
            helper.make_node("Gather", [base + ".int8", node.input[1]], [out + ".int8"], name=node.name + ".int8"),
            helper.make_node("Cast", [out + ".int8"], [out + ".float"], to=TensorProto.FLOAT, name=node.name + ".cast"),
            helper.make_node("Gather", [base + ".scale", node.input[1]], [out + ".scale"], name=node.name + ".scale"),
            helper.make_node("Mul", [out + ".float", out + ".scale"], [out], name=node.name + ".dequantize"),
        ]
        compacted.append(base)
    if compacted:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        staging = engine_file.with_name(engine_file.name + ".partial")
        onnx.save(model, str(staging))
        staging.replace(engine_file)
    return compacted


GOLDEN_CANDIDATES = 4
"""Candidate rows per canary kept: canaries are the candidates with a clear top-1 margin."""


def golden_candidates(
    data: PreparedData, count: int, source: str = "eval", seed: int = 7
) -> tuple[list[str], list[str] | None]:
    """A fixed, seeded sample (``GOLDEN_CANDIDATES`` x ``count``) to pick canaries from: rows of the
    ``eval`` (default) or ``train`` split, or the lines of a curated file (``engine.golden_source``; one
    text per line, ``text<TAB>text_pair`` for pair models). Never the test split: the canaries ship with
    every bundle, and test rows must stay unseen (and, with real search logs, out of every artifact)."""
    if source in ("eval", "train"):
        split = data.load()[source]
        texts_all = list(split["text"])
        pairs_all = list(split["text_pair"]) if data.text_pair else None
    else:
        path = Path(source)
        try:
            lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except OSError as error:
            raise ValueError(f"engine.golden_source {source!r}: cannot read it ({error})") from None
        rows = [line.split("\t", 1) if data.text_pair else [line] for line in lines]
        bad = next((number for number, row in enumerate(rows, 1) if len(row) != (2 if data.text_pair else 1)), None)
        if bad is not None or not rows:
            raise ValueError(
                f"engine.golden_source {source!r}: "
                + (f"line {bad} is not 'text<TAB>text_pair'" if bad is not None else "no texts in it")
            )
        texts_all = [row[0] for row in rows]
        pairs_all = [row[1] for row in rows] if data.text_pair else None
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(texts_all), size=min(GOLDEN_CANDIDATES * count, len(texts_all)), replace=False))
    texts = [texts_all[i] for i in picked]
    pairs = [pairs_all[i] for i in picked] if pairs_all is not None else None
    return texts, pairs


def top_margins(logits: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 logit per row."""
    ordered = np.sort(logits, axis=-1)
    return ordered[:, -1] - ordered[:, -2]


def select_canaries(logits: np.ndarray, lengths: list[int], count: int, min_margin: float) -> list[int]:
    """``count`` rows whose label no kernel difference can flip: those with a margin >= ``min_margin``
    (the widest margins when too few qualify), spread over lengths, returned short to long."""
    margins = top_margins(logits)
    clear = [i for i in range(len(logits)) if margins[i] >= min_margin]
    if len(clear) < count:
        clear = sorted(range(len(logits)), key=lambda i: -margins[i])[:count]
    by_length = sorted(clear, key=lambda i: (lengths[i], i))
    if len(by_length) > count:  # evenly spaced over the length order: short and long queries both
        step = len(by_length) / count
        by_length = [by_length[int(k * step)] for k in range(count)]
    return by_length


def kernel_variation(bundle_dir: Path, manifest: Manifest, feed: dict[str, np.ndarray], logits: np.ndarray) -> float:
    """Largest |logit difference| between the engine and the same graph run through other kernels.

    Another CPU runs other ONNX Runtime kernels (AVX2 / AVX-512 / VNNI / AMX paths for the FP32 ops around
    the INT8 GEMMs; quantization of a value near a rounding boundary may land one INT8 step away). The
    portable QDQ graph with no optimizations (reference Q/DQ and FP32 kernels, no fusions) and with ORT's
    own load-time optimizations are two such other paths, measured here on the canaries themselves.
    """
    import onnxruntime as ort

    differences = [0.0]
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        options.intra_op_num_threads = 1
        precise_int8(options)  # as the engine runs everywhere (enginekit.runtime_onnx)
        session = ort.InferenceSession(
            str(bundle_dir / manifest.portable_onnx), options, providers=["CPUExecutionProvider"]
        )
        wanted = {node.name for node in session.get_inputs()}
        other = session.run(None, {name: value for name, value in feed.items() if name in wanted})[0]
        differences.append(float(np.abs(other - logits).max()))
    return max(differences)


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
        compacted = compact_embedding_tables(staging / ENGINE_FILE)
        runtime = RuntimeRequirements(
            backend="onnxruntime",
            onnxruntime_version=ort_version,
            execution_provider="CPUExecutionProvider",
            graph_optimization_level=config.graph_optimization,
            build_cpu=cpu_model(),
            build_isa=cpu_isa(),
        )
        described = (
            f"onnxruntime {ort_version}, {config.graph_optimization} optimizations"
            + (" + transformer fusions" if config.transformer_fusions else "")
            + (f", INT8 tables: {', '.join(compacted)}" if compacted else "")
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
    golden, golden_spec = record_golden(config, engine, staging, data, golden_atol)
    write_json_atomic(staging / GOLDEN_FILE, golden)
    roles = {ONNX_FILE: "onnx_qdq", engine_file: "engine", "tokenizer/": "tokenizer", GOLDEN_FILE: "golden"}
    files = [f.model_dump() for f in describe_files(staging, roles)]
    manifest = manifest.updated(files=files, golden=golden_spec.model_dump())
    write_manifest(staging, manifest)
    texts = golden["texts"]

    verify_bundle(staging)
    check_golden(load_engine(staging, threads=config.intra_op_threads, verify_golden=False), staging)
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    log(f"engine bundle {out_dir}: {described}, {len(texts)} golden rows, digest {manifest.digest()[:12]}")
    return BundleResult(directory=str(out_dir), digest=manifest.digest())


def record_golden(
    config: EngineConfig, engine: EngineRuntime, staging: Path, data: PreparedData, atol_floor: float
) -> tuple[dict, GoldenSpec]:
    """Canaries with a clear margin, the engine's own logits for them, and a tolerance measured for
    other CPUs' kernels (ONNX Runtime bundles; a TensorRT engine replays on the GPU it was built for).

    The tolerance comes first: the kernel variation is measured on the whole candidate pool, and only
    then are canaries chosen among the rows whose top-1 margin is more than twice it, so no kernel
    difference within the tolerance can flip a canary's label. A CPU whose kernels differ more (AVX2
    without VNNI, for instance) gets a wider tolerance and canaries of wider margin, not a failed build."""
    texts, pairs = golden_candidates(data, config.golden_set_size, config.golden_source)
    logits = predict_logits(engine, texts, pairs)
    lengths = [len(row) for row in engine.encoder.tokenize(texts, pairs)]
    atol, basis = atol_floor, f"floor {atol_floor:g} (engine.golden_atol)"
    if engine.manifest.backend == "onnxruntime":
        measured = kernel_variation(staging, engine.manifest, engine.encoder.encode(texts, pairs).as_feed(), logits)
        if config.golden_atol_factor * measured > atol_floor:
            atol = config.golden_atol_factor * measured
            basis = (
                f"{config.golden_atol_factor:g} x {measured:.3g}, the largest logit difference on "
                f"{len(texts)} candidate rows between the engine and its portable graph run through other "
                f"ONNX Runtime kernels (unoptimized and load-time optimized) on {cpu_model()}"
            )
        else:
            basis += f"; measured kernel variation {measured:.3g} x {config.golden_atol_factor:g} is below it"
    wanted = min(config.golden_set_size, len(texts))
    need = max(config.golden_min_margin, 2 * atol)
    clear = int((top_margins(logits) > 2 * atol).sum())
    if clear < max(1, (wanted + 1) // 2):
        raise ValueError(
            f"only {clear} of {len(texts)} candidate rows ({config.golden_source}) have a top-1 logit margin "
            f"above twice the replay tolerance ({atol:.3g}; {basis}), and the golden set needs at least "
            f"{max(1, (wanted + 1) // 2)}: "
            "a kernel difference on another CPU could flip a canary's label. The model is unsure of most of "
            "them; check its accuracy, or raise engine.golden_set_size or lower engine.golden_atol_factor knowingly"
        )
    chosen = select_canaries(logits, lengths, min(wanted, clear), need)
    texts = [texts[i] for i in chosen]
    pairs = [pairs[i] for i in chosen] if pairs is not None else None
    logits = logits[chosen]
    encoded = engine.encoder.encode(texts, pairs)
    golden: dict = {"texts": texts, "input_ids": encoded.input_ids.tolist(), "logits": logits.tolist()}
    if pairs is not None:
        golden["text_pairs"] = pairs
    margin = float(top_margins(logits).min())
    spec = GoldenSpec(
        file=GOLDEN_FILE, count=len(texts), atol=round(atol, 6), atol_basis=basis, min_margin=round(margin, 4)
    )
    return golden, spec


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
