"""The one fine-tuning loop of every torch stage (teacher, the smaller student's FP32 distillation, KD-QAT).

AdamW, eval after every epoch, the best epoch kept, per-epoch trainer checkpoints (a retried task resumes),
DistributedDataParallel under ``torchrun``, and a learning-rate schedule that follows the real number of
steps (``training.schedule``):

- ``plateau`` (teacher, distillation; "warmup-stable-decay"): linear warmup, then the constant peak rate for
  as long as eval accuracy keeps improving. When it has not improved by more than
  ``early_stopping_min_delta`` for ``early_stopping_patience`` epochs (and ``min_steps`` are done), the rate
  decays linearly to zero over ``decay_epochs`` epochs and training stops: a plateau is the normal ending.
  No length is planned, so nothing depends on a fixed epoch count. ``epochs`` is only a ceiling; if it
  comes first, its last ``decay_epochs`` epochs decay and the outcome warns that eval was still improving.
- ``linear`` (KD-QAT's short, gentle schedule): warmup, then linear decay to zero at the planned end
  (``epochs``, or more when ``min_steps`` asks); early stopping may end it sooner.

An optional learning-rate probe (``training.learning_rate_probe``) trains a few hundred steps at each
candidate rate from the same start, scores each on a subset of the eval split, and continues the best one
(its weights and optimizer state) as the run. Whatever rate is used is recorded with the reason.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from enginekit.tokenization import EncodedBatch, TextEncoder
from tasks.config import TrainingConfig
from tasks.modeling import SplitBatches, accuracy, predict_logits, seed_everything, to_torch

LossFunction = Callable[[torch.nn.Module, dict[str, torch.Tensor], torch.Tensor], torch.Tensor]
TRAINER_STATE_FILE = "trainer.pt"


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    eval_accuracy: float
    seconds: float
    learning_rate: float = 0.0
    """Learning rate of the epoch's last optimizer step."""
    phase: str = ""
    """``stable`` (held rate), ``falling`` (rate_decay_per_epoch), ``reduced`` (after a plateau cut it) or
    ``decay`` (plateau schedule); ``linear`` or ``anneal`` (those schedules)."""


@dataclass(frozen=True)
class ProbeRecord:
    learning_rate: float
    eval_accuracy: float
    train_loss: float
    """Mean loss of the probe's last 50 steps."""


STOP_REASONS = ("plateau", "ceiling", "early_stop", "planned")


@dataclass(frozen=True)
class TrainingOutcome:
    history: list[EpochRecord]
    best_epoch: int
    """The epoch whose weights were kept; 0 when no epoch beat the baseline."""
    best_accuracy: float
    stop_reason: str
    """``plateau``: eval stopped improving (the normal ending); ``ceiling``: ``epochs`` came first;
    ``early_stop``: a linear schedule's patience ran out; ``planned``: a linear schedule ran its epochs."""
    stop_detail: str
    learning_rate: float
    learning_rate_reason: str
    probe: list[ProbeRecord] = field(default_factory=list)
    still_improving: bool = False
    """Stopped by the ceiling while eval accuracy was still improving: more epochs would likely help."""
    seconds: float = 0.0

    @property
    def warnings(self) -> list[str]:
        if not self.still_improving:
            return []
        return [
            f"training stopped at its ceiling of {len(self.history)} epochs while eval accuracy was still "
            f"improving (best {100 * self.best_accuracy:.2f}% at epoch {self.best_epoch}); raise training.epochs"
        ]


SCHEDULE_REVISIONS: dict[str, int] = {"linear": 1, "plateau": 1, "anneal": 2}
"""Bumped when a change to the loop changes what a given config of that schedule trains, so results kept
across runs (the teacher grid's cell summaries) are trained again instead of reused. anneal 2: an
extension that brings no gain within the patience stops training (2026-12-07)."""


@dataclass
class LearningRateSchedule:
    """Warmup to ``peak``; then the held level (``peak * scale``, multiplied by ``per_step`` after every
    step: 1.0 holds it constant); once ``decay_start`` is set, a linear decay from the level reached to zero."""

    peak: float
    warmup_steps: int
    decay_start: int | None = None
    decay_steps: int = 0
    scale: float = 1.0
    """A plateau that reduces the rate multiplies it (``plateau_reductions``)."""
    per_step: float = 1.0
    """Exponential decay of the held level per optimizer step after warmup (``rate_decay_per_epoch``)."""

    def rate(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based)."""
        held = step if self.decay_start is None else min(step, self.decay_start)
        level = self.scale * self.per_step ** max(0, held - self.warmup_steps)
        factor = 1.0
        if step < self.warmup_steps:
            factor = (step + 1) / self.warmup_steps
        if self.decay_start is not None and step >= self.decay_start:
            remaining = self.decay_start + self.decay_steps - step
            factor = min(factor, max(0.0, remaining / max(1, self.decay_steps)))
        return self.peak * level * factor

    def decay_done(self, step: int) -> bool:
        return self.decay_start is not None and step >= self.decay_start + self.decay_steps


# ------------------------------------------------------------------------------------- processes (torchrun)


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
    from tasks.modeling import pick_device

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


# ----------------------------------------------------------------------------------------- checkpoints


def _save_trainer_state(directory: Path, state: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    staging = directory / f".{TRAINER_STATE_FILE}.partial"
    torch.save(state, staging)
    staging.replace(directory / TRAINER_STATE_FILE)


def _load_trainer_state(directory: Path | None, fingerprint: str) -> dict | None:
    """The last epoch's state if it belongs to this same training job, else None."""
    if directory is None or not (directory / TRAINER_STATE_FILE).is_file():
        return None
    # weights_only: tensors and plain containers only; a checkpoint cannot run code when it is loaded.
    state = torch.load(directory / TRAINER_STATE_FILE, map_location="cpu", weights_only=True)
    return state if state.get("fingerprint") == fingerprint else None


def can_resume(checkpoint_dir: Path, job_fingerprint: str) -> bool:
    return _load_trainer_state(checkpoint_dir, job_fingerprint) is not None


def job_fingerprint(*parts: object) -> str:
    """Identity of a training job (config, data, starting weights): a checkpoint resumes only its own job."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# ------------------------------------------------------------------------------------------------ loop


def _optimizer(model: torch.nn.Module, config: TrainingConfig, learning_rate: float) -> torch.optim.Optimizer:
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in trainable if not n.endswith(no_decay)], "weight_decay": config.weight_decay},
        {"params": [p for n, p in trainable if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    # The fused kernel (CPU and CUDA): one pass over every parameter instead of a dozen elementwise ops per
    # tensor. On the 2-core CPU it cut the AdamW step of the 22.7M-parameter MiniLM (half of it the word
    # embeddings, updated densely every step) from ~105 ms to ~15 ms, a quarter of a training step.
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for _, p in trainable)
    return torch.optim.AdamW(groups, lr=learning_rate, fused=fused or None)


@dataclass
class _Stepper:
    """Optimizer steps with the schedule's rate; counts steps across epochs (and the probe)."""

    trained: torch.nn.Module
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LearningRateSchedule
    loss_function: LossFunction
    device: torch.device
    max_grad_norm: float
    step: int = 0

    def run(self, batches: Iterator[tuple[EncodedBatch, np.ndarray]]) -> list[float]:
        losses = []
        self.model.train()
        for batch, labels in batches:
            for group in self.optimizer.param_groups:
                group["lr"] = self.schedule.rate(self.step)
            loss = self.loss_function(
                self.trained, to_torch(batch, self.device), torch.from_numpy(labels).to(self.device)
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
            self.optimizer.step()
            self.step += 1
            losses.append(float(loss.detach()))
        return losses

    @property
    def current_rate(self) -> float:
        return self.schedule.rate(max(0, self.step - 1))


def _epoch_batches(
    train: SplitBatches, encoder: TextEncoder, config: TrainingConfig, seed: int, steps_per_epoch: int
) -> Iterator[tuple[EncodedBatch, np.ndarray]]:
    """One epoch's shuffled, length-bucketed batches; under torchrun every rank takes its share."""
    rank, world_size = world()
    batches = train.iterate(encoder, config.batch_size, shuffle_seed=seed)
    if world_size > 1:  # same shuffle on every rank; each takes every world_size-th batch, equal counts
        batches = itertools.islice(batches, rank, steps_per_epoch * world_size, world_size)
    return batches


def _probe_learning_rate(
    stepper: _Stepper,
    train: SplitBatches,
    evaluation: SplitBatches,
    encoder: TextEncoder,
    config: TrainingConfig,
    steps_per_epoch: int,
    log: Callable[[str], None],
) -> tuple[float, str, list[ProbeRecord]]:
    """Train ``probe.steps`` steps at each candidate rate from the same start; continue the best.

    Leaves ``stepper`` holding the best candidate's weights, optimizer state and step count.
    """
    probe = config.learning_rate_probe
    rng = np.random.default_rng(config.seed)
    rows = np.sort(rng.permutation(len(evaluation))[: probe.eval_rows])
    subset = evaluation.subset(rows)
    start_model = copy.deepcopy(stepper.model.state_dict())
    records: list[ProbeRecord] = []
    best: tuple[float, float, dict, dict] | None = None  # (accuracy, -rate, model state, optimizer state)
    for rate in probe.learning_rates:
        seed_everything(config.seed)
        stepper.model.load_state_dict(start_model)
        stepper.optimizer = _optimizer(stepper.model, config, rate)
        stepper.schedule = LearningRateSchedule(rate, stepper.schedule.warmup_steps)
        stepper.step = 0
        losses: list[float] = []
        for epoch in itertools.count(1):
            remaining = probe.steps - stepper.step
            if remaining <= 0:
                break
            batches = _epoch_batches(train, encoder, config, config.seed + 10_000 + epoch, steps_per_epoch)
            losses += stepper.run(itertools.islice(batches, remaining))
        logits = predict_logits(stepper.model, subset, encoder, config.eval_batch_size, stepper.device)
        score = _agreed(accuracy(logits.argmax(-1), subset.labels), stepper.device)
        records.append(ProbeRecord(rate, score, float(np.mean(losses[-50:]))))
        log(f"learning-rate probe: {rate:g} → eval accuracy {score:.4f} after {stepper.step} steps")
        if best is None or (score, -rate) > best[:2]:
            best = (
                score,
                -rate,
                copy.deepcopy(stepper.model.state_dict()),
                copy.deepcopy(stepper.optimizer.state_dict()),
            )
    assert best is not None
    chosen = -best[1]
    stepper.model.load_state_dict(best[2])
    stepper.optimizer = _optimizer(stepper.model, config, chosen)
    stepper.optimizer.load_state_dict(best[3])
    stepper.step = probe.steps
    scores = ", ".join(f"{r.learning_rate:g} → {100 * r.eval_accuracy:.2f}%" for r in records)
    reason = (
        f"learning-rate probe ({probe.steps} steps each from the same start, scored on {len(subset)} eval rows: "
        f"{scores}): {chosen:g} scored best and was continued"
    )
    return chosen, reason, records


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
) -> TrainingOutcome:
    """Train ``model`` with ``loss_function``; ``save_best`` on every eval improvement. Seeded.

    One loop for the teacher and the students: they differ only in ``loss_function`` and ``config``. An
    epoch is saved only if it beats ``baseline_accuracy`` and every earlier epoch. With ``checkpoint_dir``
    the whole trainer state (weights, optimizer, schedule, RNG, history) is written after every epoch, and a
    later call for the same job (equal ``job_fingerprint``: same config, data and starting model) continues
    after the last finished epoch instead of starting over: a retried task resumes.

    Under ``torchrun`` the model is wrapped in DistributedDataParallel, each rank trains on its share of
    every epoch's batches (gradients averaged), every rank evaluates, rank 0's eval numbers decide, and only
    rank 0 saves and checkpoints.
    """
    started = time.perf_counter()
    seed_everything(config.seed)
    rank, world_size = world()
    trained = model
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    steps_per_epoch = max(1, ((len(train) + config.batch_size - 1) // config.batch_size) // world_size)
    min_epochs = -(-config.min_steps // steps_per_epoch)
    plateau = config.schedule == "plateau"
    anneal = config.schedule == "anneal"
    horizon = 0  # anneal: the planned epochs (extended while eval improves)
    extensions: list[str] = []
    extended_after = 0  # anneal: the epoch after which the plan was last extended (0: never)
    if plateau:
        last_epoch = max(config.epochs, min_epochs + config.decay_epochs)
        schedule = LearningRateSchedule(
            config.learning_rate,
            int(config.warmup_ratio * max(config.min_steps, steps_per_epoch)),
            per_step=config.rate_decay_per_epoch ** (1 / steps_per_epoch),
        )
    elif anneal:
        last_epoch = max(config.epochs, min_epochs)
        horizon = min(last_epoch, max(config.horizon_epochs, min_epochs))
        total = horizon * steps_per_epoch
        warmup = int(config.warmup_ratio * total)
        schedule = LearningRateSchedule(config.learning_rate, warmup, decay_start=warmup, decay_steps=total - warmup)
    else:
        last_epoch = max(config.epochs, min_epochs)
        total = last_epoch * steps_per_epoch
        warmup = int(config.warmup_ratio * total)
        schedule = LearningRateSchedule(config.learning_rate, warmup, decay_start=warmup, decay_steps=total - warmup)
    optimizer = _optimizer(model, config, config.learning_rate)
    stepper = _Stepper(trained, model, optimizer, schedule, loss_function, device, config.max_grad_norm)
    learning_rate, rate_reason = config.learning_rate, f"training.learning_rate {config.learning_rate:g} (probe off)"
    probe: list[ProbeRecord] = []
    history: list[EpochRecord] = []
    best_accuracy, best_epoch = baseline_accuracy, 0
    reference, reference_epoch, stale_epochs = baseline_accuracy, 0, 0  # the last significant improvement
    stop: tuple[str, str] | None = None
    decay_reason: tuple[str, str] | None = None
    reductions: list[str] = []  # plateaus that cut the rate (plateau_reductions)
    first_epoch = 1
    resumed = _load_trainer_state(checkpoint_dir, job_fingerprint)
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        learning_rate, rate_reason = resumed["learning_rate"], resumed["learning_rate_reason"]
        stepper.optimizer = _optimizer(model, config, learning_rate)
        stepper.optimizer.load_state_dict(resumed["optimizer"])
        stepper.schedule = schedule = LearningRateSchedule(**resumed["schedule"])
        stepper.step = resumed["step"]
        torch.set_rng_state(resumed["torch_rng"])
        history = [EpochRecord(**record) for record in resumed["history"]]
        probe = [ProbeRecord(**record) for record in resumed["probe"]]
        best_accuracy, best_epoch = resumed["best_accuracy"], resumed["best_epoch"]
        reference, reference_epoch, stale_epochs = resumed["reference"], resumed["reference_epoch"], resumed["stale"]
        decay_reason = tuple(resumed["decay_reason"]) if resumed["decay_reason"] else None  # type: ignore[assignment]
        reductions = list(resumed["reductions"])
        horizon, extensions = resumed["horizon"], list(resumed["extensions"])
        extended_after = resumed.get("extended_after", 0)
        stop = tuple(resumed["stop"]) if resumed["stop"] else None  # type: ignore[assignment]
        first_epoch = resumed["epoch"] + 1
        log(f"resuming after epoch {resumed['epoch']} from {checkpoint_dir}")
    elif config.learning_rate_probe.enabled:
        learning_rate, rate_reason, probe = _probe_learning_rate(
            stepper, train, evaluation, encoder, config, steps_per_epoch, log
        )
        schedule = stepper.schedule = LearningRateSchedule(
            learning_rate, schedule.warmup_steps, None, 0, per_step=schedule.per_step
        )
        if not plateau:  # the linear plan restarts its decay after the probe's steps
            total = stepper.step + (horizon if anneal else last_epoch) * steps_per_epoch
            schedule.decay_start, schedule.decay_steps = stepper.step, total - stepper.step
    log(f"learning rate {learning_rate:g}: {rate_reason}")

    for epoch in range(first_epoch, last_epoch + 1):
        if stop is not None:  # resumed after the epoch that ended the run
            break
        if (
            config.schedule == "linear"
            and config.early_stopping_patience is not None
            and stale_epochs >= config.early_stopping_patience
        ):
            stop = ("early_stop", f"no eval improvement for {stale_epochs} epoch(s) (early_stopping_patience)")
            log(f"early stop: no eval improvement for {stale_epochs} epoch(s)")
            break
        epoch_started = time.perf_counter()
        phase = config.schedule if not plateau else "decay" if schedule.decay_start is not None else "stable"
        if phase == "stable" and schedule.scale < 1.0:
            phase = "reduced"
        elif phase == "stable" and schedule.per_step < 1.0:
            phase = "falling"
        losses = stepper.run(_epoch_batches(train, encoder, config, config.seed + epoch, steps_per_epoch))
        logits = predict_logits(model, evaluation, encoder, config.eval_batch_size, device)
        record = EpochRecord(
            epoch=epoch,
            train_loss=float(np.mean(losses)),
            eval_accuracy=_agreed(accuracy(logits.argmax(-1), evaluation.labels), device),
            seconds=time.perf_counter() - epoch_started,
            learning_rate=stepper.current_rate,
            phase=phase,
        )
        history.append(record)
        ceiling_note = f"/{last_epoch}"
        if plateau:
            ceiling_note = f" (ceiling {last_epoch}, {phase})"
        elif anneal:
            ceiling_note = f"/{horizon} planned (ceiling {last_epoch})"
        log(
            f"epoch {epoch}{ceiling_note}: train loss {record.train_loss:.4f}, eval accuracy "
            f"{record.eval_accuracy:.4f}, lr {record.learning_rate:.3g} ({record.seconds:.0f} s)"
        )
        if record.eval_accuracy > best_accuracy:
            best_accuracy, best_epoch = record.eval_accuracy, epoch
            if rank == 0:
                save_best(model, record)
        if record.eval_accuracy > reference + config.early_stopping_min_delta:
            reference, reference_epoch, stale_epochs = record.eval_accuracy, epoch, 0
        else:
            stale_epochs += 1
        if plateau and schedule.decay_start is None:
            patience_ran_out = stale_epochs >= (config.early_stopping_patience or 0)
            if patience_ran_out and stepper.step >= config.min_steps:
                plateau_detail = (
                    f"eval accuracy did not improve by more than {100 * config.early_stopping_min_delta:.2f} points "
                    f"for {stale_epochs} epochs after epoch {reference_epoch} ({100 * reference:.2f}%)"
                )
                if len(reductions) < config.plateau_reductions and epoch + config.decay_epochs < last_epoch:
                    schedule.scale *= config.reduction_factor
                    stale_epochs = 0  # the patience starts again at the lower rate
                    reductions.append(f"after epoch {epoch} the rate was cut to {learning_rate * schedule.scale:.3g}")
                    log(f"{plateau_detail}: cutting the learning rate to {learning_rate * schedule.scale:.3g}")
                else:
                    earlier = f" ({'; '.join(reductions)})" if reductions else ""
                    decay_reason = ("plateau", plateau_detail + earlier)
            elif epoch + config.decay_epochs >= last_epoch:
                decay_reason = (
                    "ceiling",
                    f"reached the ceiling of {last_epoch} epochs (training.epochs) while eval accuracy was still "
                    f"improving (last gain above {100 * config.early_stopping_min_delta:.2f} points at epoch "
                    f"{reference_epoch})",
                )
            if decay_reason is not None and config.decay_epochs == 0:
                stop = (decay_reason[0], f"{decay_reason[1]}; training stopped after epoch {epoch}")
            elif decay_reason is not None:
                schedule.decay_start, schedule.decay_steps = stepper.step, config.decay_epochs * steps_per_epoch
                log(f"{decay_reason[1]}: decaying the learning rate to zero over {config.decay_epochs} epoch(s)")
        elif anneal:
            horizon, extended_after, stop = _anneal_decision(
                config,
                schedule,
                stepper.step,
                epoch,
                (horizon, extended_after),
                last_epoch,
                steps_per_epoch,
                (reference, reference_epoch),
                extensions,
                log,
            )
        elif plateau and schedule.decay_done(stepper.step):
            assert decay_reason is not None
            decayed = f"the learning rate then decayed to zero over {config.decay_epochs} epoch(s)"
            stop = (decay_reason[0], f"{decay_reason[1]}; {decayed} and training stopped after epoch {epoch}")
        if checkpoint_dir is not None and rank == 0:
            _save_trainer_state(
                checkpoint_dir,
                {
                    "fingerprint": job_fingerprint,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": stepper.optimizer.state_dict(),
                    "schedule": asdict(schedule),
                    "step": stepper.step,
                    "torch_rng": torch.get_rng_state(),
                    "history": [asdict(r) for r in history],
                    "probe": [asdict(r) for r in probe],
                    "learning_rate": learning_rate,
                    "learning_rate_reason": rate_reason,
                    "best_accuracy": best_accuracy,
                    "best_epoch": best_epoch,
                    "reference": reference,
                    "reference_epoch": reference_epoch,
                    "stale": stale_epochs,
                    "decay_reason": list(decay_reason) if decay_reason else None,
                    "reductions": reductions,
                    "horizon": horizon,
                    "extensions": extensions,
                    "extended_after": extended_after,
                    "stop": list(stop) if stop else None,
                },
            )
        if stop is not None:
            break
    if stop is None:
        stop = ("planned", f"trained the planned {len(history)} epoch(s)")
    barrier()  # rank 0's files are complete before any rank reads them
    model.eval()
    outcome = TrainingOutcome(
        history=history,
        best_epoch=best_epoch,
        best_accuracy=best_accuracy,
        stop_reason=stop[0],
        stop_detail=stop[1],
        learning_rate=learning_rate,
        learning_rate_reason=rate_reason,
        probe=probe,
        still_improving=stop[0] == "ceiling",
        seconds=time.perf_counter() - started,
    )
    log(f"stopped ({outcome.stop_reason}): {outcome.stop_detail}")
    for warning in outcome.warnings:
        log(f"warning: {warning}")
    return outcome


def _anneal_decision(
    config: TrainingConfig,
    schedule: LearningRateSchedule,
    step: int,
    epoch: int,
    plan: tuple[int, int],
    last_epoch: int,
    steps_per_epoch: int,
    last_gain: tuple[float, int],
    extensions: list[str],
    log: Callable[[str], None],
) -> tuple[int, int, tuple[str, str] | None]:
    """``anneal`` after an epoch: extend the plan while eval improves near its end, or stop.

    The rate always falls linearly to zero at the planned end. When the plan is within ``patience`` epochs
    of its end and eval gained (more than min_delta) within the last ``patience`` epochs, the end moves out
    by half the plan (at least ``patience`` epochs, at most to the ceiling) and the decay is re-planned from
    the rate reached, so it falls more slowly; the rate never jumps. An extension is a bet on further gains:
    once ``patience`` epochs pass after it (and after the last gain) without one, training stops there, as
    early stopping would, instead of running the extra epochs out (the best epoch is kept either way).
    ``plan`` is (planned epochs, epoch after which it was last extended or 0); returns the new plan and
    the stop."""
    horizon, extended_after = plan
    patience = config.early_stopping_patience or 1
    accuracy_at_gain, gain_epoch = last_gain
    improving = epoch - gain_epoch < patience
    gain = (
        f"last gain above {100 * config.early_stopping_min_delta:.2f} points at epoch {gain_epoch} "
        f"({100 * accuracy_at_gain:.2f}%)"
    )
    extended = f" (extended {'; '.join(extensions)})" if extensions else ""
    if epoch >= horizon:
        if improving and horizon >= last_epoch:
            detail = (
                f"reached the ceiling of {last_epoch} epochs (training.epochs) while eval accuracy was still "
                f"improving ({gain}); the plan{extended} ended with the rate at zero"
            )
            return horizon, extended_after, ("ceiling", detail)
        detail = (
            f"eval accuracy had not improved by more than {100 * config.early_stopping_min_delta:.2f} points for "
            f"{patience} epochs when the plan neared its end, so the plan of {horizon} epochs{extended} was not "
            f"extended and its rate reached zero after epoch {epoch} ({gain})"
        )
        return horizon, extended_after, ("plateau", detail)
    if extended_after and epoch - max(gain_epoch, extended_after) >= patience:
        detail = (
            f"eval accuracy had not improved by more than {100 * config.early_stopping_min_delta:.2f} points for "
            f"{patience} epochs since the plan was extended{extended}, so training stopped after epoch {epoch} "
            f"of {horizon} planned, the rate at {schedule.rate(step):.3g} ({gain})"
        )
        return horizon, extended_after, ("plateau", detail)
    if improving and horizon - epoch <= patience and horizon < last_epoch:
        assert schedule.decay_start is not None
        remaining = schedule.decay_start + schedule.decay_steps - step
        level = schedule.scale * max(0.0, remaining / max(1, schedule.decay_steps))
        new = min(last_epoch, horizon + max(patience, -(-horizon // 2)))
        schedule.scale, schedule.decay_start, schedule.decay_steps = level, step, (new - epoch) * steps_per_epoch
        extensions.append(f"after epoch {epoch}: {horizon} to {new} epochs")
        log(f"eval accuracy still improving ({gain}): the plan is extended from {horizon} to {new} epochs")
        return new, epoch, None
    return horizon, extended_after, None


def training_markdown(
    title: str,
    history: list[dict],
    best_epoch: int,
    stop_reason: str,
    stop_detail: str,
    learning_rate_reason: str,
    probe: list[dict] | None = None,
    warnings: list[str] | None = None,
) -> str:
    """A training phase for people: the eval curve per epoch, why it stopped, and the learning rate's reason."""
    lines = [f"## {title}", ""]
    for warning in warnings or []:
        lines += [f"**Warning:** {warning}", ""]
    lines += [
        f"Stopped: **{stop_reason}** ({stop_detail}).",
        "",
        f"Learning rate: {learning_rate_reason}.",
        "",
    ]
    if probe:
        lines += ["| probed learning rate | eval accuracy | train loss |", "|---|---|---|"]
        lines += [
            f"| {r['learning_rate']:g} | {100 * r['eval_accuracy']:.2f}% | {r['train_loss']:.4f} |" for r in probe
        ]
        lines.append("")
    lines += ["| epoch | phase | learning rate | train loss | eval accuracy | seconds |", "|---|---|---|---|---|---|"]
    for record in history:
        kept = " (kept)" if record["epoch"] == best_epoch else ""
        lines.append(
            f"| {record['epoch']}{kept} | {record.get('phase', '')} | {record.get('learning_rate', 0.0):.3g} | "
            f"{record['train_loss']:.4f} | {100 * record['eval_accuracy']:.2f}% | {record['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"
