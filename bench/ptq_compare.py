"""Side-by-side INT8 accuracy of calibration-only (PTQ) variants and the run's KD-QAT student, each as an
exported QDQ ONNX engine run by ONNX Runtime, against the FP32 teacher on the same **test** rows.

    python -m bench.ptq_compare .state/runs/<run>          # a finished train_to_deploy run directory

The flow's variants stage does the same on the eval split to choose what ships; this command reuses its
code (``tasks.variants``) to report the test-split numbers. Prints a Markdown table (accuracy, macro-F1,
Δ vs teacher with a 95% paired bootstrap interval, flips, agreement) and writes it next to the run as
``ptq_compare.md`` / ``.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

BASELINES = ["max", "percentile:99.9", "percentile:99.99", "mse", "entropy"]


def main(argv: list[str] | None = None) -> int:
    import torch

    with torch.no_grad():  # scoped: the caller (a test session, a notebook) keeps its autograd state
        return _compare(argv)


def _compare(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--calibration-batches", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    arguments = parser.parse_args(argv)

    import torch

    from enginekit.config import QuantizeConfig, TrainingConfig
    from enginekit.tokenization import TextEncoder
    from tasks.data import PreparedData
    from tasks.modeling import SplitBatches, accuracy, macro_f1, predict_logits
    from tasks.quantize import StudentResult
    from tasks.teacher import TeacherResult
    from tasks.variants import ptq_students, score_candidate

    run = arguments.run_dir
    data = PreparedData(**json.loads((run / "data" / "data.json").read_text()))
    teacher = TeacherResult(**json.loads((run / "teacher" / "teacher.json").read_text()))
    student = StudentResult(**json.loads((run / "student" / "quantize.json").read_text()))
    cpu = torch.device("cpu")
    encoder = TextEncoder(teacher.tokenizer_dir, teacher.max_seq_length)
    test = SplitBatches.from_dataset(data.load()["test"])
    teacher_model = teacher.load(cpu)
    teacher_predictions = predict_logits(teacher_model, test, encoder, 128, cpu).argmax(-1)
    layers = teacher_model.config.num_hidden_layers

    config = QuantizeConfig(
        ptq_baselines=BASELINES,
        calibration_batches=arguments.calibration_batches,
        training=TrainingConfig(batch_size=arguments.batch_size),
    )
    work = Path(tempfile.mkdtemp(prefix="ptq-compare-"))
    named = [(name.replace(":", " "), result) for name, result in ptq_students(config, teacher, data, work)]
    kept = "KD-QAT" if student.best_epoch > 0 else "calibrated only: QAT did not improve eval"
    named.append((f"the run's student ({kept})", student))
    candidates = []
    for name, result in named:
        candidates.append(score_candidate(name, "", result, teacher, test, teacher_predictions, work, layers))
        print(f"{name}: {100 * candidates[-1].eval_accuracy:.2f}%", file=sys.stderr)

    rows = []
    for candidate in candidates:
        rows.append(
            {
                "variant": candidate.name,
                "accuracy": candidate.eval_accuracy,  # accuracy on the rows scored: here the test split
                "macro_f1": candidate.macro_f1,
                "delta_points": candidate.delta_points,
                "ci_low_points": candidate.ci_low_points,
                "ci_high_points": candidate.ci_high_points,
                "fixed": candidate.fixed,
                "broken": candidate.broken,
                "agreement": candidate.agreement,
            }
        )
    teacher_accuracy = accuracy(teacher_predictions, test.labels)
    lines = [
        f"Test rows: {len(test)}. FP32 teacher (PyTorch): {100 * teacher_accuracy:.2f}% accuracy, "
        f"macro-F1 {macro_f1(teacher_predictions, test.labels, len(data.labels)):.4f}.",
        "",
        "| INT8 variant (ONNX Runtime engine) | accuracy | macro-F1 | Δ vs teacher, points [95% CI] "
        "| fixed / broken | agreement |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['variant']} | {100 * row['accuracy']:.2f}% | {row['macro_f1']:.4f} | "
            f"{row['delta_points']:+.2f} [{row['ci_low_points']:+.2f}, {row['ci_high_points']:+.2f}] | "
            f"{row['fixed']} / {row['broken']} | {100 * row['agreement']:.2f}% |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    (run / "ptq_compare.md").write_text(table)
    (run / "ptq_compare.json").write_text(json.dumps({"teacher_accuracy": teacher_accuracy, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
