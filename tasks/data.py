"""Data stage: load any text-classification dataset through HF ``datasets``, check it, split it,
fingerprint it, and save a prepared copy that every later stage reads.

Prepared layout (``out_dir``)::

    dataset/      # DatasetDict.save_to_disk: splits train/eval/test, columns text[, text_pair], label (int)
    labels.json   # label names, index = class id
    data.json     # PreparedData summary (fingerprint, rows per split, source)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, load_dataset, load_from_disk
from prefect import task
from prefect.cache_policies import NO_CACHE

from enginekit.bundle import write_json_atomic
from tasks.config import DataConfig

SPLITS = ("train", "eval", "test")
_FILE_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_MAX_PROBLEMS_SHOWN = 5


class DataError(Exception):
    """The dataset cannot be used; the message names the source, split, row and column."""


@dataclass(frozen=True)
class PreparedData:
    directory: str
    labels: list[str]
    fingerprint: str
    """sha256 of the normalized rows of every split and the label list (lineage and cache key)."""
    rows: dict[str, int]
    text_pair: bool
    source: str

    @property
    def dataset_dir(self) -> Path:
        return Path(self.directory) / "dataset"

    def load(self) -> DatasetDict:
        return load_from_disk(str(self.dataset_dir))


# ---------------------------------------------------------------------------------------------- loading


def _split_files(directory: Path) -> dict[str, list[str]]:
    """``train.csv``/``eval.jsonl``/... in a directory → datasets' data_files mapping."""
    files: dict[str, list[str]] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix in _FILE_FORMATS:
            files.setdefault(path.stem, []).append(str(path))
    return files


def _load_raw(config: DataConfig, demo_dir: Path, cache_dir: Path) -> tuple[DatasetDict, str]:
    """Load the source as a DatasetDict; returns it with a human-readable description of the source.

    Local files are converted to Arrow under ``cache_dir`` (the run's own folder), not the user's HF
    cache: a run leaves nothing behind outside its directory, and two runs never share stale caches.
    """
    source = config.source
    if source == "demo":
        from tasks.demo_dataset import generate_demo_dataset

        demo = config.demo
        files = generate_demo_dataset(
            demo_dir,
            seed=demo.seed,
            train_rows=demo.train_rows,
            eval_rows=demo.eval_rows,
            test_rows=demo.test_rows,
            noise_rate=demo.noise_rate,
        )
        data_files = {name: str(path) for name, path in files.items()}
        return load_dataset("json", data_files=data_files, cache_dir=str(cache_dir)), f"demo dataset ({demo_dir})"

    path = Path(source).expanduser()
    fmt = config.format
    if fmt == "hub" or (fmt == "auto" and not path.exists()):
        looks_local = source.startswith((".", "/", "~")) or Path(source).suffix in _FILE_FORMATS
        if looks_local or fmt not in ("auto", "hub"):
            raise DataError(f"data source {source}: no such file or directory")
        try:
            loaded = load_dataset(source)
        except Exception as error:  # datasets raises many types for offline/unknown ids
            raise DataError(
                f"data source {source!r}: not a local path, and loading it as a hub dataset failed "
                f"({type(error).__name__}: {error}). Offline machines need a local file or directory."
            ) from None
        if not isinstance(loaded, DatasetDict):
            raise DataError(f"data source {source!r}: expected named splits from the hub")
        return loaded, f"hub dataset {source}"

    if not path.exists():
        raise DataError(f"data source {path}: no such file or directory")
    if path.is_dir() and (fmt == "disk" or (path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        loaded = load_from_disk(str(path))
        if isinstance(loaded, Dataset):
            loaded = DatasetDict({config.train_split: loaded})
        return loaded, f"saved dataset {path}"
    if path.is_dir():
        data_files = _split_files(path)
        if not data_files:
            raise DataError(
                f"data source {path}: directory has no split files (expected e.g. train.csv, eval.jsonl, "
                "test.parquet) and is not a saved dataset"
            )
        suffixes = {Path(f).suffix for files in data_files.values() for f in files}
        builders = {_FILE_FORMATS[s] for s in suffixes}
        if len(builders) != 1:
            raise DataError(f"data source {path}: mixed file formats {sorted(suffixes)}; use one format")
        builder = fmt if fmt != "auto" else builders.pop()
        return _load_files(builder, data_files, path, cache_dir), f"files in {path}"
    builder = fmt if fmt != "auto" else _FILE_FORMATS.get(path.suffix.lower(), "")
    if not builder:
        raise DataError(
            f"data source {path}: unknown file type {path.suffix!r}; use .csv, .tsv, .json, .jsonl or .parquet "
            "or set data.format"
        )
    return _load_files(builder, {config.train_split: [str(path)]}, path, cache_dir), f"file {path}"


def _load_files(builder: str, data_files: dict[str, list[str]], where: Path, cache_dir: Path) -> DatasetDict:
    kwargs: dict[str, Any] = {"cache_dir": str(cache_dir)}
    if builder == "csv" and all(f.endswith(".tsv") for files in data_files.values() for f in files):
        kwargs["delimiter"] = "\t"
    try:
        return load_dataset(builder, data_files=data_files, **kwargs)
    except Exception as error:  # pyarrow/pandas parse errors come in many types
        raise DataError(f"data source {where}: could not parse as {builder}: {type(error).__name__}: {error}") from None


# ------------------------------------------------------------------------------------------- checking


def _check_columns(dataset: Dataset, split: str, config: DataConfig, where: str) -> None:
    wanted = [config.text_column, config.label_column]
    if config.text_pair_column:
        wanted.append(config.text_pair_column)
    missing = [column for column in wanted if column not in dataset.column_names]
    if missing:
        raise DataError(
            f"{where}, split {split!r}: missing column(s) {missing}; available: {dataset.column_names}. "
            "Set data.text_column / data.text_pair_column / data.label_column."
        )


def _check_texts(values: list[Any], split: str, column: str, where: str) -> None:
    problems = []
    for row, value in enumerate(values):
        if not isinstance(value, str):
            problems.append(f"row {row}: {column} is {type(value).__name__} ({value!r}), not text")
        elif not value.strip():
            problems.append(f"row {row}: {column} is empty")
    if problems:
        shown = "; ".join(problems[:_MAX_PROBLEMS_SHOWN])
        more = f" (and {len(problems) - _MAX_PROBLEMS_SHOWN} more)" if len(problems) > _MAX_PROBLEMS_SHOWN else ""
        raise DataError(
            f"{where}, split {split!r}: {len(problems)} bad text value(s): {shown}{more} (rows count from 0)"
        )


def _label_names(dataset: Dataset, label_column: str) -> list[str]:
    feature = dataset.features[label_column]
    values = dataset[label_column]
    if isinstance(feature, ClassLabel):
        return [feature.names[v] for v in values]
    problems = [f"row {row}: label is missing" for row, v in enumerate(values) if v is None or v == ""]
    if problems:
        raise DataError("; ".join(problems[:_MAX_PROBLEMS_SHOWN]))
    return [str(v) for v in values]


def normalize_text(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip()


# ------------------------------------------------------------------------------------------ splitting


def stratified_indices(labels: list[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split row indices into (rest, held_out) with ``fraction`` of every class held out.

    Classes with a single row stay in ``rest`` (a held-out class absent from train is useless).
    """
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    rest: list[int] = []
    held_out: list[int] = []
    for label in sorted(by_label):
        indices = np.array(by_label[label])
        rng.shuffle(indices)
        count = round(len(indices) * fraction)
        count = min(max(count, 1), len(indices) - 1) if len(indices) >= 2 else 0
        held_out.extend(indices[:count].tolist())
        rest.extend(indices[count:].tolist())
    return sorted(rest), sorted(held_out)


def _cap_rows(dataset: Dataset, labels: list[str], limit: int | None, seed: int) -> tuple[Dataset, list[str]]:
    if limit is None or len(labels) <= limit:
        return dataset, labels
    _, keep = stratified_indices(labels, limit / len(labels), seed)
    keep = keep[:limit]
    return dataset.select(keep), [labels[i] for i in keep]


def fingerprint_rows(rows: dict[str, list[tuple[str, str | None, str]]], labels: list[str]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(labels).encode())
    for split in SPLITS:
        digest.update(f"\n#split {split}\n".encode())
        for text, pair, label in rows[split]:
            digest.update(json.dumps([text, pair, label], ensure_ascii=False).encode())
            digest.update(b"\n")
    return digest.hexdigest()


# -------------------------------------------------------------------------------------------- prepare


def prepare_data(config: DataConfig, out_dir: Path) -> PreparedData:
    """Load, check, split and fingerprint the dataset; save the prepared copy under ``out_dir``."""
    out_dir = Path(out_dir)
    raw, where = _load_raw(config, out_dir / "source", out_dir / ".hf-cache")
    available = list(raw.keys())
    if config.train_split not in raw:
        raise DataError(f"{where}: no split {config.train_split!r} (splits: {available}); set data.train_split")

    parts: dict[str, tuple[Dataset, list[str]]] = {}
    for role, name in (
        ("train", config.train_split),
        ("eval", config.eval_split),
        ("test", config.test_split),
    ):
        if name is not None and name in raw:
            dataset = raw[name]
            _check_columns(dataset, name, config, where)
            if len(dataset) == 0:
                raise DataError(f"{where}, split {name!r}: is empty")
            _check_texts(dataset[config.text_column], name, config.text_column, where)
            if config.text_pair_column:
                _check_texts(dataset[config.text_pair_column], name, config.text_pair_column, where)
            try:
                parts[role] = (dataset, _label_names(dataset, config.label_column))
            except DataError as error:
                raise DataError(f"{where}, split {name!r}, column {config.label_column!r}: {error}") from None

    # Carve missing held-out splits from train, stratified so every class keeps its share.
    # Fractions are of the source's train split, so the second carve is scaled by what the first left.
    train, train_labels = parts["train"]
    remaining_share = 1.0
    for role, fraction, seed_offset in (("test", config.test_fraction, 1), ("eval", config.eval_fraction, 2)):
        if role not in parts:
            rest, held = stratified_indices(train_labels, fraction / remaining_share, config.split_seed + seed_offset)
            remaining_share -= fraction
            if not held:
                raise DataError(f"{where}: too few train rows to carve a {role} split; provide one")
            parts[role] = (train.select(held), [train_labels[i] for i in held])
            train, train_labels = train.select(rest), [train_labels[i] for i in rest]
    parts["train"] = (train, train_labels)

    limits = {"train": config.max_train_rows, "eval": config.max_eval_rows, "test": config.max_test_rows}
    for role in SPLITS:
        parts[role] = _cap_rows(*parts[role], limits[role], config.split_seed)

    label_names = sorted(set(parts["train"][1]))
    if len(label_names) < 2:
        raise DataError(f"{where}: train has {len(label_names)} class(es) {label_names}; need at least 2")
    known = set(label_names)
    for role in ("eval", "test"):
        unseen = Counter(label for label in parts[role][1] if label not in known)
        if unseen:
            raise DataError(
                f"{where}, {role} split: label(s) absent from train: {dict(unseen)}; the model cannot "
                "predict them. Add train rows for them or drop those rows."
            )
    label_ids = {name: index for index, name in enumerate(label_names)}

    rows: dict[str, list[tuple[str, str | None, str]]] = {}
    prepared: dict[str, Dataset] = {}
    for role in SPLITS:
        dataset, labels = parts[role]
        texts = [normalize_text(t) for t in dataset[config.text_column]]
        pairs = [normalize_text(t) for t in dataset[config.text_pair_column]] if config.text_pair_column else None
        rows[role] = [(t, pairs[i] if pairs else None, labels[i]) for i, t in enumerate(texts)]
        columns: dict[str, list[Any]] = {"text": texts, "label": [label_ids[x] for x in labels]}
        if pairs is not None:
            columns["text_pair"] = pairs
        prepared[role] = Dataset.from_dict(columns)

    fingerprint = fingerprint_rows(rows, label_names)
    dataset_dir = out_dir / "dataset"
    staging = out_dir / ".dataset.partial"
    shutil.rmtree(staging, ignore_errors=True)
    DatasetDict(prepared).save_to_disk(str(staging))
    shutil.rmtree(dataset_dir, ignore_errors=True)
    staging.rename(dataset_dir)
    write_json_atomic(out_dir / "labels.json", label_names)
    result = PreparedData(
        directory=str(out_dir),
        labels=label_names,
        fingerprint=fingerprint,
        rows={role: len(prepared[role]) for role in SPLITS},
        text_pair=config.text_pair_column is not None,
        source=where,
    )
    write_json_atomic(out_dir / "data.json", asdict(result))
    return result


@task(name="prepare-data", cache_policy=NO_CACHE, persist_result=False)
def prepare_data_task(config: DataConfig, out_dir: str) -> PreparedData:
    return prepare_data(config, Path(out_dir))
