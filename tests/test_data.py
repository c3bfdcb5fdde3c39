import json

import pandas as pd
import pytest
from datasets import Dataset, DatasetDict

from tasks.config import DataConfig
from tasks.data import DataError, prepare_data, stratified_indices

LABELS = ["weather", "shopping", "news"]


def rows(count, offset=0):
    return [
        {"query": f"query number {i + offset} about {LABELS[i % 3]}", "intent": LABELS[i % 3]} for i in range(count)
    ]


def config(source, **kwargs):
    return DataConfig(source=str(source), text_column="query", label_column="intent", **kwargs)


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_single_csv_is_split_stratified(tmp_path):
    path = tmp_path / "all.csv"
    pd.DataFrame(rows(300)).to_csv(path, index=False)
    prepared = prepare_data(config(path), tmp_path / "out")
    assert prepared.rows["train"] + prepared.rows["eval"] + prepared.rows["test"] == 300
    assert prepared.rows["eval"] == 30 and prepared.rows["test"] == 30
    assert prepared.labels == sorted(LABELS)
    splits = prepared.load()
    for name in ("train", "eval", "test"):
        assert set(splits[name]["label"]) == {0, 1, 2}, name
    all_texts = [t for name in ("train", "eval", "test") for t in splits[name]["text"]]
    assert len(all_texts) == len(set(all_texts)), "a row landed in two splits"
    assert json.loads((tmp_path / "out" / "labels.json").read_text()) == sorted(LABELS)


def test_directory_of_split_files_and_parquet(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name, count, offset in (("train", 60, 0), ("eval", 12, 1000), ("test", 15, 2000)):
        pd.DataFrame(rows(count, offset)).to_parquet(source / f"{name}.parquet")
    prepared = prepare_data(config(source), tmp_path / "out")
    assert prepared.rows == {"train": 60, "eval": 12, "test": 15}


def test_jsonl_file_with_text_pair(tmp_path):
    records = [dict(r, title=f"title {i}") for i, r in enumerate(rows(90))]
    path = write_jsonl(tmp_path / "pairs.jsonl", records)
    prepared = prepare_data(config(path, text_pair_column="title"), tmp_path / "out")
    assert prepared.text_pair
    assert prepared.load()["train"][0]["text_pair"].startswith("title")


def test_saved_dataset_with_class_label(tmp_path):
    data = DatasetDict(
        {
            "train": Dataset.from_dict({"query": [f"q{i}" for i in range(40)], "intent": [i % 2 for i in range(40)]}),
            "test": Dataset.from_dict({"query": [f"t{i}" for i in range(10)], "intent": [i % 2 for i in range(10)]}),
        }
    )
    data = data.class_encode_column("intent")
    data.save_to_disk(str(tmp_path / "saved"))
    prepared = prepare_data(config(tmp_path / "saved"), tmp_path / "out")
    assert prepared.labels == ["0", "1"]
    assert prepared.rows["test"] == 10  # the source's own test split is kept, eval is carved from train
    assert prepared.rows["eval"] == 4


def test_fingerprint_is_stable_and_content_sensitive(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", rows(120))
    first = prepare_data(config(path), tmp_path / "o1").fingerprint
    assert prepare_data(config(path), tmp_path / "o2").fingerprint == first
    changed = rows(120)
    changed[5]["query"] = "something else entirely"
    path2 = write_jsonl(tmp_path / "b.jsonl", changed)
    assert prepare_data(config(path2), tmp_path / "o3").fingerprint != first


def test_row_caps_are_stratified(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", rows(600))
    prepared = prepare_data(config(path, max_train_rows=90, max_test_rows=30), tmp_path / "out")
    assert prepared.rows["train"] == 90 and prepared.rows["test"] == 30
    assert sorted(set(prepared.load()["train"]["label"])) == [0, 1, 2]


def test_missing_column_is_named(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "x", "intent": "a"}] * 10)
    with pytest.raises(DataError) as error:
        prepare_data(config(path), tmp_path / "out")
    assert "missing column(s) ['query']" in str(error.value)
    assert "a.jsonl" in str(error.value)


@pytest.mark.parametrize(
    ("bad_value", "expected"),
    [("", "row 3: query is empty"), ("   ", "row 3: query is empty"), (None, "row 3: query is NoneType")],
)
def test_bad_texts_name_split_and_row(tmp_path, bad_value, expected):
    records = rows(30)
    records[3]["query"] = bad_value
    path = write_jsonl(tmp_path / "a.jsonl", records)
    with pytest.raises(DataError) as error:
        prepare_data(config(path), tmp_path / "out")
    assert expected in str(error.value)
    assert "split 'train'" in str(error.value)
    assert "a.jsonl" in str(error.value)


def test_numeric_text_column_is_refused(tmp_path):
    path = tmp_path / "a.parquet"
    pd.DataFrame({"query": list(range(30)), "intent": [LABELS[i % 3] for i in range(30)]}).to_parquet(path)
    with pytest.raises(DataError, match="30 bad text value"):
        prepare_data(config(path), tmp_path / "out")


def test_label_in_test_but_not_train(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    write_jsonl(source / "train.jsonl", rows(30))
    write_jsonl(source / "test.jsonl", [*rows(6), {"query": "book a table", "intent": "restaurant"}])
    with pytest.raises(DataError, match=r"test split: label\(s\) absent from train: \{'restaurant': 1\}"):
        prepare_data(config(source), tmp_path / "out")


def test_single_class_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"query": f"q{i}", "intent": "only"} for i in range(30)])
    with pytest.raises(DataError, match="need at least 2"):
        prepare_data(config(path), tmp_path / "out")


def test_empty_split_is_refused(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    write_jsonl(source / "train.jsonl", rows(30))
    (source / "test.jsonl").write_text("")
    with pytest.raises(DataError):
        prepare_data(config(source), tmp_path / "out")


def test_missing_path_and_unknown_type(tmp_path):
    with pytest.raises(DataError, match="no such file or directory"):
        prepare_data(config(tmp_path / "missing.csv"), tmp_path / "out")
    odd = tmp_path / "data.xlsx"
    odd.write_text("x")
    with pytest.raises(DataError, match="unknown file type"):
        prepare_data(config(odd), tmp_path / "out")


def test_malformed_file_is_reported_with_path(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"query": "a", "intent": "x"}\n{not json\n')
    with pytest.raises(DataError, match=r"broken\.jsonl"):
        prepare_data(config(path), tmp_path / "out")


def test_stratified_indices_keep_every_class():
    labels = ["a"] * 50 + ["b"] * 10 + ["c"] * 2 + ["d"]
    rest, held = stratified_indices(labels, 0.2, seed=1)
    assert sorted(rest + held) == list(range(len(labels)))
    held_labels = [labels[i] for i in held]
    assert held_labels.count("a") == 10 and held_labels.count("b") == 2 and held_labels.count("c") == 1
    assert "d" not in held_labels  # a single-row class stays in train
