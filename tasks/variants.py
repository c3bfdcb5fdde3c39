"""INT8 variants measured as engines, and the automatic choice of the one that ships.

Two stages of the flow live here:

* ``ptq-baselines``: one calibration-only (PTQ) student per ``quantize.ptq_baselines`` method, each
  exported to QDQ ONNX and scored by ONNX Runtime on the **eval** split, paired with the FP32 teacher's
  predictions on the same rows (the test split stays untouched for the final validation). The best of
  them (or the configured ``calibration_method``) is where KD-QAT starts.
* ``choose-int8-variant``: the KD-QAT student, the smaller student and a mixed-precision student (the
  KD-QAT student with its most sensitive layer groups back in floating point, from a sensitivity
  analysis) are scored the same way; ``tasks.variant_choice.choose_variant`` picks the fastest candidate
  within ``quantize.accuracy_budget_points`` of the teacher, calibration-only first when equally fast.
  The table, the sensitivity report and the reasons go to MLflow (metrics, tags, artifacts) and to a
  Prefect artifact.

Speed enters the choice as a static proxy (teacher layers / student layers; FP32 share of the GEMM work
for mixed precision): every full INT8 variant of one architecture runs the same kernels, so measured
differences between them would be timing noise deciding the choice. The measured eval-pass throughput of
each engine is reported next to it.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from enginekit.bundle import write_json_atomic
from enginekit.tokenization import TextEncoder
from tasks.config import QuantizeConfig
from tasks.data import PreparedData
from tasks.export import export_onnx, onnx_logits
from tasks.modeling import SplitBatches, accuracy, macro_f1, predict_logits, to_torch
from tasks.quantize import (
    STUDENT_FILE,
    LayerSensitivity,
    StudentResult,
    calibrate,
    collect_calibration_statistics,
    int8_quant_config,
    layer_groups,
    load_ranges,
    load_student,
    parse_method,
    quantized_layer_names,
    sensitivity_analysis,
)
from tasks.teacher import TeacherResult
from tasks.validate import paired_comparison
from tasks.variant_choice import VariantKind, VariantScore, choose_variant

FP32_GEMM_COST = 2.0
"""Cost of an FP32 GEMM relative to the INT8 one it replaces (measured here: INT8 GEMM ~3.5x the FP32
rate in ONNX Runtime; 2 is the conservative figure for a whole Linear with its Q/DQ around it)."""


@dataclass(frozen=True)
class Candidate:
    name: str
    kind: str
    student: StudentResult
    eval_accuracy: float
    """Accuracy on the rows scored (the eval split in the flow)."""
    macro_f1: float
    delta_points: float
    ci_low_points: float
    ci_high_points: float
    fixed: int
    broken: int
    agreement: float
    speed_proxy: float
    rows_per_second: float = 0.0
    """Measured: rows scored / seconds of the ONNX Runtime pass (batch 64, length-sorted), this machine."""

    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "_", self.name.lower()).strip("_")


@dataclass(frozen=True)
class Reference:
    """The FP32 teacher on the scored rows: what every candidate is compared with."""

    accuracy: float
    macro_f1: float
    rows: int
    predictions_file: str

    def predictions(self) -> np.ndarray:
        return np.load(self.predictions_file)


@dataclass(frozen=True)
class PtqBaselines:
    candidates: list[Candidate]
    reference: Reference
    qat_init: Candidate
    """The calibrated student KD-QAT starts from: the most accurate baseline on eval (``auto``) or the
    configured calibration method's."""


@dataclass(frozen=True)
class VariantChoice:
    candidates: list[Candidate]
    chosen: Candidate
    reasons: list[str]
    report_markdown: str
    reference: Reference
    sensitivity: list[LayerSensitivity] = field(default_factory=list)

    @property
    def report_json(self) -> str:
        return str(Path(self.report_markdown).with_name("variants.json"))

    def tags(self) -> dict[str, str]:
        return {
            "chosen_variant": self.chosen.name,
            "chosen_variant_kind": self.chosen.kind,
            "chosen_calibration": self.chosen.student.calibration,
        }

    def metrics(self) -> dict[str, float]:
        """Per-variant eval numbers for MLflow (``variant.<slug>.<metric>``), the teacher's as reference."""
        metrics = {"variant.teacher_fp32.eval_accuracy": self.reference.accuracy}
        metrics["variant.teacher_fp32.eval_macro_f1"] = self.reference.macro_f1
        for candidate in self.candidates:
            prefix = f"variant.{candidate.slug()}."
            metrics[prefix + "eval_accuracy"] = candidate.eval_accuracy
            metrics[prefix + "eval_macro_f1"] = candidate.macro_f1
            metrics[prefix + "delta_points"] = candidate.delta_points
            metrics[prefix + "agreement"] = candidate.agreement
            metrics[prefix + "rows_per_second"] = candidate.rows_per_second
        return metrics


def reference_on(
    teacher_result: TeacherResult, split: SplitBatches, encoder: TextEncoder, out_dir: Path, num_labels: int
) -> Reference:
    cpu = torch.device("cpu")
    predictions = predict_logits(teacher_result.load(cpu), split, encoder, 128, cpu).argmax(-1)
    path = out_dir / "teacher_predictions.npy"
    np.save(path, predictions)
    return Reference(
        accuracy(predictions, split.labels), macro_f1(predictions, split.labels, num_labels), len(split), str(path)
    )


def ptq_students(
    config: QuantizeConfig, teacher_result: TeacherResult, data: PreparedData, out_dir: Path
) -> list[tuple[str, StudentResult]]:
    """One calibration-only student per baseline method, saved like a QAT student (modelopt state)."""
    import modelopt.torch.opt as mto
    import modelopt.torch.quantization as mtq

    cpu = torch.device("cpu")
    encoder = TextEncoder(teacher_result.tokenizer_dir, teacher_result.max_seq_length)
    splits = data.load()
    train = SplitBatches.from_dataset(splits["train"])
    teacher = teacher_result.load(cpu)

    def forward_loop(model: torch.nn.Module) -> None:
        batches = train.iterate(encoder, config.training.batch_size, shuffle_seed=config.training.seed)
        with torch.inference_mode():
            for batch, _ in itertools.islice(batches, config.calibration_batches):
                model(**to_torch(batch, cpu))

    names = list(config.ptq_baselines)
    explicit = config.ptq_baseline_name()
    if explicit is not None and explicit not in names:
        names.append(explicit)
    histograms = None
    students = []
    for name in names:
        method, percentile = parse_method(name, config.calibration_percentile)
        if method == "max":
            model = calibrate(copy.deepcopy(teacher), train, encoder, config, cpu, "max")
        else:
            if histograms is None:  # one statistics pass serves every histogram method
                histograms = mtq.quantize(
                    copy.deepcopy(teacher),
                    int8_quant_config(config.quantize_head, "percentile", config.keep_unquantized),
                    forward_loop=None,
                )
                collect_calibration_statistics(histograms, forward_loop)
            model = copy.deepcopy(histograms)
            load_ranges(model, method, percentile)
        directory = out_dir / ("ptq-" + name.replace(":", "-"))
        directory.mkdir(parents=True, exist_ok=True)
        mto.save(model, str(directory / STUDENT_FILE))
        # Its eval accuracy is measured as an engine by the caller (score_candidate), not here a second time
        # in PyTorch fake-quant (5 x ~5 s of the demo's run for a figure nothing read).
        result = StudentResult(
            directory=str(directory),
            ptq_eval_accuracy=math.nan,
            qat_eval_accuracy=math.nan,
            best_epoch=0,
            history=[],
            quantized_layers=len(quantized_layer_names(model)),
            calibration=name,
            embedding_int8=config.embedding_int8,
        )
        students.append((f"PTQ {name}", result))
    return students


def score_candidate(
    name: str,
    kind: str,
    student: StudentResult,
    teacher_result: TeacherResult,
    split: SplitBatches,
    teacher_predictions: np.ndarray,
    work_dir: Path,
    teacher_layers: int,
    speed_proxy: float | None = None,
) -> Candidate:
    """Export the student to QDQ ONNX, run it with ONNX Runtime on ``split``, compare with the teacher."""
    encoder = TextEncoder(teacher_result.tokenizer_dir, teacher_result.max_seq_length)
    path = work_dir / f"{Path(student.directory).name}.onnx"
    export_onnx(load_student(student, teacher_result), encoder, path, 17)
    started = time.perf_counter()
    predictions = onnx_logits(path, split, encoder, 64).argmax(-1)
    seconds = time.perf_counter() - started
    path.unlink()
    comparison = paired_comparison(predictions, teacher_predictions, split.labels, 1000)
    layers = len(student.student_layers) if student.student_layers else teacher_layers
    num_labels = int(max(split.labels.max(), predictions.max())) + 1
    return Candidate(
        name=name,
        kind=kind,
        student=student,
        eval_accuracy=accuracy(predictions, split.labels),
        macro_f1=macro_f1(predictions, split.labels, num_labels),
        delta_points=comparison.delta_points,
        ci_low_points=comparison.ci_low_points,
        ci_high_points=comparison.ci_high_points,
        fixed=comparison.fixed,
        broken=comparison.broken,
        agreement=comparison.agreement,
        speed_proxy=teacher_layers / layers if speed_proxy is None else speed_proxy,
        rows_per_second=len(split) / seconds,
    )


def measure_ptq_baselines(
    config: QuantizeConfig, teacher_result: TeacherResult, data: PreparedData, out_dir: Path, log=print
) -> PtqBaselines:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder = TextEncoder(teacher_result.tokenizer_dir, teacher_result.max_seq_length)
    evaluation = SplitBatches.from_dataset(data.load()["eval"])
    reference = reference_on(teacher_result, evaluation, encoder, out_dir, len(data.labels))
    teacher_layers = teacher_result.num_layers
    candidates = []
    for name, student in ptq_students(config, teacher_result, data, out_dir):
        candidate = score_candidate(
            name, "ptq", student, teacher_result, evaluation, reference.predictions(), out_dir, teacher_layers
        )
        student = replace(student, ptq_eval_accuracy=candidate.eval_accuracy, qat_eval_accuracy=candidate.eval_accuracy)
        write_json_atomic(Path(student.directory) / "quantize.json", asdict(student))
        candidates.append(replace(candidate, student=student))
        log(f"{name}: eval accuracy {100 * candidates[-1].eval_accuracy:.2f}% as an ONNX Runtime engine")
    explicit = config.ptq_baseline_name()
    if explicit is None:  # auto: the most accurate engine; the listed order breaks ties (max first)
        init = max(candidates, key=lambda c: (c.eval_accuracy, -candidates.index(c)))
    else:
        init = next(c for c in candidates if c.student.calibration == explicit)
    log(f"KD-QAT starts from {init.name} ({'best on eval' if explicit is None else 'configured'})")
    write_json_atomic(
        out_dir / "ptq.json",
        {"reference": asdict(reference), "candidates": [asdict(c) for c in candidates], "qat_init": init.name},
    )
    return PtqBaselines(candidates, reference, init)


def mixed_precision_student(
    kd_student: StudentResult,
    sensitivity: list[LayerSensitivity],
    keep: int,
    teacher_result: TeacherResult,
    granularity: str,
    out_dir: Path,
) -> StudentResult | None:
    """The KD-QAT student with its ``keep`` most sensitive groups (positive gain only) in floating point."""
    import modelopt.torch.opt as mto

    kept = [result.layer for result in sensitivity if result.gain_points > 0][:keep]
    if not kept:
        return None
    model = load_student(kd_student, teacher_result)
    groups = layer_groups(model, granularity)
    for group in kept:
        for quantizer in groups[group]:
            quantizer.disable()
    directory = out_dir / "mixed-precision"
    directory.mkdir(parents=True, exist_ok=True)
    mto.save(model, str(directory / STUDENT_FILE))
    result = StudentResult(
        directory=str(directory),
        ptq_eval_accuracy=kd_student.ptq_eval_accuracy,
        qat_eval_accuracy=kd_student.qat_eval_accuracy,
        best_epoch=kd_student.best_epoch,
        history=kd_student.history,
        quantized_layers=len(quantized_layer_names(model)),
        student_layers=kd_student.student_layers,
        calibration=kd_student.calibration,
        unquantized_groups=kept,
        embedding_int8=kd_student.embedding_int8,
    )
    write_json_atomic(directory / "quantize.json", asdict(result))
    return result


def render_markdown(
    candidates: list[Candidate],
    reference: Reference,
    reasons: list[str],
    sensitivity: list[LayerSensitivity],
    split: str = "eval",
    reasons_title: str = "Choice:",
) -> str:
    lines = [
        f"# INT8 variants on the {split} split ({reference.rows} rows), as ONNX Runtime engines",
        "",
        "| variant | kind | accuracy | macro-F1 | Δ vs teacher, points [95% CI] | fixed / broken | agreement "
        "| speed proxy | measured rows/s |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| FP32 teacher (PyTorch) | reference | {100 * reference.accuracy:.2f}% | {reference.macro_f1:.4f} "
        "| — | — | 100.00% | — | — |",
    ]
    lines += [
        f"| {c.name} | {c.kind} | {100 * c.eval_accuracy:.2f}% | {c.macro_f1:.4f} | {c.delta_points:+.2f} "
        f"[{c.ci_low_points:+.2f}, {c.ci_high_points:+.2f}] | {c.fixed} / {c.broken} | {100 * c.agreement:.2f}% "
        f"| ×{c.speed_proxy:.2f} | {c.rows_per_second:.0f} |"
        for c in candidates
    ]
    if sensitivity:
        lines += [
            "",
            "## Sensitivity of the KD-QAT student (this group alone back in floating point, the rest INT8)",
            "",
            "| layer group | accuracy | gain, points |",
            "|---|---|---|",
        ]
        lines += [
            f"| {s.layer} | {100 * s.accuracy_without_quantization:.2f}% | {s.gain_points:+.2f} |" for s in sensitivity
        ]
    if reasons:
        lines += ["", reasons_title, ""] + [f"- {reason}" for reason in reasons]
    return "\n".join(lines) + "\n"


def choose_int8_variant(
    config: QuantizeConfig,
    teacher_result: TeacherResult,
    ptq: PtqBaselines,
    kd_student: StudentResult,
    smaller_student: StudentResult | None,
    data: PreparedData,
    out_dir: Path,
    log=print,
) -> VariantChoice:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cpu = torch.device("cpu")
    encoder = TextEncoder(teacher_result.tokenizer_dir, teacher_result.max_seq_length)
    evaluation = SplitBatches.from_dataset(data.load()["eval"])
    reference = ptq.reference
    teacher_predictions = reference.predictions()
    teacher_layers = teacher_result.num_layers

    def score(name: str, kind: VariantKind, student: StudentResult, speed: float | None = None) -> Candidate:
        candidate = score_candidate(
            name, kind, student, teacher_result, evaluation, teacher_predictions, out_dir, teacher_layers, speed
        )
        log(f"{name}: eval accuracy {100 * candidate.eval_accuracy:.2f}% (Δ {candidate.delta_points:+.2f} points)")
        return candidate

    trained = "KD-QAT student" if kd_student.best_epoch else "KD-QAT student (calibrated only)"
    candidates = [*ptq.candidates, score(trained, "kd_qat", kd_student)]
    if smaller_student is not None:
        layers = len(smaller_student.student_layers or [])
        candidates.append(
            score(
                f"smaller student ({layers} layer{'s' if layers != 1 else ''}, KD-QAT)",
                "smaller_student",
                smaller_student,
            )
        )

    sensitivity: list[LayerSensitivity] = []
    if config.sensitivity.enabled:
        model = load_student(kd_student, teacher_result, cpu)
        total = len(quantized_layer_names(model))
        sensitivity = sensitivity_analysis(
            model, evaluation, encoder, cpu, config.training.eval_batch_size, config.sensitivity.granularity
        )
        log("most sensitive: " + ", ".join(f"{s.layer} {s.gain_points:+.2f}" for s in sensitivity[:3]))
        mixed = mixed_precision_student(
            kd_student,
            sensitivity,
            config.sensitivity.keep_most_sensitive,
            teacher_result,
            config.sensitivity.granularity,
            out_dir,
        )
        if mixed is not None:
            fp_share = 1 - mixed.quantized_layers / total
            candidates.append(
                score(
                    f"KD-QAT, {len(mixed.unquantized_groups)} group(s) in FP32",
                    "kd_qat_mixed_precision",
                    mixed,
                    1 / (1 + (FP32_GEMM_COST - 1) * fp_share),
                )
            )

    scores = [
        VariantScore(c.name, c.kind, c.delta_points, c.ci_low_points, c.speed_proxy)  # type: ignore[arg-type]
        for c in candidates
    ]
    decision = choose_variant(scores, config.accuracy_budget_points, ci_floor_points=config.choice_ci_floor_points)
    reasons = list(decision.reasons)
    if decision.chosen is None:
        chosen = max(candidates, key=lambda c: (c.eval_accuracy, c.kind == "ptq"))
        reasons.append(f"shipping the most accurate candidate, {chosen.name}; the validation gates decide")
    else:
        chosen = next(c for c in candidates if c.name == decision.chosen.name)
    markdown = render_markdown(candidates, reference, reasons, sensitivity)
    report = out_dir / "variants.md"
    report.write_text(markdown)
    write_json_atomic(
        out_dir / "variants.json",
        {
            "reference": asdict(reference),
            "candidates": [asdict(c) for c in candidates],
            "sensitivity": [asdict(s) for s in sensitivity],
            "reasons": reasons,
            "chosen": chosen.name,
        },
    )
    log(f"INT8 variant chosen: {chosen.name} (Δ {chosen.delta_points:+.2f} points on eval)")
    return VariantChoice(candidates, chosen, reasons, str(report), reference, sensitivity)


@task(name="ptq-baselines", cache_policy=NO_CACHE, persist_result=False)
def ptq_baselines_task(
    config: QuantizeConfig, teacher: TeacherResult, data: PreparedData, out_dir: str
) -> PtqBaselines:
    baselines = measure_ptq_baselines(config, teacher, data, Path(out_dir), log=get_run_logger().info)
    markdown = render_markdown(baselines.candidates, baselines.reference, [], [])
    create_markdown_artifact(key="ptq-baselines", markdown=markdown)
    return baselines


@task(name="choose-int8-variant", cache_policy=NO_CACHE, persist_result=False)
def choose_variant_task(
    config: QuantizeConfig,
    teacher: TeacherResult,
    ptq: PtqBaselines,
    kd_student: StudentResult,
    smaller_student: StudentResult | None,
    data: PreparedData,
    out_dir: str,
) -> VariantChoice:
    choice = choose_int8_variant(
        config, teacher, ptq, kd_student, smaller_student, data, Path(out_dir), log=get_run_logger().info
    )
    create_markdown_artifact(key="int8-variants", markdown=Path(choice.report_markdown).read_text())
    return choice
