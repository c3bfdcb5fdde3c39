"""Operator commands: what exists, what served when, and moving the channel by hand.

``versions``  every version of a model: registry version, published S3 version, gates, aliases, serving.
``fetch``     a verified copy of ``NAME@ALIAS``, ``NAME/VERSION`` or a published version id, for consumers.
``promote``   put a registered version (gates passed) on the channel, then the alias (order: verify the
              bundle, upload it, move the channel with a compare-and-set, move the alias).
``rollback``  move the channel back to the version it served before (or ``--to`` one), then the alias.
``history``   every channel move: when, from, to, why, who, and what the version was built from (data,
              config, code, MLflow run).

The channel is what serves (``tasks.channel``); every write here goes through the same checks as a
pipeline run: a version is on the channel only after its files are in the store and verified, and the
alias only after the channel. Each is also a Prefect flow (``flows/operations.py``) for the UI.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from enginekit.bundle import Manifest, verify_bundle
from enginekit.objectstore import ObjectStoreError, ObjectStoreReader
from tasks.config import PublishConfig, RegistryConfig
from tasks.publish import CHANNEL_ABSENT, ObjectStorePublisher, publish_bundle, version_id
from tasks.register import CHAMPION_ALIAS, client_for, mark_champion


class OperationError(Exception):
    """An operator command cannot do what was asked; the message says why and what to do."""


@dataclass
class VersionRow:
    mlflow_version: str | None
    published: str | None
    """The S3 version id, when it was published."""
    bundle_digest: str | None
    gates_passed: str | None
    aliases: list[str] = field(default_factory=list)
    serving: bool = False
    created: str = ""


def _registry_versions(registry: RegistryConfig, model: str) -> list[Any]:
    from mlflow.exceptions import MlflowException

    try:
        found = client_for(registry).search_model_versions(f"name='{model}'")
    except MlflowException:
        return []
    return sorted(found, key=lambda item: int(item.version))


def _aliases(registry: RegistryConfig, model: str) -> dict[str, list[str]]:
    """Version -> its aliases (search results do not carry them; the registered model does)."""
    from mlflow.exceptions import MlflowException

    try:
        named = client_for(registry).get_registered_model(model).aliases
    except MlflowException:
        return {}
    found: dict[str, list[str]] = {}
    for alias, version in named.items():
        found.setdefault(str(version), []).append(alias)
    return found


def _published_id(version: Any) -> str | None:
    uri = version.tags.get("published_uri")
    return uri.rstrip("/").rsplit("/", 1)[-1] if uri else None


def list_versions(registry: RegistryConfig, publish: PublishConfig, model: str) -> list[VersionRow]:
    reader = ObjectStoreReader(publish.store)
    pointer = reader.read_channel(model, publish.channel)
    stored = reader.list_versions(model)
    rows, seen = [], set()
    aliases = _aliases(registry, model)
    for item in _registry_versions(registry, model):
        digest = item.tags.get("bundle_digest")
        published = _published_id(item) or next(
            (sid for sid in stored if digest and sid == version_id(str(item.version), digest)), None
        )
        seen.add(published)
        rows.append(
            VersionRow(
                str(item.version),
                published,
                digest,
                item.tags.get("gates_passed"),
                sorted(aliases.get(str(item.version), [])),
                pointer is not None and published == pointer.version,
                datetime.fromtimestamp(item.creation_timestamp / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S"),
            )
        )
    for orphan in (sid for sid in stored if sid not in seen):
        rows.append(VersionRow(None, orphan, None, None, [], pointer is not None and pointer.version == orphan))
    return rows


def _resolve(registry: RegistryConfig, model: str, reference: str) -> tuple[Any | None, str | None]:
    """(registry version or None, published S3 version id or None) for ``@ALIAS``, ``NUMBER`` or an S3 id;
    ``NAME@ALIAS`` and ``NAME/NUMBER`` name the model too (it must be ``model``)."""
    from mlflow.exceptions import MlflowException

    name, alias, number = model, None, None
    if "@" in reference:
        name, alias = reference.split("@", 1)
    elif "/" in reference:
        name, number = reference.rsplit("/", 1)
    elif reference.isdigit():
        number = reference
    else:
        return None, reference  # a published version id, e.g. v3-1a2b3c4d
    name = name.removeprefix("models:/") or model
    if name != model:
        raise OperationError(f"{reference!r} names model {name!r}, but this config is for {model!r}")
    client = client_for(registry)
    try:
        version = client.get_model_version_by_alias(model, alias) if alias else client.get_model_version(model, number)
    except MlflowException as error:
        raise OperationError(
            f"{reference!r}: no such version or alias of {model!r} in the registry ({error})"
        ) from None
    return version, _published_id(version)


def fetch(registry: RegistryConfig, publish: PublishConfig, model: str, reference: str, dest: Path) -> Manifest:
    """A verified copy of the version ``reference`` names in ``dest`` (absent, or a complete verified bundle:
    the copy is checked against its manifest and the registry's digest before it is moved into place)."""
    version, published = _resolve(registry, model, reference)
    expected = version.tags.get("bundle_digest") if version is not None else None
    if published is not None:
        return ObjectStoreReader(publish.store).fetch_version(model, published, dest, expected_bundle_digest=expected)
    import mlflow

    from enginekit.mlflow_model import BUNDLE_ARTIFACT

    dest = Path(dest)
    if dest.exists():
        raise OperationError(f"{dest} exists; fetch into a new directory")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.partial-", dir=dest.parent) as scratch:
        mlflow.set_tracking_uri(client_for(registry).tracking_uri)
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{model}/{version.version}", dst_path=scratch))
        flavor = mlflow.models.Model.load(str(local)).flavors["python_function"]
        bundle = local / flavor["artifacts"][BUNDLE_ARTIFACT]["path"]  # artifacts/<the logged folder's name>
        manifest = verify_bundle(bundle)
        if expected is not None and manifest.digest() != expected:
            raise OperationError(
                f"models:/{model}/{version.version}: the registered bundle's digest {manifest.digest()} is not the "
                f"one tagged at registration ({expected}); it was changed after registering. Nothing was written."
            )
        shutil.move(str(bundle), dest)
    return manifest


def promote(
    registry: RegistryConfig,
    publish: PublishConfig,
    model: str,
    reference: str,
    *,
    actor: str | None = None,
    force: bool = False,
    log=print,
) -> str:
    """Serve the registered version ``reference``; returns the published version id."""
    version, _published = _resolve(registry, model, reference)
    if version is None:
        raise OperationError(f"promote takes a registry version (NUMBER or @ALIAS), not {reference!r}")
    if version.tags.get("gates_passed") != "true" and not force:
        raise OperationError(
            f"models:/{model}/{version.version} did not pass its gates ({version.tags.get('gate_failures', '?')}); "
            "pass --force to serve it anyway"
        )
    with tempfile.TemporaryDirectory(prefix="promote-") as scratch:
        local = Path(scratch) / "bundle"
        fetch(registry, publish, model, str(version.version), local)
        reason = f"promoted by operator{' (forced past failed gates)' if force else ''}"
        result = publish_bundle(
            publish,
            model,
            local,
            str(version.version),
            f"models:/{model}/{version.version}",
            actor,
            log=log,
            reason=reason,
        )
    mark_champion(registry, model, str(version.version), result.version_uri)
    log(f"models:/{model}@{CHAMPION_ALIAS} → version {version.version}")
    return result.version


def rollback(
    registry: RegistryConfig,
    publish: PublishConfig,
    model: str,
    to: str | None = None,
    *,
    actor: str | None = None,
    log=print,
) -> str:
    """Move the channel to the version it served before (or ``to``: a published id or a registry
    version), compare-and-set against the pointer read here, then the alias; returns the version id."""
    store = ObjectStorePublisher(publish.store)
    pointer = store.read_channel(model, publish.channel)
    if pointer is None:
        raise OperationError(f"channel {publish.channel!r} of {model!r} has no pointer: nothing to roll back")
    target = to or pointer.previous_version
    if target is None:
        raise OperationError(f"channel {publish.channel!r} serves its first version {pointer.version}: pass --to")
    if target.isdigit() or "@" in target or "/" in target:
        _version, target_id = _resolve(registry, model, target)
        if target_id is None:
            raise OperationError(f"{target!r} was never published; use promote for it")
        target = target_id
    manifest = store.version_manifest(model, target)
    digest = manifest.digest()
    mlflow_version = _mlflow_version_of(registry, model, digest)
    extra = {"mlflow_version": mlflow_version, "mlflow_model_uri": f"models:/{model}/{mlflow_version}"}
    store.move_channel(
        model,
        publish.channel,
        target,
        expected_etag=pointer.etag or CHANNEL_ABSENT,
        reason=f"rollback from {pointer.version}",
        actor=actor,
        expected_bundle_digest=digest,
        extra=extra if mlflow_version else {},
    )
    log(f"channel {publish.channel}: {pointer.version} → {target} (rollback)")
    if mlflow_version is not None:
        mark_champion(registry, model, mlflow_version, store.uri(store.version_prefix(model, target)))
        log(f"models:/{model}@{CHAMPION_ALIAS} → version {mlflow_version}")
    return target


def _mlflow_version_of(registry: RegistryConfig, model: str, digest: str) -> str | None:
    matches = [item for item in _registry_versions(registry, model) if item.tags.get("bundle_digest") == digest]
    return str(matches[0].version) if matches else None


@dataclass
class HistoryRow:
    moved_at: str
    channel: str
    from_version: str | None
    to_version: str
    reason: str
    actor: str | None
    mlflow_version: str | None
    data_fingerprint: str | None
    config_hash: str | None
    code_version: str | None
    mlflow_run_id: str | None


def history(publish: PublishConfig, model: str) -> list[HistoryRow]:
    """Every move of the channel, oldest first, with what each version was built from (its manifest)."""
    reader = ObjectStoreReader(publish.store)
    lineage: dict[str, Any] = {}
    rows = []
    for record in reader.history(model, publish.channel):
        if record.to_version not in lineage:
            try:
                lineage[record.to_version] = reader.version_manifest(model, record.to_version).lineage
            except ObjectStoreError:  # a version deleted from the store: the move is still history
                lineage[record.to_version] = None
        built = lineage[record.to_version]
        rows.append(
            HistoryRow(
                record.moved_at,
                record.channel,
                record.from_version,
                record.to_version,
                record.reason,
                record.actor,
                record.extra.get("mlflow_version"),
                built.data_fingerprint if built else None,
                built.config_hash if built else None,
                built.code_version if built else None,
                built.mlflow_run_id if built else None,
            )
        )
    return rows
