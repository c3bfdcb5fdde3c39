"""The issue-3 accuracy table for a finished ``train_to_deploy`` run, on the **test** split.

Every INT8 variant the run produced — each PTQ calibration method, the KD-QAT student, the smaller
student, the mixed-precision student — is exported to QDQ ONNX and run by ONNX Runtime on the test rows,
next to the FP32 teacher (PyTorch) on the same rows: accuracy, macro-F1, Δ vs teacher with its 95% paired
bootstrap interval, flips, argmax agreement, the static speed proxy and the measured rows/s of the
scoring pass. The variant the run chose (on eval) is marked. Nothing is recalibrated or retrained: these
are the run's own students.

    python -m bench.accuracy_table                      # newest run under .state/runs
    python -m bench.accuracy_table .state/runs/<run>    # a given run directory

Prints a Markdown table and writes ``accuracy_table.md`` / ``.json`` into the run directory.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

DEFAULT_RUNS = Path(".state/runs")


def newest_run(runs: Path) -> Path:
    finished = sorted(p for p in runs.glob("*/variants/variants.json"))
    if not finished:
        raise SystemExit(f"error: no finished run (with variants/variants.json) under {runs}")
    return finished[-1].parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, nargs="?", default=None, help="default: newest run in .state/runs")
    arguments = parser.parse_args(argv)
    run = arguments.run_dir or newest_run(DEFAULT_RUNS)
    if not (run / "variants" / "variants.json").is_file():
        print(f"error: {run} is not a finished run directory (no variants/variants.json)", file=sys.stderr)
        return 2
    import torch

    with torch.no_grad():  # scoped: the caller (a test session, a notebook) keeps its autograd state
        return _table(run)


def _table(run: Path) -> int:
    from tasks.data import PreparedData
    from tasks.modeling import SplitBatches
    from tasks.quantize import StudentResult
    from tasks.teacher import TeacherResult
    from tasks.variants import reference_on, render_markdown, score_candidate

    data = PreparedData(**json.loads((run / "data" / "data.json").read_text()))
    teacher = TeacherResult(**json.loads((run / "teacher" / "teacher.json").read_text()))
    variants = json.loads((run / "variants" / "variants.json").read_text())
    from enginekit.tokenization import TextEncoder

    encoder = TextEncoder(teacher.tokenizer_dir, teacher.max_seq_length)
    test = SplitBatches.from_dataset(data.load()["test"])
    work = Path(tempfile.mkdtemp(prefix="accuracy-table-"))
    reference = reference_on(teacher, test, encoder, work, len(data.labels))
    layers = teacher.num_layers
    candidates = []
    for saved in variants["candidates"]:
        student = StudentResult(**saved["student"])
        candidate = score_candidate(
            saved["name"],
            saved["kind"],
            student,
            teacher,
            test,
            reference.predictions(),
            work,
            layers,
            saved["speed_proxy"],
        )
        candidates.append(candidate)
        print(f"{candidate.name}: {100 * candidate.eval_accuracy:.2f}%", file=sys.stderr)
    chosen = variants["chosen"]
    best_ptq = max((c for c in candidates if c.kind == "ptq"), key=lambda c: c.eval_accuracy, default=None)
    kd = next((c for c in candidates if c.kind == "kd_qat"), None)
    shipped = next(c for c in candidates if c.name == chosen)
    notes = [
        f"chosen on eval by the run: {chosen} — test Δ {shipped.delta_points:+.2f} points "
        f"({'within' if shipped.delta_points >= -0.3 - 1e-9 else 'OUTSIDE'} 0.3 points of the teacher)",
    ]
    if best_ptq and kd:
        verdict = "at least as accurate as" if kd.eval_accuracy >= best_ptq.eval_accuracy else "LESS accurate than"
        notes.append(
            f"KD-QAT ({100 * kd.eval_accuracy:.2f}%) is {verdict} the best PTQ method on test "
            f"({best_ptq.name}, {100 * best_ptq.eval_accuracy:.2f}%)"
        )
    table = render_markdown(candidates, reference, notes, [], split="test", reasons_title="Targets:")
    print(table)
    (run / "accuracy_table.md").write_text(table)
    payload = {
        "run": str(run),
        "dataset": data.source,
        "reference": asdict(reference),
        "chosen": chosen,
        "rows": [{k: v for k, v in asdict(c).items() if k != "student"} for c in candidates],
    }
    (run / "accuracy_table.json").write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
