"""How far do an engine's logits move under other kernels? The evidence behind the golden tolerance.

Another CPU runs other ONNX Runtime kernels for the same graph (AVX2 / AVX-512 / VNNI / AMX paths of the
FP32 ops around the INT8 GEMMs). This runs a finished run's bundle three ways on its whole test split —
the engine file as served, its portable QDQ graph unoptimized (reference kernels), and the portable graph
with ORT's load-time optimizations — and reports the logit differences to the engine, the labels that
change, the margins of all rows and of the canaries, and the tolerance the bundle recorded. It also runs
the engine once more with ONNX Runtime's default INT8 GEMM (``session.x64quantprecision`` off, see
``enginekit.runtime_onnx.PRECISE_INT8``), side by side: seconds and distance to the unoptimized graph
(exact INT8 arithmetic) of each. On CPUs with VNNI or AMX the two are the same path.

    python -m bench.golden_variation [.state/runs/<run>]    (default: the newest run)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from enginekit.runtime_onnx import precise_int8


def _session(path: Path, level, threads: int, precise: bool = True):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = threads
    if precise:
        precise_int8(options)  # as the product's runtime (enginekit.runtime_onnx)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _logits(session, encoder, texts: list[str], batch: int = 32) -> np.ndarray:
    wanted = {node.name for node in session.get_inputs()}
    outputs = []
    for start in range(0, len(texts), batch):
        feed = encoder.encode(texts[start : start + batch]).as_feed()
        outputs.append(session.run(None, {k: v for k, v in feed.items() if k in wanted})[0])
    return np.concatenate(outputs)


def _distance(reference: np.ndarray, logits: np.ndarray) -> dict:
    difference = np.abs(reference - logits).max(-1)
    return {
        "max": float(difference.max()),
        "p99": float(np.percentile(difference, 99)),
        "mean": float(difference.mean()),
        "label_changes": int((reference.argmax(-1) != logits.argmax(-1)).sum()),
    }


def measure(run: Path) -> dict:
    import onnxruntime as ort
    from datasets import load_from_disk

    from enginekit.bundle import read_manifest
    from enginekit.hardware import cpu_isa, cpu_model
    from enginekit.tokenization import TextEncoder
    from tasks.engine_build import top_margins

    bundle = run / "bundle"
    manifest = read_manifest(bundle)
    encoder = TextEncoder(bundle / manifest.tokenizer.directory, manifest.tokenizer.max_length)
    texts = list(load_from_disk(str(run / "data" / "dataset"))["test"]["text"])
    level = ort.GraphOptimizationLevel
    started = time.perf_counter()
    engine = _logits(_session(bundle / manifest.engine_file, level.ORT_ENABLE_ALL, 2), encoder, texts)
    engine_seconds = time.perf_counter() - started
    started = time.perf_counter()
    saturating = _logits(_session(bundle / manifest.engine_file, level.ORT_ENABLE_ALL, 2, False), encoder, texts)
    saturating_seconds = time.perf_counter() - started
    result: dict = {
        "run": str(run),
        "machine": f"{cpu_model()} ({', '.join(cpu_isa())})",
        "build_machine": f"{manifest.runtime.build_cpu} ({', '.join(manifest.runtime.build_isa or [])})",
        "rows": len(texts),
        "paths": {},
    }
    for name, optimization in (
        ("portable, unoptimized", level.ORT_DISABLE_ALL),
        ("portable, ORT all", level.ORT_ENABLE_ALL),
    ):
        other = _logits(_session(bundle / manifest.portable_onnx, optimization, 2), encoder, texts)
        result["paths"][name] = _distance(other, engine)
        if optimization == level.ORT_DISABLE_ALL:
            result["engine_int8_gemm"] = {
                "exact (x64quantprecision, as served)": {"seconds": engine_seconds, **_distance(other, engine)},
                "ONNX Runtime default": {"seconds": saturating_seconds, **_distance(other, saturating)},
            }
    margins = top_margins(engine)
    golden = json.loads((bundle / manifest.golden.file).read_text())
    result["margins_all_rows"] = {f"p{q}": float(np.percentile(margins, q)) for q in (1, 5, 50)}
    result["canaries"] = {
        "count": len(golden["texts"]),
        "min_margin": float(top_margins(np.asarray(golden["logits"])).min()),
        "atol": manifest.golden.atol,
        "atol_basis": manifest.golden.atol_basis,
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, nargs="?", default=None)
    arguments = parser.parse_args(argv)
    run = arguments.run
    if run is None:
        runs = sorted(Path(".state/runs").glob("*/bundle/manifest.json"))
        if not runs:
            print("error: no finished run under .state/runs; run `make run` first", file=sys.stderr)
            return 2
        run = runs[-1].parent.parent
    if not (run / "bundle" / "manifest.json").is_file() or not (run / "data" / "dataset").is_dir():
        print(f"error: {run} is not a finished run directory (bundle/ and data/ expected)", file=sys.stderr)
        return 2
    print(json.dumps(measure(run), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
