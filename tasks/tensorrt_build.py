"""TensorRT engine build, the 2026 way: explicit quantization (the QDQ ONNX's Q/DQ nodes carry every INT8
scale) in a strongly typed network (TensorRT 10: the STRONGLY_TYPED flag; TensorRT 11: always), so layer
precisions come from the graph's types, not from builder flags or implicit INT8 calibrators (removed).

1. ``fp16_graph``: modelopt's ONNX autocast rewrites the non-quantized parts of the QDQ graph to FP16
   (LayerNorm, softmax, GELU, residual adds, head), keeping FP32 I/O — the graph itself says FP16.
2. ``build_engine_file``: parse with TensorRT's ONNX parser, one optimization profile per configured
   batch x sequence range, timing cache loaded and saved, serialize; returns the manifest's runtime
   requirements (TensorRT version, GPU name and compute capability, profiles).

Needs ``tensorrt`` and a CUDA GPU at build time (``pip install -e '.[gpu]'``); the pure rules live in
``enginekit/tensorrt_support.py``. Type-checked in CI against the real TensorRT 11.4 bindings' stubs
(``infra/tensorrt_stubs.py``; names and signatures only, never behaviour).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from enginekit.bundle import RuntimeRequirements
from enginekit.tensorrt_support import GpuIdentity, check_profiles, profile_shapes, runtime_requirements
from tasks.config import TensorRTConfig


class TensorRTBuildError(RuntimeError):
    pass


def fp16_graph(source: Path, destination: Path) -> None:
    """The QDQ graph with every non-quantized op in FP16, I/O types kept (modelopt ONNX autocast)."""
    import onnx
    from modelopt.onnx.autocast import convert_to_mixed_precision

    model = convert_to_mixed_precision(str(source), low_precision_type="fp16", keep_io_types=True)
    onnx.save(model, str(destination))


def current_gpu() -> GpuIdentity:
    import torch

    if not torch.cuda.is_available():
        raise TensorRTBuildError("TensorRT engines are built on a CUDA GPU; torch sees none on this machine")
    major, minor = torch.cuda.get_device_capability(0)
    return GpuIdentity(name=torch.cuda.get_device_name(0), compute_capability=f"{major}.{minor}")


def build_engine_file(
    onnx_path: Path,
    engine_path: Path,
    config: TensorRTConfig,
    input_names: Sequence[str],
    max_batch: int,
    max_seq: int,
    log: Callable[[str], None] = print,
) -> RuntimeRequirements:
    import tensorrt as trt

    check_profiles(config.profiles, max_batch, max_seq)
    gpu = current_gpu()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 11:  # TensorRT 11 networks are always strongly typed
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(parser.get_error(index).desc() for index in range(parser.num_errors))
        raise TensorRTBuildError(f"TensorRT's ONNX parser rejected {onnx_path}: {errors}")

    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mib << 20)
    builder_config.builder_optimization_level = config.builder_optimization_level
    for profile_config in config.profiles:
        profile = builder.create_optimization_profile()
        for name, (low, optimum, high) in profile_shapes(profile_config, input_names).items():
            profile.set_shape(name, trt.Dims(low), trt.Dims(optimum), trt.Dims(high))
        builder_config.add_optimization_profile(profile)

    cache_path = Path(config.timing_cache) if config.timing_cache else None
    cached = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    timing_cache = builder_config.create_timing_cache(cached)
    builder_config.set_timing_cache(timing_cache, False)

    serialized = builder.build_serialized_network(network, builder_config)
    if serialized is None:
        raise TensorRTBuildError(f"TensorRT could not build an engine from {onnx_path} (see the log above)")
    staging = engine_path.with_suffix(".partial")
    with staging.open("wb") as handle:
        handle.write(memoryview(serialized))  # type: ignore[arg-type]  # a buffer at runtime; the stub omits it
    staging.replace(engine_path)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_staging = cache_path.with_suffix(".partial")
        cache = builder_config.get_timing_cache().serialize()
        cache_staging.write_bytes(memoryview(cache).tobytes())  # type: ignore[arg-type]  # a buffer at runtime
        cache_staging.replace(cache_path)
    log(
        f"TensorRT {trt.__version__} engine for {gpu.name} (sm {gpu.compute_capability}): "
        f"{len(config.profiles)} profiles, {engine_path.stat().st_size / 1e6:.1f} MB"
        + (f", timing cache {cache_path}" if cache_path else "")
    )
    return runtime_requirements(trt.__version__, gpu, config.profiles, config.fp16)
