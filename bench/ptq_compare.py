"""Side-by-side INT8 accuracy of calibration-only (PTQ) variants and the run's KD-QAT student, each as an
exported QDQ ONNX engine run by ONNX Runtime, against the FP32 teacher on the same test rows.

    python -m bench.ptq_compare .state/runs/<run>          # a finished train_to_deploy run directory

Every variant sees the same ``calibration_batches`` training batches; the histogram methods share one
statistics pass, so they differ only in how ranges are read from the same histograms. Prints a
Markdown table (accuracy, macro-F1, Δ vs teacher with a 95% paired bootstrap interval, flips, agreement)
and writes it next to the run as ``ptq_compare.md`` / ``.json``.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
import tempfile
from pathlib import Path

HISTOGRAM_VARIANTS = (
    ("PTQ percentile 99.9", "percentile", 99.9),
    ("PTQ percentile 99.99", "percentile", 99.99),
    ("PTQ mse", "mse", 0.0),
    ("PTQ entropy", "entropy", 0.0),
)


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

    from enginekit.config import QuantizeConfig
    from enginekit.tokenization import TextEncoder
    from tasks.data import PreparedData
    from tasks.export import export_onnx, onnx_logits
    from tasks.modeling import SplitBatches, accuracy, macro_f1, predict_logits, to_torch
    from tasks.quantize import (
        StudentResult,
        calibrate,
        collect_calibration_statistics,
        int8_quant_config,
        load_ranges,
        load_student,
    )
    from tasks.teacher import TeacherResult
    from tasks.validate import paired_comparison

    run = arguments.run_dir
    data = PreparedData(**json.loads((run / "data" / "data.json").read_text()))
    teacher = TeacherResult(**json.loads((run / "teacher" / "teacher.json").read_text()))
    student = StudentResult(**json.loads((run / "student" / "quantize.json").read_text()))
    cpu = torch.device("cpu")
    encoder = TextEncoder(teacher.tokenizer_dir, teacher.max_seq_length)
    splits = data.load()
    train, test = SplitBatches.from_dataset(splits["train"]), SplitBatches.from_dataset(splits["test"])
    teacher_model = teacher.load(cpu)
    teacher_predictions = predict_logits(teacher_model, test, encoder, 128, cpu).argmax(-1)

    import modelopt.torch.quantization as mtq

    def forward_loop(model: torch.nn.Module) -> None:
        # The same batches QuantizeConfig's calibrate() draws: same seed, size and count.
        batches = train.iterate(encoder, arguments.batch_size, shuffle_seed=QuantizeConfig().training.seed)
        for batch, _ in itertools.islice(batches, arguments.calibration_batches):
            model(**to_torch(batch, cpu))

    calibration = QuantizeConfig(calibration_batches=arguments.calibration_batches)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="ptq-compare-"))

    def measure(name: str, model: torch.nn.Module) -> None:
        path = work / f"{len(rows)}.onnx"
        export_onnx(model, encoder, path, 17)
        predictions = onnx_logits(path, test, encoder, 64).argmax(-1)
        comparison = paired_comparison(predictions, teacher_predictions, test.labels, 1000)
        rows.append(
            {
                "variant": name,
                "accuracy": accuracy(predictions, test.labels),
                "macro_f1": macro_f1(predictions, test.labels, len(data.labels)),
                "delta_points": comparison.delta_points,
                "ci_low_points": comparison.ci_low_points,
                "ci_high_points": comparison.ci_high_points,
                "fixed": comparison.fixed,
                "broken": comparison.broken,
                "agreement": comparison.agreement,
            }
        )
        print(f"{name}: {100 * rows[-1]['accuracy']:.2f}%", file=sys.stderr)

    measure("PTQ max", calibrate(copy.deepcopy(teacher_model), train, encoder, calibration, cpu))
    collected = mtq.quantize(copy.deepcopy(teacher_model), int8_quant_config(False, "percentile"), forward_loop=None)
    collect_calibration_statistics(collected, forward_loop)
    for name, method, percentile in HISTOGRAM_VARIANTS:
        variant = copy.deepcopy(collected)
        load_ranges(variant, method, percentile)
        measure(name, variant)
    kept = "KD-QAT" if student.best_epoch > 0 else "calibrated only: QAT did not improve eval"
    measure(f"the run's student ({kept})", load_student(student, teacher))

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
