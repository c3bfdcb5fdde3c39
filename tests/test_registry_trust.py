"""Registry and publishing against real processes (SeaweedFS, an MLflow SQLite store, Prefect's harness):
no lost update on the channel, one truth (the alias follows the channel, ``reconcile``), idempotent
registration and publishing."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.bundle_factory import make_bundle
from tests.mlflow_fixtures import mlflow_server  # noqa: F401 - module fixture
from tests.s3_fixtures import seaweedfs_server  # noqa: F401 - session fixture

_names = itertools.count()


@pytest.fixture
def trust(tmp_path, seaweedfs):
    """A model of its own (unique name: one shared bucket), an MLflow SQLite store, two bundles."""
    from tasks.config import PipelineConfig

    name = f"trust-{next(_names)}-{tmp_path.name[-8:].lower().replace('_', '-')}"
    config = PipelineConfig.model_validate(
        {
            "model_name": name,
            "registry": {
                "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                "artifact_location": str(tmp_path / "artifacts"),
            },
            "publish": {"channel": "production", "store": seaweedfs.settings(create_bucket=True).model_dump()},
        }
    )
    bundles = []
    for variant in ("a", "b"):
        make_bundle(tmp_path / variant, model_name=name, variant=variant)
        bundles.append(tmp_path / variant)
    return config, bundles


def _register(config, bundle: Path, failures: list[str] | None = None):
    from tasks.register import register_bundle

    return register_bundle(config, bundle, {"int8_accuracy": 0.9}, failures or [], [], log=lambda _: None)


def test_a_run_that_lost_the_race_does_not_move_the_channel_and_is_not_retried(trust, prefect_harness):
    """Two runs decide against the same (empty) channel; the first to publish wins, the second ends with
    the conflict naming the winner, is not retried, and leaves the channel and the champion alone."""
    from prefect import flow

    from enginekit.objectstore import ObjectStoreReader
    from tasks.publish import StaleDecisionError, publish_task, read_channel_state
    from tasks.register import current_alias_version, promote

    config, (bundle_a, bundle_b) = trust
    seen_by_a = read_channel_state(config.publish.store, config.model_name, "production")
    seen_by_b = read_channel_state(config.publish.store, config.model_name, "production")
    assert seen_by_a.version is None and seen_by_b == seen_by_a
    a, b = _register(config, bundle_a), _register(config, bundle_b)
    attempts = []

    @flow
    def publish_and_promote(bundle: Path, registered, decided):
        attempts.append(registered.version)
        published = publish_task(
            config.publish, config.model_name, str(bundle), registered.version, registered.uri, decided
        )
        promote(config.registry, registered, published.version_uri, log=lambda _: None)
        return published

    won = publish_and_promote(bundle_a, a, seen_by_a)
    with pytest.raises(StaleDecisionError) as lost:
        publish_and_promote(bundle_b, b, seen_by_b)
    message = str(lost.value)
    assert f"now serves {won.version}" in message and "was NOT moved" in message and "no champion" in message
    pointer = ObjectStoreReader(config.publish.store).read_channel(config.model_name, "production")
    assert pointer.version == won.version and pointer.previous_version is None
    history = ObjectStoreReader(config.publish.store).history(config.model_name, "production")
    assert [(record.from_version, record.to_version) for record in history] == [(None, won.version)]
    assert current_alias_version(config.registry, config.model_name, "champion") == a.version
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = [run for run in client.read_task_runs() if run.name.startswith("publish-s3")]
    failed = [run for run in runs if run.state is not None and run.state.is_failed()]
    assert len(failed) == 1 and failed[0].run_count == 1  # the lost compare-and-set ran once: no retry

    # A run that decides against the channel as it is now may move it.
    fresh = read_channel_state(config.publish.store, config.model_name, "production")
    assert fresh.version == won.version
    moved = publish_and_promote(bundle_b, b, fresh)
    assert moved.previous_version == won.version


def test_a_retried_registration_and_publish_create_one_version_and_one_move(trust, monkeypatch):
    """S3 fails in the middle of the upload; the rerun registers nothing anew and moves the channel once."""
    from enginekit.objectstore import ObjectStoreError, ObjectStoreReader
    from tasks.publish import ObjectStorePublisher, publish_bundle, read_channel_state
    from tasks.register import client_for

    config, (bundle, _) = trust
    decided = read_channel_state(config.publish.store, config.model_name, "production")
    first = _register(config, bundle)
    real_put = ObjectStorePublisher._put_immutable
    calls = []

    def failing_put(self, key, path, size, sha256):  # the second file's upload dies (a fault S3 can't be told to make)
        calls.append(key)
        if len(calls) == 2:
            raise ObjectStoreError(f"simulated connection reset uploading {key}")
        return real_put(self, key, path, size, sha256)

    monkeypatch.setattr(ObjectStorePublisher, "_put_immutable", failing_put)
    with pytest.raises(ObjectStoreError, match="simulated connection reset"):
        publish_bundle(config.publish, config.model_name, bundle, first.version, first.uri, decided=decided)
    monkeypatch.setattr(ObjectStorePublisher, "_put_immutable", real_put)
    assert ObjectStoreReader(config.publish.store).read_channel(config.model_name, "production") is None

    again = _register(config, bundle)  # the retried task
    assert (again.version, again.run_id) == (first.version, first.run_id)
    published = publish_bundle(config.publish, config.model_name, bundle, again.version, again.uri, decided=decided)
    repeated = publish_bundle(config.publish, config.model_name, bundle, again.version, again.uri, decided=decided)
    assert repeated.version == published.version
    registry = client_for(config.registry)
    assert len(registry.search_model_versions(f"name='{config.model_name}'")) == 1
    history = ObjectStoreReader(config.publish.store).history(config.model_name, "production")
    assert [(record.from_version, record.to_version) for record in history] == [(None, published.version)]


def test_failed_gate_versions_are_kept_as_evidence_without_the_candidate_alias(trust):
    from tasks.register import client_for, current_alias_version

    config, (bundle_a, bundle_b) = trust
    good = _register(config, bundle_a)
    bad = _register(config, bundle_b, failures=["accuracy: drop 3.00 points (allowed ≤ 1.00)"])
    version = client_for(config.registry).get_model_version(config.model_name, bad.version)
    assert version.tags["gates_passed"] == "false" and "accuracy" in version.tags["gate_failures"]
    assert current_alias_version(config.registry, config.model_name, "candidate") == good.version


def test_reconcile_repairs_a_champion_left_behind_by_a_crash_between_channel_and_alias(trust):
    """The channel moved, the process died before the alias moved: ``reconcile`` finds the divergence and
    moves the alias to the channel's version (never the other way)."""
    from enginekit.objectstore import ObjectStoreReader
    from tasks.channel import reconcile
    from tasks.publish import publish_bundle, read_channel_state
    from tasks.register import current_alias_version, promote

    config, (bundle_a, bundle_b) = trust
    a = _register(config, bundle_a)
    published_a = publish_bundle(
        config.publish,
        config.model_name,
        bundle_a,
        a.version,
        a.uri,
        decided=read_channel_state(config.publish.store, config.model_name, "production"),
    )
    promote(config.registry, a, published_a.version_uri, log=lambda _: None)
    assert reconcile(config.registry, config.publish, config.model_name, log=lambda _: None).in_sync

    b = _register(config, bundle_b)
    decided = read_channel_state(config.publish.store, config.model_name, "production")
    published_b = publish_bundle(config.publish, config.model_name, bundle_b, b.version, b.uri, decided=decided)
    # ... and the run dies here: promote-champion never runs.
    assert current_alias_version(config.registry, config.model_name, "champion") == a.version

    seen = reconcile(config.registry, config.publish, config.model_name, repair=False, log=lambda _: None)
    assert not seen.in_sync and seen.alias_version == a.version and seen.channel_mlflow_version == b.version
    assert current_alias_version(config.registry, config.model_name, "champion") == a.version  # only looked
    lines = []
    repaired = reconcile(config.registry, config.publish, config.model_name, log=lines.append)
    assert repaired.repairs and any(f"version {b.version}" in line for line in lines), lines
    assert current_alias_version(config.registry, config.model_name, "champion") == b.version
    pointer = ObjectStoreReader(config.publish.store).read_channel(config.model_name, "production")
    assert pointer.version == published_b.version  # the channel never moves in reconcile
    assert reconcile(config.registry, config.publish, config.model_name, log=lambda _: None).in_sync


def test_reconcile_writes_a_missing_history_record(trust, seaweedfs):
    from enginekit.objectstore import ObjectStoreReader
    from tasks.channel import reconcile
    from tasks.publish import publish_bundle, read_channel_state
    from tasks.register import promote

    config, (bundle, _) = trust
    a = _register(config, bundle)
    decided = read_channel_state(config.publish.store, config.model_name, "production")
    published = publish_bundle(config.publish, config.model_name, bundle, a.version, a.uri, decided=decided)
    promote(config.registry, a, published.version_uri, log=lambda _: None)
    reader = ObjectStoreReader(config.publish.store)
    pointer = reader.read_channel(config.model_name, "production")
    seaweedfs.raw_client().delete_object(Bucket=seaweedfs.bucket, Key=pointer.history_key)  # lost to a crash
    assert reader.history(config.model_name, "production") == []
    report = reconcile(config.registry, config.publish, config.model_name, log=lambda _: None)
    assert not report.history_ok and report.repairs
    assert [record.to_version for record in reader.history(config.model_name, "production")] == [published.version]


def _config_file(config, path: Path) -> Path:
    import json

    path.write_text(json.dumps(config.model_dump(mode="json", by_alias=True)))  # JSON is YAML
    return path


def test_operator_commands_promote_roll_back_and_tell_the_history(trust, tmp_path, seaweedfs, capsys):
    from enginekit.objectstore import CorruptObjectError, ObjectStoreReader
    from flows.cli import main
    from tasks import operations
    from tasks.register import current_alias_version

    config, (bundle_a, bundle_b) = trust
    a, b = _register(config, bundle_a), _register(config, bundle_b)
    bad = _register(config, bundle_b)
    assert bad.version == b.version  # the same bundle twice: one version
    path = _config_file(config, tmp_path / "config.yaml")
    registry, publish, model = config.registry, config.publish, config.model_name

    first = operations.promote(registry, publish, model, a.version, actor="user test", log=lambda _: None)
    assert main(["promote", b.version, "--config", str(path)]) == 0
    reader = ObjectStoreReader(publish.store)
    second = reader.read_channel(model, "production").version
    assert current_alias_version(registry, model, "champion") == b.version and second != first

    assert main(["rollback", "--config", str(path)]) == 0
    assert reader.read_channel(model, "production").version == first
    assert current_alias_version(registry, model, "champion") == a.version
    capsys.readouterr()
    assert main(["history", "--config", str(path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3, lines
    assert f"(none) → {first}" in lines[0] and "'promoted by operator' by user test" in lines[0]
    assert f"{first} → {second}" in lines[1] and f"{second} → {first}" in lines[2] and "rollback from" in lines[2]
    assert f"run {a.run_id}" in lines[0] and f"MLflow version {b.version} run {b.run_id}" in lines[1]

    assert main(["versions", "--config", str(path)]) == 0
    table = capsys.readouterr().out
    serving = [line for line in table.splitlines() if " yes " in line]
    assert len(serving) == 1 and first in serving[0] and "champion" in serving[0], table

    # fetch: a verified copy for consumers; changed bytes in the store are refused, nothing is left behind.
    manifest = operations.fetch(registry, publish, model, f"{model}@champion", tmp_path / "copy")
    assert (tmp_path / "copy" / "manifest.json").is_file() and manifest.lineage.mlflow_run_id == a.run_id
    client = seaweedfs.raw_client()
    key = reader.version_prefix(model, first) + "golden.json"
    client.put_object(Bucket=seaweedfs.bucket, Key=key, Body=b'{"texts": ["tampered"]}')
    with pytest.raises(CorruptObjectError):
        operations.fetch(registry, publish, model, f"{model}@champion", tmp_path / "tampered")
    assert not (tmp_path / "tampered").exists()
    assert main(["fetch", f"{model}@champion", str(tmp_path / "again"), "--config", str(path)]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: ")


def test_promote_refuses_a_version_that_failed_its_gates_unless_forced(trust, capsys, tmp_path):
    from flows.cli import main

    config, (bundle_a, _) = trust
    failed = _register(config, bundle_a, failures=["min_accuracy: 40.00% (floor 90.00%)"])
    path = _config_file(config, tmp_path / "config.yaml")
    assert main(["promote", failed.version, "--config", str(path)]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and "did not pass its gates" in error and "--force" in error
    assert main(["promote", failed.version, "--force", "--config", str(path)]) == 0
    assert main(["reconcile", "--check", "--config", str(path)]) == 0
    assert "in sync" in capsys.readouterr().out


def test_a_password_in_the_tracking_uri_reaches_no_param_log_line_output_or_deployment(
    tmp_path, mlflow_tracking_server, tiny_build, monkeypatch, caplog, capsys
):
    """The password is taken out of the URI when the config is read (into MLFLOW_TRACKING_PASSWORD, for
    this process): MLflow params, log lines, command output and deployment parameters never hold it; the
    champion then loads with pyfunc in a fresh process from the server."""
    import json
    import logging
    import os
    import subprocess
    import sys

    from flows.cli import main
    from flows.deployments import deployment_parameters
    from tasks.config import PipelineConfig
    from tasks.register import client_for, promote

    secret = "s3cret-pw-7781"
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    host = mlflow_tracking_server.removeprefix("http://")
    uri = f"http://alice:{secret}@{host}"
    caplog.set_level(logging.DEBUG)
    config = PipelineConfig.model_validate(
        {
            "model_name": "secret-intent",
            "registry": {"tracking_uri": uri, "artifact_location": str(tmp_path / "artifacts")},
            "publish": {"store": {"bucket": "unused"}},
        }
    )
    assert config.registry.tracking_uri == mlflow_tracking_server
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == secret and os.environ["MLFLOW_TRACKING_USERNAME"] == "alice"
    import shutil

    shutil.copytree(tiny_build.bundle_dir, tmp_path / "bundle")
    registered = _register(config, tmp_path / "bundle")
    promote(config.registry, registered, "s3://unused/", log=lambda _: None)
    run = client_for(config.registry).get_run(registered.run_id)
    assert run.data.params["registry.tracking_uri"] == mlflow_tracking_server
    assert not [key for key, value in run.data.params.items() if secret in value]
    assert secret not in json.dumps(deployment_parameters(config))
    path = _config_file(config, tmp_path / "config.yaml")
    assert main(["check-config", str(path), "--set", f"registry.tracking_uri={uri}"]) == 0
    printed = capsys.readouterr()
    assert secret not in printed.out + printed.err and secret not in caplog.text

    script = (
        "import mlflow.pyfunc, json; "
        "m = mlflow.pyfunc.load_model('models:/secret-intent@champion'); "
        "print(json.dumps(m.predict(['rain forecast tokyo', 'buy cheap shoes'])['label'].tolist()))"
    )
    environment = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_tracking_server}
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=environment
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == ["weather", "shopping"]
    assert secret not in loaded.stdout + loaded.stderr
