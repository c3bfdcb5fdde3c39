"""Shared fixtures. Heavy ones are session-scoped: each real model build costs seconds on 2 cores."""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

INTENT_WORDS = {
    "weather": ["rain", "forecast", "sunny", "temperature", "snow", "wind"],
    "shopping": ["buy", "cheap", "price", "shoes", "deal", "order"],
    "news": ["latest", "headlines", "breaking", "today", "report", "story"],
}
PLACES = ["paris", "nyc", "berlin", "tokyo", "lima", "oslo"]


def write_intent_dataset(
    directory: Path, train: int = 360, evaluation: int = 60, test: int = 60, seed: int = 0
) -> Path:
    """A small learnable 3-intent query dataset as train/eval/test jsonl files."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("eval", evaluation), ("test", test)):
        with (directory / f"{split}.jsonl").open("w") as handle:
            for _ in range(count):
                label = rng.choice(sorted(INTENT_WORDS))
                words = [*rng.sample(INTENT_WORDS[label], 2), rng.choice(PLACES)]
                rng.shuffle(words)
                handle.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")
    return directory


# 60 eval rows move accuracy in 1.7-point steps: a patience of 4 epochs rides out flat stretches.
TINY_TEACHER_TRAINING = {
    "schedule": "plateau",  # what the tiny fixtures were tuned with; the default (anneal) is tested on its own
    "epochs": 10,
    "min_steps": 0,
    "early_stopping_patience": 4,
    "batch_size": 16,
    "learning_rate": 1e-3,
    "warmup_ratio": 0.1,
}


def tiny_config_mapping(data_dir: Path, work_dir: Path, **sections) -> dict:
    """A pipeline config for a tiny random BERT on ``data_dir`` that trains in seconds."""
    mapping = {
        "model_name": "tiny-intents",
        "work_dir": str(work_dir / "runs"),
        "data": {"source": str(data_dir)},
        "teacher": {
            "random_init": {
                "hidden_size": 32,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "intermediate_size": 64,
            },
            "max_seq_length": 16,
            "training": dict(TINY_TEACHER_TRAINING),
        },
        "quantize": {
            "calibration_batches": 4,
            # 60 eval rows: every paired interval is several points wide, so the floor would exclude any
            # variant; the tiny flows test the pipeline, not the choice (tests/test_variant_choice.py does)
            "choice_ci_floor_points": None,
            "training": {"epochs": 1, "batch_size": 16, "learning_rate": 1e-4},
            "smaller_student": {
                "distill_training": {
                    "schedule": "plateau",
                    "epochs": 6,
                    "min_steps": 0,
                    "batch_size": 16,
                    "learning_rate": 1e-3,
                }
            },
        },
        "export": {"parity_rows": 60},
        "engine": {"golden_set_size": 8},
        "validate": {
            "timing_iterations": 6,
            "warmup_iterations": 1,
            "bootstrap_samples": 200,
            "min_agreement_with_student": 0.95,
            "min_speedup": 0.0,
        },
        "registry": {
            "tracking_uri": f"sqlite:///{work_dir / 'mlflow' / 'mlflow.db'}",
            "artifact_location": str(work_dir / "mlflow" / "artifacts"),
        },
        "publish": {"store": {"bucket": "int8-engines", "create_bucket": True}},
    }
    for name, values in sections.items():
        mapping[name] = {**mapping.get(name, {}), **values}
    return mapping


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server for the whole session (~10 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@dataclass(frozen=True)
class TinyBuild:
    config: object
    data: object
    teacher: object
    student: object
    exported: object
    bundle_dir: Path


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory) -> TinyBuild:
    """Data → tiny FP32 teacher → KD-QAT INT8 student → QDQ ONNX → ORT bundle, built once per session."""
    from enginekit.bundle import Lineage
    from tasks.config import config_from_mapping
    from tasks.data import prepare_data
    from tasks.engine_build import build_bundle
    from tasks.export import export_student
    from tasks.quantize import train_student
    from tasks.teacher import train_teacher

    root = tmp_path_factory.mktemp("tiny-build")
    data_dir = write_intent_dataset(root / "source")
    config = config_from_mapping(tiny_config_mapping(data_dir, root), "tiny test config")
    data = prepare_data(config.data, root / "data")
    teacher = train_teacher(config.teacher, data, root / "teacher", log=lambda _: None)
    student = train_student(config.quantize, teacher, data, root / "student", log=lambda _: None)
    exported = export_student(config.export, student, teacher, data, root / "export", log=lambda _: None)
    lineage = Lineage(data_fingerprint=data.fingerprint, config_hash=config.config_hash(), code_version="test")
    bundle = build_bundle(
        config.engine,
        config.model_name,
        exported,
        teacher,
        data,
        lineage,
        root / "bundle",
        log=lambda _: None,
    )
    return TinyBuild(config, data, teacher, student, exported, Path(bundle.directory))
