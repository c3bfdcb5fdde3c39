"""Export stage: the quantized student → portable QDQ ONNX, checked and compared with PyTorch.

TorchScript-based export (``dynamo=False``) turns modelopt's fake-quant into QuantizeLinear/
DequantizeLinear pairs; the dynamo exporter cannot trace modelopt's data-dependent quantizer code.
Batch and sequence axes are dynamic so one file serves every batch size and query length.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from enginekit.bundle import write_json_atomic
from enginekit.tokenization import MODEL_INPUT_NAMES, TextEncoder
from tasks.config import ExportConfig
from tasks.data import PreparedData
from tasks.modeling import SplitBatches, predict_logits
from tasks.quantize import StudentResult, load_student
from tasks.teacher import TeacherResult

ONNX_FILE = "model.qdq.onnx"
OUTPUT_NAME = "logits"


class ExportError(Exception):
    """The exported graph is invalid or disagrees with the PyTorch model it came from."""


class _LogitsOnly(torch.nn.Module):
    """Positional (input_ids, attention_mask, token_type_ids) → logits, the engine's whole interface."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits


@dataclass(frozen=True)
class ExportResult:
    onnx_path: str
    opset: int
    quantize_linear_nodes: int
    dequantize_linear_nodes: int
    parity_rows: int
    parity_agreement: float
    """Share of rows where ONNX Runtime and PyTorch pick the same class."""
    parity_max_abs_logit_diff: float
    parity_mean_abs_logit_diff: float


def count_ops(model: onnx.ModelProto, op_type: str) -> int:
    return sum(1 for node in model.graph.node if node.op_type == op_type)


def export_onnx(model: torch.nn.Module, encoder: TextEncoder, path: Path, opset: int) -> onnx.ModelProto:
    example = encoder.encode(["an example search query", "b"])
    inputs = tuple(torch.from_numpy(array) for array in example.as_feed().values())
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in MODEL_INPUT_NAMES}
    dynamic_axes[OUTPUT_NAME] = {0: "batch"}
    wrapper = _LogitsOnly(model.cpu()).eval()  # export restores the training flag: eval() or dropout stays
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".partial")
    with torch.inference_mode():
        torch.onnx.export(
            wrapper,
            inputs,
            str(staging),
            dynamo=False,
            opset_version=opset,
            input_names=list(MODEL_INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    try:
        onnx.checker.check_model(str(staging), full_check=True)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"exported ONNX {staging} fails onnx.checker: {error}") from None
    staging.replace(path)
    return onnx.load(str(path))


def onnx_logits(path: Path, split: SplitBatches, encoder: TextEncoder, batch_size: int) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    outputs = [session.run([OUTPUT_NAME], batch.as_feed())[0] for batch, _ in split.iterate(encoder, batch_size)]
    return np.concatenate(outputs)


def export_student(
    config: ExportConfig,
    student: StudentResult,
    teacher: TeacherResult,
    data: PreparedData,
    out_dir: Path,
    log=print,
) -> ExportResult:
    out_dir = Path(out_dir)
    model = load_student(student, teacher, "cpu")
    encoder = TextEncoder(teacher.tokenizer_dir, teacher.max_seq_length)
    path = out_dir / ONNX_FILE
    graph = export_onnx(model, encoder, path, config.opset)
    quantize_nodes = count_ops(graph, "QuantizeLinear")
    dequantize_nodes = count_ops(graph, "DequantizeLinear")
    if quantize_nodes == 0:
        raise ExportError(f"{path}: no QuantizeLinear nodes; the student was not quantized")

    evaluation = SplitBatches.from_dataset(
        data.load()["eval"].select(range(min(config.parity_rows, data.rows["eval"])))
    )
    reference = predict_logits(model, evaluation, encoder, 64, torch.device("cpu"))
    exported = onnx_logits(path, evaluation, encoder, 64)
    agreement = float((reference.argmax(-1) == exported.argmax(-1)).mean())
    max_diff = float(np.abs(reference - exported).max())
    mean_diff = float(np.abs(reference - exported).mean())
    log(
        f"exported {path} ({quantize_nodes} QuantizeLinear); parity on {len(evaluation)} rows: "
        f"agreement {agreement:.4f}, mean |logit diff| {mean_diff:.4f}, max {max_diff:.4f}"
    )
    if agreement < config.parity_min_agreement or mean_diff > config.parity_max_mean_abs_logit_diff:
        raise ExportError(
            f"{path}: ONNX output disagrees with the PyTorch QAT model on {len(evaluation)} eval rows "
            f"(argmax agreement {agreement:.4f}, minimum {config.parity_min_agreement}; mean |logit diff| "
            f"{mean_diff:.4f}, maximum {config.parity_max_mean_abs_logit_diff}); the export is not trustworthy"
        )
    result = ExportResult(
        onnx_path=str(path),
        opset=config.opset,
        quantize_linear_nodes=quantize_nodes,
        dequantize_linear_nodes=dequantize_nodes,
        parity_rows=len(evaluation),
        parity_agreement=agreement,
        parity_max_abs_logit_diff=max_diff,
        parity_mean_abs_logit_diff=mean_diff,
    )
    write_json_atomic(out_dir / "export.json", asdict(result))
    return result


@task(name="export-qdq-onnx", cache_policy=NO_CACHE, persist_result=False)
def export_task(
    config: ExportConfig, student: StudentResult, teacher: TeacherResult, data: PreparedData, out_dir: str
) -> ExportResult:
    return export_student(config, student, teacher, data, Path(out_dir), log=get_run_logger().info)
