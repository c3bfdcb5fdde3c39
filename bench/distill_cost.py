"""How much of a smaller student's FP32 distillation step is the frozen teacher's forward pass?

Times, on a finished run's teacher and training split, the teacher's forward pass (logits and hidden
states, what the distillation loss reads) against the student's forward, backward and AdamW step, batch
by batch in one process, and prints both and the teacher's share. That share bounds what caching the
teacher's outputs could save (BENCHMARKS.md section 6).

    python -m bench.distill_cost .state/runs/<run> [--batches 40] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.finished_run import load_teacher_run, missing_teacher


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a train_to_deploy run directory with a trained teacher")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="teacher layers the student keeps")
    arguments = parser.parse_args(argv)
    run: Path = arguments.run_dir
    if missing_teacher(run):
        return 2
    if arguments.batches < 1 or arguments.batch_size < 1:
        print("error: --batches and --batch-size must be at least 1", file=sys.stderr)
        return 2
    import torch

    from tasks.quantize import layer_subset

    loaded = load_teacher_run(run)
    result, encoder, train = loaded.result, loaded.encoder, loaded.train
    layers = arguments.layers or loaded.layers
    teacher = result.load("cpu").eval()
    student = layer_subset(teacher, layers).train()
    for parameter in student.parameters():
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5)
    teacher_seconds = student_seconds = 0.0
    batches = 0
    for batch, _ in train.iterate(encoder, arguments.batch_size, shuffle_seed=1):
        if batches == arguments.batches:
            break
        inputs = {key: torch.as_tensor(value) for key, value in batch.as_feed().items()}
        start = time.perf_counter()
        with torch.no_grad():
            teacher(**inputs, output_hidden_states=True)
        middle = time.perf_counter()
        out = student(**inputs, output_hidden_states=True)
        loss = out.logits.pow(2).mean() + sum(state.pow(2).mean() for state in out.hidden_states)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        teacher_seconds += middle - start
        student_seconds += time.perf_counter() - middle
        batches += 1
    share = teacher_seconds / (teacher_seconds + student_seconds)
    print(
        f"{batches} batches of {arguments.batch_size}, student layers {layers}: teacher forward "
        f"{teacher_seconds:.4f} s, student forward+backward+step {student_seconds:.4f} s, "
        f"teacher share {100 * share:.0f}%"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
