"""Prefect deployments of ``train_to_deploy``: scheduled retraining and manual runs from the Prefect UI.

A deployment carries the whole typed ``PipelineConfig`` as its default parameter, so the UI shows a
typed form (every section and field, with the docstrings as descriptions) and a manual run can change
any value; the schedule runs it unchanged. ``concurrency_limit=1``: two retrains of one model never
overlap (they would race for the channel pointer; the conditional write would stop the second).

    int8-pipeline serve --config configs/demo.yaml --cron "0 3 * * *"     # serve on this machine
    # on a work pool (Docker/Kubernetes/process with GPUs): train_to_deploy.deploy(...) with the same
    # parameters; see docs/architecture.md "Scale-out".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tasks.config import PipelineConfig

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment


def deployment_parameters(config: PipelineConfig) -> dict[str, object]:
    """JSON parameters Prefect stores and hands back to the flow (validated again on every run)."""
    return {"config": config.model_dump(mode="json", by_alias=True)}


def build_deployment(config: PipelineConfig, name: str, cron: str | None = None) -> RunnerDeployment:
    from flows.train_to_deploy import train_to_deploy

    return train_to_deploy.to_deployment(
        name=name,
        cron=cron,
        parameters=deployment_parameters(config),
        description=f"Train, quantize (KD-QAT INT8), validate, register and publish {config.model_name}",
        tags=["int8", config.model_name],
        concurrency_limit=1,
    )
