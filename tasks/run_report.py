"""Run report: what a user reads after a run, besides the validation and variant reports.

- the teacher's training: eval curve per epoch, why it stopped (plateau or ceiling, with a warning when it
  stopped at the ceiling while still improving), the learning rate and why;
- the smaller student's FP32 distillation, the same way;
- where the wall time went: every stage's duration and share of the run, read from Prefect's own task-run
  records (so it holds for runs started from the CLI, a deployment or the UI alike).

Written to ``<run>/run-report.md``, published as the Prefect artifact ``run-report`` and logged to the MLflow
run next to the other reports; the wall-time table also goes to ``<run>/run-report.json`` for programs
(``stage_seconds_from``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks.config import RegistryConfig
from tasks.quantize import StudentResult
from tasks.teacher import TeacherResult
from tasks.training import training_markdown

TEACHER_STAGE = "train-teacher"


@dataclass(frozen=True)
class StageTime:
    stage: str
    seconds: float


@dataclass
class RunReport:
    path: str
    total_seconds: float
    stages: list[StageTime] = field(default_factory=list)

    def seconds_of(self, stage: str) -> float:
        return sum(item.seconds for item in self.stages if item.stage == stage)

    @property
    def teacher_share(self) -> float:
        return self.seconds_of(TEACHER_STAGE) / self.total_seconds if self.total_seconds > 0 else 0.0


def _stage_name(task_run_name: str) -> str:
    """``train-teacher-1a0`` → ``train-teacher`` (Prefect appends a short key to each task run's name)."""
    return re.sub(r"-[0-9a-f]{3}$", "", task_run_name)


def stage_times(flow_run_id: str) -> tuple[list[StageTime], float]:
    """Every finished task run of the flow run (start order) and the flow run's seconds so far."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(UUID(flow_run_id))
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
        )
    stages = [
        StageTime(_stage_name(run.name), run.total_run_time.total_seconds())
        for run in runs
        if run.end_time is not None and run.total_run_time is not None
    ]
    started = flow_run.start_time or flow_run.expected_start_time
    total = (datetime.now(UTC) - started).total_seconds() if started else sum(s.seconds for s in stages)
    return stages, total


def render_run_report(
    model_name: str,
    teacher: TeacherResult,
    smaller: StudentResult | None,
    stages: list[StageTime],
    total_seconds: float,
    reports: dict[str, str],
) -> str:
    lines = [f"# Run report: {model_name}", ""]
    lines += [f"- {name}: `{path}`" for name, path in reports.items()]
    lines += ["", teacher.report_markdown()]
    if smaller is not None and smaller.distill_history:
        best = max(smaller.distill_history, key=lambda record: record["eval_accuracy"])
        reason, _, detail = smaller.distill_stop_detail.partition(": ")
        lines.append(
            training_markdown(
                f"Smaller student ({len(smaller.student_layers or [])} layers): FP32 distillation before KD-QAT",
                smaller.distill_history,
                best["epoch"],
                reason,
                detail,
                "see quantize.smaller_student.distill_training",
                warnings=smaller.warnings,
            )
        )
    lines += ["## Wall time", ""]
    teacher_seconds = sum(s.seconds for s in stages if s.stage == TEACHER_STAGE)
    share = teacher_seconds / total_seconds if total_seconds else 0.0
    lines += [
        f"Run so far: {total_seconds / 60:.1f} min; the teacher's share: {teacher_seconds / 60:.1f} min "
        f"({100 * share:.0f}%).",
        "",
        "| stage | seconds | share of the run |",
        "|---|---|---|",
    ]
    for stage in stages:
        stage_share = f"{100 * stage.seconds / total_seconds:.0f}%" if total_seconds else "—"
        lines.append(f"| {stage.stage} | {stage.seconds:.0f} | {stage_share} |")
    return "\n".join(lines) + "\n"


def stage_seconds_from(run_report_json: Path) -> dict[str, float]:
    """``run-report.json``'s wall time as {stage: seconds} (a stage run more than once: the sum)."""
    stages: dict[str, float] = {}
    for item in json.loads(Path(run_report_json).read_text())["stages"]:
        stages[item["stage"]] = stages.get(item["stage"], 0.0) + float(item["seconds"])
    return stages


def write_run_report(
    model_name: str,
    run_dir: Path,
    teacher: TeacherResult,
    smaller: StudentResult | None,
    flow_run_id: str | None,
    reports: dict[str, str],
) -> RunReport:
    stages, total = stage_times(flow_run_id) if flow_run_id else ([], 0.0)
    path = Path(run_dir) / "run-report.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_run_report(model_name, teacher, smaller, stages, total, reports))
    timing = {
        "model": model_name,
        "total_seconds": round(total, 3),
        "stages": [{"stage": stage.stage, "seconds": round(stage.seconds, 3)} for stage in stages],
    }
    path.with_suffix(".json").write_text(json.dumps(timing, indent=2) + "\n")
    return RunReport(str(path), total, stages)


@task(name="report-run", cache_policy=NO_CACHE, persist_result=False)
def report_run_task(
    model_name: str,
    run_dir: str,
    teacher: TeacherResult,
    smaller: StudentResult | None,
    flow_run_id: str | None,
    reports: dict[str, str],
    registry: RegistryConfig,
    mlflow_run_id: str,
) -> RunReport:
    from tasks.register import client_for

    report = write_run_report(model_name, Path(run_dir), teacher, smaller, flow_run_id, reports)
    markdown = Path(report.path).read_text()
    create_markdown_artifact(key="run-report", markdown=markdown, description="teacher training and wall time")
    client_for(registry).log_artifact(mlflow_run_id, report.path, artifact_path="reports")
    get_run_logger().info(
        f"run report {report.path}: teacher {report.seconds_of(TEACHER_STAGE) / 60:.1f} min of "
        f"{report.total_seconds / 60:.1f} ({100 * report.teacher_share:.0f}%)"
    )
    return report
