"""The operator commands as Prefect flows, so each runs from the Prefect UI (and from a deployment) as well
as from the command line (``int8-pipeline versions|fetch|promote|rollback|history|reconcile``). The work
itself lives in ``tasks/operations.py`` and ``tasks/channel.py``; a flow names who acted (its flow run)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, runtime

from tasks import operations
from tasks.channel import reconcile
from tasks.config import PipelineConfig


def _actor(who: str | None) -> str:
    run = runtime.flow_run.id
    return (who + ", " if who else "") + (f"prefect flow run {run}" if run else "operator")


@flow(name="versions")
def versions_flow(config: PipelineConfig) -> list[dict[str, Any]]:
    rows = operations.list_versions(config.registry, config.publish, config.model_name)
    return [asdict(row) for row in rows]


@flow(name="fetch")
def fetch_flow(config: PipelineConfig, reference: str, dest: str) -> str:
    manifest = operations.fetch(config.registry, config.publish, config.model_name, reference, Path(dest))
    get_run_logger().info(f"{reference}: verified bundle {manifest.digest()[:12]} in {dest}")
    return manifest.digest()


@flow(name="promote")
def promote_flow(config: PipelineConfig, reference: str, force: bool = False, who: str | None = None) -> str:
    return operations.promote(
        config.registry,
        config.publish,
        config.model_name,
        reference,
        actor=_actor(who),
        force=force,
        log=get_run_logger().info,
    )


@flow(name="rollback")
def rollback_flow(config: PipelineConfig, to: str | None = None, who: str | None = None) -> str:
    return operations.rollback(
        config.registry, config.publish, config.model_name, to, actor=_actor(who), log=get_run_logger().info
    )


@flow(name="history")
def history_flow(config: PipelineConfig) -> list[dict[str, Any]]:
    return [asdict(row) for row in operations.history(config.publish, config.model_name)]


@flow(name="reconcile")
def reconcile_flow(config: PipelineConfig, repair: bool = True) -> dict[str, Any]:
    report = reconcile(config.registry, config.publish, config.model_name, repair=repair, log=get_run_logger().warning)
    return report.as_dict()
