"""The ``train_to_deploy`` flow: data → FP32 teacher → PTQ baselines (every calibration method, as
engines on eval) → KD-QAT INT8 student (from the best calibration) and a smaller KD-QAT student →
sensitivity analysis + mixed-precision candidate and the automatic INT8 variant choice → QDQ ONNX →
INT8 engine bundle → channel check (reconcile) → validation gates → MLflow (candidate) → S3 publish +
channel move (compare-and-set against the channel the gates were decided on) → MLflow champion.

The flow only composes tasks and makes the one decision (gates pass → publish and promote; else stop and
say why). Every stage's logic lives in ``tasks/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger, runtime

from tasks.channel import check_channel_task
from tasks.config import PipelineConfig
from tasks.data import prepare_data_task
from tasks.engine_build import build_engine_task
from tasks.export import export_task
from tasks.publish import publish_task
from tasks.quantize import train_smaller_student_task, train_student_task
from tasks.register import CHAMPION_ALIAS, RegisteredVersion, promote_task, register_task
from tasks.run_report import TEACHER_STAGE, report_run_task
from tasks.teacher import TeacherResult, train_teacher_task
from tasks.validate import ValidationReport, validate_task
from tasks.variants import choose_variant_task, ptq_baselines_task


@dataclass
class PipelineSummary:
    model_name: str
    promoted: bool
    failure_reasons: list[str]
    teacher_accuracy: float
    int8_accuracy: float
    accuracy_delta_points: float
    agreement_with_teacher: float
    speedup_latency: float
    speedup_throughput: float
    mlflow_model_uri: str
    mlflow_run_id: str
    tracking_uri: str
    bundle_dir: str
    report_markdown: str
    chosen_variant: str = ""
    variants_markdown: str = ""
    teacher_epochs: int = 0
    teacher_best_epoch: int = 0
    teacher_stop_reason: str = ""
    teacher_learning_rate: float = 0.0
    teacher_learning_rate_reason: str = ""
    teacher_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    run_seconds: float = 0.0
    run_report: str = ""
    champion_uri: str | None = None
    published_uri: str | None = None
    channel_uri: str | None = None
    previous_version: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_validation(
        cls,
        model_name: str,
        bundle_dir: str,
        report: ValidationReport,
        registered: RegisteredVersion,
        teacher: TeacherResult,
    ) -> PipelineSummary:
        """The summary as it stands after registration; publish/promote and the run report fill in the rest."""
        return cls(
            model_name=model_name,
            promoted=False,
            failure_reasons=report.failure_reasons,
            teacher_accuracy=report.teacher_accuracy,
            int8_accuracy=report.engine_accuracy,
            accuracy_delta_points=report.comparison.delta_points,
            agreement_with_teacher=report.comparison.agreement,
            speedup_latency=report.speedup_latency,
            speedup_throughput=report.speedup_throughput,
            mlflow_model_uri=registered.uri,
            mlflow_run_id=registered.run_id,
            tracking_uri=registered.tracking_uri,
            bundle_dir=bundle_dir,
            report_markdown=report.report_markdown,
            teacher_epochs=len(teacher.history),
            teacher_best_epoch=teacher.best_epoch,
            teacher_stop_reason=teacher.stop_reason,
            teacher_learning_rate=teacher.learning_rate,
            teacher_learning_rate_reason=teacher.learning_rate_reason,
            teacher_seconds=teacher.seconds,
            warnings=list(teacher.warnings),
        )


def _quiet_libraries() -> None:
    """Progress bars and load reports of datasets/transformers drown the stage logs in a flow run."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _run_dir(config: PipelineConfig) -> Path:
    run_id = runtime.flow_run.id or "local"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(config.work_dir).resolve() / f"{stamp}-{str(run_id)[:8]}"


# log_prints stays off: a dependency prints bytecode disassembly to stdout during dataset building.
@flow(name="train_to_deploy")
def train_to_deploy(config: PipelineConfig) -> PipelineSummary:
    _quiet_libraries()
    run_dir = _run_dir(config)
    flow_run_id = str(runtime.flow_run.id) if runtime.flow_run.id else None

    data = prepare_data_task(config.data, str(run_dir / "data"))
    teacher = train_teacher_task(config.teacher, data, str(run_dir / "teacher"))
    ptq = ptq_baselines_task(config.quantize, teacher, data, str(run_dir / "ptq"))
    student = train_student_task(config.quantize, teacher, data, str(run_dir / "student"), ptq.qat_init.student)
    smaller = None
    if config.quantize.smaller_student is not None:
        smaller = train_smaller_student_task(
            config.quantize, teacher, data, str(run_dir / "smaller-student"), student.calibration
        )
    choice = choose_variant_task(config.quantize, teacher, ptq, student, smaller, data, str(run_dir / "variants"))
    exported = export_task(config.export, choice.chosen.student, teacher, data, str(run_dir / "export"))
    bundle = build_engine_task(
        config.engine,
        config.model_name,
        exported,
        teacher,
        data,
        config.config_hash(),
        str(run_dir / "bundle"),
    )
    # The channel is what serves: the alias is reconciled to it, and the champion gate and the channel
    # move (a compare-and-set) are both decided against this one reading of it.
    decided = check_channel_task(config.registry, config.publish, config.model_name)
    report = validate_task(
        config.validate_,
        bundle.directory,
        teacher,
        data,
        str(run_dir / "validation"),
        choice.chosen.student,
        decided,
        config.publish.store,
    )
    registered = register_task(
        config,
        bundle.directory,
        {**report.metrics(), **choice.metrics(), **teacher.metrics()},
        report.failure_reasons,
        [
            report.report_json,
            report.report_markdown,
            choice.report_markdown,
            choice.report_json,
            str(teacher.report_path),
        ],
        flow_run_id,
        {**choice.tags(), **teacher.tags()},
        teacher.metric_history(),
    )
    summary = PipelineSummary.of_validation(config.model_name, bundle.directory, report, registered, teacher)
    summary.chosen_variant, summary.variants_markdown = choice.chosen.name, choice.report_markdown
    if smaller is not None:
        summary.warnings += smaller.warnings
    if report.passed:
        published = publish_task(
            config.publish, config.model_name, bundle.directory, registered.version, registered.uri, decided
        )
        promote_task(config.registry, registered, published.version_uri)
        summary.promoted = True
        summary.champion_uri = f"models:/{config.model_name}@{CHAMPION_ALIAS}"
        summary.published_uri = published.version_uri
        summary.channel_uri = published.channel_uri
        summary.previous_version = published.previous_version
    else:
        get_run_logger().warning(
            "gates failed; champion and channel pointer left where they were: " + "; ".join(report.failure_reasons)
        )
    reports = {"validation": report.report_markdown, "INT8 variants": choice.report_markdown}
    run_report = report_run_task(
        config.model_name, str(run_dir), teacher, smaller, flow_run_id, reports, config.registry, registered.run_id
    )
    summary.run_report, summary.run_seconds = run_report.path, run_report.total_seconds
    summary.teacher_seconds = run_report.seconds_of(TEACHER_STAGE) or summary.teacher_seconds
    return summary
