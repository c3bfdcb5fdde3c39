"""Engine runtimes: load a verified bundle and run batched inference on texts or token ids.

One interface (``EngineRuntime``) for validation, the MLflow pyfunc model, the CLI and the server.
``load_engine`` verifies the bundle, refuses one this machine cannot run (backend, runtime version,
hardware) with a message saying why, replays the golden canary set, and only then returns.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from enginekit.bundle import BundleError, Manifest, verify_bundle
from enginekit.tokenization import EncodedBatch, TextEncoder


class IncompatibleBundleError(BundleError):
    """The bundle is intact but cannot run here (other backend, runtime version or hardware)."""


class EngineRuntime(Protocol):
    manifest: Manifest
    encoder: TextEncoder

    def run(self, batch: EncodedBatch) -> np.ndarray:
        """Logits (batch, num_labels) float32 for one encoded batch of at most max_batch_size rows."""
        ...


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def predict_logits(
    engine: EngineRuntime,
    texts: Sequence[str],
    text_pairs: Sequence[str] | None = None,
    *,
    chunk_rows: int | None = None,
    before_each: Callable[[], object] | None = None,
) -> np.ndarray:
    """Logits for any number of texts, in chunks of ``chunk_rows`` (default: the bundle's max batch size);
    ``before_each`` is called before every engine run (a server pacing its background work)."""
    step = min(chunk_rows or engine.manifest.max_batch_size, engine.manifest.max_batch_size)
    outputs = []
    for start in range(0, len(texts), step):
        if before_each is not None:
            before_each()
        pairs = text_pairs[start : start + step] if text_pairs is not None else None
        outputs.append(engine.run(engine.encoder.encode(texts[start : start + step], pairs)))
    if not outputs:
        return np.zeros((0, len(engine.manifest.labels)), dtype=np.float32)
    return np.concatenate(outputs)


def classify(
    engine: EngineRuntime, texts: Sequence[str], text_pairs: Sequence[str] | None = None
) -> list[tuple[str, float]]:
    """(label, probability) per text."""
    probabilities = softmax(predict_logits(engine, texts, text_pairs))
    labels = engine.manifest.labels
    return [(labels[int(row.argmax())], float(row.max())) for row in probabilities]


def check_golden(
    engine: EngineRuntime,
    bundle_dir: Path,
    *,
    chunk_rows: int | None = None,
    before_each: Callable[[], object] | None = None,
) -> float:
    """Replay the golden set recorded at build time; return the max |logit diff| or raise BundleError.
    ``chunk_rows`` / ``before_each``: as ``predict_logits`` (a server replays in small, paced chunks)."""
    manifest = engine.manifest
    golden = json.loads((bundle_dir / manifest.golden.file).read_text())
    texts, pairs = golden["texts"], golden.get("text_pairs")
    encoded = engine.encoder.encode(texts, pairs)
    if encoded.input_ids.tolist() != golden["input_ids"]:
        raise BundleError(
            f"{bundle_dir}: the tokenizer now produces different token ids for the golden set than at build "
            "time (tokenizers version or tokenizer files changed)"
        )
    expected = np.asarray(golden["logits"], dtype=np.float32)
    actual = predict_logits(engine, texts, pairs, chunk_rows=chunk_rows, before_each=before_each)
    difference = float(np.abs(actual - expected).max())
    if difference > manifest.golden.atol or not np.array_equal(actual.argmax(-1), expected.argmax(-1)):
        raise BundleError(
            f"{bundle_dir}: golden set replay failed: max |logit diff| {difference:.2e} (tolerance "
            f"{manifest.golden.atol:.0e}) or a changed prediction; refusing this engine on this machine"
        )
    return difference


def check_runnable(manifest: Manifest) -> None:
    """Refuse a bundle this machine cannot run (backend missing, other runtime release) before loading it.

    The GPU identity of a TensorRT engine is checked when it is loaded (it needs CUDA to ask).
    """
    if manifest.backend == "onnxruntime":
        import onnxruntime as ort

        from enginekit.runtime_onnx import check_compatible

        check_compatible(manifest, ort.__version__)
    elif manifest.backend == "tensorrt":
        try:
            import tensorrt  # noqa: F401 - only whether it is there
        except ImportError as error:
            raise IncompatibleBundleError(f"bundle {manifest.model_name} is a TensorRT engine: {error}") from None


def load_engine(
    bundle_dir: Path, *, threads: int = 0, verify_golden: bool = True, verified: Manifest | None = None
) -> EngineRuntime:
    """The bundle's engine, after checking every file against the manifest (``verify_bundle``) unless the
    caller passes the manifest it has just verified itself (``verified``), and replaying the golden set."""
    bundle_dir = Path(bundle_dir)
    manifest = verified if verified is not None else verify_bundle(bundle_dir)
    if manifest.backend == "onnxruntime":
        from enginekit.runtime_onnx import OnnxRuntimeEngine

        engine: EngineRuntime = OnnxRuntimeEngine(bundle_dir, manifest, threads=threads)
    elif manifest.backend == "tensorrt":
        from enginekit.runtime_tensorrt import TensorRTEngine

        engine = TensorRTEngine(bundle_dir, manifest)
    else:  # pragma: no cover - the manifest schema admits only the two backends above
        raise IncompatibleBundleError(f"{bundle_dir}: backend {manifest.backend!r} has no runtime here")
    if verify_golden:
        check_golden(engine, bundle_dir)
    return engine
