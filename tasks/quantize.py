"""Quantize stage: INT8 student by knowledge-distillation quantization-aware training (KD-QAT).

Recipe (NVIDIA Model Optimizer, the maintained successor of pytorch-quantization):
1. the student starts as a copy of the FP32 teacher;
2. INT8 fake-quant is inserted on every encoder Linear: weights symmetric per output channel, inputs
   symmetric per tensor (what TensorRT's explicit Q/DQ and ORT's INT8 kernels consume); LayerNorm inputs
   (the residual sums) stay FP32, as in NVIDIA's BERT recipes where quantizing them costs accuracy;
3. activation ranges are calibrated on training batches (PTQ); its eval accuracy is recorded;
4. the student is fine-tuned with a KD loss against the frozen teacher, dropout off, best eval epoch kept.

Output (``out_dir``): ``student.pth`` (``modelopt.torch.opt.save``: weights + quantizer state) and
``quantize.json``.
"""

from __future__ import annotations

import copy
import itertools
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from scipy import special

from enginekit.bundle import sha256_file, write_json_atomic
from enginekit.tokenization import TextEncoder
from tasks.config import QuantizeConfig, TrainingConfig
from tasks.data import PreparedData
from tasks.modeling import SplitBatches, accuracy, predict_logits, seed_everything, to_torch
from tasks.teacher import TeacherResult
from tasks.teacher_targets import TeacherTargets
from tasks.training import (
    EpochRecord,
    TrainingOutcome,
    barrier,
    can_resume,
    fine_tune,
    is_main_process,
    job_fingerprint,
    pick_device_for_rank,
)

STUDENT_FILE = "student.pth"
WEIGHTS_FILE = "model.safetensors"  # what transformers save_pretrained writes for the teacher


HISTOGRAM_METHODS = ("percentile", "mse", "entropy")


def int8_quant_config(
    quantize_head: bool, calibration_method: str = "max", keep_unquantized: list[str] | None = None
) -> dict[str, Any]:
    """modelopt quantization config for a BERT-style classifier (list form of modelopt >= 0.4x).

    For the histogram methods the activation quantizers get histogram calibrators and no algorithm
    runs inside ``mtq.quantize``: ``calibrate`` collects the histograms and sets the ranges itself.
    """
    int8_weight = {"num_bits": 8, "axis": 0}  # per output channel of nn.Linear.weight (out, in)
    int8_activation: dict[str, Any] = {"num_bits": 8, "axis": None}  # per tensor
    if calibration_method in HISTOGRAM_METHODS:
        int8_activation["calibrator"] = "histogram"
    algorithm = "max" if calibration_method == "max" else None
    quant_cfg: list[dict[str, Any]] = [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*encoder.layer.*.weight_quantizer", "cfg": int8_weight},
        {"quantizer_name": "*encoder.layer.*.input_quantizer", "cfg": int8_activation},
        # Residual sums feed the LayerNorms; keeping them FP32 is where BERT INT8 keeps its accuracy.
        {"quantizer_name": "*LayerNorm*", "enable": False},
    ]
    if quantize_head:
        quant_cfg += [
            {"quantizer_name": "*pooler.dense.weight_quantizer", "cfg": int8_weight},
            {"quantizer_name": "*pooler.dense.input_quantizer", "cfg": int8_activation},
            {"quantizer_name": "*classifier.weight_quantizer", "cfg": int8_weight},
            {"quantizer_name": "*classifier.input_quantizer", "cfg": int8_activation},
        ]
    for pattern in keep_unquantized or []:
        quant_cfg.append({"quantizer_name": f"{pattern}.*_quantizer", "enable": False})
    return {"quant_cfg": quant_cfg, "algorithm": algorithm}


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, labels).

    The T^2 factor keeps the soft-target gradients on the same scale as the hard-label ones (Hinton 2015).
    """
    soft_student = F.log_softmax(student_logits / temperature, dim=-1)
    soft_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    kd = F.kl_div(soft_student, soft_teacher, log_target=True, reduction="batchmean") * temperature**2
    hard = F.cross_entropy(student_logits, labels)
    return alpha * kd + (1.0 - alpha) * hard


def hidden_state_loss(
    student_states: tuple[torch.Tensor, ...], teacher_states: tuple[torch.Tensor, ...], attention_mask: torch.Tensor
) -> torch.Tensor:
    """Mean over layers of the MSE between hidden states, counting real tokens only (not padding)."""
    if len(student_states) != len(teacher_states):
        raise ValueError(
            f"hidden-state distillation needs the same number of layers: student {len(student_states)}, "
            f"teacher {len(teacher_states)}"
        )
    weights = attention_mask.unsqueeze(-1).to(student_states[0].dtype)
    tokens = weights.sum() * student_states[0].shape[-1]
    losses = [((s - t) ** 2 * weights).sum() / tokens for s, t in zip(student_states, teacher_states, strict=True)]
    return torch.stack(losses).mean()


def layer_groups(model: torch.nn.Module, granularity: str = "linear") -> dict[str, list[torch.nn.Module]]:
    """Enabled quantizers grouped by the module they quantize: one group per quantized Linear
    (``linear``) or per encoder layer, all its Linears together (``block``)."""
    groups: dict[str, list[torch.nn.Module]] = {}
    for name, module in model.named_modules():
        if type(module).__name__ == "TensorQuantizer" and module.is_enabled:
            group = name.rsplit(".", 1)[0]
            if granularity == "block":
                match = re.match(r"(.*\bencoder\.layer\.\d+)\.", group)
                group = match.group(1) if match else group
            groups.setdefault(group, []).append(module)
    return groups


@dataclass(frozen=True)
class LayerSensitivity:
    layer: str
    accuracy_without_quantization: float
    """Eval accuracy with this layer alone back in floating point (everything else INT8)."""
    gain_points: float
    """accuracy_without_quantization minus the fully quantized accuracy, in points."""


def sensitivity_analysis(
    model: torch.nn.Module,
    evaluation: SplitBatches,
    encoder: TextEncoder,
    device: torch.device,
    batch_size: int = 128,
    granularity: str = "linear",
) -> list[LayerSensitivity]:
    """Quantize all but one layer group, for every group; most sensitive (largest gain) first.

    The quantizers are switched off and on again in place; the model ends as it started.
    """
    baseline = accuracy(predict_logits(model, evaluation, encoder, batch_size, device).argmax(-1), evaluation.labels)
    results = []
    for layer, quantizers in layer_groups(model, granularity).items():
        for quantizer in quantizers:
            quantizer.disable()
        try:
            logits = predict_logits(model, evaluation, encoder, batch_size, device)
        finally:
            for quantizer in quantizers:
                quantizer.enable()
        layer_accuracy = accuracy(logits.argmax(-1), evaluation.labels)
        results.append(LayerSensitivity(layer, layer_accuracy, 100 * (layer_accuracy - baseline)))
    return sorted(results, key=lambda result: (-result.gain_points, result.layer))


def disable_dropout(model: torch.nn.Module) -> None:
    """QAT fine-tunes scales against a fixed teacher; dropout noise only blurs that target."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def quantized_layer_names(model: torch.nn.Module) -> list[str]:
    return [
        name
        for name, module in model.named_modules()
        if type(module).__name__ == "TensorQuantizer" and getattr(module, "is_enabled", False)
    ]


def parse_method(name: str, default_percentile: float = 99.99) -> tuple[str, float]:
    """``max`` / ``percentile:<p>`` / ``entropy`` / ``mse`` → (method, percentile)."""
    method, _, value = name.partition(":")
    return method, float(value) if value else default_percentile


def calibrate(
    model: torch.nn.Module,
    train: SplitBatches,
    encoder: TextEncoder,
    config: QuantizeConfig,
    device: torch.device,
    method: str | None = None,
) -> torch.nn.Module:
    """Insert INT8 quantizers and calibrate their ranges on training batches (in place).

    ``method`` is a PTQ baseline name (``max``, ``percentile:99.99``, ...); None = config.calibration_method.
    """
    import modelopt.torch.quantization as mtq

    name = method or config.ptq_baseline_name()
    if name is None:
        raise ValueError("calibration_method 'auto' must be resolved to a measured PTQ baseline first")
    calibration_method, percentile = parse_method(name, config.calibration_percentile)
    batch_size = config.training.batch_size

    def forward_loop(calibrated: torch.nn.Module) -> None:
        batches = train.iterate(encoder, batch_size, shuffle_seed=config.training.seed)
        with torch.inference_mode():
            for batch, _ in itertools.islice(batches, config.calibration_batches):
                calibrated(**to_torch(batch, device))

    model.eval()
    quant_config = int8_quant_config(config.quantize_head, calibration_method, config.keep_unquantized)
    if calibration_method == "max":
        return mtq.quantize(model, quant_config, forward_loop)
    model = mtq.quantize(model, quant_config, forward_loop=None)  # inserts quantizers, calibrates nothing
    collect_calibration_statistics(model, forward_loop)
    load_ranges(model, calibration_method, percentile)
    return model


def collect_calibration_statistics(model: torch.nn.Module, forward_loop: Callable[[torch.nn.Module], None]) -> None:
    """Run the calibration data through every enabled quantizer's calibrator (max or histogram)."""
    from modelopt.torch.quantization.model_calib import enable_stats_collection

    enable_stats_collection(model)
    forward_loop(model)


def entropy_amax(hist: np.ndarray, bin_edges: np.ndarray, num_bits: int = 8, unsigned: bool = False) -> float:
    """The range that minimizes the KL divergence between a histogram and its INT8 quantization.

    The same search, step for step and to the bit, as Model Optimizer's ``entropy`` calibration
    (``modelopt.torch.quantization.calib.histogram._compute_amax_entropy``, stride 1, start bin 128; its
    scipy ``entropy`` call written out as scipy computes it), with each candidate's loops over bins done
    as array operations: modelopt's per-bin Python loops took ~4 s per activation quantizer on the 2-core
    machine (~2 min of the demo's run for the full-size and the 3-layer students), this takes ~0.2 s.
    ``tests/test_quantize.py`` checks the result against modelopt's own function.
    """
    bins = np.array(hist, dtype=np.int32)  # modelopt reads the histogram tensor as int32
    bins[0] = bins[1]  # modelopt's heuristic: the zero bin is discounted to its neighbour's count
    quant_bins = 1 << (num_bits - 1 + int(unsigned))
    start_bin = 128
    tail = np.concatenate([np.cumsum(bins[::-1], dtype=np.int64)[::-1], [0]])  # tail[i] = sum(bins[i:])
    divergences = np.empty(len(bins) - start_bin + 1)
    for k, i in enumerate(range(start_bin, len(bins) + 1)):
        quantized = np.digitize(np.arange(i), np.linspace(0, i, num=quant_bins + 1)) - 1
        head = bins[:i]
        nonzero = head != 0
        sums = np.bincount(quantized[nonzero], weights=head[nonzero], minlength=quant_bins)
        counts = np.bincount(quantized[nonzero], minlength=quant_bins)
        means = np.divide(sums, counts, out=np.zeros(quant_bins), where=counts > 0)
        candidate = np.where(nonzero, means[quantized], 0.0)
        reference = head.astype(np.float64)
        reference[-1] += tail[i]
        reference = reference / np.sum(reference, axis=-1, keepdims=True)
        candidate = candidate / np.sum(candidate, axis=-1, keepdims=True)
        divergences[k] = np.sum(special.rel_entr(reference, candidate), axis=-1)
    last_argmin = len(divergences) - 1 - int(np.argmin(divergences[::-1]))
    return float(bin_edges[last_argmin + start_bin])


def load_ranges(model: torch.nn.Module, method: str, percentile: float) -> None:
    """Set every enabled quantizer's range from its collected statistics, then switch quantization on.

    Histogram calibrators (activations) use ``method``; max calibrators (per-channel weights) use max.
    A model calibrated once can be deep-copied and finished with several methods (PTQ comparisons).
    """
    from modelopt.torch.quantization.calib import HistogramCalibrator
    from modelopt.torch.quantization.nn import TensorQuantizer

    for module in model.modules():
        if not isinstance(module, TensorQuantizer) or not module.is_enabled:
            continue
        calibrator = getattr(module, "_calibrator", None)
        if isinstance(calibrator, HistogramCalibrator):
            if method == "entropy" and calibrator._calib_hist is not None:
                hist, edges = calibrator._calib_hist, calibrator._calib_bin_edges
                amax = entropy_amax(
                    hist.int().cpu().numpy(), edges.cpu().numpy(), calibrator._num_bits, calibrator._unsigned
                )
                module.amax = torch.tensor(amax)
            else:
                options = {"percentile": percentile} if method == "percentile" else {}
                module.load_calib_amax(method, **options)
        elif calibrator is not None:
            module.load_calib_amax()
        module.enable_quant()
        module.disable_calib()


@dataclass(frozen=True)
class StudentResult:
    directory: str
    ptq_eval_accuracy: float
    """Eval accuracy right after calibration (post-training quantization), before QAT."""
    qat_eval_accuracy: float
    best_epoch: int
    history: list[dict[str, Any]]
    quantized_layers: int
    student_layers: list[int] | None = None
    """Teacher layers the student kept; None = all (same architecture as the teacher)."""
    calibration: str = ""
    """The PTQ baseline its activation ranges came from (``max``, ``percentile:99.99``, ...)."""
    unquantized_groups: list[str] = field(default_factory=list)
    """Layer groups kept in floating point on top of the config's (mixed-precision variants)."""
    distill_history: list[dict[str, Any]] = field(default_factory=list)
    """FP32 distillation epochs before quantization (smaller students)."""
    distill_stop_detail: str = ""
    """Why the FP32 distillation stopped (plateau or ceiling)."""
    warnings: list[str] = field(default_factory=list)
    embedding_int8: bool = False
    """Whether ``load_student`` rounds the word-embedding table to INT8 (``QuantizeConfig.embedding_int8``)."""

    @property
    def checkpoint(self) -> Path:
        return Path(self.directory) / STUDENT_FILE


def load_student(student: StudentResult, teacher: TeacherResult, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Rebuild the quantized student: the teacher architecture + the saved modelopt state."""
    import modelopt.torch.opt as mto

    model = teacher.load("cpu")
    if student.student_layers is not None:
        model = layer_subset(model, student.student_layers)
    mto.restore(model, str(student.checkpoint))
    if student.embedding_int8:
        round_embeddings_to_int8(model)
    return model.to(device).eval()


def round_embeddings_to_int8(model: torch.nn.Module) -> int:
    """Round the word-embedding table in place to INT8 per row: ``q * 2**k`` with integer ``|q| <= 127`` and
    the smallest power of two ``2**k >= max|row| / 127``. Power-of-two scales make every rounded value exact
    in FP32 and let the engine build recover ``q`` and the scale from the FP32 table alone, so the engine's
    ``Cast(q) * scale`` gives back the very values the student computes with. Idempotent. Returns the rows."""
    table = model.get_input_embeddings().weight
    with torch.no_grad():
        rounded = torch.from_numpy(int8_row_grid(table.detach().cpu().numpy())).to(table.device, table.dtype)
        table.copy_(rounded)
    return int(table.shape[0])


def int8_row_grid(table: np.ndarray) -> np.ndarray:
    """``table`` (rows x width) rounded to the INT8 grid of ``round_embeddings_to_int8``, as float32."""
    values = table.astype(np.float64)
    largest = np.abs(values).max(axis=1, keepdims=True)
    scale = np.where(largest > 0, np.exp2(np.ceil(np.log2(np.maximum(largest, 1e-300) / 127.0))), 1.0)
    return (np.clip(np.rint(values / scale), -127, 127) * scale).astype(np.float32)


def layer_subset(model: torch.nn.Module, keep: list[int]) -> torch.nn.Module:
    """A BERT-style classifier with only the encoder layers ``keep``, initialised from ``model``'s."""
    total = model.config.num_hidden_layers
    if not keep or sorted(set(keep)) != list(keep) or keep[0] < 0 or keep[-1] >= total:
        raise ValueError(f"student_layers {keep} must be increasing, unique layer indices of 0..{total - 1}")
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(keep)
    student = type(model)(config)
    renamed = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if "layer" in parts and parts[parts.index("layer") - 1] == "encoder":
            position = parts.index("layer") + 1
            if int(parts[position]) not in keep:
                continue
            parts[position] = str(keep.index(int(parts[position])))
        renamed[".".join(parts)] = value
    student.load_state_dict(renamed)
    return student.to(next(model.parameters()).device)


def train_student(
    config: QuantizeConfig,
    teacher_result: TeacherResult,
    data: PreparedData,
    out_dir: Path,
    log=print,
    *,
    init: StudentResult | None = None,
    calibration: str | None = None,
    student_layers: list[int] | None = None,
    distill_training: TrainingConfig | None = None,
    hidden_state_weight: float | None = None,
) -> StudentResult:
    """KD-QAT: a calibrated INT8 student fine-tuned against the frozen FP32 teacher.

    The student starts as ``init`` (a calibrated PTQ student, normally the best baseline measured on eval)
    or as a fresh copy of the teacher (or of its ``student_layers``) calibrated with ``calibration``.
    ``distill_training`` adds an FP32 distillation phase before calibration (smaller students).
    The calibrated student is the baseline QAT must beat on eval; if no epoch does, it is kept as is.
    """
    import modelopt.torch.opt as mto

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(config.training.seed)
    device = pick_device_for_rank(teacher_result.device)
    main_process = is_main_process()
    encoder = TextEncoder(teacher_result.tokenizer_dir, teacher_result.max_seq_length)
    splits = data.load()
    train = SplitBatches.from_dataset(splits["train"])
    evaluation = SplitBatches.from_dataset(splits["eval"])
    hidden_weight = config.hidden_state_weight if hidden_state_weight is None else hidden_state_weight
    if init is not None:
        student_layers, calibration = init.student_layers, init.calibration
    else:  # 'auto' without measured baselines (direct calls): max, the modelopt default
        calibration = calibration or config.ptq_baseline_name() or "max"

    teacher = teacher_result.load(device)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    # Hidden state i of the student (0 = embeddings) is distilled from this hidden state of the teacher.
    teacher_states = [0] + [layer + 1 for layer in (student_layers or range(teacher.config.num_hidden_layers))]

    with_hidden = hidden_weight > 0
    targets = TeacherTargets.build(
        teacher, train, encoder, teacher_states if with_hidden else None, device, config.training.eval_batch_size
    )
    if targets is None:
        log("teacher outputs not cached (they would exceed the memory cap): the teacher runs in every step")

    def kd_loss(model: torch.nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        cached = targets.lookup(inputs) if targets is not None else None
        if cached is not None:
            teacher_logits, aligned = cached
        else:
            with torch.no_grad():
                teacher_out = teacher(**inputs, output_hidden_states=with_hidden)
            teacher_logits = teacher_out.logits
            if with_hidden:
                aligned = tuple(teacher_out.hidden_states[index] for index in teacher_states)
        student_out = model(**inputs, output_hidden_states=with_hidden)
        loss = distillation_loss(student_out.logits, teacher_logits, labels, config.kd_temperature, config.kd_alpha)
        if with_hidden:
            mask = inputs["attention_mask"]
            loss = loss + hidden_weight * hidden_state_loss(student_out.hidden_states, aligned, mask)
        return loss

    job = job_fingerprint(
        "kd-qat",
        config.model_dump(mode="json"),
        data.fingerprint,
        sha256_file(teacher_result.model_dir / WEIGHTS_FILE),
        sha256_file(init.checkpoint) if init else calibration,
        student_layers,
        distill_training.model_dump(mode="json") if distill_training else None,
        hidden_weight,
    )
    if init is not None:
        student = load_student(init, teacher_result, device)
    else:
        student = copy.deepcopy(teacher) if student_layers is None else layer_subset(teacher, student_layers)
    for parameter in student.parameters():
        parameter.requires_grad_(True)
    disable_dropout(student)

    distilled: TrainingOutcome | None = None
    if init is None and distill_training is not None:
        distilled = _distill_fp32(
            student, train, evaluation, encoder, distill_training, device, kd_loss, out_dir, job, log
        )
    if init is None:
        calibrate(student, train, encoder, config, device, calibration)
    layers = quantized_layer_names(student)
    ptq_logits = predict_logits(student, evaluation, encoder, config.training.eval_batch_size, device)
    ptq_accuracy = accuracy(ptq_logits.argmax(-1), evaluation.labels)
    log(f"{len(layers)} INT8 quantizers ({calibration}); calibrated (PTQ) eval accuracy {ptq_accuracy:.4f}")

    checkpoint = out_dir / STUDENT_FILE

    def save_best(model: torch.nn.Module, record: EpochRecord) -> None:
        staging = out_dir / f".{STUDENT_FILE}.partial"
        mto.save(model, str(staging))
        staging.replace(checkpoint)

    checkpoint_dir = out_dir / "checkpoint"
    if main_process and not can_resume(checkpoint_dir, job):
        # The calibrated student is the baseline to beat: QAT epochs must improve on it to replace it.
        save_best(student, EpochRecord(0, 0.0, ptq_accuracy, 0.0))
    # Ties go to the distilled student (it has also been trained towards the teacher's distribution).
    outcome = fine_tune(
        student,
        train,
        evaluation,
        encoder,
        config.training,
        device,
        kd_loss,
        save_best,
        log,
        ptq_accuracy - 1e-9,
        checkpoint_dir=checkpoint_dir,
        job_fingerprint=job,
    )
    if main_process:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # only needed to resume an interrupted run
    qat_improved = outcome.best_epoch > 0
    if not qat_improved:
        log("QAT scored below the calibrated model on eval; keeping the calibrated (PTQ) student")
    result = StudentResult(
        directory=str(out_dir),
        ptq_eval_accuracy=ptq_accuracy,
        qat_eval_accuracy=outcome.best_accuracy if qat_improved else ptq_accuracy,
        best_epoch=outcome.best_epoch,
        history=[asdict(record) for record in outcome.history],
        quantized_layers=len(layers),
        student_layers=student_layers,
        calibration=calibration or "",
        distill_history=[asdict(record) for record in distilled.history] if distilled else [],
        distill_stop_detail=f"{distilled.stop_reason}: {distilled.stop_detail}" if distilled else "",
        warnings=[f"FP32 distillation: {warning}" for warning in distilled.warnings] if distilled else [],
        embedding_int8=config.embedding_int8,
    )
    if main_process:
        write_json_atomic(out_dir / "quantize.json", asdict(result))
        shutil.rmtree(out_dir / f".{STUDENT_FILE}.partial", ignore_errors=True)
    return result


def _distill_fp32(
    student: torch.nn.Module,
    train: SplitBatches,
    evaluation: SplitBatches,
    encoder: TextEncoder,
    training: TrainingConfig,
    device: torch.device,
    loss: Callable[..., torch.Tensor],
    out_dir: Path,
    job: str,
    log: Callable[[str], None],
) -> TrainingOutcome:
    """FP32 distillation of a (smaller) student before it is quantized; the best eval epoch is kept."""
    best_file = out_dir / "distilled-fp32.pt"

    def save_best(model: torch.nn.Module, record: EpochRecord) -> None:
        staging = best_file.with_suffix(".partial")
        torch.save(model.state_dict(), staging)
        staging.replace(best_file)

    outcome = fine_tune(
        student,
        train,
        evaluation,
        encoder,
        training,
        device,
        loss,
        save_best,
        log,
        checkpoint_dir=out_dir / "distill-checkpoint",
        job_fingerprint=job,
    )
    student.load_state_dict(torch.load(best_file, map_location=device, weights_only=True))
    barrier()  # every rank has read the best epoch before rank 0 removes it
    if is_main_process():
        shutil.rmtree(out_dir / "distill-checkpoint", ignore_errors=True)
        best_file.unlink()
    log(f"FP32 distillation: best eval accuracy {outcome.best_accuracy:.4f} (epoch {outcome.best_epoch})")
    return outcome


@task(name="kd-qat-int8", cache_policy=NO_CACHE, persist_result=False)
def train_student_task(
    config: QuantizeConfig, teacher: TeacherResult, data: PreparedData, out_dir: str, init: StudentResult | None
) -> StudentResult:
    return _train(config, teacher, data, Path(out_dir), init=init)


def _train(config: QuantizeConfig, teacher: TeacherResult, data: PreparedData, out_dir: Path, **options: Any):
    """In this process, or across ``config.training.processes`` torchrun workers (tasks.distributed)."""
    log = get_run_logger().info
    if config.training.processes > 1:
        from tasks.distributed import run_student

        return run_student(config, teacher, data, out_dir, log=log, **options)
    return train_student(config, teacher, data, out_dir, log=log, **options)


@task(name="smaller-student-int8", cache_policy=NO_CACHE, persist_result=False)
def train_smaller_student_task(
    config: QuantizeConfig, teacher: TeacherResult, data: PreparedData, out_dir: str, calibration: str
) -> StudentResult:
    """The fewer-layer student: FP32 distillation, calibration with the method the full student used, KD-QAT."""
    small = config.smaller_student
    if small is None:
        raise ValueError("quantize.smaller_student is not configured")
    teacher_layers = teacher.num_layers
    return _train(
        config,
        teacher,
        data,
        Path(out_dir),
        calibration=calibration,
        student_layers=small.layer_indices(teacher_layers),
        distill_training=small.distill_training,
        hidden_state_weight=small.hidden_state_weight,
    )
