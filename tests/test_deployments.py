"""The deployment registers on a real (temporary) Prefect server with its schedule, concurrency limit and
the typed config as parameters, and those parameters validate back into the same PipelineConfig."""

from pathlib import Path

from flows.deployments import build_deployment
from tasks.config import PipelineConfig, load_config

DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def test_deployment_round_trips_schedule_and_typed_parameters(prefect_harness):
    from prefect.client.orchestration import get_client

    config = load_config(DEMO, ["teacher.training.epochs=2"])
    deployment_id = build_deployment(config, "nightly", cron="0 3 * * *").apply()
    with get_client(sync_client=True) as client:
        stored = client.read_deployment(deployment_id)
    assert stored.name == "nightly"
    assert [schedule.schedule.cron for schedule in stored.schedules] == ["0 3 * * *"]
    assert stored.concurrency_limit == 1 or getattr(stored.global_concurrency_limit, "limit", None) == 1
    restored = PipelineConfig.model_validate(stored.parameters["config"])
    assert restored == config and restored.teacher.training.epochs == 2
    schema = stored.parameter_openapi_schema
    assert "config" in schema["properties"] and "config" in schema["required"]
