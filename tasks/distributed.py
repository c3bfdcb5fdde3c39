"""Multi-GPU training stages: the flow's training tasks run under ``torchrun`` when asked to.

With ``training.processes: N`` (N > 1) in the teacher or quantize section, the flow's task does not train
in its own process: it writes its arguments to ``<out_dir>/distributed-job.json`` and launches

    python -m torch.distributed.run --standalone --nproc_per_node N -m tasks.distributed <out_dir>/distributed-job.json

Every worker joins one process group (NCCL on GPUs, gloo on CPU), runs the same stage function
(``train_teacher`` / ``train_student``), whose ``fine_tune`` wraps the model in DistributedDataParallel
and gives each rank its share of the batches; rank 0 alone writes the stage's files. The task then reads
the result the stage wrote (``teacher.json`` / ``quantize.json``) exactly as after a local run, so the
rest of the flow does not know the difference. A worker's failure fails the task with torchrun's exit
status and the log file's tail.

The same command works by hand on a GPU box for one stage (e.g. re-training a teacher on 8 GPUs): write
the job file with ``write_job`` or copy one a flow run left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

JOB_FILE = "distributed-job.json"
LOG_FILE = "distributed.log"


class DistributedStageError(RuntimeError):
    pass


def write_job(out_dir: Path, stage: str, arguments: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / JOB_FILE
    path.write_text(json.dumps({"stage": stage, "out_dir": str(out_dir), **arguments}, indent=2, default=str))
    return path


def launch(job: Path, processes: int, log=print) -> None:
    """Run the job under torchrun with ``processes`` workers on this host; raise with the log's tail."""
    log_path = job.parent / LOG_FILE
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "tasks.distributed",
        str(job),
    ]
    log(f"launching {processes} torchrun workers: {' '.join(command[1:])}")
    environment = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with log_path.open("w") as handle:
        returncode = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT, env=environment)
    if returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise DistributedStageError(
            f"torchrun workers for {job} exited with status {returncode}; log {log_path}:\n{tail}"
        )


def run_teacher(config, data, out_dir: Path, log=print):
    """``train_teacher`` across ``config.training.processes`` workers; returns its TeacherResult."""
    from tasks.teacher import TeacherResult

    job = write_job(out_dir, "teacher", {"config": config.model_dump(mode="json"), "data": asdict(data)})
    launch(job, config.training.processes, log)
    return TeacherResult(**json.loads((out_dir / "teacher.json").read_text()))


def run_student(config, teacher, data, out_dir: Path, log=print, **options):
    """``train_student`` across ``config.training.processes`` workers; returns its StudentResult."""
    from tasks.quantize import StudentResult

    init, distill = options.get("init"), options.get("distill_training")
    encoded = {
        **options,
        "init": asdict(init) if init is not None else None,
        "distill_training": distill.model_dump(mode="json") if distill is not None else None,
    }
    arguments = {"config": config.model_dump(mode="json"), "teacher": asdict(teacher), "data": asdict(data)}
    job = write_job(out_dir, "student", {**arguments, "options": encoded})
    launch(job, config.training.processes, log)
    return StudentResult(**json.loads((out_dir / "quantize.json").read_text()))


def _worker(job_path: Path) -> int:
    import torch
    import torch.distributed as dist

    from tasks.config import QuantizeConfig, TeacherConfig, TrainingConfig
    from tasks.data import PreparedData
    from tasks.quantize import StudentResult, train_student
    from tasks.teacher import TeacherResult, train_teacher

    job = json.loads(job_path.read_text())
    stage, out_dir = job["stage"], Path(job["out_dir"])
    if stage not in ("teacher", "student"):
        raise ValueError(f"unknown stage {stage!r} in {job_path}; expected teacher or student")
    device_spec = job["config"].get("device", "auto") if stage == "teacher" else job["teacher"]["device"]
    uses_cuda = torch.cuda.is_available() and not str(device_spec).startswith("cpu")
    dist.init_process_group(backend="nccl" if uses_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    def log(message: str) -> None:
        if rank == 0:
            print(f"[rank 0/{world}] {message}", flush=True)

    try:
        data = PreparedData(**job["data"])
        if stage == "teacher":
            train_teacher(TeacherConfig.model_validate(job["config"]), data, out_dir, log)
        else:
            options = dict(job["options"])
            if options.get("init") is not None:
                options["init"] = StudentResult(**options["init"])
            if options.get("distill_training") is not None:
                options["distill_training"] = TrainingConfig.model_validate(options["distill_training"])
            config = QuantizeConfig.model_validate(job["config"])
            train_student(config, TeacherResult(**job["teacher"]), data, out_dir, log, **options)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(_worker(Path(sys.argv[1])))
