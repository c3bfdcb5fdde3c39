"""Teacher stage: fine-tune the FP32 encoder classifier that the INT8 student is distilled from.

Output (``out_dir``)::

    model/       # best-eval-epoch checkpoint (transformers save_pretrained, safetensors)
    tokenizer/   # the encoder's tokenizer (tokenizer.json is what every later stage and the server use)
    teacher.json # TeacherResult: per-epoch history, best epoch, eval accuracy, device
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from enginekit.bundle import write_json_atomic
from enginekit.config import TeacherConfig
from enginekit.tokenization import TextEncoder
from tasks.data import PreparedData
from tasks.modeling import (
    EpochRecord,
    SplitBatches,
    barrier,
    build_classifier,
    fine_tune,
    is_main_process,
    job_fingerprint,
    pick_device_for_rank,
    resolve_encoder,
    seed_everything,
)


@dataclass(frozen=True)
class TeacherResult:
    directory: str
    best_epoch: int
    eval_accuracy: float
    history: list[dict[str, float]]
    device: str
    max_seq_length: int

    @property
    def model_dir(self) -> Path:
        return Path(self.directory) / "model"

    @property
    def num_layers(self) -> int:
        """Encoder layers of the trained teacher (from its saved config)."""
        return int(json.loads((self.model_dir / "config.json").read_text())["num_hidden_layers"])

    @property
    def tokenizer_dir(self) -> Path:
        return Path(self.directory) / "tokenizer"

    def load(self, device: torch.device | str = "cpu") -> torch.nn.Module:
        return AutoModelForSequenceClassification.from_pretrained(self.model_dir).to(device).eval()


def save_tokenizer(encoder_spec: str, destination: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder(encoder_spec))
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"encoder {encoder_spec}: a fast tokenizer (tokenizer.json) is required")
    tokenizer.save_pretrained(str(destination))


def train_teacher(config: TeacherConfig, data: PreparedData, out_dir: Path, log=print) -> TeacherResult:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(config.training.seed)
    device = pick_device_for_rank(config.device)
    main_process = is_main_process()
    tokenizer_dir = out_dir / "tokenizer"
    if main_process:
        save_tokenizer(config.encoder, tokenizer_dir)
    barrier()
    encoder = TextEncoder(tokenizer_dir, config.max_seq_length)

    splits = data.load()
    train = SplitBatches.from_dataset(splits["train"])
    evaluation = SplitBatches.from_dataset(splits["eval"])
    model = build_classifier(config, len(data.labels), dict(enumerate(data.labels))).to(device)
    log(
        f"teacher: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters on {device}, "
        f"{len(train)} train / {len(evaluation)} eval rows"
    )

    def cross_entropy(model: torch.nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(model(**inputs).logits, labels)

    model_dir = out_dir / "model"

    def save_best(model: torch.nn.Module, record: EpochRecord) -> None:
        staging = out_dir / ".model.partial"
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(str(staging))
        shutil.rmtree(model_dir, ignore_errors=True)
        staging.rename(model_dir)

    checkpoint_dir = out_dir / "checkpoint"
    job = job_fingerprint("teacher", config.model_dump(mode="json"), data.fingerprint)
    history = fine_tune(
        model,
        train,
        evaluation,
        encoder,
        config.training,
        device,
        cross_entropy,
        save_best,
        log,
        checkpoint_dir=checkpoint_dir,
        job_fingerprint=job,
    )
    if main_process:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # only needed to resume an interrupted run
    best = max(history, key=lambda record: record.eval_accuracy)
    result = TeacherResult(
        directory=str(out_dir),
        best_epoch=best.epoch,
        eval_accuracy=best.eval_accuracy,
        history=[asdict(record) for record in history],
        device=str(device),
        max_seq_length=config.max_seq_length,
    )
    if main_process:
        write_json_atomic(out_dir / "teacher.json", asdict(result))
    return result


@task(name="train-teacher", cache_policy=NO_CACHE, persist_result=False)
def train_teacher_task(config: TeacherConfig, data: PreparedData, out_dir: str) -> TeacherResult:
    logger = get_run_logger()
    if config.training.processes > 1:
        from tasks.distributed import run_teacher

        return run_teacher(config, data, Path(out_dir), log=logger.info)
    return train_teacher(config, data, Path(out_dir), log=logger.info)
