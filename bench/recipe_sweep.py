"""KD-QAT recipe sweep on a GPU: which defaults hold on every dataset (PTQ vs KD-QAT vs smaller student).

Runs the project's own stage functions (``train_teacher``, ``measure_ptq_baselines``, ``train_student``,
``choose_int8_variant``, ``score_candidate``) on CUDA for each prepared dataset and a small grid of
KD-QAT and smaller-student settings, scoring every student as an exported ONNX Runtime INT8 engine on
the eval split (what the pipeline chooses on) and on the test split (what is reported). Prints and writes
one JSON document. It does not run the Prefect flow, so GPU boxes without Prefect or HF ``datasets`` can
run it (inert stand-ins replace those imports, as in ``bench.cuda_smoke``).

    # here: export a flow run's prepared splits (label ids, fingerprint) for a box without `datasets`
    python -m bench.recipe_sweep export .state/runs/<run>/data .device/data/demo
    # on the GPU box
    python -m bench.recipe_sweep run --encoder DIR --data .device/data/demo [--data ...] --out sweep.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

SPLITS = ("train", "eval", "test")


class Columns:
    """The two things ``SplitBatches.from_dataset`` reads from a datasets.Dataset."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows
        self.column_names = list(rows[0]) if rows else []

    def __getitem__(self, column: str) -> list:
        return [row[column] for row in self.rows]


@dataclass(frozen=True)
class FilePreparedData:
    """``tasks.data.PreparedData`` read from exported jsonl splits instead of a datasets directory."""

    directory: str
    labels: list[str]
    fingerprint: str
    rows: dict[str, int]
    text_pair: bool
    source: str

    def load(self) -> dict[str, Columns]:
        directory = Path(self.directory)
        return {
            split: Columns([json.loads(line) for line in (directory / f"{split}.jsonl").read_text().splitlines()])
            for split in SPLITS
        }


def export(data_dir: Path, out: Path) -> None:
    from tasks.data import PreparedData

    data = PreparedData(**json.loads((data_dir / "data.json").read_text()))
    out.mkdir(parents=True, exist_ok=True)
    splits = data.load()
    for split in SPLITS:
        columns = [c for c in ("text", "text_pair", "label") if c in splits[split].column_names]
        with (out / f"{split}.jsonl").open("w") as handle:
            for row in splits[split].select_columns(columns):
                handle.write(json.dumps(row) + "\n")
    description = {**asdict(data), "directory": "."}
    (out / "data.json").write_text(json.dumps(description, indent=2))
    print(f"exported {data.source} ({data.rows}) to {out}")


QAT_GRID: dict[str, dict] = {
    "kd-qat default": {},
    "kd-qat e1 lr1e-5": {"training": {"epochs": 1, "learning_rate": 1e-5, "early_stopping_patience": None}},
}
SMALL_GRID: dict[str, dict] = {
    "small default": {},
    "small hidden0": {"hidden_state_weight": 0.0},
}


def sweep_one(data_dir: Path, encoder_dir: str, work: Path, log, device: str = "cuda", limit: int = 0) -> dict:
    import numpy as np
    import torch

    from enginekit.tokenization import TextEncoder
    from tasks.config import QuantizeConfig, SmallerStudentConfig, TeacherConfig
    from tasks.modeling import SplitBatches, predict_logits
    from tasks.quantize import train_student
    from tasks.teacher import train_teacher
    from tasks.variants import choose_int8_variant, measure_ptq_baselines, score_candidate

    description = json.loads((data_dir / "data.json").read_text())
    data = FilePreparedData(**{**description, "directory": str(data_dir)})
    if limit:  # a quick check of the sweep itself: the first rows of every split
        work.mkdir(parents=True, exist_ok=True)
        for split, columns in data.load().items():
            rows = "".join(json.dumps(row) + "\n" for row in columns.rows[:limit])
            (work / f"{split}.jsonl").write_text(rows)
        data = FilePreparedData(**{**description, "directory": str(work)})
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "none"
    result: dict = {"dataset": data.source, "rows": data.rows, "gpu": gpu, "limit": limit}
    started = time.perf_counter()
    teacher = train_teacher(TeacherConfig(encoder=encoder_dir, device=device), data, work / "teacher", log=log)
    result["teacher_seconds"] = time.perf_counter() - started
    base = QuantizeConfig()
    ptq = measure_ptq_baselines(base, teacher, data, work / "ptq", log=log)

    encoder = TextEncoder(teacher.tokenizer_dir, teacher.max_seq_length)
    test = SplitBatches.from_dataset(data.load()["test"])
    cpu = torch.device("cpu")
    teacher_test = predict_logits(teacher.load(cpu), test, encoder, 128, cpu).argmax(-1)
    layers = teacher.num_layers
    result["teacher"] = {"eval": ptq.reference.accuracy, "test": float(np.mean(teacher_test == test.labels))}
    result["teacher_epochs"] = len(teacher.history)
    result["ptq_seconds"] = time.perf_counter() - started - result["teacher_seconds"]

    def on_test(name: str, student) -> dict:
        candidate = score_candidate(name, "", student, teacher, test, teacher_test, work, layers)
        return {"test": candidate.eval_accuracy, "test_delta": candidate.delta_points, "test_f1": candidate.macro_f1}

    rows = {}
    for candidate in ptq.candidates:
        rows[candidate.name] = {"eval": candidate.eval_accuracy, **on_test(candidate.name, candidate.student)}
    result["qat_init"] = ptq.qat_init.name
    students = {}
    for name, update in QAT_GRID.items():
        training = base.training.model_copy(update=update.get("training", {}))
        config = base.model_copy(update={**update, "training": training})
        started = time.perf_counter()
        student = train_student(config, teacher, data, work / name.replace(" ", "_"), log, init=ptq.qat_init.student)
        students[name] = student
        rows[name] = {
            "eval_fakequant": student.qat_eval_accuracy,
            "best_epoch": student.best_epoch,
            "seconds": time.perf_counter() - started,
            **on_test(name, student),
        }
    for name, update in SMALL_GRID.items():
        small = SmallerStudentConfig().model_copy(update=update)
        started = time.perf_counter()
        student = train_student(
            base,
            teacher,
            data,
            work / name.replace(" ", "_"),
            log,
            calibration=ptq.qat_init.student.calibration,
            student_layers=small.layer_indices(layers),
            distill_training=small.distill_training,
            hidden_state_weight=small.hidden_state_weight,
        )
        students[name] = student
        rows[name] = {
            "eval_fakequant": student.qat_eval_accuracy,
            "distill_best": max(r["eval_accuracy"] for r in student.distill_history),
            "seconds": time.perf_counter() - started,
            **on_test(name, student),
        }
    choice = choose_int8_variant(
        base, teacher, ptq, students["kd-qat default"], students["small default"], data, work / "variants", log
    )
    for candidate in choice.candidates:
        rows.setdefault(candidate.name, {}).update({"eval": candidate.eval_accuracy})
        if candidate.kind == "kd_qat_mixed_precision":
            rows[candidate.name].update(on_test(candidate.name, candidate.student))
    result["sensitivity"] = [asdict(s) for s in choice.sensitivity]
    result["chosen"] = choice.chosen.name
    result["variants"] = rows
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    exporting = commands.add_parser("export")
    exporting.add_argument("data_dir", type=Path)
    exporting.add_argument("out", type=Path)
    running = commands.add_parser("run")
    running.add_argument("--encoder", required=True)
    running.add_argument("--data", type=Path, action="append", required=True)
    running.add_argument("--work", type=Path, default=Path(".state/recipe-sweep"))
    running.add_argument("--out", type=Path, default=None)
    running.add_argument("--device", default="cuda", help="cpu only to check the sweep itself (with --limit)")
    running.add_argument("--limit", type=int, default=0, help="use only the first N rows of every split")
    arguments = parser.parse_args(argv)
    if arguments.command == "export":
        export(arguments.data_dir, arguments.out)
        return 0

    from bench.cuda_smoke import _stand_in_missing_orchestration_imports

    stand_ins = _stand_in_missing_orchestration_imports()
    import torch

    if arguments.device == "cuda" and not torch.cuda.is_available():
        print("error: torch sees no CUDA device; this sweep is for GPU machines", file=sys.stderr)
        return 2
    results = {"stand_ins": stand_ins, "datasets": []}
    for data_dir in arguments.data:

        def log(message: str, name: str = data_dir.name) -> None:
            print(f"[{name}] {message}", file=sys.stderr, flush=True)

        results["datasets"].append(
            sweep_one(
                data_dir, arguments.encoder, arguments.work / data_dir.name, log, arguments.device, arguments.limit
            )
        )
        if arguments.out:
            arguments.out.parent.mkdir(parents=True, exist_ok=True)
            arguments.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
