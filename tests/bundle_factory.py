"""Minimal valid engine bundles for tests: small files, a realistic manifest, no model behind them."""

from __future__ import annotations

import json
import random
from pathlib import Path

from enginekit.bundle import (
    GoldenSpec,
    Lineage,
    Manifest,
    RuntimeRequirements,
    TensorSpec,
    TokenizerSpec,
    describe_files,
    utc_now_iso,
    write_manifest,
)

LABELS = ["navigational", "informational", "transactional"]
ROLES = {
    "model.qdq.onnx": "onnx_qdq",
    "engine/": "engine",
    "tokenizer/": "tokenizer",
    "golden.json": "golden",
}


def _pseudo_random_bytes(seed: str, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def make_bundle(
    bundle_dir: Path,
    *,
    model_name: str = "tiny-intent",
    variant: str = "a",
    engine_bytes: int = 4096,
) -> Manifest:
    """Write a bundle directory whose content depends only on ``variant`` and return its manifest.

    ``engine_bytes`` sizes the engine file (raise it past the multipart threshold to test part uploads).
    """
    bundle_dir.mkdir(parents=True, exist_ok=True)
    (bundle_dir / "model.qdq.onnx").write_bytes(_pseudo_random_bytes(f"onnx-{variant}", 2048))
    (bundle_dir / "engine").mkdir(exist_ok=True)
    (bundle_dir / "engine" / "model.int8.onnx").write_bytes(_pseudo_random_bytes(f"engine-{variant}", engine_bytes))
    tokenizer_dir = bundle_dir / "tokenizer"
    tokenizer_dir.mkdir(exist_ok=True)
    vocab = {token: index for index, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "buy", "how"])}
    (tokenizer_dir / "tokenizer.json").write_text(
        json.dumps({"version": "1.0", "model": {"type": "WordPiece", "vocab": vocab}}, indent=2)
    )
    (tokenizer_dir / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 32}))
    golden = {
        "texts": ["buy running shoes", "how tall is everest"],
        "logits": [[0.1, -1.2, 2.5], [-0.3, 1.9, -0.8]],
        "variant": variant,
    }
    (bundle_dir / "golden.json").write_text(json.dumps(golden))

    manifest = Manifest(
        model_name=model_name,
        backend="onnxruntime",
        precision="int8",
        portable_onnx="model.qdq.onnx",
        engine_file="engine/model.int8.onnx",
        inputs=[
            TensorSpec(name="input_ids", dtype="int64", shape=["batch", "sequence"]),
            TensorSpec(name="attention_mask", dtype="int64", shape=["batch", "sequence"]),
        ],
        outputs=[TensorSpec(name="logits", dtype="float32", shape=["batch", len(LABELS)])],
        max_batch_size=32,
        max_seq_length=32,
        labels=LABELS,
        tokenizer=TokenizerSpec(max_length=32),
        runtime=RuntimeRequirements(
            backend="onnxruntime",
            onnxruntime_version="1.32.0",
            execution_provider="CPUExecutionProvider",
            graph_optimization_level="ORT_ENABLE_ALL",
        ),
        golden=GoldenSpec(count=len(golden["texts"]), atol=1e-3),
        files=describe_files(bundle_dir, ROLES),
        lineage=Lineage(data_fingerprint=f"data-{variant}", config_hash="c0ffee", code_version="test"),
        metrics={"accuracy": 0.91, "accuracy_delta_points": -0.4},
        created_at=utc_now_iso(),
    )
    write_manifest(bundle_dir, manifest)
    return manifest
