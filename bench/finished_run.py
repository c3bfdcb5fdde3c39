"""A finished run's trained teacher and training split, for the bench commands that time training parts."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NEEDED = ("data/data.json", "teacher/teacher.json")


@dataclass
class TeacherRun:
    data: Any  # tasks.data.PreparedData
    result: Any  # tasks.teacher.TeacherResult
    encoder: Any  # enginekit.tokenization.TextEncoder
    train: Any  # tasks.modeling.SplitBatches
    layers: list[int]
    """The teacher layers the default smaller student keeps."""


def missing_teacher(run: Path) -> bool:
    """Print the ``error:`` line and say True when ``run`` has no trained teacher."""
    missing = [name for name in NEEDED if not (run / name).is_file()]
    if missing:
        print(f"error: {run} has no trained teacher (missing {', '.join(missing)})", file=sys.stderr)
    return bool(missing)


def load_teacher_run(run: Path) -> TeacherRun:
    from enginekit.tokenization import TextEncoder
    from tasks.config import SmallerStudentConfig
    from tasks.data import PreparedData
    from tasks.modeling import SplitBatches
    from tasks.teacher import TeacherResult

    data = PreparedData(**json.loads((run / "data" / "data.json").read_text()))
    result = TeacherResult(**json.loads((run / "teacher" / "teacher.json").read_text()))
    encoder = TextEncoder(result.tokenizer_dir, result.max_seq_length)
    train = SplitBatches.from_dataset(data.load()["train"])
    return TeacherRun(data, result, encoder, train, SmallerStudentConfig().layer_indices(result.num_layers))
