"""Texts → token-id arrays, the same way in training, export, validation and serving.

Training and serving share this one encoder (the HF ``tokenizers`` library reading ``tokenizer.json``),
so a served engine sees exactly the token ids its weights were trained and calibrated on.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

TOKENIZER_FILE = "tokenizer.json"
MODEL_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")

_LOADED: OrderedDict[tuple[str, int], Tokenizer] = OrderedDict()
_LOADED_LOCK = threading.Lock()
_LOADED_LIMIT = 4


def _load_tokenizer(path: Path, max_length: int) -> Tokenizer:
    """The tokenizer in ``path``, configured for ``max_length``; one already loaded from the same bytes is reused.

    Parsing a tokenizer.json holds the GIL for tens of milliseconds (~80 ms for a BERT vocabulary here);
    a server that swaps to a retrained model of the same encoder would stall its event loop and batcher
    on every swap for nothing. A loaded tokenizer is never changed after this function (encoding only
    reads it), so sharing one between engines is safe.
    """
    content = path.read_bytes()
    key = (hashlib.sha256(content).hexdigest(), max_length)
    with _LOADED_LOCK:
        if key in _LOADED:
            _LOADED.move_to_end(key)
            return _LOADED[key]
    tokenizer = Tokenizer.from_str(content.decode("utf-8"))
    tokenizer.no_padding()  # padding is ours (``TextEncoder.collate``): to each batch's longest row
    tokenizer.enable_truncation(max_length=max_length)
    with _LOADED_LOCK:
        _LOADED[key] = tokenizer
        while len(_LOADED) > _LOADED_LIMIT:
            _LOADED.popitem(last=False)
    return tokenizer


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
        self._tokenizer = _load_tokenizer(path, max_length)
        pad_id = self._tokenizer.token_to_id("[PAD]")
        self.pad_id = pad_id if pad_id is not None else 0

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
