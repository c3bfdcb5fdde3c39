"""What made the training stages faster, each measured side by side with what it replaced, in one process.

On a finished run's teacher and training split:

1. **Batch grouping** (not adopted, measured): tokens per epoch and padding share with the pipeline's
   grouping (character-length buckets of 16 inside windows of 50 batches) and with exact token length,
   and the mean number of classes per batch of each (a grouping must not make batches one class). Exact
   lengths pad far less, but change the batch order the training recipe was validated with.
2. **AdamW**: a full teacher training step (forward, backward, clipping, optimizer step) with PyTorch's
   default AdamW and with the fused kernel the pipeline uses, alternating on the same batches.
3. **Distillation targets**: the frozen teacher's forward pass per batch (logits and the hidden states a
   3-layer student is distilled from) against a lookup in the pipeline's cache (``TeacherTargets``).
4. **Entropy calibration**: Model Optimizer's own search against ``tasks.quantize.entropy_amax`` on the
   same collected histograms (``--quantizers`` of them; modelopt needs seconds each), and whether every
   range is identical.

    python -m bench.training_speed .state/runs/<run> [--steps 30] [--quantizers 6]

Prints a Markdown table; ratios are what to compare across machines (BENCHMARKS.md section 6).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import platform
import sys
import time
from pathlib import Path

import numpy as np

from bench.finished_run import load_teacher_run, missing_teacher


def _grouping(split, encoder, batch_size: int) -> list[tuple[int, float, float]]:
    """(batch tokens per epoch, padding share, mean classes per batch): the pipeline's grouping, then exact
    token length."""
    lengths = np.array([len(row) for row in split.tokenized(encoder)])
    rows = []
    for batches in (
        split._bucketed_batches(batch_size, np.random.default_rng(1)),
        split._bucketed_batches(batch_size, np.random.default_rng(1), keys=lengths),
    ):
        padded = sum(int(lengths[b].max()) * len(b) for b in batches)
        classes = float(np.mean([len(set(split.labels[b].tolist())) for b in batches]))
        rows.append((padded, 1 - lengths.sum() / padded, classes))
    return rows


def _adamw_steps(teacher, split, encoder, steps: int) -> tuple[float, float]:
    import torch

    from tasks.config import TrainingConfig
    from tasks.modeling import to_torch
    from tasks.training import _optimizer

    batches = list(itertools.islice(split.iterate(encoder, 32, shuffle_seed=3), steps + 2))
    seconds = {"default": 0.0, "fused": 0.0}
    models = {kind: copy.deepcopy(teacher).train() for kind in seconds}
    optimizers = {
        "default": torch.optim.AdamW(models["default"].parameters(), lr=2e-4, weight_decay=0.01),
        "fused": _optimizer(models["fused"], TrainingConfig(), 2e-4),
    }
    for index, (batch, labels) in enumerate(batches):
        for kind in ("default", "fused") if index % 2 else ("fused", "default"):
            model, optimizer = models[kind], optimizers[kind]
            started = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(
                model(**to_torch(batch, torch.device("cpu"))).logits, torch.from_numpy(labels)
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if index >= 2:  # the first steps allocate the optimizer state
                seconds[kind] += time.perf_counter() - started
    return seconds["default"] / steps, seconds["fused"] / steps


def _targets(teacher, split, encoder, layers: list[int], steps: int) -> tuple[float, float, float, int]:
    import torch

    from tasks.modeling import to_torch
    from tasks.teacher_targets import TeacherTargets

    kept = [0] + [layer + 1 for layer in layers]
    started = time.perf_counter()
    targets = TeacherTargets.build(teacher, split, encoder, kept, torch.device("cpu"))
    build = time.perf_counter() - started
    if targets is None:
        raise SystemExit("error: the teacher's outputs exceed the cache's memory cap on this split")
    forward = lookup = 0.0
    for batch, _ in itertools.islice(split.iterate(encoder, 32, shuffle_seed=3), steps):
        inputs = to_torch(batch, torch.device("cpu"))
        started = time.perf_counter()
        with torch.no_grad():
            teacher(**inputs, output_hidden_states=True)
        middle = time.perf_counter()
        if targets.lookup(inputs) is None:
            raise SystemExit("error: a training row was not found in the cache")
        lookup += time.perf_counter() - middle
        forward += middle - started
    return forward / steps, lookup / steps, build, targets.nbytes


def _entropy(teacher, split, encoder, quantizers: int) -> tuple[int, int, float, float]:
    import modelopt.torch.quantization as mtq
    import torch
    from modelopt.torch.quantization.calib import HistogramCalibrator
    from modelopt.torch.quantization.calib.histogram import _compute_amax_entropy

    from tasks.modeling import to_torch
    from tasks.quantize import collect_calibration_statistics, entropy_amax, int8_quant_config

    model = mtq.quantize(copy.deepcopy(teacher), int8_quant_config(False, "percentile", []), forward_loop=None)

    def forward_loop(calibrated) -> None:
        with torch.inference_mode():
            for batch, _ in itertools.islice(split.iterate(encoder, 32, shuffle_seed=42), 16):
                calibrated(**to_torch(batch, torch.device("cpu")))

    collect_calibration_statistics(model, forward_loop)
    calibrators = [
        module._calibrator
        for module in model.modules()
        if isinstance(getattr(module, "_calibrator", None), HistogramCalibrator)
        and module._calibrator._calib_hist is not None
    ][:quantizers]
    theirs = ours = 0.0
    identical = 0
    for calibrator in calibrators:
        hist = calibrator._calib_hist.int().cpu().numpy()
        edges = calibrator._calib_bin_edges.cpu().numpy()
        started = time.perf_counter()
        expected = float(_compute_amax_entropy(hist.copy(), edges, calibrator._num_bits, calibrator._unsigned))
        middle = time.perf_counter()
        value = entropy_amax(hist, edges, calibrator._num_bits, calibrator._unsigned)
        ours += time.perf_counter() - middle
        theirs += middle - started
        identical += float(np.float32(value)) == expected
    return len(calibrators), identical, theirs, ours


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a train_to_deploy run directory with a trained teacher")
    parser.add_argument("--steps", type=int, default=30, help="training steps / batches timed per variant")
    parser.add_argument("--quantizers", type=int, default=6, help="histograms searched by both entropy codes")
    arguments = parser.parse_args(argv)
    run: Path = arguments.run_dir
    if missing_teacher(run):
        return 2
    if arguments.steps < 1 or arguments.quantizers < 1:
        print("error: --steps and --quantizers must be at least 1", file=sys.stderr)
        return 2
    import torch

    loaded = load_teacher_run(run)
    result, encoder, train, layers = loaded.result, loaded.encoder, loaded.train, loaded.layers
    teacher = result.load("cpu").eval()

    lines = [
        f"Run `{run.name}`, {len(train)} training rows; {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}.",
        "",
        "| what | before (or the pipeline) | now (or the alternative) | ratio |",
        "|---|---|---|---|",
    ]
    (old_tokens, old_padding, old_classes), (new_tokens, new_padding, new_classes) = _grouping(train, encoder, 32)
    lines.append(
        f"| batch tokens per epoch (padding share; classes per batch), the pipeline's character buckets vs exact "
        f"token length (not adopted) | {old_tokens} ({100 * old_padding:.1f}%; "
        f"{old_classes:.1f}) | {new_tokens} ({100 * new_padding:.1f}%; {new_classes:.1f}) | "
        f"x{old_tokens / new_tokens:.2f} |"
    )
    default_step, fused_step = _adamw_steps(teacher, train, encoder, arguments.steps)
    lines.append(
        f"| teacher training step, B32 (AdamW default vs fused) | {1000 * default_step:.0f} ms | "
        f"{1000 * fused_step:.0f} ms | x{default_step / fused_step:.2f} |"
    )
    forward, lookup, build, size = _targets(teacher, train, encoder, layers, arguments.steps)
    lines.append(
        f"| teacher outputs per distillation batch (forward vs cache; cache of {size / 2**20:.0f} MiB "
        f"built once in {build:.1f} s) | "
        f"{1000 * forward:.1f} ms | {1000 * lookup:.1f} ms | x{forward / lookup:.1f} |"
    )
    count, identical, theirs, ours = _entropy(teacher, train, encoder, arguments.quantizers)
    lines.append(
        f"| entropy range search, {count} activation histograms ({identical}/{count} identical) | "
        f"{theirs:.2f} s (modelopt) | {ours:.2f} s | x{theirs / ours:.1f} |"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
