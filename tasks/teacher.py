"""Teacher stage: fine-tune the FP32 encoder classifier that the INT8 student is distilled from.

Output (``out_dir``)::

    model/       # best-eval-epoch checkpoint (transformers save_pretrained, safetensors)
    tokenizer/   # the encoder's tokenizer (tokenizer.json is what every later stage and the server use)
    teacher.json # TeacherResult: per-epoch history, best epoch, eval accuracy, device
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from enginekit.bundle import write_json_atomic
from enginekit.tokenization import TextEncoder
from tasks.config import TeacherConfig
from tasks.data import PreparedData
from tasks.modeling import SplitBatches, build_classifier, resolve_encoder, seed_everything
from tasks.training import (
    EpochRecord,
    barrier,
    fine_tune,
    is_main_process,
    job_fingerprint,
    pick_device_for_rank,
    training_markdown,
)


@dataclass(frozen=True)
class TeacherResult:
    directory: str
    best_epoch: int
    eval_accuracy: float
    history: list[dict[str, Any]]
    """Per epoch: train loss, eval accuracy, learning rate, schedule phase, seconds (the eval curve)."""
    device: str
    max_seq_length: int
    stop_reason: str = ""
    """``plateau`` (eval stopped improving: the normal ending), ``ceiling``, ``early_stop`` or ``planned``."""
    stop_detail: str = ""
    learning_rate: float = 0.0
    learning_rate_reason: str = ""
    """Why this rate: the configured one, or the probe's scores and choice."""
    learning_rate_probe: list[dict[str, float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    """Wall time of the training loop."""

    @property
    def model_dir(self) -> Path:
        return Path(self.directory) / "model"

    @property
    def report_path(self) -> Path:
        """The training report: eval curve per epoch, why training stopped, the learning rate's reason."""
        return Path(self.directory) / "training.md"

    def metrics(self) -> dict[str, float]:
        return {
            "teacher_epochs": float(len(self.history)),
            "teacher_best_epoch": float(self.best_epoch),
            "teacher_eval_accuracy": self.eval_accuracy,
            "teacher_learning_rate": self.learning_rate,
            "teacher_training_seconds": self.seconds,
        }

    def metric_history(self) -> dict[str, list[float]]:
        """The per-epoch curve as MLflow metric series (step = epoch)."""
        return {
            f"teacher.{name}": [float(record.get(name, 0.0)) for record in self.history]
            for name in ("eval_accuracy", "train_loss", "learning_rate")
        }

    def tags(self) -> dict[str, str]:
        tags = {
            "teacher_stop_reason": self.stop_reason,
            "teacher_stop_detail": self.stop_detail,
            "teacher_learning_rate_reason": self.learning_rate_reason,
            "teacher_warnings": " | ".join(self.warnings) or "none",
        }
        return {key: value[:5000] for key, value in tags.items()}  # MLflow's limit on a tag value

    def report_markdown(self) -> str:
        return training_markdown(
            f"FP32 teacher: {len(self.history)} epochs, best eval accuracy {100 * self.eval_accuracy:.2f}% "
            f"(epoch {self.best_epoch}), {self.seconds / 60:.1f} min",
            self.history,
            self.best_epoch,
            self.stop_reason,
            self.stop_detail,
            self.learning_rate_reason,
            self.learning_rate_probe,
            self.warnings,
        )

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
    outcome = fine_tune(
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
    result = TeacherResult(
        directory=str(out_dir),
        best_epoch=outcome.best_epoch,
        eval_accuracy=outcome.best_accuracy,
        history=[asdict(record) for record in outcome.history],
        device=str(device),
        max_seq_length=config.max_seq_length,
        stop_reason=outcome.stop_reason,
        stop_detail=outcome.stop_detail,
        learning_rate=outcome.learning_rate,
        learning_rate_reason=outcome.learning_rate_reason,
        learning_rate_probe=[asdict(record) for record in outcome.probe],
        warnings=outcome.warnings,
        seconds=outcome.seconds,
    )
    if main_process:
        write_json_atomic(out_dir / "teacher.json", asdict(result))
        result.report_path.write_text(result.report_markdown())
    return result


@task(name="train-teacher", cache_policy=NO_CACHE, persist_result=False)
def train_teacher_task(config: TeacherConfig, data: PreparedData, out_dir: str) -> TeacherResult:
    logger = get_run_logger()
    if config.training.processes > 1:
        from tasks.distributed import run_teacher

        result = run_teacher(config, data, Path(out_dir), log=logger.info)
    else:
        result = train_teacher(config, data, Path(out_dir), log=logger.info)
    for warning in result.warnings:
        logger.warning(f"teacher: {warning}")
    create_markdown_artifact(key="teacher-training", markdown=result.report_markdown())
    return result
