"""End to end: the train_to_deploy flow under Prefect's test harness, against a real SeaweedFS process
and a real MLflow SQLite store, on a tiny random BERT. Three runs: promote, promote again (the pointer
moves), and a failed gate (champion and pointer stay where they were)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import TINY_TEACHER_TRAINING, tiny_config_mapping, write_intent_dataset
from tests.s3_fixtures import seaweedfs_server  # noqa: F401 - session fixture

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    return root, write_intent_dataset(root / "source", seed=3)


def run_flow(workspace, seaweedfs, **sections):
    from flows.train_to_deploy import train_to_deploy
    from tasks.config import config_from_mapping

    root, data_dir = workspace
    mapping = tiny_config_mapping(data_dir, root, **sections)
    mapping["publish"] = {
        "channel": "production",
        "store": seaweedfs.settings(create_bucket=True).model_dump(mode="json"),
    }
    config = config_from_mapping(mapping, "e2e config")
    return config, train_to_deploy(config=config)


def object_bytes(client, bucket, key):
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


@pytest.fixture(scope="module")
def runs(prefect_harness, workspace, seaweedfs):
    first = run_flow(workspace, seaweedfs)
    second = run_flow(
        workspace,
        seaweedfs,
        teacher={"training": {**TINY_TEACHER_TRAINING, "seed": 7}},
    )
    # A collapsed teacher (learning rate far too small) cannot clear the absolute accuracy floor.
    failed = run_flow(
        workspace,
        seaweedfs,
        teacher={
            "training": {"epochs": 1, "schedule": "linear", "min_steps": 0, "batch_size": 16, "learning_rate": 1e-7}
        },
        validate={
            "timing_iterations": 6,
            "warmup_iterations": 1,
            "bootstrap_samples": 200,
            "min_accuracy": 0.9,
        },
    )
    return first, second, failed


def test_first_run_publishes_registers_and_promotes(runs, seaweedfs):
    from enginekit.bundle import read_manifest
    from enginekit.objectstore import ObjectStoreReader as ObjectStore
    from tasks.register import client_for

    config, summary = runs[0]
    assert summary.promoted, summary.failure_reasons
    assert summary.teacher_accuracy > 0.8
    assert abs(summary.accuracy_delta_points) <= config.validate_.max_accuracy_drop

    # The published version: every manifest file is in the bucket with the recorded size and sha256.
    store = ObjectStore(config.publish.store)
    local_manifest = read_manifest(Path(summary.bundle_dir))
    version = summary.published_uri.rstrip("/").rsplit("/", 1)[-1]
    assert version in store.list_versions(config.model_name)
    client = seaweedfs.raw_client()
    prefix = store.version_prefix(config.model_name, version)
    stored_manifest = json.loads(object_bytes(client, seaweedfs.bucket, prefix + "manifest.json"))
    assert stored_manifest == local_manifest.model_dump(mode="json")
    for entry in local_manifest.files:
        body = object_bytes(client, seaweedfs.bucket, prefix + entry.path)
        assert len(body) == entry.size
        assert hashlib.sha256(body).hexdigest() == entry.sha256, entry.path
    assert local_manifest.lineage.mlflow_run_id == summary.mlflow_run_id

    # MLflow: a registered version tagged with lineage, candidate and champion on it.
    registry = client_for(config.registry)
    model_version = registry.get_model_version(config.model_name, summary.mlflow_model_uri.rsplit("/", 1)[-1])
    assert model_version.tags["data_fingerprint"] == local_manifest.lineage.data_fingerprint
    assert model_version.tags["bundle_digest"] == local_manifest.digest()
    assert model_version.tags["gates_passed"] == "true"
    assert model_version.tags["chosen_variant"] == summary.chosen_variant
    assert summary.chosen_variant.startswith(("PTQ", "KD-QAT", "smaller student"))
    assert "| PTQ max |" in Path(summary.variants_markdown).read_text()
    run = registry.get_run(summary.mlflow_run_id)
    assert "int8_accuracy" in run.data.metrics and "teacher.training.epochs" in run.data.params

    # The teacher's training is reported: its eval curve, why it stopped, and its share of the wall time.
    curve = registry.get_metric_history(summary.mlflow_run_id, "teacher.eval_accuracy")
    assert [m.step for m in curve] == list(range(1, summary.teacher_epochs + 1))
    assert run.data.tags["teacher_stop_reason"] == summary.teacher_stop_reason in ("plateau", "ceiling")
    report = Path(summary.run_report).read_text()
    assert f"Stopped: **{summary.teacher_stop_reason}**" in report and "| train-teacher |" in report
    assert "| publish-s3 |" in report and 0 < summary.teacher_seconds < summary.run_seconds
    logged = [a.path for a in registry.list_artifacts(summary.mlflow_run_id, "reports")]
    assert "reports/run-report.md" in logged and "reports/training.md" in logged


def test_second_run_moves_pointer_and_champion(runs, seaweedfs):
    from enginekit.objectstore import ObjectStoreReader as ObjectStore
    from tasks.register import client_for

    (config, first), (_, second) = runs[0], runs[1]
    assert second.promoted
    first_version = first.published_uri.rstrip("/").rsplit("/", 1)[-1]
    second_version = second.published_uri.rstrip("/").rsplit("/", 1)[-1]
    assert first_version != second_version
    assert second.previous_version == first_version
    store = ObjectStore(config.publish.store)
    pointer = store.read_channel(config.model_name, "production")
    assert pointer.version == second_version and pointer.previous_version == first_version
    moves = [(record.from_version, record.to_version) for record in store.history(config.model_name, "production")]
    assert moves == [(None, first_version), (first_version, second_version)]
    registry = client_for(config.registry)
    champion = registry.get_model_version_by_alias(config.model_name, "champion")
    assert f"models:/{config.model_name}/{champion.version}" == second.mlflow_model_uri
    # Its champion gate scored the version the channel served then (the first run's), fetched from S3.
    report = json.loads((Path(second.bundle_dir).parent / "validation" / "validation.json").read_text())
    gate = next(g for g in report["gates"] if g["name"] == "champion_challenger")
    assert f"vs champion {first_version} " in gate["detail"], gate
    assert report["decided_against"].endswith(
        f"served {first_version} (moved {pointer_moved_at(store, config, first_version)})"
    )


def pointer_moved_at(store, config, version):
    return next(r.moved_at for r in store.history(config.model_name, "production") if r.to_version == version)


def test_failed_gate_leaves_champion_and_pointer_and_says_why(runs, seaweedfs):
    from enginekit.objectstore import ObjectStoreReader as ObjectStore
    from tasks.register import client_for

    (config, second), (_, failed) = runs[1], runs[2]
    assert not failed.promoted
    assert any(reason.startswith("min_accuracy:") for reason in failed.failure_reasons)
    assert failed.published_uri is None
    store = ObjectStore(config.publish.store)
    assert (
        store.read_channel(config.model_name, "production").version
        == second.published_uri.rstrip("/").rsplit("/", 1)[-1]
    )
    assert len(store.list_versions(config.model_name)) == 2
    registry = client_for(config.registry)
    assert (
        f"models:/{config.model_name}/{registry.get_model_version_by_alias(config.model_name, 'champion').version}"
        == second.mlflow_model_uri
    )
    assert Path(failed.run_report).is_file()  # the run report is written when a gate fails too
    # The failed version is kept as evidence, tagged, and never becomes the candidate.
    failed_version = registry.get_model_version(config.model_name, failed.mlflow_model_uri.rsplit("/", 1)[-1])
    assert failed_version.tags["gates_passed"] == "false"
    assert "min_accuracy" in failed_version.tags["gate_failures"]
    candidate = registry.get_model_version_by_alias(config.model_name, "candidate")
    assert f"models:/{config.model_name}/{candidate.version}" == second.mlflow_model_uri


def test_champion_loads_with_pyfunc_in_a_fresh_process(runs):
    config, _ = runs[0]
    script = textwrap.dedent(
        f"""
        import json, mlflow.pyfunc
        mlflow.set_tracking_uri({config.registry.tracking_uri!r})
        model = mlflow.pyfunc.load_model("models:/{config.model_name}@champion")
        frame = model.predict(["rain forecast tokyo", "buy cheap shoes", "latest headlines berlin"])
        print(json.dumps(frame["label"].tolist()))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == ["weather", "shopping", "news"]
