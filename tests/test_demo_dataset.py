"""The demo dataset generator: determinism, split hygiene, label coverage, atomic writes and the CLI."""

from __future__ import annotations

import json
import math
import os
import random
import stat
import subprocess
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pytest

from tasks import demo_dataset
from tasks.demo_dataset import CONFUSABLE_INTENTS, DEMO_INTENTS, dedupe_key, generate_demo_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "eval", "test")


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def default_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_demo_dataset(tmp_path_factory.mktemp("demo_default"))


@pytest.fixture(scope="module")
def default_rows(default_files: dict[str, Path]) -> dict[str, list[dict[str, str]]]:
    return {split: read_rows(path) for split, path in default_files.items()}


# ------------------------------------------------------------------------------------------ determinism


def test_same_arguments_give_byte_identical_files(tmp_path: Path, default_files: dict[str, Path]) -> None:
    again = generate_demo_dataset(tmp_path / "again")
    for split in SPLITS:
        assert again[split].read_bytes() == default_files[split].read_bytes(), split


def test_a_different_seed_gives_different_data(tmp_path: Path, default_files: dict[str, Path]) -> None:
    other = generate_demo_dataset(tmp_path / "other", seed=20261129)
    for split in SPLITS:
        assert other[split].read_bytes() != default_files[split].read_bytes(), split


# ------------------------------------------------------------------------------------------- file shape


def test_returns_the_three_split_files_and_leaves_nothing_else(default_files: dict[str, Path]) -> None:
    assert list(default_files) == list(SPLITS)
    directory = default_files["train"].parent
    assert {path.name for path in directory.iterdir()} == {"train.jsonl", "eval.jsonl", "test.jsonl"}
    for split, path in default_files.items():
        assert path == directory / f"{split}.jsonl"
        if os.name == "posix":  # readable like any data file, not mkstemp's private 0600
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, split


def test_every_line_is_text_then_label_in_utf8(default_files: dict[str, Path]) -> None:
    for split, path in default_files.items():
        raw = path.read_bytes()
        assert raw.endswith(b"\n") and b"\r" not in raw, split
        lines = raw.decode("utf-8").splitlines()
        for line in lines:
            row = json.loads(line)
            assert list(row) == ["text", "label"], line
            assert row["label"] in DEMO_INTENTS, line
        # ensure_ascii=False: accented queries are stored as characters, not \u escapes.
        assert any(not line.isascii() for line in lines), split
        assert not any("\\u" in line for line in lines), split


def test_default_sizes(default_rows: dict[str, list[dict[str, str]]]) -> None:
    sizes = {split: len(rows) for split, rows in default_rows.items()}
    assert sizes == {"train": 6000, "eval": 1200, "test": 1200}
    assert sizes["train"] >= 5000 and sizes["eval"] >= 1000 and sizes["test"] >= 1000


def test_texts_are_never_empty_and_already_normalized(default_rows: dict[str, list[dict[str, str]]]) -> None:
    for split, rows in default_rows.items():
        for row in rows:
            text = row["text"]
            assert text.strip(), (split, row)
            # tasks.data normalizes with NFC + strip; the generator must already match so dedupe holds there.
            assert text == unicodedata.normalize("NFC", text).strip(), (split, row)
            assert "  " not in text, (split, row)


# -------------------------------------------------------------------------------------------- labels


def test_intents_and_confusables_are_consistent() -> None:
    assert len(DEMO_INTENTS) >= 10
    assert len(set(DEMO_INTENTS)) == len(DEMO_INTENTS)
    assert list(CONFUSABLE_INTENTS) == list(DEMO_INTENTS)
    for intent, confusables in CONFUSABLE_INTENTS.items():
        assert confusables, intent
        assert intent not in confusables
        assert set(confusables) <= set(DEMO_INTENTS), intent


def test_every_split_has_every_label(default_rows: dict[str, list[dict[str, str]]]) -> None:
    for split, rows in default_rows.items():
        labels = {row["label"] for row in rows}
        assert labels == set(DEMO_INTENTS), split
        assert len(labels) >= 10


def test_class_balance_is_mildly_skewed(default_rows: dict[str, list[dict[str, str]]]) -> None:
    for split, rows in default_rows.items():
        counts = Counter(row["label"] for row in rows)
        ratio = max(counts.values()) / min(counts.values())
        assert 1.5 <= ratio <= 4, (split, counts)  # skewed like real traffic, but not wildly


def test_tiny_splits_still_get_every_label(tmp_path: Path) -> None:
    files = generate_demo_dataset(tmp_path, train_rows=14, eval_rows=14, test_rows=14, noise_rate=0.0)
    for split, path in files.items():
        assert Counter(row["label"] for row in read_rows(path)) == dict.fromkeys(DEMO_INTENTS, 1), split


def test_label_noise_only_swaps_to_confusable_intents() -> None:
    rng = random.Random(5)
    for intent in DEMO_INTENTS:
        labels = Counter(demo_dataset._noisy_label(rng, intent, 0.4) for _ in range(400))
        assert set(labels) <= {intent, *CONFUSABLE_INTENTS[intent]}, intent
        assert 0.25 < 1 - labels[intent] / 400 < 0.55, (intent, labels)
    assert {demo_dataset._noisy_label(rng, "weather", 0.0) for _ in range(200)} == {"weather"}


# -------------------------------------------------------------------------------------------- splits


def test_no_text_is_shared_across_splits(default_rows: dict[str, list[dict[str, str]]]) -> None:
    texts = {split: {row["text"] for row in rows} for split, rows in default_rows.items()}
    keys = {split: {dedupe_key(row["text"]) for row in rows} for split, rows in default_rows.items()}
    for first, second in (("train", "eval"), ("train", "test"), ("eval", "test")):
        assert not texts[first] & texts[second], (first, second)
        # Not even up to casing, accents or a trailing question mark.
        assert not keys[first] & keys[second], (first, second)


def test_dedupe_key_ignores_case_accents_spacing_and_trailing_punctuation() -> None:
    assert dedupe_key("  Weather  Zürich?? ") == dedupe_key("weather zurich") == "weather zurich"
    assert dedupe_key("weather zurich") != dedupe_key("zurich weather")


def test_duplicates_within_train_are_rare(default_rows: dict[str, list[dict[str, str]]]) -> None:
    texts = Counter(row["text"] for row in default_rows["train"])
    repeated_rows = sum(count - 1 for count in texts.values())
    assert repeated_rows < 0.03 * len(default_rows["train"])


def test_queries_look_like_search_box_traffic(default_rows: dict[str, list[dict[str, str]]]) -> None:
    texts = [row["text"] for row in default_rows["train"]]
    word_counts = [len(text.split()) for text in texts]

    def share(hits: Iterable[bool]) -> float:
        return sum(hits) / len(texts)

    assert share(count <= 2 for count in word_counts) > 0.1  # terse queries: "nike", "aapl"
    assert share(12 <= count <= 20 for count in word_counts) > 0.05  # conversational queries
    assert max(word_counts) <= 20
    assert share(text != text.lower() for text in texts) > 0.1  # casing variation
    assert share(text.endswith("?") for text in texts) > 0.02
    words = Counter(word for text in texts for word in text.lower().split())
    assert all(words[shorthand] for shorthand in ("u", "nyc", "pls", "tmrw", "wx")), "abbreviations missing"
    # Shared vocabulary across intents: the same entity shows up under several labels.
    apple_labels = {row["label"] for row in default_rows["train"] if "apple" in row["text"].lower().split()}
    assert {"product_search", "stock_quote"} <= apple_labels


# ------------------------------------------------------------------------------------- argument errors


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"train_rows": 0}, "train_rows"),
        ({"eval_rows": -5}, "eval_rows"),
        ({"test_rows": 0}, "test_rows"),
        ({"train_rows": 10.5}, "train_rows"),
        ({"eval_rows": True}, "eval_rows"),
        ({"noise_rate": 0.5}, "noise_rate"),
        ({"noise_rate": -0.01}, "noise_rate"),
        ({"noise_rate": math.nan}, "noise_rate"),
        ({"seed": "42"}, "seed"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(
    tmp_path: Path, arguments: dict[str, object], named: str
) -> None:
    out_dir = tmp_path / "never"
    with pytest.raises(ValueError, match=named):
        generate_demo_dataset(out_dir, **arguments)  # type: ignore[arg-type]
    assert not out_dir.exists()


# ---------------------------------------------------------------------------------------- atomic write


def test_a_failed_write_keeps_the_previous_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = generate_demo_dataset(tmp_path, train_rows=100, eval_rows=30, test_rows=30)
    before = {split: path.read_bytes() for split, path in files.items()}
    real_fsync = os.fsync
    calls = []

    def fsync_that_fails_on_the_second_file(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_that_fails_on_the_second_file)
    with pytest.raises(OSError, match="No space left"):
        generate_demo_dataset(tmp_path, seed=1, train_rows=100, eval_rows=30, test_rows=30)
    assert {split: path.read_bytes() for split, path in files.items()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["eval.jsonl", "test.jsonl", "train.jsonl"]


# ------------------------------------------------------------------------------------------------- CLI


def run_cli(*arguments: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "tasks.demo_dataset", *arguments],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_writes_the_files_and_prints_paths_and_label_counts(tmp_path: Path) -> None:
    out_dir = tmp_path / "cli"
    result = run_cli(
        "--out", str(out_dir), "--seed", "7", "--train-rows", "280", "--eval-rows", "70", "--test-rows", "70"
    )
    assert result.returncode == 0, result.stderr
    for split, rows in (("train", 280), ("eval", 70), ("test", 70)):
        path = out_dir / f"{split}.jsonl"
        assert str(path) in result.stdout
        assert len(read_rows(path)) == rows
    for intent in DEMO_INTENTS:
        assert intent in result.stdout
    expected = generate_demo_dataset(tmp_path / "api", seed=7, train_rows=280, eval_rows=70, test_rows=70)
    assert (out_dir / "train.jsonl").read_bytes() == expected["train"].read_bytes()


def test_cli_rejects_a_bad_noise_rate(tmp_path: Path) -> None:
    result = run_cli("--out", str(tmp_path / "cli"), "--noise-rate", "0.7")
    assert result.returncode == 2
    assert "noise_rate" in result.stderr
    assert not (tmp_path / "cli").exists()


def test_import_does_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", "import tasks.demo_dataset"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert list(tmp_path.iterdir()) == []
