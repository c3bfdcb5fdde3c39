"""Write a dataset's splits as the CSV files ``corpora/`` holds (``text,label``), shuffled reproducibly."""

from __future__ import annotations

import csv
import random
from pathlib import Path


def write_splits(out_dir: Path, splits: dict[str, list[tuple[str, str]]], rng: random.Random) -> dict[str, int]:
    """``<out_dir>/<split>.csv`` per split, rows shuffled with ``rng``; returns the rows per split."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        rng.shuffle(rows)
        with (out_dir / f"{split}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
    return {split: len(rows) for split, rows in splits.items()}
