"""CUDA check of the training stages: FP32 teacher fine-tune → INT8 calibration → KD-QAT → QDQ export.

Runs the project's own stage functions (``tasks.modeling.fine_tune``, ``tasks.quantize.calibrate`` /
``distillation_loss``, ``tasks.export.export_onnx``) on a CUDA device and prints one JSON summary:
per-epoch time and eval accuracy, PTQ vs KD-QAT accuracy, and ONNX Runtime parity of the exported
QDQ model. It does not run the Prefect flow: GPU boxes without Prefect or HF ``datasets`` installed
can still run it (they are replaced by inert stand-ins for the decorators and imports only; nothing
here calls them).

    python -m bench.cuda_smoke --encoder DIR_OR_packaged:all-MiniLM-L6-v2 [--train-rows 4000] [--out summary.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
import types
from pathlib import Path


def _stand_in_missing_orchestration_imports() -> list[str]:
    """Stage modules import Prefect (for @task) and datasets (for PreparedData); this check needs neither."""
    replaced = []
    if importlib.util.find_spec("prefect") is None:
        prefect = types.ModuleType("prefect")
        prefect.task = lambda *args, **kwargs: args[0] if args and callable(args[0]) else (lambda f: f)
        prefect.get_run_logger = lambda: None
        cache_policies = types.ModuleType("prefect.cache_policies")
        cache_policies.NO_CACHE = None
        artifacts = types.ModuleType("prefect.artifacts")
        artifacts.create_table_artifact = artifacts.create_markdown_artifact = None
        sys.modules.update(
            {"prefect": prefect, "prefect.cache_policies": cache_policies, "prefect.artifacts": artifacts}
        )
        replaced.append("prefect")
    if importlib.util.find_spec("datasets") is None:
        datasets = types.ModuleType("datasets")
        for name in ("ClassLabel", "Dataset", "DatasetDict", "load_dataset", "load_from_disk"):
            setattr(datasets, name, None)
        sys.modules["datasets"] = datasets
        replaced.append("datasets")
    return replaced


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoder", default="packaged:all-MiniLM-L6-v2")
    parser.add_argument("--train-rows", type=int, default=4000)
    parser.add_argument("--teacher-epochs", type=int, default=2)
    parser.add_argument("--qat-epochs", type=int, default=1)
    parser.add_argument("--out", default=None)
    arguments = parser.parse_args(argv)
    replaced = _stand_in_missing_orchestration_imports()

    import numpy as np
    import torch

    from enginekit.tokenization import TextEncoder
    from tasks.config import QuantizeConfig, TeacherConfig, TrainingConfig
    from tasks.demo_dataset import generate_demo_dataset
    from tasks.export import export_onnx, onnx_logits
    from tasks.modeling import SplitBatches, build_classifier, predict_logits, resolve_encoder
    from tasks.quantize import calibrate, disable_dropout, distillation_loss, quantized_layer_names
    from tasks.training import fine_tune

    if not torch.cuda.is_available():
        print("error: torch sees no CUDA device; this check is for GPU machines", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    work = Path(tempfile.mkdtemp(prefix="cuda-smoke-"))
    files = generate_demo_dataset(work / "data", train_rows=arguments.train_rows, eval_rows=800, test_rows=100)
    rows = {name: [json.loads(line) for line in path.read_text().splitlines()] for name, path in files.items()}
    labels = sorted({row["label"] for row in rows["train"]})
    index = {label: i for i, label in enumerate(labels)}

    def split(name: str) -> SplitBatches:
        return SplitBatches(
            [r["text"] for r in rows[name]], None, np.array([index[r["label"]] for r in rows[name]], dtype=np.int64)
        )

    train, evaluation = split("train"), split("eval")
    teacher_config = TeacherConfig(
        encoder=arguments.encoder,
        device="cuda",
        training=TrainingConfig(epochs=arguments.teacher_epochs, schedule="linear", min_steps=0),
    )
    encoder = TextEncoder(Path(resolve_encoder(arguments.encoder)), teacher_config.max_seq_length)
    summary: dict[str, object] = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "stand_ins": replaced,
        "train_rows": len(train),
        "eval_rows": len(evaluation),
    }

    teacher = build_classifier(teacher_config, len(labels), dict(enumerate(labels))).to(device)

    def cross_entropy(model, inputs, target):
        return torch.nn.functional.cross_entropy(model(**inputs).logits, target)

    best_teacher: dict[str, torch.Tensor] = {}

    def keep_teacher(model, record):
        best_teacher.update({k: v.detach().clone() for k, v in model.state_dict().items()})

    outcome = fine_tune(
        teacher, train, evaluation, encoder, teacher_config.training, device, cross_entropy, keep_teacher
    )
    teacher.load_state_dict(best_teacher)
    teacher.eval()
    summary["teacher_epochs"] = [vars(record) for record in outcome.history]
    summary["teacher_parameter_dtype"] = str(next(teacher.parameters()).dtype)

    import copy

    qat_training = QuantizeConfig().training.model_copy(update={"epochs": arguments.qat_epochs, "learning_rate": 1e-5})
    quantize_config = QuantizeConfig(training=qat_training)
    student = copy.deepcopy(teacher)
    disable_dropout(student)
    started = time.perf_counter()
    calibrate(student, train, encoder, quantize_config, device, "max")
    torch.cuda.synchronize()
    summary["calibration_seconds"] = time.perf_counter() - started  # includes modelopt's one-time CUDA JIT
    summary["quantizers"] = len(quantized_layer_names(student))
    ptq_logits = predict_logits(student, evaluation, encoder, 256, device)
    summary["ptq_eval_accuracy"] = float((ptq_logits.argmax(-1) == evaluation.labels).mean())

    def kd_loss(model, inputs, target):
        with torch.no_grad():
            teacher_logits = teacher(**inputs).logits
        return distillation_loss(
            model(**inputs).logits, teacher_logits, target, quantize_config.kd_temperature, quantize_config.kd_alpha
        )

    qat = fine_tune(student, train, evaluation, encoder, quantize_config.training, device, kd_loss, lambda m, r: None)
    summary["qat_epochs"] = [vars(record) for record in qat.history]

    onnx_path = work / "model.qdq.onnx"
    export_onnx(student, encoder, onnx_path, 17)  # moves the student to the CPU
    reference = predict_logits(student, evaluation, encoder, 256, torch.device("cpu"))
    exported = onnx_logits(onnx_path, evaluation, encoder, 256)
    summary["onnx_parity_agreement"] = float((reference.argmax(-1) == exported.argmax(-1)).mean())
    summary["onnx_parity_mean_abs_logit_diff"] = float(np.abs(reference - exported).mean())
    text = json.dumps(summary, indent=2)
    print(text)
    if arguments.out:
        Path(arguments.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
