"""TensorRT backend: the pure parts everywhere; the real build and run only where TensorRT and a CUDA GPU
exist (skipped here with the reason). The code's TensorRT API use is type-checked by `make typecheck`
against stubs of the real TensorRT 11.4 bindings (infra/tensorrt_stubs.py)."""

from __future__ import annotations

import importlib.util
import shutil

import pytest

from enginekit.tensorrt_support import (
    GpuIdentity,
    ProfileError,
    check_compatible,
    check_profiles,
    profile_shapes,
    profiles_of,
    runtime_requirements,
    select_profile,
)
from tasks.config import EngineConfig, TensorRTConfig, TensorRTProfile

SHORT = TensorRTProfile(min_batch=1, opt_batch=1, max_batch=4, min_seq=1, opt_seq=16, max_seq=32)
FULL = TensorRTProfile(min_batch=1, opt_batch=32, max_batch=64, min_seq=1, opt_seq=32, max_seq=64)
H100 = GpuIdentity("NVIDIA H100 80GB HBM3", "9.0")


def _tensorrt_and_gpu() -> str | None:
    """Why the integration tests cannot run here, or None when they can."""
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT integration tests need the `tensorrt` package (pip install -e '.[gpu]') and a CUDA GPU"
    import torch

    if not torch.cuda.is_available():
        return "TensorRT integration tests need a CUDA GPU; torch sees none"
    return None


needs_tensorrt = pytest.mark.skipif(_tensorrt_and_gpu() is not None, reason=_tensorrt_and_gpu() or "")


def test_profile_shapes_give_min_opt_max_for_every_input():
    shapes = profile_shapes(SHORT, ["input_ids", "attention_mask"])
    assert shapes["input_ids"] == ((1, 1), (1, 16), (4, 32)) == shapes["attention_mask"]


def test_profiles_must_be_ordered_inside_the_limits_and_cover_them():
    with pytest.raises(ValueError, match="min_batch <= opt_batch <= max_batch"):
        TensorRTProfile(min_batch=2, opt_batch=1, max_batch=4, opt_seq=8, max_seq=8)
    with pytest.raises(ValueError, match="min_seq <= opt_seq <= max_seq"):
        TensorRTProfile(opt_batch=1, max_batch=1, min_seq=4, opt_seq=8, max_seq=6)
    check_profiles([SHORT, FULL], 64, 64)
    with pytest.raises(ProfileError, match=r"profiles\[1\] reaches batch 64 x sequence 64, beyond"):
        check_profiles([SHORT, FULL], 32, 64)
    with pytest.raises(ProfileError, match=r"no engine\.tensorrt\.profiles entry covers batch 1\.\.64"):
        check_profiles([SHORT], 64, 64)
    with pytest.raises(ProfileError, match="at least one profile"):
        check_profiles([], 64, 64)
    assert EngineConfig().tensorrt.profiles == [SHORT, FULL]  # the shipped default is valid for 64 x 64
    check_profiles(TensorRTConfig().profiles, EngineConfig().max_batch_size, 64)


def test_each_batch_runs_with_the_smallest_covering_profile():
    profiles = [FULL, SHORT]
    assert select_profile(profiles, 1, 12) == 1  # a short query: the profile tuned for it
    assert select_profile(profiles, 4, 32) == 1
    assert select_profile(profiles, 5, 12) == 0
    assert select_profile(profiles, 1, 33) == 0
    with pytest.raises(ProfileError, match="no optimization profile covers batch 65 x sequence 10"):
        select_profile(profiles, 65, 10)


def _trt_manifest(tmp_path, version="11.4.0.106", gpu=H100):
    from tests.bundle_factory import make_bundle

    manifest = make_bundle(tmp_path / "bundle")
    runtime = runtime_requirements(version, gpu, [SHORT, FULL], True)
    return manifest.updated(backend="tensorrt", runtime=runtime.model_dump())


def test_manifest_records_version_gpu_and_profiles(tmp_path):
    manifest = _trt_manifest(tmp_path)
    runtime = manifest.runtime
    assert (runtime.backend, runtime.tensorrt_version, runtime.gpu_name, runtime.compute_capability) == (
        "tensorrt",
        "11.4.0.106",
        "NVIDIA H100 80GB HBM3",
        "9.0",
    )
    assert profiles_of(manifest) == [SHORT, FULL] and runtime.tensorrt_fp16 is True
    assert type(manifest).model_validate_json(manifest.model_dump_json()) == manifest  # survives the JSON file


def test_an_engine_from_another_tensorrt_release_or_gpu_is_refused(tmp_path):
    from enginekit.runtime import IncompatibleBundleError

    manifest = _trt_manifest(tmp_path)
    check_compatible(manifest, "11.4.0.106", H100)
    check_compatible(manifest, "11.4.0.200", H100)  # a rebuild of the same release
    with pytest.raises(IncompatibleBundleError, match=r"built with TensorRT 11.4.0.106, this machine has 10.13.3"):
        check_compatible(manifest, "10.13.3.9", H100)
    with pytest.raises(IncompatibleBundleError, match=r"built for NVIDIA H100 80GB HBM3 \(compute capability 9.0\)"):
        check_compatible(manifest, "11.4.0.106", GpuIdentity("NVIDIA L4", "8.9"))
    with pytest.raises(IncompatibleBundleError, match="not a TensorRT bundle"):
        check_compatible(manifest.updated(runtime={"backend": "onnxruntime"}), "11.4.0.106", H100)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_loading_a_tensorrt_bundle_without_tensorrt_says_what_is_missing(tmp_path):
    from enginekit.bundle import describe_files, write_manifest
    from enginekit.runtime import IncompatibleBundleError, load_engine
    from tests.bundle_factory import ROLES

    manifest = _trt_manifest(tmp_path)
    bundle = tmp_path / "bundle"
    write_manifest(bundle, manifest.updated(files=[f.model_dump() for f in describe_files(bundle, ROLES)]))
    with pytest.raises(IncompatibleBundleError, match=r"needs the `tensorrt` Python package"):
        load_engine(bundle)


def test_fp16_graph_keeps_qdq_and_io_types(tiny_build, tmp_path):
    import onnx

    from tasks.tensorrt_build import fp16_graph

    target = tmp_path / "model.fp16.onnx"
    fp16_graph(tiny_build.exported.onnx_path, target)
    model = onnx.load(str(target))
    onnx.checker.check_model(model)
    original = onnx.load(str(tiny_build.exported.onnx_path))
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("QuantizeLinear") == sum(n.op_type == "QuantizeLinear" for n in original.graph.node) > 0
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [
        i.type.tensor_type.elem_type for i in original.graph.input
    ]
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # I/O types kept
    halves = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert halves, "no FP16 weights: the non-quantized parts were not converted"


@needs_tensorrt
def test_tensorrt_bundle_builds_loads_and_agrees_with_onnx_runtime(tiny_build, tmp_path):
    import numpy as np

    from enginekit.bundle import Lineage
    from enginekit.runtime import IncompatibleBundleError, load_engine, predict_logits
    from tasks.engine_build import build_bundle

    config = tiny_build.config.engine.model_copy(
        update={
            "backend": "tensorrt",
            "max_batch_size": 64,
            "tensorrt": TensorRTConfig(
                profiles=[
                    TensorRTProfile(opt_batch=1, max_batch=4, opt_seq=8, max_seq=16),
                    TensorRTProfile(opt_batch=32, max_batch=64, opt_seq=16, max_seq=16),
                ],
                timing_cache=str(tmp_path / "timing.cache"),
            ),
        }
    )
    lineage = Lineage(data_fingerprint=tiny_build.data.fingerprint, config_hash="test", code_version="test")
    result = build_bundle(
        config, "tiny", tiny_build.exported, tiny_build.teacher, tiny_build.data, lineage, tmp_path / "trt"
    )
    assert (tmp_path / "timing.cache").stat().st_size > 0
    engine = load_engine(tmp_path / "trt")  # golden replay included
    reference = load_engine(tiny_build.bundle_dir)
    texts = tiny_build.data.load()["test"]["text"]
    ours, theirs = predict_logits(engine, texts), predict_logits(reference, texts)
    assert np.mean(ours.argmax(-1) == theirs.argmax(-1)) >= 0.99
    assert engine.run(engine.encoder.encode(texts[:1])).shape == (1, 3)  # the short-query profile
    manifest_path = tmp_path / "trt" / "manifest.json"
    shutil.copytree(tmp_path / "trt", tmp_path / "elsewhere")
    text = (tmp_path / "elsewhere" / "manifest.json").read_text()
    (tmp_path / "elsewhere" / "manifest.json").write_text(
        text.replace('"compute_capability": "', '"compute_capability": "1')
    )
    with pytest.raises(IncompatibleBundleError, match="was built for"):
        load_engine(tmp_path / "elsewhere")
    assert result.directory == str(tmp_path / "trt") and manifest_path.is_file()
