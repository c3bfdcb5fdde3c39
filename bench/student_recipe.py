"""A finished run's smaller student trained again with another recipe, next to the run's own, on eval and test.

The run's teacher, prepared data and calibration method are reused (nothing else is retrained), so a
recipe for the smaller student (its FP32 distillation, hidden-state weight, layers) is measured in
minutes instead of a whole run. Both students, the run's own and the new one, are exported and scored by
ONNX Runtime on the eval and the test split in the same process: accuracy, Δ vs the teacher with its 95%
paired bootstrap interval, agreement. The test column is what the run's accuracy gate would see.

    python -m bench.student_recipe .state/runs/<run> --config configs/demo.yaml \\
        --set quantize.smaller_student.distill_training.schedule=plateau \\
        --set quantize.smaller_student.distill_training.learning_rate=1e-4

Writes ``student-recipes/<overrides>.{md,json}`` into the run directory.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

NEEDED = ("data/data.json", "teacher/teacher.json", "student/quantize.json", "smaller-student/quantize.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished train_to_deploy run directory")
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"), help="the run's config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    arguments = parser.parse_args(argv)
    run: Path = arguments.run_dir
    missing = [name for name in NEEDED if not (run / name).is_file()]
    if missing:
        print(
            f"error: {run} is not a finished run with a smaller student (missing {', '.join(missing)})", file=sys.stderr
        )
        return 2
    if not arguments.overrides:
        print("error: give the recipe to try with --set quantize.smaller_student.KEY=VALUE", file=sys.stderr)
        return 2
    from tasks.config import ConfigError, load_config

    try:
        config = load_config(arguments.config, arguments.overrides).quantize
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if config.smaller_student is None:
        print(f"error: {arguments.config}: quantize.smaller_student is null", file=sys.stderr)
        return 2
    import torch

    from tasks.data import PreparedData
    from tasks.quantize import StudentResult, train_student
    from tasks.teacher import TeacherResult

    data = PreparedData(**json.loads((run / "data" / "data.json").read_text()))
    teacher = TeacherResult(**json.loads((run / "teacher" / "teacher.json").read_text()))
    calibration = json.loads((run / "student" / "quantize.json").read_text())["calibration"]
    own = StudentResult(**json.loads((run / "smaller-student" / "quantize.json").read_text()))
    slug = "-".join(
        override.replace("quantize.smaller_student.", "").replace("/", "_") for override in arguments.overrides
    )
    out = run / "student-recipes"
    small = config.smaller_student
    new = train_student(
        config,
        teacher,
        data,
        out / slug,
        calibration=calibration,
        student_layers=small.layer_indices(teacher.num_layers),
        distill_training=small.distill_training,
        hidden_state_weight=small.hidden_state_weight,
    )
    with torch.no_grad():
        rows = _score(
            {"the run's own smaller student": own, f"with {', '.join(arguments.overrides)}": new}, teacher, data
        )
    table = _markdown(run, arguments, calibration, new, rows)
    print(table)
    (out / f"{slug}.md").write_text(table)
    (out / f"{slug}.json").write_text(
        json.dumps({"run": str(run), "overrides": arguments.overrides, "rows": rows}, indent=2)
    )
    return 0


def _score(students: dict, teacher, data) -> list[dict]:
    from enginekit.tokenization import TextEncoder
    from tasks.modeling import SplitBatches
    from tasks.variants import reference_on, score_candidate

    encoder = TextEncoder(teacher.tokenizer_dir, teacher.max_seq_length)
    splits = data.load()
    rows: list[dict] = [{"name": name, "student": student.directory} for name, student in students.items()]
    for split_name in ("eval", "test"):
        split = SplitBatches.from_dataset(splits[split_name])
        work = Path(tempfile.mkdtemp(prefix=f"student-recipe-{split_name}-"))
        reference = reference_on(teacher, split, encoder, work, len(data.labels))
        for row, student in zip(rows, students.values(), strict=True):
            scored = score_candidate(
                row["name"],
                "smaller_student",
                student,
                teacher,
                split,
                reference.predictions(),
                work,
                teacher.num_layers,
            )
            row[split_name] = {
                "teacher": reference.accuracy,
                "accuracy": scored.eval_accuracy,  # the accuracy on the split it was scored on
                "delta_points": scored.delta_points,
                "ci": [scored.ci_low_points, scored.ci_high_points],
                "agreement": scored.agreement,
            }
    return rows


def _markdown(run: Path, arguments, calibration: str, new, rows: list[dict]) -> str:
    def cell(score: dict) -> str:
        low, high = score["ci"]
        delta = f"{score['delta_points']:+.2f} [{low:+.2f}, {high:+.2f}]"
        return f"{100 * score['accuracy']:.2f}%, {delta}, {100 * score['agreement']:.1f}%"

    lines = [
        f"### Smaller student recipes on run `{run.name}`",
        "",
        f"Command: `python -m bench.student_recipe {run} --config {arguments.config} "
        + " ".join(f"--set {override}" for override in arguments.overrides)
        + f"`; calibration {calibration} (the run's).",
        f"FP32 distillation of the new student: {len(new.distill_history)} epochs; {new.distill_stop_detail or '-'}.",
        "",
        f"| student | eval: accuracy, Δ vs teacher ({100 * rows[0]['eval']['teacher']:.2f}%) [95% CI], agreement "
        f"| test: accuracy, Δ vs teacher ({100 * rows[0]['test']['teacher']:.2f}%) [95% CI], agreement |",
        "|---|---|---|",
    ]
    lines += [f"| {row['name']} | {cell(row['eval'])} | {cell(row['test'])} |" for row in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
