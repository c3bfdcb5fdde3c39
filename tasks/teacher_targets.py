"""The frozen teacher's outputs on the training rows, computed once per distillation stage.

Every distillation step (the smaller student's FP32 distillation, KD-QAT) needs the teacher's logits and,
with hidden-state distillation, some of its hidden states. The teacher is frozen and in eval mode (no
dropout), so its output for a row is the same in every epoch: running it once over the training split
instead of once per step and epoch removes its forward pass from the training loop (a quarter of a 3-layer
student's distillation step on the 2-core CPU, BENCHMARKS.md section 6, ``bench/distill_cost.py``).

Rows are found by their token ids and token types, so any batching of the split finds them and identical
rows share one entry; a batch holding a row that is not cached is run through the teacher as before.
Hidden states are kept for real tokens only (not padding) and only for the layers the student is
distilled from; when they would take more than ``max_bytes`` of memory, nothing is cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from enginekit.tokenization import TextEncoder
from tasks.modeling import SplitBatches, to_torch

MAX_BYTES = 3 << 30
"""Largest cache built: the demo's 3-layer student needs ~0.3 GiB (6,000 rows, ~47k tokens, 4 hidden states of 384)."""


def _key(input_ids: np.ndarray, token_type_ids: np.ndarray) -> bytes:
    return input_ids.tobytes() + b"|" + token_type_ids.tobytes()


@dataclass
class TeacherTargets:
    index: dict[bytes, int]
    logits: torch.Tensor
    """(rows, labels), float32, on the CPU."""
    states: torch.Tensor | None
    """(real tokens of every row, kept hidden states, hidden size), float32, on the CPU; None: logits only."""
    offsets: np.ndarray
    """Row i's tokens are states[offsets[i]:offsets[i + 1]]."""

    @classmethod
    @torch.inference_mode()
    def build(
        cls,
        teacher: torch.nn.Module,
        split: SplitBatches,
        encoder: TextEncoder,
        hidden_states: Sequence[int] | None,
        device: torch.device,
        batch_size: int = 128,
        max_bytes: int = MAX_BYTES,
    ) -> TeacherTargets | None:
        """Run ``teacher`` (in eval mode) once over ``split``; keep its logits and the ``hidden_states``
        (indices into its ``hidden_states`` output, 0 = embeddings). None when the states exceed max_bytes."""
        rows = split.tokenized(encoder)
        lengths = np.array([len(row) for row in rows], dtype=np.int64)
        kept = list(hidden_states or [])
        hidden = int(teacher.config.hidden_size)
        if int(lengths.sum()) * len(kept) * hidden * 4 > max_bytes:
            return None
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        states = torch.empty((int(offsets[-1]), len(kept), hidden)) if kept else None
        logits: torch.Tensor | None = None
        index: dict[bytes, int] = {}
        was_training = teacher.training
        teacher.eval()
        order = np.argsort(lengths, kind="stable")  # shortest first: batches pad little
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = encoder.collate([rows[i] for i in chunk])
            output = teacher(**to_torch(batch, device), output_hidden_states=bool(kept))
            if logits is None:
                logits = torch.empty((len(rows), output.logits.shape[-1]))
            logits[chunk] = output.logits.float().cpu()
            if states is not None:
                stacked = torch.stack([output.hidden_states[i] for i in kept], dim=2).float().cpu()
                for position, row in enumerate(chunk):
                    states[offsets[row] : offsets[row + 1]] = stacked[position, : lengths[row]]
            for position, row in enumerate(chunk):
                index.setdefault(
                    _key(batch.input_ids[position, : lengths[row]], batch.token_type_ids[position, : lengths[row]]),
                    int(row),
                )
        teacher.train(was_training)
        assert logits is not None, "TeacherTargets.build on an empty split"
        return cls(index, logits, states, offsets)

    @property
    def nbytes(self) -> int:
        return self.logits.nbytes + (self.states.nbytes if self.states is not None else 0)

    def lookup(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]] | None:
        """The teacher's logits and kept hidden states (each (batch, longest, hidden), zero on padding) for a
        right-padded batch, on its device; None if a row of it is not cached."""
        ids = inputs["input_ids"].cpu().numpy()
        types = inputs["token_type_ids"].cpu().numpy()
        lengths = inputs["attention_mask"].cpu().numpy().sum(axis=1)
        rows = []
        for position, length in enumerate(lengths):
            row = self.index.get(_key(ids[position, :length], types[position, :length]))
            if row is None:
                return None
            rows.append(row)
        device = inputs["input_ids"].device
        logits = self.logits[rows].to(device)
        if self.states is None:
            return logits, ()
        padded = torch.zeros((len(rows), ids.shape[1], self.states.shape[1], self.states.shape[2]))
        for position, row in enumerate(rows):
            padded[position, : lengths[position]] = self.states[self.offsets[row] : self.offsets[row + 1]]
        padded = padded.to(device)
        return logits, tuple(padded[:, :, i] for i in range(self.states.shape[1]))
