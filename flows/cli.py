"""``int8-pipeline``: one command surface for users, the Makefile and CI.

int8-pipeline run [--config configs/demo.yaml] [--set teacher.training.epochs=1 ...]
int8-pipeline check-config configs/*.yaml
int8-pipeline predict --model models:/NAME@champion "query one" "query two"
int8-pipeline serve-model [--config configs/serving/demo.yaml]   (the hot-swap server, same as int8-serve)
int8-pipeline versions | history | reconcile [--check]           (operator commands, ``--config`` as run)
int8-pipeline fetch NAME@ALIAS|NAME/VERSION|VERSION-ID DIR
int8-pipeline promote VERSION [--force] | rollback [--to VERSION]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from enginekit.redact import redact

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
        print(f"  Prefect UI     {redact(api.removesuffix('/api'))}")
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
            f"error: Prefect API {redact(api)} is unreachable ({redact(str(error))}). Start the local stack with "
            "`make stack-up`, point PREFECT_API_URL at your Prefect server, or unset it to use a temporary local "
            "server.",
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
        print(f"\nerror: {type(error).__name__}: {redact(str(error))}", file=sys.stderr)
        return 1
    except Exception as error:  # a failed task of any other kind: still one line that says what failed
        print(
            f"\nerror: the run failed: {type(error).__name__}: {redact(str(error))} (the failed task and its "
            "traceback are "
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


def _operate(arguments: argparse.Namespace, work) -> int:
    """Run an operator command; its failures are one ``error:`` line (secrets redacted), exit status 1."""
    from enginekit.bundle import BundleError
    from enginekit.objectstore import ObjectStoreError
    from tasks.operations import OperationError

    config = _load(arguments.config, arguments.set)
    try:
        return int(work(config) or 0)
    except (OperationError, ObjectStoreError, BundleError) as error:
        print(f"error: {redact(str(error))}", file=sys.stderr)
        return 1


def _who() -> str:
    import getpass

    try:
        return f"user {getpass.getuser()}"
    except Exception:  # no user name in this environment
        return "operator"


def command_versions(arguments: argparse.Namespace) -> int:
    from tasks.operations import list_versions

    def work(config) -> int:
        rows = list_versions(config.registry, config.publish, config.model_name)
        print(f"{'mlflow':>6}  {'published':<22} {'gates':<6} {'serving':<7} {'aliases':<20} created")
        for row in rows:
            print(
                f"{row.mlflow_version or '-':>6}  {row.published or '-':<22} {row.gates_passed or '-':<6} "
                f"{'yes' if row.serving else '':<7} {','.join(row.aliases) or '-':<20} {row.created}"
            )
        if not rows:
            print(f"no versions of {config.model_name}")
        return 0

    return _operate(arguments, work)


def command_fetch(arguments: argparse.Namespace) -> int:
    from pathlib import Path

    from tasks.operations import fetch

    def work(config) -> int:
        manifest = fetch(config.registry, config.publish, config.model_name, arguments.reference, Path(arguments.dest))
        print(f"{arguments.reference}: verified bundle (digest {manifest.digest()[:12]}) in {arguments.dest}")
        return 0

    return _operate(arguments, work)


def command_promote(arguments: argparse.Namespace) -> int:
    from tasks.operations import promote

    return _operate(
        arguments,
        lambda config: (
            promote(
                config.registry,
                config.publish,
                config.model_name,
                arguments.version,
                actor=_who(),
                force=arguments.force,
            )
            and 0
        ),
    )


def command_rollback(arguments: argparse.Namespace) -> int:
    from tasks.operations import rollback

    return _operate(
        arguments,
        lambda config: rollback(config.registry, config.publish, config.model_name, arguments.to, actor=_who()) and 0,
    )


def command_history(arguments: argparse.Namespace) -> int:
    from tasks.operations import history

    def work(config) -> int:
        rows = history(config.publish, config.model_name)
        for row in rows:
            built = (
                f"data {(row.data_fingerprint or '?')[:12]}, config {(row.config_hash or '?')[:12]}, "
                f"code {row.code_version or '?'}, MLflow version {row.mlflow_version or '?'} "
                f"run {row.mlflow_run_id or '?'}"
            )
            print(
                f"{row.moved_at}  {row.channel}: {row.from_version or '(none)'} → {row.to_version}  "
                f"{row.reason!r} by {row.actor or '?'}; built from {built}"
            )
        if not rows:
            print(f"channel {config.publish.channel} of {config.model_name} has never moved")
        return 0

    return _operate(arguments, work)


def command_reconcile(arguments: argparse.Namespace) -> int:
    from tasks.channel import reconcile

    def work(config) -> int:
        report = reconcile(
            config.registry, config.publish, config.model_name, repair=not arguments.check, log=lambda _: None
        )
        for line in report.lines():
            print(line)
        return 0 if report.in_sync or (report.repairs and not report.unresolved) else 4

    return _operate(arguments, work)


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

    def operator(name: str, help_text: str, handler) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--config", default=DEFAULT_CONFIG, help=f"pipeline config (default {DEFAULT_CONFIG})")
        sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
        sub.set_defaults(handler=handler)
        return sub

    operator("versions", "list every version: registry, published, gates, aliases, serving", command_versions)
    fetch = operator(
        "fetch", "download a verified copy of a version (NAME@ALIAS, NAME/VERSION, version id)", command_fetch
    )
    fetch.add_argument("reference")
    fetch.add_argument("dest")
    promote = operator("promote", "serve a registered version: channel first, then the champion alias", command_promote)
    promote.add_argument("version", help="registry version number or @ALIAS")
    promote.add_argument("--force", action="store_true", help="serve it even though its gates failed")
    rollback = operator("rollback", "move the channel back to the version it served before", command_rollback)
    rollback.add_argument("--to", default=None, help="a published version id or registry version instead")
    operator("history", "what served when, who moved it, built from what", command_history)
    reconciling = operator(
        "reconcile", "compare channel, champion alias and history; repair the alias", command_reconcile
    )
    reconciling.add_argument("--check", action="store_true", help="only report, change nothing (exit 4 if diverged)")

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
