"""Texts → token-id arrays, the same way in training, export, validation and serving.

Training and serving share this one encoder (the HF ``tokenizers`` library reading ``tokenizer.json``),
so a served engine sees exactly the token ids its weights were trained and calibrated on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

TOKENIZER_FILE = "tokenizer.json"
MODEL_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class EncodedBatch:
    """int64 arrays of shape (batch, longest sequence in the batch)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray

    def as_feed(self) -> dict[str, np.ndarray]:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
        }

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass(frozen=True)
class TokenizedRow:
    """One text (or text pair), tokenized and truncated, not padded."""

    input_ids: list[int]
    token_type_ids: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


class TextEncoder:
    """Tokenizes with truncation to ``max_length`` and pads to the longest sequence of each batch.

    Padding to the batch's longest sequence (not to ``max_length``) keeps short search queries cheap.
    ``encode`` does both at once; a server that groups rows by length first calls ``tokenize`` and then
    ``collate`` on each group (same ids, same padding).
    """

    def __init__(self, tokenizer_dir: Path, max_length: int) -> None:
        path = Path(tokenizer_dir) / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: a fast tokenizer file is required (save the tokenizer with "
                "transformers' save_pretrained, which writes tokenizer.json)"
            )
        self.max_length = max_length
        self._tokenizer = Tokenizer.from_file(str(path))
        pad_id = self._tokenizer.token_to_id("[PAD]")
        self.pad_id = pad_id if pad_id is not None else 0
        self._tokenizer.no_padding()  # padding is ours (``collate``): to each batch's longest row
        self._tokenizer.enable_truncation(max_length=max_length)

    def tokenize(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None) -> list[TokenizedRow]:
        if text_pairs is not None:
            if len(text_pairs) != len(texts):
                raise ValueError(f"{len(texts)} texts but {len(text_pairs)} text pairs")
            encodings = self._tokenizer.encode_batch(list(zip(texts, text_pairs, strict=True)))
        else:
            encodings = self._tokenizer.encode_batch(list(texts))
        return [TokenizedRow(e.ids, e.type_ids) for e in encodings]

    def collate(self, rows: Sequence[TokenizedRow]) -> EncodedBatch:
        """Right-pad ``rows`` to the longest of them (pad id, attention mask 0, token type 0)."""
        longest = max((len(row) for row in rows), default=0)
        input_ids = np.full((len(rows), longest), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(rows), longest), dtype=np.int64)
        token_type_ids = np.zeros((len(rows), longest), dtype=np.int64)
        for index, row in enumerate(rows):
            input_ids[index, : len(row)] = row.input_ids
            attention_mask[index, : len(row)] = 1
            token_type_ids[index, : len(row)] = row.token_type_ids
        return EncodedBatch(input_ids, attention_mask, token_type_ids)

    def encode(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None) -> EncodedBatch:
        return self.collate(self.tokenize(texts, text_pairs))
