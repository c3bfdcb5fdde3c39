"""Publish stage: upload the gated bundle to S3-compatible storage as an immutable version, verify it,
then move the channel pointer (written last, conditionally) so servers pick it up.

Version ids are ``v<MLflow version>-<first 8 hex of the bundle digest>``: readable, tied to the
registry, and unique even if the MLflow store is ever recreated against the same bucket.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from enginekit.bundle import verify_bundle
from enginekit.config import PublishConfig
from enginekit.objectstore import CHANNEL_ABSENT, ObjectStore


@dataclass(frozen=True)
class PublishResult:
    version: str
    version_uri: str
    channel: str
    channel_uri: str
    previous_version: str | None


def version_id(mlflow_version: str, digest: str) -> str:
    return f"v{mlflow_version}-{digest[:8]}"


def publish_bundle(
    config: PublishConfig,
    model_name: str,
    bundle_dir: Path,
    mlflow_version: str,
    mlflow_uri: str,
    actor: str | None = None,
    log=print,
) -> PublishResult:
    manifest = verify_bundle(Path(bundle_dir))
    store = ObjectStore(config.store)
    if config.store.create_bucket:
        store.ensure_bucket()
    version = version_id(mlflow_version, manifest.digest())
    published = store.publish_version(model_name, version, Path(bundle_dir), manifest)
    current = store.read_channel(model_name, config.channel)
    pointer = store.move_channel(
        model_name,
        config.channel,
        version,
        expected_etag=current.etag if current is not None and current.etag else CHANNEL_ABSENT,
        reason=f"gates passed; MLflow {mlflow_uri}",
        actor=actor,
        expected_bundle_digest=published.bundle_digest,
        extra={"mlflow_model_uri": mlflow_uri, "mlflow_version": mlflow_version},
    )
    previous = current.version if current is not None else None
    log(f"published {published.uri}; channel {config.channel}: {previous or '(none)'} → {version}")
    return PublishResult(
        version=version,
        version_uri=published.uri,
        channel=config.channel,
        channel_uri=store.uri(store.channel_key(model_name, pointer.channel)),
        previous_version=previous,
    )


@task(name="publish-s3", cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=5)
def publish_task(
    config: PublishConfig, model_name: str, bundle_dir: str, mlflow_version: str, mlflow_uri: str
) -> PublishResult:
    from prefect import runtime

    actor = f"prefect flow run {runtime.flow_run.id}" if runtime.flow_run.id else None
    return publish_bundle(
        config, model_name, Path(bundle_dir), mlflow_version, mlflow_uri, actor, log=get_run_logger().info
    )
