"""One truth for what serves: the S3 channel pointer is authoritative; the MLflow ``champion`` alias follows it.

Servers follow the channel pointer (``enginekit.objectstore``), so the pointer *is* what serves. The
registry alias is a convenience for consumers (``models:/NAME@champion``) and must name the same bundle.
A run moves the channel first and the alias second (``flows/train_to_deploy.py``); a failure between the
two leaves them apart until ``reconcile`` moves the alias to the channel's version (the safe direction:
nothing that serves changes).

``tasks.publish.ChannelState`` is the pointer as read when a run decides (the champion/challenger
comparison); the publish step moves the channel only if it is still in that state (compare-and-set on the
pointer's ETag), so no run ever moves the channel on a comparison made against another champion.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.config import PublishConfig, RegistryConfig
from tasks.publish import ChannelState, ObjectStorePublisher, read_channel_state
from tasks.register import CHAMPION_ALIAS, client_for, current_alias_version, mark_champion

logger = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    model: str
    channel: str
    channel_version: str | None
    channel_mlflow_version: str | None
    alias_version: str | None
    history_ok: bool
    problems: list[str] = field(default_factory=list)
    """Divergences found (before repair)."""
    repairs: list[str] = field(default_factory=list)
    """What was changed to mend them."""
    unresolved: list[str] = field(default_factory=list)
    """Divergences that need an operator (nothing was changed for them)."""

    @property
    def in_sync(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        out = [
            f"channel  {self.channel} → {self.channel_version or '(no pointer)'}"
            + (f" (MLflow version {self.channel_mlflow_version})" if self.channel_mlflow_version else ""),
            f"alias    {CHAMPION_ALIAS} → {self.alias_version or '(not set)'}",
            f"history  {'has the record of the current move' if self.history_ok else 'missing the current move'}",
        ]
        out += [f"diverged {problem}" for problem in self.problems]
        out += [f"repaired {repair}" for repair in self.repairs]
        out += [f"OPERATOR {item}" for item in self.unresolved]
        if self.in_sync:
            out.append("in sync")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "in_sync": self.in_sync}


def _version_of_digest(client: Any, model: str, digest: str) -> str | None:
    """The registry version registered for this bundle digest (the oldest, if several), or None."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name='{model}' and tags.bundle_digest='{digest}'")
    except MlflowException:
        return None
    versions = sorted((int(item.version) for item in found), key=int)
    return str(versions[0]) if versions else None


def reconcile(
    registry: RegistryConfig, publish: PublishConfig, model: str, *, repair: bool = True, log=print
) -> ReconcileReport:
    """Compare the channel pointer, the ``champion`` alias and the channel history; with ``repair``, move
    the alias to the channel's version and write a missing history record. Never moves the channel."""
    store = ObjectStorePublisher(publish.store)
    pointer = store.read_channel(model, publish.channel)
    alias = current_alias_version(registry, model, CHAMPION_ALIAS)
    report = ReconcileReport(model, publish.channel, None, None, alias, history_ok=True)
    if pointer is None:
        if alias is not None:
            report.problems.append(
                f"MLflow {CHAMPION_ALIAS} names version {alias} but channel {publish.channel!r} has no pointer: "
                "nothing serves it"
            )
            report.unresolved.append(
                f"publish a version to the channel (int8-pipeline promote {alias}) or remove the alias; "
                "reconcile never removes an alias on its own"
            )
        return _logged(report, log)
    report.channel_version = pointer.version
    client = client_for(registry)
    mlflow_version = pointer.extra.get("mlflow_version") or _version_of_digest(client, model, pointer.bundle_digest)
    report.channel_mlflow_version = mlflow_version
    if pointer.history_key is not None and not store.history_record_exists(pointer):
        report.history_ok = False
        report.problems.append(f"history has no record of the move to {pointer.version}")
        if repair:
            store.write_missing_history(pointer)
            report.repairs.append(f"history record {pointer.history_key} written")
    if mlflow_version is None:
        report.problems.append(
            f"channel version {pointer.version} (bundle {pointer.bundle_digest[:12]}) is not in the MLflow registry"
        )
        report.unresolved.append("register that bundle, or move the channel to a registered version")
    elif alias != mlflow_version:
        report.problems.append(
            f"MLflow {CHAMPION_ALIAS} names version {alias or '(none)'}, the channel serves version "
            f"{mlflow_version} ({pointer.version})"
        )
        if repair:
            uri = store.uri(store.version_prefix(model, pointer.version))
            mark_champion(registry, model, mlflow_version, uri)
            report.repairs.append(f"MLflow {CHAMPION_ALIAS} → version {mlflow_version} (follows the channel)")
            report.alias_version = mlflow_version
    return _logged(report, log)


def _logged(report: ReconcileReport, log) -> ReconcileReport:
    for line in report.lines():
        if line.startswith(("diverged", "repaired", "OPERATOR")):
            log(line)
    return report


@task(name="check-channel", cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=5)
def check_channel_task(registry: RegistryConfig, publish: PublishConfig, model: str) -> ChannelState:
    """Before a run decides: reconcile (the alias follows the channel), then read the channel state the
    champion gate is decided against and the publish step's compare-and-set starts from."""
    logger = get_run_logger()
    reconcile(registry, publish, model, repair=True, log=logger.warning)
    state = read_channel_state(publish.store, model, publish.channel)
    logger.info(f"deciding against: {state.describe()}")
    return state
