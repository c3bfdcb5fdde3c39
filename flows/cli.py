"""``int8-pipeline``: one command surface for users, the Makefile and CI.

int8-pipeline run [--config configs/demo.yaml] [--set teacher.training.epochs=1 ...]
int8-pipeline check-config configs/*.yaml
int8-pipeline predict --model models:/NAME@champion "query one" "query two"
int8-pipeline serve-model [--config configs/serving/demo.yaml]   (the hot-swap server, same as int8-serve)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

DEFAULT_CONFIG = "configs/demo.yaml"


def _load(path: str, overrides: list[str]):
    from tasks.config import ConfigError, load_config

    try:
        return load_config(path, overrides)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def _print_summary(summary, store_endpoint: str | None) -> None:
    print("\n" + "=" * 78)
    print(f"model            {summary.model_name}")
    print(f"teacher FP32     {100 * summary.teacher_accuracy:.2f}% test accuracy")
    print(
        f"teacher training {summary.teacher_epochs} epochs (best: {summary.teacher_best_epoch}), stopped: "
        f"{summary.teacher_stop_reason}; learning rate {summary.teacher_learning_rate:g}"
    )
    print(
        f"INT8 engine      {100 * summary.int8_accuracy:.2f}% test accuracy "
        f"(Δ {summary.accuracy_delta_points:+.2f} points, {100 * summary.agreement_with_teacher:.1f}% agreement)"
    )
    print(
        f"speed vs FP32    latency ×{summary.speedup_latency:.2f}, throughput ×{summary.speedup_throughput:.2f} "
        "(same process, PyTorch FP32 eager baseline)"
    )
    print(f"INT8 variant     {summary.chosen_variant}  (all candidates: {summary.variants_markdown})")
    print(f"MLflow version   {summary.mlflow_model_uri}  (run {summary.mlflow_run_id})")
    if summary.promoted:
        print(f"MLflow champion  {summary.champion_uri}")
        print(f"published        {summary.published_uri}")
        print(f"channel pointer  {summary.channel_uri} (was {summary.previous_version or 'unset'})")
    else:
        print("NOT PROMOTED     champion alias and channel pointer unchanged; failed gates:")
        for reason in summary.failure_reasons:
            print(f"                 - {reason}")
    print(f"report           {summary.report_markdown}")
    if summary.run_seconds:
        share = summary.teacher_seconds / summary.run_seconds
        print(
            f"wall time        {summary.run_seconds / 60:.1f} min, teacher {summary.teacher_seconds / 60:.1f} min "
            f"({100 * share:.0f}%)  (per stage: {summary.run_report})"
        )
    for warning in summary.warnings:
        print(f"WARNING          {warning}")
    print(f"bundle           {summary.bundle_dir}")
    print("where to look:")
    api = os.environ.get("PREFECT_API_URL")
    if api:
        print(f"  Prefect UI     {api.removesuffix('/api')}")
    print(f"  MLflow UI      .venv/bin/mlflow ui --backend-store-uri {summary.tracking_uri} --host 127.0.0.1")
    if store_endpoint:
        print(f"  S3 endpoint    {store_endpoint}")
    print("=" * 78)


def _check_prefect_api() -> None:
    """Fail in a second, with what to do, instead of a client traceback deep inside the flow call."""
    import urllib.error
    import urllib.request

    api = os.environ.get("PREFECT_API_URL")
    if not api:
        return  # Prefect starts a temporary local server for this run
    try:
        with urllib.request.urlopen(f"{api.rstrip('/')}/health", timeout=5):  # noqa: S310 - URL from the user's env
            return
    except (urllib.error.URLError, OSError) as error:
        print(
            f"error: Prefect API {api} is unreachable ({error}). Start the local stack with `make stack-up`, "
            "point PREFECT_API_URL at your Prefect server, or unset it to use a temporary local server.",
            file=sys.stderr,
        )
        raise SystemExit(1) from None


def command_run(arguments: argparse.Namespace) -> int:
    config = _load(arguments.config, arguments.set)
    _check_prefect_api()
    from enginekit.bundle import BundleError
    from enginekit.objectstore import ObjectStoreError
    from flows.train_to_deploy import train_to_deploy
    from tasks.data import DataError
    from tasks.export import ExportError

    try:
        summary = train_to_deploy(config=config)
    except (DataError, ExportError, BundleError, ObjectStoreError) as error:
        # Prefect has logged the traceback with the failed task; the user gets what and where.
        print(f"\nerror: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # a failed task of any other kind: still one line that says what failed
        print(
            f"\nerror: the run failed: {type(error).__name__}: {error} (the failed task and its traceback are "
            "in the log above and in the Prefect UI)",
            file=sys.stderr,
        )
        return 1
    _print_summary(summary, config.publish.store.endpoint_url)
    return 0 if summary.promoted else 3


def command_serve(arguments: argparse.Namespace) -> int:
    config = _load(arguments.config, arguments.set)
    from prefect import serve

    from flows.deployments import build_deployment

    serve(build_deployment(config, arguments.name, arguments.cron))
    return 0


def command_check_config(arguments: argparse.Namespace) -> int:
    for path in arguments.paths:
        config = _load(path, arguments.set)
        print(f"{path}: ok (model {config.model_name}, config hash {config.config_hash()[:12]})")
    return 0


def command_predict(arguments: argparse.Namespace) -> int:
    import mlflow.pyfunc

    if arguments.tracking_uri:
        mlflow.set_tracking_uri(arguments.tracking_uri)
    model = mlflow.pyfunc.load_model(arguments.model)
    frame = model.predict(list(arguments.texts))
    for text, row in zip(arguments.texts, frame.itertuples(), strict=True):
        print(json.dumps({"text": text, "label": row.label, "score": round(float(row.score), 4)}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="int8-pipeline", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the train_to_deploy flow")
    run.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML config (default {DEFAULT_CONFIG})")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    run.set_defaults(handler=command_run)

    serve = commands.add_parser("serve", help="serve train_to_deploy as a Prefect deployment (schedule + UI runs)")
    serve.add_argument("--config", default=DEFAULT_CONFIG)
    serve.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    serve.add_argument("--name", default="retrain", help="deployment name (default retrain)")
    serve.add_argument("--cron", default=None, help='schedule, e.g. "0 3 * * *"; none = manual runs only')
    serve.set_defaults(handler=command_serve)

    check = commands.add_parser("check-config", help="validate config files")
    check.add_argument("paths", nargs="+")
    check.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    check.set_defaults(handler=command_check_config)

    # Listed for --help; main() hands its arguments to serving.cli untouched.
    commands.add_parser("serve-model", help="run the hot-swap model server (int8-serve --help for its options)")

    predict = commands.add_parser("predict", help="classify texts with a registered model")
    predict.add_argument("--model", required=True, help="e.g. models:/query-intent-int8@champion")
    predict.add_argument("--tracking-uri", default=None)
    predict.add_argument("texts", nargs="+")
    predict.set_defaults(handler=command_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve-model"]:  # the server's own command line; it never imports the pipeline
        from serving.cli import main as serve_main

        return serve_main(argv[1:])
    arguments = build_parser().parse_args(argv)
    return int(arguments.handler(arguments))


if __name__ == "__main__":
    sys.exit(main())
