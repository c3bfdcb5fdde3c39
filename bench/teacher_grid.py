"""Is the default teacher recipe as good as a careful practitioner's? A grid of epochs x learning rates.

Each grid cell is the plain recipe a practitioner runs with ``transformers.Trainer``: a fixed number of
epochs, linear warmup then linear decay to zero, eval after every epoch, the best epoch kept
(``load_best_model_at_end``). Next to them, the pipeline's default recipe (``teacher`` of the config:
train until the eval split stops improving) on the same prepared data, encoder and seed. The table gives
each cell's best eval accuracy (and the test accuracy of that epoch's model) and the default recipe's gap
to the grid's best.

    python -m bench.teacher_grid --config configs/demo.yaml
    python -m bench.teacher_grid --config configs/cloud-cli.yaml --default-from .state/runs/<run>

``--default-from`` reuses the default-recipe teacher of a finished pipeline run (its prepared data must have
the same fingerprint) instead of training it again. Cells already trained under ``--work`` are reused, so
an interrupted grid continues where it stopped. Writes ``<out>.json`` and ``<out>.md``
(default ``bench/results/teacher-grid-<model_name>``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_EPOCHS = (3, 6, 10)
DEFAULT_RATES = (5e-5, 1e-4, 2e-4)


def _test_accuracy(teacher, data) -> float:
    import torch

    from enginekit.tokenization import TextEncoder
    from tasks.modeling import SplitBatches, accuracy, predict_logits

    test = SplitBatches.from_dataset(data.load()["test"])
    encoder = TextEncoder(teacher.tokenizer_dir, teacher.max_seq_length)
    with torch.no_grad():
        logits = predict_logits(teacher.load("cpu"), test, encoder, 128, torch.device("cpu"))
    return accuracy(logits.argmax(-1), test.labels)


def _train(teacher_config, data, out_dir: Path, summary_file: Path, log) -> dict:
    """Train one teacher (or reuse a finished one with the same config) and summarise it.

    The summary (a few hundred bytes: config, curve, accuracies) goes to ``summary_file``, which lives in
    the repository (``bench/results/teacher-grid-cells``) so that a grid continues across machines and
    sessions; the weights under ``out_dir`` are deleted."""
    from tasks.config import TeacherConfig
    from tasks.teacher import train_teacher
    from tasks.training import SCHEDULE_REVISIONS

    wanted = teacher_config.model_dump(mode="json")
    revision = SCHEDULE_REVISIONS[teacher_config.training.schedule]
    if summary_file.is_file():
        try:
            summary = json.loads(summary_file.read_text())
            # Validated again so a summary written before a config field existed compares with its default.
            cached = TeacherConfig.model_validate(summary["config"]).model_dump(mode="json")
            fingerprint = summary["data_fingerprint"]
            kept_revision = summary.get("schedule_revision", 1)  # summaries from before revisions were revision 1
        except (ValueError, KeyError, TypeError) as error:  # ValidationError and JSONDecodeError are ValueErrors
            log(f"{summary_file.stem}: unreadable summary {summary_file} ({type(error).__name__}); training it again")
        else:
            if cached == wanted and fingerprint == data.fingerprint and kept_revision == revision:
                log(f"{summary_file.stem}: reusing the finished cell")
                return summary
            if kept_revision != revision:
                log(f"{summary_file.stem}: kept from revision {kept_revision} of the training loop; training it again")
    started = time.perf_counter()
    name = summary_file.stem
    teacher = train_teacher(teacher_config, data, out_dir, log=lambda message: log(f"{name}: {message}"))
    summary = _summarise(teacher, data, time.perf_counter() - started)
    summary.update(
        config=wanted, data_fingerprint=data.fingerprint, schedule_revision=revision, recorded_by=_recorded_by()
    )
    shutil.rmtree(teacher.model_dir, ignore_errors=True)  # ~90 MB a cell; the numbers are what we keep
    summary_file.parent.mkdir(parents=True, exist_ok=True)
    summary_file.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _recorded_by() -> str:
    import torch

    from enginekit.hardware import cpu_model

    return f"{datetime.now(UTC):%Y-%m-%d}, {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}"


def _slug(override: str) -> str:
    key, _, value = override.partition("=")
    return f"{key.rsplit('.', 1)[-1]}{value}".replace("/", "_")


def _summarise(teacher, data, seconds: float) -> dict:
    return {
        "eval_accuracy": teacher.eval_accuracy,
        "test_accuracy": _test_accuracy(teacher, data),
        "best_epoch": teacher.best_epoch,
        "epochs_trained": len(teacher.history),
        "stop_reason": teacher.stop_reason,
        "learning_rate": teacher.learning_rate,
        "curve": [round(record["eval_accuracy"], 4) for record in teacher.history],
        "seconds": seconds,
    }


def _with(default: dict) -> str:
    overrides = default.get("overrides") or []
    return " with " + ", ".join(f"`{override}`" for override in overrides) if overrides else ""


def render_markdown(result: dict) -> str:
    cells, default = result["cells"], result["default"]
    epochs = sorted({cell["epochs"] for cell in cells})
    rates = sorted({cell["learning_rate"] for cell in cells})
    best = max(cells, key=lambda cell: cell["eval_accuracy"])
    lines = [
        f"### {result['dataset']} ({result['rows']['train']:,} train / {result['rows']['eval']:,} eval / "
        f"{result['rows']['test']:,} test rows, {result['labels']} classes)",
        "",
        f"Command: `{result['command']}`; {result['date']}; {result['machine']}.",
        "",
        "Grid cells (fixed epochs, linear warmup + decay, best epoch kept): eval accuracy [test accuracy of the",
        "kept epoch], best epoch.",
        "",
        "| learning rate | " + " | ".join(f"{e} epochs" for e in epochs) + " |",
        "|---|" + "---|" * len(epochs),
    ]
    for rate in rates:
        row = []
        for epoch_count in epochs:
            cell = next(c for c in cells if c["epochs"] == epoch_count and c["learning_rate"] == rate)
            mark = "**" if cell is best else ""
            row.append(
                f"{mark}{100 * cell['eval_accuracy']:.2f}%{mark} [{100 * cell['test_accuracy']:.2f}%], "
                f"ep {cell['best_epoch']}"
            )
        lines.append(f"| {rate:g} | " + " | ".join(row) + " |")
    delta = 100 * (default["eval_accuracy"] - best["eval_accuracy"]) + 0.0  # + 0.0: no "-0.00"
    lines += [
        "",
        f"Default recipe{_with(default)} (train until eval stops improving, lr {default['learning_rate']:g}): eval "
        f"**{100 * default['eval_accuracy']:.2f}%** [test {100 * default['test_accuracy']:.2f}%], "
        f"{default['epochs_trained']} epochs (best {default['best_epoch']}), stopped: {default['stop_reason']}, "
        f"{default['seconds'] / 60:.1f} min. Eval curve: {', '.join(f'{100 * v:.1f}' for v in default['curve'])}.",
        "",
        f"Grid's best: {best['epochs']} epochs at {best['learning_rate']:g}, eval "
        f"{100 * best['eval_accuracy']:.2f}%. Default recipe vs grid's best: **{delta:+.2f} points** on eval "
        f"({'within' if delta >= -0.5 - 1e-9 else 'NOT within'} 0.5 points).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    parser.add_argument("--epochs", type=int, nargs="+", default=list(DEFAULT_EPOCHS))
    parser.add_argument("--learning-rates", type=float, nargs="+", default=list(DEFAULT_RATES))
    parser.add_argument("--default-from", type=Path, default=None, help="a finished run whose teacher to reuse")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for the default recipe only (a candidate recipe against the same grid)",
    )
    parser.add_argument("--work", type=Path, default=Path(".state/bench/teacher-grid"))
    parser.add_argument(
        "--cells",
        type=Path,
        default=Path("bench/results/teacher-grid-cells"),
        help="where each cell's summary is kept and reused (in the repository: a grid continues anywhere)",
    )
    parser.add_argument("--out", type=Path, default=None, help="without suffix; .json and .md are written")
    arguments = parser.parse_args(argv)

    import torch

    from enginekit.hardware import cpu_model
    from tasks.config import ConfigError, load_config

    try:
        config = load_config(arguments.config)
        recipe = load_config(arguments.config, arguments.overrides)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from tasks.data import PreparedData, prepare_data
    from tasks.teacher import TeacherResult

    work = arguments.work / config.model_name
    data = prepare_data(config.data, work / "data")

    def log(message: str) -> None:
        print(message, flush=True)

    if arguments.default_from is not None and arguments.overrides:
        print("error: --set changes the default recipe, which --default-from reuses as it ran", file=sys.stderr)
        return 2
    if arguments.default_from is not None:
        run = arguments.default_from
        reused = PreparedData(**json.loads((run / "data" / "data.json").read_text()))
        if reused.fingerprint != data.fingerprint:
            print(f"error: {run} was trained on other data (fingerprint {reused.fingerprint[:12]})", file=sys.stderr)
            return 2
        teacher = TeacherResult(**json.loads((run / "teacher" / "teacher.json").read_text()))
        default = _summarise(teacher, reused, teacher.seconds)
    cells = []
    summaries = arguments.cells / config.model_name
    for rate in arguments.learning_rates:
        for epochs in arguments.epochs:
            training = config.teacher.training.model_copy(
                update={
                    "epochs": epochs,
                    "learning_rate": rate,
                    "schedule": "linear",
                    "min_steps": 0,
                    "early_stopping_patience": None,
                }
            )
            cell_config = config.teacher.model_copy(update={"training": training})
            name = f"e{epochs}-lr{rate:g}"
            cell = _train(cell_config, data, work / name, summaries / f"{name}.json", log)
            cells.append({**cell, "epochs": epochs, "learning_rate": rate})
    if arguments.default_from is None:  # after the cells: an interrupted grid keeps what it finished
        name = "-".join(["candidate", *map(_slug, arguments.overrides)]) if arguments.overrides else "default"
        default = _train(recipe.teacher, data, work / name, summaries / f"{name}.json", log)
    default["overrides"] = arguments.overrides
    result = {
        "dataset": config.data.source,
        "model_name": config.model_name,
        "rows": data.rows,
        "labels": len(data.labels),
        "command": "python -m bench.teacher_grid " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "default": default,
        "cells": cells,
    }
    out = arguments.out or Path("bench/results") / f"teacher-grid-{config.model_name}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    markdown = render_markdown(result)
    out.with_suffix(".md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
