"""Variants stage: every INT8 candidate measured as an exported engine, and the automatic choice.

Candidates: one calibration-only (PTQ) student per ``quantize.ptq_baselines`` method and the KD-QAT
student. Each is exported to QDQ ONNX and run by ONNX Runtime on the **eval** split, paired with the
FP32 teacher's predictions on the same rows (the test split stays untouched for the final validation).
``tasks.variant_choice.choose_variant`` then picks the fastest candidate within
``quantize.accuracy_budget_points`` of the teacher, calibration-only first when equally fast; the reasons
are kept for MLflow and the Prefect artifact.

Speed enters the choice as a static proxy: teacher encoder layers / student encoder layers. Every full
INT8 variant of one architecture runs the same kernels, so measured differences between them would be
timing noise deciding the choice.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from enginekit.bundle import write_json_atomic
from enginekit.config import QuantizeConfig
from enginekit.tokenization import TextEncoder
from tasks.data import PreparedData
from tasks.export import export_onnx, onnx_logits
from tasks.modeling import SplitBatches, accuracy, macro_f1, predict_logits, to_torch
from tasks.quantize import (
    STUDENT_FILE,
    StudentResult,
    calibrate,
    collect_calibration_statistics,
    int8_quant_config,
    load_ranges,
    load_student,
    quantized_layer_names,
)
from tasks.teacher import TeacherResult
from tasks.validate import paired_comparison
from tasks.variant_choice import VariantScore, choose_variant


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


@dataclass(frozen=True)
class VariantChoice:
    candidates: list[Candidate]
    chosen: Candidate
    reasons: list[str]
    report_markdown: str

    def tags(self) -> dict[str, str]:
        return {"chosen_variant": self.chosen.name, "chosen_variant_kind": self.chosen.kind}


def ptq_students(
    config: QuantizeConfig, teacher_result: TeacherResult, data: PreparedData, out_dir: Path
) -> list[tuple[str, StudentResult]]:
    """One calibration-only student per baseline method, saved like a QAT student (modelopt state)."""
    import modelopt.torch.opt as mto
    import modelopt.torch.quantization as mtq

    cpu = torch.device("cpu")
    encoder = TextEncoder(teacher_result.tokenizer_dir, teacher_result.max_seq_length)
    splits = data.load()
    train, evaluation = SplitBatches.from_dataset(splits["train"]), SplitBatches.from_dataset(splits["eval"])
    teacher = teacher_result.load(cpu)

    def forward_loop(model: torch.nn.Module) -> None:
        batches = train.iterate(encoder, config.training.batch_size, shuffle_seed=config.training.seed)
        with torch.inference_mode():
            for batch, _ in itertools.islice(batches, config.calibration_batches):
                model(**to_torch(batch, cpu))

    histograms = None
    students = []
    for name in config.ptq_baselines:
        method, _, value = name.partition(":")
        if method == "max":
            model = calibrate(
                copy.deepcopy(teacher), train, encoder, config.model_copy(update={"calibration_method": "max"}), cpu
            )
        else:
            if histograms is None:  # one statistics pass serves every histogram method
                histograms = mtq.quantize(
                    copy.deepcopy(teacher),
                    int8_quant_config(config.quantize_head, "percentile", config.keep_unquantized),
                    forward_loop=None,
                )
                collect_calibration_statistics(histograms, forward_loop)
            model = copy.deepcopy(histograms)
            load_ranges(model, method, float(value or config.calibration_percentile))
        directory = out_dir / ("ptq-" + name.replace(":", "-"))
        directory.mkdir(parents=True, exist_ok=True)
        mto.save(model, str(directory / STUDENT_FILE))
        eval_accuracy = accuracy(predict_logits(model, evaluation, encoder, 128, cpu).argmax(-1), evaluation.labels)
        students.append(
            (
                f"PTQ {name}",
                StudentResult(
                    directory=str(directory),
                    ptq_eval_accuracy=eval_accuracy,
                    qat_eval_accuracy=eval_accuracy,
                    best_epoch=0,
                    history=[],
                    quantized_layers=len(quantized_layer_names(model)),
                ),
            )
        )
    return students


def score_candidate(
    name: str,
    kind: str,
    student: StudentResult,
    teacher_result: TeacherResult,
    evaluation: SplitBatches,
    teacher_predictions: np.ndarray,
    work_dir: Path,
    teacher_layers: int,
) -> Candidate:
    encoder = TextEncoder(teacher_result.tokenizer_dir, teacher_result.max_seq_length)
    path = work_dir / f"{Path(student.directory).name}.onnx"
    export_onnx(load_student(student, teacher_result), encoder, path, 17)
    predictions = onnx_logits(path, evaluation, encoder, 64).argmax(-1)
    path.unlink()
    comparison = paired_comparison(predictions, teacher_predictions, evaluation.labels, 1000)
    layers = len(student.student_layers) if student.student_layers else teacher_layers
    return Candidate(
        name=name,
        kind=kind,
        student=student,
        eval_accuracy=accuracy(predictions, evaluation.labels),
        macro_f1=macro_f1(predictions, evaluation.labels, int(max(evaluation.labels.max(), predictions.max())) + 1),
        delta_points=comparison.delta_points,
        ci_low_points=comparison.ci_low_points,
        ci_high_points=comparison.ci_high_points,
        fixed=comparison.fixed,
        broken=comparison.broken,
        agreement=comparison.agreement,
        speed_proxy=teacher_layers / layers,
    )


def render_markdown(candidates: list[Candidate], teacher_accuracy: float, reasons: list[str], rows: int) -> str:
    lines = [
        f"# INT8 variants on the eval split ({rows} rows), as ONNX Runtime engines",
        "",
        f"FP32 teacher: {100 * teacher_accuracy:.2f}%.",
        "",
        "| variant | kind | accuracy | Δ vs teacher, points [95% CI] | fixed / broken | agreement | speed proxy |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {c.name} | {c.kind} | {100 * c.eval_accuracy:.2f}% | {c.delta_points:+.2f} "
        f"[{c.ci_low_points:+.2f}, {c.ci_high_points:+.2f}] | {c.fixed} / {c.broken} | {100 * c.agreement:.2f}% "
        f"| ×{c.speed_proxy:.2f} |"
        for c in candidates
    ]
    lines += ["", "Choice:", ""] + [f"- {reason}" for reason in reasons]
    return "\n".join(lines) + "\n"


def choose_int8_variant(
    config: QuantizeConfig,
    teacher_result: TeacherResult,
    kd_student: StudentResult,
    data: PreparedData,
    out_dir: Path,
    log=print,
) -> VariantChoice:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cpu = torch.device("cpu")
    encoder = TextEncoder(teacher_result.tokenizer_dir, teacher_result.max_seq_length)
    evaluation = SplitBatches.from_dataset(data.load()["eval"])
    teacher = teacher_result.load(cpu)
    teacher_predictions = predict_logits(teacher, evaluation, encoder, 128, cpu).argmax(-1)
    teacher_layers = teacher.config.num_hidden_layers

    kd_kind = (
        "smaller_student"
        if kd_student.student_layers
        else ("kd_qat_mixed_precision" if config.keep_unquantized else "kd_qat")
    )
    named = [(name, "ptq", student) for name, student in ptq_students(config, teacher_result, data, out_dir)]
    named.append(
        ("KD-QAT student" if kd_student.best_epoch else "KD-QAT student (calibrated only)", kd_kind, kd_student)
    )
    candidates = [
        score_candidate(name, kind, student, teacher_result, evaluation, teacher_predictions, out_dir, teacher_layers)
        for name, kind, student in named
    ]
    scores = [
        VariantScore(c.name, c.kind, c.delta_points, c.ci_low_points, c.speed_proxy)  # type: ignore[arg-type]
        for c in candidates
    ]
    decision = choose_variant(scores, config.accuracy_budget_points)
    reasons = list(decision.reasons)
    if decision.chosen is None:
        chosen = max(candidates, key=lambda c: (c.eval_accuracy, c.kind == "ptq"))
        reasons.append(f"shipping the most accurate candidate, {chosen.name}; the validation gates decide")
    else:
        chosen = next(c for c in candidates if c.name == decision.chosen.name)
    teacher_accuracy = accuracy(teacher_predictions, evaluation.labels)
    markdown = render_markdown(candidates, teacher_accuracy, reasons, len(evaluation))
    report = out_dir / "variants.md"
    report.write_text(markdown)
    write_json_atomic(
        out_dir / "variants.json",
        {"teacher_eval_accuracy": teacher_accuracy, "candidates": [asdict(c) for c in candidates], "reasons": reasons},
    )
    log(f"INT8 variant chosen: {chosen.name} (Δ {chosen.delta_points:+.2f} points on eval)")
    return VariantChoice(candidates, chosen, reasons, str(report))


@task(name="choose-int8-variant", cache_policy=NO_CACHE, persist_result=False)
def choose_variant_task(
    config: QuantizeConfig, teacher: TeacherResult, kd_student: StudentResult, data: PreparedData, out_dir: str
) -> VariantChoice:
    choice = choose_int8_variant(config, teacher, kd_student, data, Path(out_dir), log=get_run_logger().info)
    create_markdown_artifact(key="int8-variants", markdown=Path(choice.report_markdown).read_text())
    return choice
