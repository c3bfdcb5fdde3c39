"""The engine bundle contract and the ONNX Runtime engine, on a real (tiny) built bundle."""

import importlib.util
import json
import shutil

import numpy as np
import pytest

from enginekit.bundle import BundleError, read_manifest, verify_bundle, write_manifest
from enginekit.mlflow_model import texts_from_input
from enginekit.runtime import IncompatibleBundleError, classify, load_engine, predict_logits
from enginekit.runtime_onnx import check_compatible


@pytest.fixture
def bundle(tiny_build, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_build.bundle_dir, copy)
    return copy


def test_manifest_describes_every_file(tiny_build):
    manifest = verify_bundle(tiny_build.bundle_dir)
    paths = {entry.path for entry in manifest.files}
    assert {"model.qdq.onnx", "engine/model.ort.onnx", "golden.json", "tokenizer/tokenizer.json"} <= paths
    roles = {entry.path: entry.role for entry in manifest.files}
    assert roles["model.qdq.onnx"] == "onnx_qdq" and roles["engine/model.ort.onnx"] == "engine"
    assert manifest.backend == "onnxruntime" and manifest.precision == "int8"
    assert manifest.labels == tiny_build.data.labels
    assert manifest.lineage.data_fingerprint == tiny_build.data.fingerprint
    assert [spec.name for spec in manifest.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    assert manifest.runtime.onnxruntime_version


def test_every_engine_session_asks_for_exact_int8_gemms_and_the_engine_file_keeps_s8_weights(tiny_build):
    """Without VNNI, ONNX Runtime's fast U8S8 GEMM saturates (labels flipped on 5% of a real test split
    on an AVX2 machine); ``session.x64quantprecision`` makes it exact there. Set where engines load, never
    baked into the engine file (machines with VNNI or AMX keep their faster S8 weights)."""
    import onnx

    from enginekit.runtime_onnx import PRECISE_INT8

    engine = load_engine(tiny_build.bundle_dir)
    key, value = PRECISE_INT8
    assert engine._session.get_session_options().get_session_config_entry(key) == value
    manifest = read_manifest(tiny_build.bundle_dir)
    graph = onnx.load(str(tiny_build.bundle_dir / manifest.engine_file)).graph
    quantized_weights = [t for t in graph.initializer if t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)]
    assert quantized_weights and {t.data_type for t in quantized_weights if len(t.dims) == 2} == {onnx.TensorProto.INT8}


def test_engine_matches_the_student_and_classifies_texts(tiny_build):
    engine = load_engine(tiny_build.bundle_dir)
    golden = json.loads((tiny_build.bundle_dir / "golden.json").read_text())
    logits = predict_logits(engine, golden["texts"])
    np.testing.assert_allclose(logits, np.asarray(golden["logits"]), atol=1e-4)
    results = classify(engine, ["rain forecast paris", "buy cheap shoes"])
    assert [label for label, _ in results] == ["weather", "shopping"]
    assert all(0.0 < score <= 1.0 for _, score in results)


def test_corrupted_engine_file_is_refused(bundle):
    engine_file = bundle / "engine" / "model.ort.onnx"
    data = bytearray(engine_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    engine_file.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"engine/model.ort.onnx: sha256 differs"):
        load_engine(bundle)


def test_missing_and_extra_files_are_refused(bundle):
    (bundle / "tokenizer" / "tokenizer_config.json").unlink()
    (bundle / "stray.bin").write_bytes(b"x")
    with pytest.raises(BundleError) as error:
        verify_bundle(bundle)
    assert "missing file tokenizer/tokenizer_config.json" in str(error.value)
    assert "unexpected file stray.bin" in str(error.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [(("files", 0, "path"), "../../etc/passwd"), (("tokenizer", "directory"), "../../../etc"),
     (("tokenizer", "directory"), "/etc")],
)  # fmt: skip
def test_manifest_path_escaping_the_bundle_is_refused(bundle, field, value):
    raw = json.loads((bundle / "manifest.json").read_text())
    node = raw
    for key in field[:-1]:
        node = node[key]
    node[field[-1]] = value
    (bundle / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="must be relative and stay inside the bundle"):
        verify_bundle(bundle)


def test_a_tokenizer_directory_outside_the_listed_files_is_refused(bundle):
    raw = json.loads((bundle / "manifest.json").read_text())
    raw["tokenizer"]["directory"] = "engine"  # inside the bundle, but holds no listed tokenizer.json
    (bundle / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=r"engine/tokenizer\.json"):
        verify_bundle(bundle)


def test_unknown_schema_version_and_garbage_manifest(bundle):
    raw = json.loads((bundle / "manifest.json").read_text())
    raw["schema_version"] = 99
    (bundle / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="schema_version 99 is not supported"):
        verify_bundle(bundle)
    (bundle / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        verify_bundle(bundle)


def test_golden_mismatch_is_refused(bundle):
    golden = json.loads((bundle / "golden.json").read_text())
    golden["logits"][0][0] += 1.0
    (bundle / "golden.json").write_text(json.dumps(golden))
    manifest = read_manifest(bundle)
    from enginekit.bundle import describe_files

    write_manifest(bundle, manifest.updated(files=[f.model_dump() for f in describe_files(bundle, {})]))
    with pytest.raises(BundleError, match="golden set replay failed"):
        load_engine(bundle)


def test_other_onnxruntime_version_is_refused(tiny_build):
    manifest = read_manifest(tiny_build.bundle_dir)
    check_compatible(manifest, manifest.runtime.onnxruntime_version)
    with pytest.raises(IncompatibleBundleError, match=r"built with onnxruntime .* this machine has 1\.99\.0"):
        check_compatible(manifest, "1.99.0")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_tensorrt_bundle_is_refused_without_tensorrt(bundle):
    manifest = read_manifest(bundle)
    write_manifest(bundle, manifest.updated(backend="tensorrt"))
    with pytest.raises(IncompatibleBundleError, match="needs the `tensorrt` Python package"):
        load_engine(bundle)


def test_pyfunc_input_shapes():
    import pandas as pd

    assert texts_from_input(["a", "b"]) == (["a", "b"], None)
    assert texts_from_input(pd.DataFrame({"text": ["a"], "text_pair": ["b"]})) == (["a"], ["b"])
    assert texts_from_input(pd.DataFrame({0: ["a"]})) == (["a"], None)
    with pytest.raises(TypeError, match="positions \\[1\\]"):
        texts_from_input(["a", 3])
    with pytest.raises(ValueError, match="expected a 'text' column"):
        texts_from_input(pd.DataFrame({"x": ["a"], "y": ["b"]}))


def test_canaries_have_a_clear_margin_and_a_measured_tolerance(tiny_build):
    from enginekit.hardware import cpu_isa, cpu_model
    from tasks.engine_build import top_margins

    manifest = read_manifest(tiny_build.bundle_dir)
    golden = json.loads((tiny_build.bundle_dir / "golden.json").read_text())
    margins = top_margins(np.asarray(golden["logits"]))
    assert manifest.golden.count == len(golden["texts"]) == tiny_build.config.engine.golden_set_size
    assert manifest.golden.min_margin == pytest.approx(float(margins.min()), abs=1e-4)
    assert manifest.golden.min_margin > 2 * manifest.golden.atol and manifest.golden.atol >= 1e-2
    assert manifest.golden.atol_basis and manifest.runtime.build_cpu == cpu_model()
    assert manifest.runtime.build_isa == cpu_isa()


def test_a_cpu_with_wider_kernel_variation_gets_wider_canaries_not_a_failed_build(tiny_build, monkeypatch):
    """Another CPU's kernels (AVX2 without VNNI, for one) differ more: the tolerance follows the measurement
    and the canaries are chosen above twice it; only when too few rows clear it does the build stop, saying
    why. The variation of such a CPU cannot be produced on this one, so it is injected."""
    import tasks.engine_build as engine_build

    bundle = tiny_build.bundle_dir
    engine = load_engine(bundle, verify_golden=False)
    texts, pairs = engine_build.golden_candidates(tiny_build.data, tiny_build.config.engine.golden_set_size)
    margins = np.sort(engine_build.top_margins(engine_build.predict_logits(engine, texts, pairs)))
    config = tiny_build.config.engine
    # a variation whose tolerance (x factor) puts twice the tolerance between the narrowest and widest quarter
    target_atol = float(np.quantile(margins, 0.4)) / 2
    monkeypatch.setattr(engine_build, "kernel_variation", lambda *_: target_atol / config.golden_atol_factor)
    golden, spec = engine_build.record_golden(config, engine, bundle, tiny_build.data, config.golden_atol)
    chosen = engine_build.top_margins(np.asarray(golden["logits"]))
    assert spec.atol == pytest.approx(target_atol, rel=1e-3)
    assert chosen.min() > 2 * spec.atol and spec.min_margin == pytest.approx(float(chosen.min()), abs=1e-4)
    assert spec.count == len(golden["texts"]) >= (config.golden_set_size + 1) // 2
    assert "candidate rows" in spec.atol_basis

    monkeypatch.setattr(engine_build, "kernel_variation", lambda *_: float(margins.max()))
    with pytest.raises(ValueError, match="above twice the replay tolerance"):
        engine_build.record_golden(config, engine, bundle, tiny_build.data, config.golden_atol)


def test_canary_selection_prefers_clear_margins_spread_over_lengths():
    from tasks.engine_build import select_canaries

    logits = np.array([[5.0, 0.0], [0.1, 0.0], [3.0, 0.0], [0.0, 4.0], [2.5, 0.0], [0.0, 0.2]])
    lengths = [9, 1, 3, 5, 7, 2]
    assert select_canaries(logits, lengths, 3, min_margin=1.0) == [2, 3, 4]  # rows 1 and 5 are unsure
    assert select_canaries(logits, lengths, 5, min_margin=1.0) == [5, 2, 3, 4, 0]  # too few: widest margins


def test_the_golden_replay_holds_through_another_cpus_kernels(bundle):
    """Run the bundle through other kernels (its portable graph, unoptimized) as another CPU would: the
    recorded tolerance and labels must hold."""
    from enginekit.bundle import describe_files
    from enginekit.runtime import check_golden

    manifest = read_manifest(bundle)
    (bundle / manifest.engine_file).write_bytes((bundle / manifest.portable_onnx).read_bytes())
    roles = {entry.path: entry.role for entry in manifest.files}
    write_manifest(bundle, manifest.updated(files=[f.model_dump() for f in describe_files(bundle, roles)]))
    engine = load_engine(bundle, verify_golden=False)
    assert check_golden(engine, bundle) <= manifest.golden.atol


def test_engines_of_one_tokenizer_share_it_and_a_changed_file_is_loaded_anew(tiny_build, tmp_path):
    """A swap to a retrained model of the same encoder must not parse tokenizer.json again (it holds the GIL
    for tens of milliseconds); different bytes are a different tokenizer."""
    from enginekit.tokenization import TOKENIZER_FILE, TextEncoder

    source = tiny_build.bundle_dir / read_manifest(tiny_build.bundle_dir).tokenizer.directory
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    first, second = TextEncoder(source, 16), TextEncoder(copy, 16)
    assert first._tokenizer is second._tokenizer
    assert TextEncoder(copy, 12)._tokenizer is not first._tokenizer  # another truncation length
    document = json.loads((copy / TOKENIZER_FILE).read_text())
    document["model"]["vocab"]["zzzextra"] = len(document["model"]["vocab"])
    (copy / TOKENIZER_FILE).write_text(json.dumps(document))
    changed = TextEncoder(copy, 16)
    assert changed._tokenizer is not first._tokenizer
    assert changed._tokenizer.token_to_id("zzzextra") is not None and first._tokenizer.token_to_id("zzzextra") is None
    assert first.encode(["hello world"]).input_ids.tolist() == second.encode(["hello world"]).input_ids.tolist()


def test_int8_row_grid_is_exact_idempotent_and_close():
    from tasks.quantize import int8_row_grid

    rng = np.random.default_rng(3)
    table = rng.normal(0, 0.05, (300, 24)).astype(np.float32)
    table[7] = 0.0  # a row of zeros (e.g. [PAD] after training) stays zero
    table[8] *= 1e-30  # tiny values keep a scale above zero
    rounded = int8_row_grid(table)
    assert rounded.dtype == np.float32 and np.array_equal(int8_row_grid(rounded), rounded)
    assert np.all(rounded[7] == 0.0) and np.any(rounded[8] != 0.0)
    largest = np.abs(table.astype(np.float64)).max(1, keepdims=True)
    scale = np.exp2(np.ceil(np.log2(np.where(largest > 0, largest, 127.0) / 127)))
    codes = rounded / scale
    assert np.array_equal(codes, np.rint(codes)) and np.abs(codes).max() <= 127
    assert np.all(np.abs(rounded - table) <= scale / 2 + 1e-12)  # rounding, not truncation
    assert not np.array_equal(rounded, table)


def _gather_model(path, table):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], name="lookup")],
        "lookup",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["batch", "sequence", table.shape[1]])],
        [numpy_helper.from_array(table, "table")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_tables_on_the_int8_grid_are_stored_as_int8_and_give_back_the_same_values(tmp_path):
    import onnxruntime as ort

    from tasks.engine_build import compact_embedding_tables
    from tasks.quantize import int8_row_grid

    rng = np.random.default_rng(5)
    table = rng.normal(0, 0.05, (2000, 64)).astype(np.float32)
    ids = rng.integers(0, 2000, (3, 11)).astype(np.int64)
    on_grid, off_grid = tmp_path / "on.onnx", tmp_path / "off.onnx"
    _gather_model(on_grid, int8_row_grid(table))
    _gather_model(off_grid, table)
    before = on_grid.stat().st_size
    assert compact_embedding_tables(on_grid) == ["table"]
    assert on_grid.stat().st_size < before / 3
    session = ort.InferenceSession(str(on_grid), providers=["CPUExecutionProvider"])
    assert np.array_equal(session.run(None, {"ids": ids})[0], int8_row_grid(table)[ids])
    untouched = off_grid.read_bytes()
    assert compact_embedding_tables(off_grid) == [] and off_grid.read_bytes() == untouched


def test_the_tiny_engine_stores_its_word_embeddings_as_int8_and_matches_the_rounded_student(tiny_build):
    """``quantize.embedding_int8`` (default): the student is loaded with its table on the INT8 grid and the
    engine keeps that table as INT8; their logits agree as closely as before (the golden check holds)."""
    import onnx

    from tasks.quantize import load_student

    assert tiny_build.config.quantize.embedding_int8 and tiny_build.student.embedding_int8
    manifest = read_manifest(tiny_build.bundle_dir)
    graph = onnx.load(str(tiny_build.bundle_dir / manifest.engine_file)).graph
    tables = {t.name: t for t in graph.initializer}
    int8_tables = [
        name for name, t in tables.items() if name.endswith(".int8") and t.data_type == onnx.TensorProto.INT8
    ]
    assert len(int8_tables) == 1 and "word_embeddings" in int8_tables[0]
    student = load_student(tiny_build.student, tiny_build.teacher)
    word = student.get_input_embeddings().weight.detach().numpy()
    codes = onnx.numpy_helper.to_array(tables[int8_tables[0]]).astype(np.float32)
    scales = onnx.numpy_helper.to_array(tables[int8_tables[0].removesuffix(".int8") + ".scale"])
    assert np.array_equal(codes * scales, word)


def test_canaries_come_from_eval_or_a_curated_file_never_from_test(tiny_build, tmp_path):
    import tasks.engine_build as engine_build
    from tasks.config import ConfigError, config_from_mapping
    from tests.conftest import tiny_config_mapping

    golden = json.loads((tiny_build.bundle_dir / "golden.json").read_text())
    splits = tiny_build.data.load()
    assert set(golden["texts"]) <= set(splits["eval"]["text"])
    texts, _ = engine_build.golden_candidates(tiny_build.data, 4, "eval")
    assert set(texts) <= set(splits["eval"]["text"])
    curated = tmp_path / "canaries.txt"
    curated.write_text("rain forecast paris\n\nbuy cheap shoes\nlatest headlines berlin\n")
    texts, pairs = engine_build.golden_candidates(tiny_build.data, 4, str(curated))
    assert sorted(texts) == ["buy cheap shoes", "latest headlines berlin", "rain forecast paris"] and pairs is None
    with pytest.raises(ValueError, match="cannot read it"):
        engine_build.golden_candidates(tiny_build.data, 4, str(tmp_path / "missing.txt"))
    mapping = tiny_config_mapping(tmp_path, tmp_path, engine={"golden_source": "test"})
    with pytest.raises(ConfigError, match="must not be the test split"):
        config_from_mapping(mapping, "canaries from test")
