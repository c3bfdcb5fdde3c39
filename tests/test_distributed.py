"""Training stages under torchrun: two real worker processes (gloo on CPU), DDP in the one fine_tune loop."""

import json

import pytest

from tests.conftest import tiny_config_mapping, write_intent_dataset


@pytest.fixture(scope="module")
def two_process_config(tmp_path_factory):
    from tasks.config import config_from_mapping
    from tasks.data import prepare_data

    root = tmp_path_factory.mktemp("ddp")
    mapping = tiny_config_mapping(write_intent_dataset(root / "source"), root)
    mapping["teacher"]["training"] = {**mapping["teacher"]["training"], "epochs": 6, "processes": 2}
    mapping["quantize"]["training"] = {**mapping["quantize"]["training"], "processes": 2}
    config = config_from_mapping(mapping, "ddp test config")
    return root, config, prepare_data(config.data, root / "data")


def test_teacher_and_kd_qat_train_across_two_torchrun_workers(two_process_config):
    from tasks.distributed import JOB_FILE, LOG_FILE, run_student, run_teacher

    root, config, data = two_process_config
    messages = []
    teacher = run_teacher(config.teacher, data, root / "teacher", messages.append)
    assert "--nproc_per_node=2" in messages[0]
    log = (root / "teacher" / LOG_FILE).read_text()
    assert "[rank 0/2]" in log and "[rank 1/2]" not in log  # one process group of two; rank 0 speaks
    # Both ranks follow rank 0's eval numbers through the plateau rule (a disagreement would hang DDP).
    assert teacher.stop_reason in ("plateau", "ceiling") and 1 < len(teacher.history) <= 6
    assert [record["epoch"] for record in teacher.history] == list(range(1, len(teacher.history) + 1))
    assert teacher.history[-1]["phase"] == "decay" and (root / "teacher" / "training.md").is_file()
    assert teacher.eval_accuracy > 0.8  # the intents are learnable; sharded batches still train the model
    assert (root / "teacher" / "model" / "config.json").is_file() and (root / "teacher" / JOB_FILE).is_file()

    student = run_student(config.quantize, teacher, data, root / "student", calibration="max", student_layers=[1])
    assert student.student_layers == [1] and student.calibration == "max"
    assert json.loads((root / "student" / "quantize.json").read_text())["quantized_layers"] == 12
    assert not (root / "student" / "checkpoint").exists()


def test_a_failing_worker_fails_the_stage_with_the_log_tail(two_process_config, tmp_path):
    from tasks.distributed import DistributedStageError, launch, write_job

    job = write_job(tmp_path, "no-such-stage", {"config": {}, "data": {}})
    with pytest.raises(DistributedStageError, match="exited with status") as error:
        launch(job, 2, lambda _: None)
    assert "unknown stage 'no-such-stage'" in str(error.value)
