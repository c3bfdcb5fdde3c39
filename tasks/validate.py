"""Validation stage: is the INT8 engine good enough to ship, measured honestly?

Accuracy: the engine and the FP32 teacher on the same test rows, with paired statistics (a few thousand
rows carry about one point of standard error, so raw accuracies alone can't tell 0.3 points apart):
flips against the teacher, an exact McNemar test, and a paired bootstrap interval of the delta.
Speed: engine vs PyTorch FP32 eager (inference mode, same thread count) in the same process, on the same
pre-tokenized test batches.

Gates (``validate`` in the config), each with its reason in the report, MLflow and the Prefect artifact:
accuracy drop vs the teacher, an absolute accuracy floor, agreement with the PyTorch student the engine
was built from, speedup over FP32 (INT8 that is not faster is refused), a p99 latency budget, and
champion/challenger (not less accurate than the current champion on these same test rows).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from enginekit.bundle import BundleError, read_manifest, write_json_atomic, write_manifest
from enginekit.objectstore import ObjectStoreSettings
from enginekit.runtime import EngineRuntime, IncompatibleBundleError, load_engine
from enginekit.tokenization import EncodedBatch
from tasks.config import ValidateConfig
from tasks.data import PreparedData
from tasks.modeling import SplitBatches, accuracy, macro_f1, predict_logits, to_torch
from tasks.publish import ChannelState
from tasks.quantize import StudentResult, load_student
from tasks.teacher import TeacherResult


@dataclass(frozen=True)
class PairedComparison:
    """Candidate vs reference predictions on the same rows."""

    delta_points: float
    """(candidate − reference) accuracy, in points."""
    ci_low_points: float
    ci_high_points: float
    """95% paired bootstrap interval of the delta, in points."""
    agreement: float
    """Share of rows where both predict the same class."""
    fixed: int
    """Rows the reference got wrong and the candidate right."""
    broken: int
    """Rows the reference got right and the candidate wrong."""
    mcnemar_p: float
    """Exact two-sided McNemar p-value on (fixed, broken)."""


def mcnemar_exact_p(fixed: int, broken: int) -> float:
    discordant = fixed + broken
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(fixed, broken) + 1)) / 2**discordant
    return min(1.0, 2 * tail)


def paired_comparison(
    candidate: np.ndarray, reference: np.ndarray, labels: np.ndarray, samples: int, seed: int = 0
) -> PairedComparison:
    candidate_correct = candidate == labels
    reference_correct = reference == labels
    difference = candidate_correct.astype(np.float64) - reference_correct.astype(np.float64)
    rng = np.random.default_rng(seed)
    resampled = rng.integers(0, len(labels), size=(samples, len(labels)))
    deltas = difference[resampled].mean(axis=1)
    fixed = int(np.sum(candidate_correct & ~reference_correct))
    broken = int(np.sum(~candidate_correct & reference_correct))
    return PairedComparison(
        delta_points=100 * float(difference.mean()),
        ci_low_points=100 * float(np.percentile(deltas, 2.5)),
        ci_high_points=100 * float(np.percentile(deltas, 97.5)),
        agreement=float(np.mean(candidate == reference)),
        fixed=fixed,
        broken=broken,
        mcnemar_p=mcnemar_exact_p(fixed, broken),
    )


@dataclass(frozen=True)
class SpeedMeasurement:
    name: str
    latency_p50_ms: float
    latency_p99_ms: float
    """Batch of ``latency_batch_size`` rows."""
    throughput_rows_per_s: float
    """Batches of ``throughput_batch_size`` rows."""


def measure_speed(
    name: str,
    run: Callable[[EncodedBatch], object],
    latency_batches: list[EncodedBatch],
    throughput_batches: list[EncodedBatch],
    config: ValidateConfig,
) -> SpeedMeasurement:
    for batch in (latency_batches + throughput_batches)[: config.warmup_iterations + 1]:
        run(batch)
    latencies = []
    for index in range(config.timing_iterations):
        batch = latency_batches[index % len(latency_batches)]
        started = time.perf_counter()
        run(batch)
        latencies.append((time.perf_counter() - started) * 1000)
    rows = 0
    started = time.perf_counter()
    for index in range(max(3, config.timing_iterations // 3)):
        batch = throughput_batches[index % len(throughput_batches)]
        run(batch)
        rows += len(batch)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return SpeedMeasurement(
        name=name,
        latency_p50_ms=statistics.median(latencies),
        latency_p99_ms=latencies[min(len(latencies) - 1, math.ceil(0.99 * len(latencies)) - 1)],
        throughput_rows_per_s=rows / elapsed,
    )


@dataclass(frozen=True)
class GateDecision:
    name: str
    passed: bool
    detail: str


@dataclass
class ValidationReport:
    test_rows: int
    teacher_accuracy: float
    teacher_macro_f1: float
    engine_accuracy: float
    engine_macro_f1: float
    comparison: PairedComparison
    speed: list[SpeedMeasurement]
    speedup_latency: float
    speedup_throughput: float
    threads: int
    gates: list[GateDecision] = field(default_factory=list)
    decided_against: str = ""
    """The channel as read when the champion gate was decided (the publish step moves it only from there)."""
    report_json: str = ""
    report_markdown: str = ""

    @property
    def passed(self) -> bool:
        return all(gate.passed for gate in self.gates)

    @property
    def failure_reasons(self) -> list[str]:
        return [f"{gate.name}: {gate.detail}" for gate in self.gates if not gate.passed]

    def metrics(self) -> dict[str, float]:
        engine, baseline = self.speed[1], self.speed[0]
        return {
            "teacher_accuracy": self.teacher_accuracy,
            "teacher_macro_f1": self.teacher_macro_f1,
            "int8_accuracy": self.engine_accuracy,
            "int8_macro_f1": self.engine_macro_f1,
            "accuracy_delta_points": self.comparison.delta_points,
            "accuracy_delta_ci_low_points": self.comparison.ci_low_points,
            "accuracy_delta_ci_high_points": self.comparison.ci_high_points,
            "agreement_with_teacher": self.comparison.agreement,
            "int8_latency_p50_ms": engine.latency_p50_ms,
            "int8_latency_p99_ms": engine.latency_p99_ms,
            "int8_throughput_rows_per_s": engine.throughput_rows_per_s,
            "fp32_latency_p50_ms": baseline.latency_p50_ms,
            "fp32_throughput_rows_per_s": baseline.throughput_rows_per_s,
            "speedup_latency": self.speedup_latency,
            "speedup_throughput": self.speedup_throughput,
        }


def accuracy_gate(teacher_accuracy: float, engine_accuracy: float, max_drop_points: float) -> GateDecision:
    drop = 100 * (teacher_accuracy - engine_accuracy)
    return GateDecision(
        name="accuracy",
        passed=drop <= max_drop_points + 1e-9,
        detail=f"INT8 accuracy {100 * engine_accuracy:.2f}% vs FP32 teacher {100 * teacher_accuracy:.2f}%: "
        f"drop {drop:+.2f} points (allowed ≤ {max_drop_points:.2f})",
    )


def min_accuracy_gate(engine_accuracy: float, floor: float) -> GateDecision:
    return GateDecision(
        name="min_accuracy",
        passed=engine_accuracy >= floor,
        detail=f"INT8 accuracy {100 * engine_accuracy:.2f}% (floor {100 * floor:.2f}%)",
    )


def agreement_gate(engine_predictions: np.ndarray, student_predictions: np.ndarray, minimum: float) -> GateDecision:
    agreement = float(np.mean(engine_predictions == student_predictions)) if len(engine_predictions) else 1.0
    differ = int(np.sum(engine_predictions != student_predictions))
    return GateDecision(
        name="agreement_with_student",
        passed=agreement >= minimum - 1e-12,
        detail=f"engine vs PyTorch student argmax agreement {100 * agreement:.2f}% ({differ} of "
        f"{len(engine_predictions)} rows differ; required ≥ {100 * minimum:.2f}%)",
    )


def speedup_gate(speedup: float, minimum: float) -> GateDecision:
    return GateDecision(
        name="speedup",
        passed=minimum <= 0 or speedup >= minimum,
        detail=f"throughput ×{speedup:.2f} vs PyTorch FP32 eager in the same process (required ≥ ×{minimum:.2f})",
    )


def latency_gate(p99_ms: float, budget_ms: float | None) -> GateDecision:
    return GateDecision(
        name="latency_p99",
        passed=budget_ms is None or p99_ms <= budget_ms,
        detail=f"p99 {p99_ms:.2f} ms (budget {'none' if budget_ms is None else f'{budget_ms:.2f} ms'})",
    )


@dataclass(frozen=True)
class ChampionScore:
    version: str
    accuracy: float | None
    """None: there is a champion but it cannot be compared here (see ``note``)."""
    note: str = ""


def champion_gate(
    engine_accuracy: float, champion: ChampionScore | None, tolerance: float | None, allow_unscored: bool = False
) -> GateDecision:
    name = "champion_challenger"
    if tolerance is None:
        return GateDecision(name, True, "off (validate.champion_tolerance_points is null)")
    if champion is None:
        return GateDecision(name, True, "no champion yet: nothing to compare with")
    if champion.accuracy is None:
        if allow_unscored:
            return GateDecision(
                name,
                True,
                f"champion {champion.version} could not be scored ({champion.note}); passed only because "
                "validate.allow_unscored_champion is true",
            )
        return GateDecision(
            name,
            False,
            f"champion {champion.version} could not be scored ({champion.note}): nothing shows the new engine "
            "is not worse (set validate.allow_unscored_champion: true to accept that explicitly)",
        )
    delta = 100 * (engine_accuracy - champion.accuracy)
    return GateDecision(
        name,
        delta >= -tolerance - 1e-9,
        f"challenger {100 * engine_accuracy:.2f}% vs champion {champion.version} "
        f"{100 * champion.accuracy:.2f}% on the same test rows: {delta:+.2f} points (allowed ≥ {-tolerance:+.2f})",
    )


def score_champion(
    channel: ChannelState,
    store: ObjectStoreSettings,
    labels: list[str],
    texts: list[str],
    pairs: list[str] | None,
    gold: np.ndarray,
    threads: int,
    out_dir: Path,
    log=print,
) -> ChampionScore | None:
    """The accuracy on these rows of the engine the channel serves (the champion: the channel is what
    serves, ``tasks.channel``), fetched from the store and verified like a server would; None when the
    channel has no pointer. A champion that cannot be fetched, verified or run here is returned unscored."""
    from enginekit.objectstore import ObjectStoreError, ObjectStoreReader
    from enginekit.runtime import predict_logits as engine_logits

    if channel.version is None:
        return None
    local = out_dir / "champion" / channel.version
    try:
        ObjectStoreReader(store).fetch_version(
            channel.model, channel.version, local, expected_bundle_digest=channel.bundle_digest
        )
        engine: EngineRuntime = load_engine(local, threads=threads)
    except (ObjectStoreError, BundleError, IncompatibleBundleError, OSError) as error:
        log(f"champion {channel.version} cannot be run here: {error}")
        return ChampionScore(channel.version, None, f"{type(error).__name__}: {error}")
    if engine.manifest.labels != labels:
        return ChampionScore(channel.version, None, "it predicts a different label set")
    predictions = engine_logits(engine, texts, pairs).argmax(-1)
    return ChampionScore(channel.version, accuracy(predictions, gold))


def render_markdown(report: ValidationReport, model_name: str) -> str:
    c = report.comparison
    lines = [
        f"# Validation of {model_name} (INT8 engine vs FP32 teacher)",
        "",
        f"Test rows: {report.test_rows}. Threads: {report.threads}.",
        "",
        "| model | accuracy | macro-F1 | Δ vs teacher (points, 95% CI) | agreement with teacher |",
        "|---|---|---|---|---|",
        f"| FP32 teacher (PyTorch) | {100 * report.teacher_accuracy:.2f}% | {report.teacher_macro_f1:.4f} | — | — |",
        f"| INT8 engine | {100 * report.engine_accuracy:.2f}% | {report.engine_macro_f1:.4f} | "
        f"{c.delta_points:+.2f} [{c.ci_low_points:+.2f}, {c.ci_high_points:+.2f}] | {100 * c.agreement:.2f}% |",
        "",
        f"Flips vs teacher: {c.fixed} fixed, {c.broken} broken (exact McNemar p = {c.mcnemar_p:.3f}).",
        "",
        "| runtime | B1 p50 ms | B1 p99 ms | B32 rows/s |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {s.name} | {s.latency_p50_ms:.2f} | {s.latency_p99_ms:.2f} | {s.throughput_rows_per_s:.0f} |"
        for s in report.speed
    ]
    lines += [
        "",
        f"Speedup (same process): latency ×{report.speedup_latency:.2f}, throughput ×{report.speedup_throughput:.2f}.",
        "",
        "| gate | result | detail |",
        "|---|---|---|",
    ]
    lines += [f"| {g.name} | {'pass' if g.passed else 'FAIL'} | {g.detail} |" for g in report.gates]
    return "\n".join(lines) + "\n"


def validate_engine(
    config: ValidateConfig,
    bundle_dir: Path,
    teacher: TeacherResult,
    data: PreparedData,
    out_dir: Path,
    log=print,
    *,
    student: StudentResult | None = None,
    channel: ChannelState | None = None,
    store: ObjectStoreSettings | None = None,
) -> ValidationReport:
    """Measure the bundle against the teacher (and its own student, and the champion the channel serves
    when ``channel`` and ``store`` are given)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    engine = load_engine(Path(bundle_dir), threads=threads)
    test = SplitBatches.from_dataset(data.load()["test"])
    cpu = torch.device("cpu")
    teacher_model = teacher.load(cpu)
    encoder = engine.encoder

    teacher_logits = predict_logits(teacher_model, test, encoder, 128, cpu)
    engine_logits = np.concatenate(
        [engine.run(batch) for batch, _ in test.iterate(encoder, engine.manifest.max_batch_size)]
    )
    teacher_pred, engine_pred = teacher_logits.argmax(-1), engine_logits.argmax(-1)
    num_labels = len(data.labels)

    latency_batches = [b for b, _ in test.iterate(encoder, config.latency_batch_size)][:64]
    throughput_batches = [b for b, _ in test.iterate(encoder, config.throughput_batch_size)][:16]

    # The fair baseline runs where the engine runs: CPU for ONNX Runtime, the GPU for TensorRT.
    gpu_engine = engine.manifest.backend == "tensorrt"
    baseline_device = torch.device("cuda") if gpu_engine else cpu
    baseline_model = teacher.load(baseline_device) if gpu_engine else teacher_model

    def run_teacher(batch: EncodedBatch) -> object:
        with torch.inference_mode():
            logits = baseline_model(**to_torch(batch, baseline_device)).logits
            if gpu_engine:
                torch.cuda.synchronize()
            return logits

    speed = [
        measure_speed(
            f"PyTorch FP32 eager ({baseline_device.type})", run_teacher, latency_batches, throughput_batches, config
        ),
        measure_speed(
            f"{engine.manifest.backend} INT8 engine", engine.run, latency_batches, throughput_batches, config
        ),
    ]
    report = ValidationReport(
        test_rows=len(test),
        teacher_accuracy=accuracy(teacher_pred, test.labels),
        teacher_macro_f1=macro_f1(teacher_pred, test.labels, num_labels),
        engine_accuracy=accuracy(engine_pred, test.labels),
        engine_macro_f1=macro_f1(engine_pred, test.labels, num_labels),
        comparison=paired_comparison(engine_pred, teacher_pred, test.labels, config.bootstrap_samples),
        speed=speed,
        speedup_latency=speed[0].latency_p50_ms / speed[1].latency_p50_ms,
        speedup_throughput=speed[1].throughput_rows_per_s / speed[0].throughput_rows_per_s,
        threads=threads,
    )
    report.gates.append(accuracy_gate(report.teacher_accuracy, report.engine_accuracy, config.max_accuracy_drop))
    report.gates.append(min_accuracy_gate(report.engine_accuracy, config.min_accuracy))
    if student is not None:
        student_model = load_student(student, teacher, cpu)
        student_pred = predict_logits(student_model, test, encoder, 128, cpu).argmax(-1)
        report.gates.append(agreement_gate(engine_pred, student_pred, config.min_agreement_with_student))
    report.gates.append(speedup_gate(report.speedup_throughput, config.min_speedup))
    report.gates.append(latency_gate(speed[1].latency_p99_ms, config.max_latency_p99_ms))
    if channel is not None and store is not None and config.champion_tolerance_points is not None:
        champion = score_champion(
            channel, store, data.labels, test.texts, test.pairs, test.labels, threads, out_dir, log
        )
        gate = champion_gate(
            report.engine_accuracy, champion, config.champion_tolerance_points, config.allow_unscored_champion
        )
        if config.allow_unscored_champion and champion is not None and champion.accuracy is None:
            log(f"WARNING: {gate.detail}")
        report.gates.append(gate)
        report.decided_against = channel.describe()

    manifest = read_manifest(Path(bundle_dir))
    write_manifest(Path(bundle_dir), manifest.updated(metrics=report.metrics()))
    report.report_json = str(out_dir / "validation.json")
    report.report_markdown = str(out_dir / "validation.md")
    write_json_atomic(Path(report.report_json), {**asdict(report), "passed": report.passed})
    Path(report.report_markdown).write_text(render_markdown(report, manifest.model_name))
    log(
        f"teacher {100 * report.teacher_accuracy:.2f}% vs INT8 {100 * report.engine_accuracy:.2f}% "
        f"(Δ {report.comparison.delta_points:+.2f} points); throughput ×{report.speedup_throughput:.2f}; "
        f"gates {'passed' if report.passed else 'FAILED: ' + '; '.join(report.failure_reasons)}"
    )
    return report


@task(name="validate-engine", cache_policy=NO_CACHE, persist_result=False)
def validate_task(
    config: ValidateConfig,
    bundle_dir: str,
    teacher: TeacherResult,
    data: PreparedData,
    out_dir: str,
    student: StudentResult | None = None,
    channel: ChannelState | None = None,
    store: ObjectStoreSettings | None = None,
) -> ValidationReport:
    report = validate_engine(
        config,
        Path(bundle_dir),
        teacher,
        data,
        Path(out_dir),
        log=get_run_logger().info,
        student=student,
        channel=channel,
        store=store,
    )
    create_table_artifact(
        key="int8-validation",
        table=[{"metric": name, "value": round(value, 5)} for name, value in report.metrics().items()]
        + [{"metric": f"gate:{g.name}", "value": "pass" if g.passed else f"FAIL: {g.detail}"} for g in report.gates],
        description="INT8 engine vs FP32 teacher on the test split (same rows, same process)",
    )
    create_markdown_artifact(key="int8-validation-report", markdown=Path(report.report_markdown).read_text())
    return report
