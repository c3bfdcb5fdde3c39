"""Register stage: an MLflow run with params, metrics and artifacts; the bundle as a pyfunc model; one
registered model version per gated bundle, tagged with lineage; alias ``candidate`` on registration and
``champion`` only on promotion (after the gates pass and the bundle is published).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from enginekit.bundle import Manifest, read_manifest, utc_now_iso, write_manifest
from tasks.config import PipelineConfig, RegistryConfig

CANDIDATE_ALIAS = "candidate"
CHAMPION_ALIAS = "champion"
CONTENT_DIGEST_TAG = "content_digest"
"""Tag of runs and versions: ``content_digest`` of the bundle, the key of idempotent registration."""
MODEL_ARTIFACT = "engine"


@dataclass(frozen=True)
class RegisteredVersion:
    model_name: str
    version: str
    run_id: str
    experiment_id: str
    tracking_uri: str

    @property
    def uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"


def resolve_tracking_uri(uri: str) -> str:
    """Make ``sqlite:///relative/path.db`` absolute (and its folder exist) so runs from any cwd agree."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        path = Path(uri[len(prefix) :]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(path)
    return uri


def _artifact_location(location: str) -> str:
    if "://" in location:
        return location
    path = Path(location).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path.as_uri()


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        items: dict[str, Any] = {}
        for key, child in value.items():
            items.update(flatten(f"{prefix}.{key}" if prefix else str(key), child))
        return items
    return {prefix: value}


def client_for(config: RegistryConfig):  # -> mlflow.MlflowClient
    import mlflow

    uri = resolve_tracking_uri(config.tracking_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def register_bundle(
    config: PipelineConfig,
    bundle_dir: Path,
    metrics: dict[str, float],
    gate_failures: list[str],
    artifacts: list[Path],
    flow_run_id: str | None = None,
    extra_tags: dict[str, str] | None = None,
    metric_history: dict[str, list[float]] | None = None,
    log=print,
) -> RegisteredVersion:
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    import enginekit
    from enginekit.mlflow_model import BUNDLE_ARTIFACT, EngineModel

    client = client_for(config.registry)
    experiment = client.get_experiment_by_name(config.registry.experiment)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(
            config.registry.experiment,
            artifact_location=_artifact_location(config.registry.artifact_location),
        )
    )
    bundle_dir = Path(bundle_dir)
    content = content_digest(read_manifest(bundle_dir))
    existing = _registered_for(client, config.model_name, content)
    if existing is not None:
        # A retried or resumed run: this bundle is registered already. Give the local bundle back the
        # lineage it was registered with (same digest as the registered copy) and register nothing anew.
        version, run_id = existing
        manifest = read_manifest(bundle_dir)
        lineage = manifest.lineage.model_copy(update={"mlflow_run_id": run_id})
        write_manifest(bundle_dir, manifest.updated(lineage=lineage.model_dump()))
        log(f"bundle already registered as models:/{config.model_name}/{version} (run {run_id}); not registered again")
        return RegisteredVersion(
            config.model_name, version, run_id, experiment_id, resolve_tracking_uri(config.registry.tracking_uri)
        )
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{config.model_name}-{utc_now_iso()}") as run:
        run_id = run.info.run_id
        manifest = read_manifest(bundle_dir)
        lineage = manifest.lineage.model_copy(update={"mlflow_run_id": run_id, "flow_run_id": flow_run_id})
        manifest = manifest.updated(lineage=lineage.model_dump())
        write_manifest(bundle_dir, manifest)

        params = flatten("", config.model_dump(mode="json", by_alias=True))
        params = {key: value for key, value in params.items() if "credentials" not in key}
        mlflow.log_params({key: str(value)[:500] for key, value in params.items()})
        mlflow.log_metrics(metrics)
        for key, values in (metric_history or {}).items():  # e.g. the teacher's eval curve, step = epoch
            for step, value in enumerate(values, start=1):
                mlflow.log_metric(key, value, step=step)
        # The same facts tag the run and (below) the model version, so either can be searched.
        lineage_tags = {
            "backend": manifest.backend,
            "precision": manifest.precision,
            "bundle_digest": manifest.digest(),
            CONTENT_DIGEST_TAG: content,
            "data_fingerprint": lineage.data_fingerprint,
            "config_hash": lineage.config_hash,
            "code_version": lineage.code_version,
            "gates_passed": str(not gate_failures).lower(),
            **(extra_tags or {}),
        }
        mlflow.set_tags(lineage_tags)
        for path in artifacts:
            mlflow.log_artifact(str(path), artifact_path="reports")
        # Single-text models take a plain list of strings (one unnamed string column); pair models a
        # DataFrame with text and text_pair columns.
        inputs = (
            Schema([ColSpec("string", "text"), ColSpec("string", "text_pair")])
            if manifest.tokenizer.text_pair
            else Schema([ColSpec("string")])
        )
        signature = ModelSignature(
            inputs=inputs,
            outputs=Schema([ColSpec("string", "label"), ColSpec("double", "score")]),
        )
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=EngineModel(),
            artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
            code_paths=[str(Path(enginekit.__file__).parent)],
            pip_requirements=_runtime_requirements(),
            signature=signature,
        )
        tags = {**lineage_tags, "mlflow_run_id": run_id}
        if gate_failures:
            tags["gate_failures"] = " | ".join(gate_failures)[:5000]
        for key in (
            "accuracy_delta_points",
            "int8_accuracy",
            "teacher_accuracy",
            "int8_latency_p50_ms",
            "speedup_throughput",
        ):
            if key in metrics:
                tags[key] = f"{metrics[key]:.4f}"
        # One call creates the version with its tags: a version without its content digest never exists.
        registered = mlflow.register_model(info.model_uri, config.model_name, tags=tags)
    version = str(registered.version)
    if gate_failures:  # kept as evidence: tagged, never the candidate
        log(f"registered models:/{config.model_name}/{version} (gates failed: no alias), run {run_id}")
    else:
        client.set_registered_model_alias(config.model_name, CANDIDATE_ALIAS, version)
        log(f"registered models:/{config.model_name}/{version} (alias {CANDIDATE_ALIAS}), run {run_id}")
    return RegisteredVersion(
        config.model_name, version, run_id, experiment_id, resolve_tracking_uri(config.registry.tracking_uri)
    )


def content_digest(manifest: Manifest) -> str:
    """The bundle's digest without the registration's own lineage (MLflow run, flow run): the same bundle
    has the same content digest before and after it is registered, in every attempt."""
    lineage = manifest.lineage.model_copy(update={"mlflow_run_id": None, "flow_run_id": None})
    return manifest.updated(lineage=lineage.model_dump()).digest()


def _registered_for(client: Any, model_name: str, content: str) -> tuple[str, str] | None:
    """(version, run id) of the registry version of this content digest, the oldest if several."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name='{model_name}' and tags.{CONTENT_DIGEST_TAG}='{content}'")
    except MlflowException:  # no such registered model yet
        return None
    if not found:
        return None
    first = min(found, key=lambda item: int(item.version))
    return str(first.version), str(first.run_id)


def _runtime_requirements() -> list[str]:
    from importlib import metadata

    return [
        f"{name}=={metadata.version(name)}"
        for name in ("onnxruntime", "tokenizers", "numpy", "pandas", "pydantic", "mlflow")
    ]


def mark_champion(config: RegistryConfig, model_name: str, version: str, published_uri: str) -> None:
    """Point the ``champion`` alias at ``version`` (after the channel moved to it: the alias follows)."""
    client = client_for(config)
    client.set_model_version_tag(model_name, version, "published_uri", published_uri)
    client.set_model_version_tag(model_name, version, "promoted_at", utc_now_iso())
    client.set_registered_model_alias(model_name, CHAMPION_ALIAS, version)


def promote(config: RegistryConfig, registered: RegisteredVersion, published_uri: str, log=print) -> None:
    mark_champion(config, registered.model_name, registered.version, published_uri)
    log(f"models:/{registered.model_name}@{CHAMPION_ALIAS} → version {registered.version}")


def current_alias_version(config: RegistryConfig, model_name: str, alias: str) -> str | None:
    client = client_for(config)
    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except Exception:  # MlflowException: alias or model not found
        return None


@task(name="register-mlflow", cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=5)
def register_task(
    config: PipelineConfig,
    bundle_dir: str,
    metrics: dict[str, float],
    gate_failures: list[str],
    artifacts: list[str],
    flow_run_id: str | None,
    extra_tags: dict[str, str] | None = None,
    metric_history: dict[str, list[float]] | None = None,
) -> RegisteredVersion:
    return register_bundle(
        config,
        Path(bundle_dir),
        metrics,
        gate_failures,
        [Path(a) for a in artifacts],
        flow_run_id,
        extra_tags,
        metric_history,
        log=get_run_logger().info,
    )


@task(name="promote-champion", cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=5)
def promote_task(config: RegistryConfig, registered: RegisteredVersion, published_uri: str) -> None:
    promote(config, registered, published_uri, log=get_run_logger().info)
