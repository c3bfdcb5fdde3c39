"""Check the TensorRT build end to end on a GPU machine: one command.

    python -m bench.tensorrt_check [.state/runs/<run>] [--config configs/demo.yaml]

Takes a finished run's QDQ ONNX (``export/``), builds a TensorRT engine bundle from it with the config's
``engine.tensorrt`` settings (FP16 autocast of the non-quantized ops, strongly typed network, the
optimization profiles, the timing cache), loads it through ``load_engine`` (checksums, TensorRT
version / GPU check, golden replay), and compares it on the run's test split with the run's ONNX Runtime
bundle: argmax agreement, accuracy, and B1 / B32 latency against PyTorch FP32 eager on the same GPU.
Exit 0 when the engine builds, loads and agrees with the ONNX Runtime engine on >= 99.5% of the rows.
Needs ``pip install -e '.[gpu]'`` (TensorRT from NVIDIA's index) and a CUDA GPU; says so otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, nargs="?", default=None)
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    arguments = parser.parse_args(argv)
    if importlib.util.find_spec("tensorrt") is None:
        print(
            "error: no `tensorrt` package here: pip install -e '.[gpu]' on a machine with a CUDA GPU", file=sys.stderr
        )
        return 2
    import torch

    if not torch.cuda.is_available():
        print("error: torch sees no CUDA GPU on this machine", file=sys.stderr)
        return 2
    from bench.accuracy_table import DEFAULT_RUNS, newest_run

    run = arguments.run_dir or newest_run(DEFAULT_RUNS)
    return _check(run, arguments.config)


def _check(run: Path, config_path: Path) -> int:
    import numpy as np
    import torch

    from enginekit.bundle import Lineage
    from enginekit.runtime import load_engine, predict_logits
    from tasks.config import load_config
    from tasks.data import PreparedData
    from tasks.engine_build import build_bundle
    from tasks.export import ExportResult
    from tasks.teacher import TeacherResult

    config = load_config(config_path)
    data = PreparedData(**json.loads((run / "data" / "data.json").read_text()))
    teacher = TeacherResult(**json.loads((run / "teacher" / "teacher.json").read_text()))
    exported = ExportResult(**json.loads((run / "export" / "export.json").read_text()))
    engine_config = config.engine.model_copy(update={"backend": "tensorrt"})
    lineage = Lineage(data_fingerprint=data.fingerprint, config_hash=config.config_hash(), code_version="check")
    started = time.perf_counter()
    build_bundle(engine_config, config.model_name, exported, teacher, data, lineage, run / "tensorrt-bundle")
    print(f"built in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    trt_engine = load_engine(run / "tensorrt-bundle")
    ort_engine = load_engine(run / "bundle")
    split = data.load()["test"]
    texts, gold = list(split["text"]), np.asarray(split["label"])
    ours, theirs = predict_logits(trt_engine, texts).argmax(-1), predict_logits(ort_engine, texts).argmax(-1)
    agreement = float(np.mean(ours == theirs))
    teacher_model = teacher.load("cuda")

    def timed(run_batch, batch) -> float:
        for _ in range(10):
            run_batch(batch)
        torch.cuda.synchronize()
        samples = []
        for _ in range(100):
            begin = time.perf_counter()
            run_batch(batch)
            torch.cuda.synchronize()
            samples.append((time.perf_counter() - begin) * 1000)
        return sorted(samples)[len(samples) // 2]

    def torch_run(batch):
        with torch.inference_mode():
            return teacher_model(**{k: torch.from_numpy(v).cuda() for k, v in batch.as_feed().items()}).logits

    rows = []
    for size in (1, 32):
        batch = trt_engine.encoder.encode(texts[:size])
        rows.append((size, timed(trt_engine.run, batch), timed(torch_run, batch)))
    manifest = trt_engine.manifest.runtime
    print(f"TensorRT {manifest.tensorrt_version} on {manifest.gpu_name} (sm {manifest.compute_capability})")
    print(
        f"test accuracy: TensorRT {100 * np.mean(ours == gold):.2f}%, ONNX Runtime {100 * np.mean(theirs == gold):.2f}%"
    )
    print(f"argmax agreement TensorRT vs ONNX Runtime: {100 * agreement:.2f}% of {len(texts)} rows")
    for size, trt_ms, torch_ms in rows:
        print(
            f"B{size}: TensorRT {trt_ms:.3f} ms, PyTorch FP32 eager (GPU) {torch_ms:.3f} ms, ×{torch_ms / trt_ms:.1f}"
        )
    return 0 if agreement >= 0.995 else 1


if __name__ == "__main__":
    sys.exit(main())
