"""``int8-serve``: run the hot-swap server (also ``int8-pipeline serve-model`` and ``make serve``).

    int8-serve --config configs/serving/demo.yaml [--host 127.0.0.1] [--port 8000]

Settings come from the YAML file and ``INT8_SERVE_*`` environment variables (``serving/settings.py``);
credentials for the object store come from the standard AWS chain.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

DEFAULT_CONFIG = Path("configs/serving/demo.yaml")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="int8-serve", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"YAML settings (default {DEFAULT_CONFIG})")
    parser.add_argument("--host", default=None, help="bind address (default from the settings: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    from serving.settings import SettingsError, load_settings

    overrides = {key: value for key, value in (("host", arguments.host), ("port", arguments.port)) if value is not None}
    try:
        settings = load_settings(arguments.config, overrides)
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    import uvicorn

    from serving.app import create_app

    logging.basicConfig(level=arguments.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(
        f"serving {settings.model_name} (channel {settings.channel}, {settings.store.endpoint_label()}) on "
        f"http://{settings.host}:{settings.port}",
        flush=True,
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=arguments.log_level,
        access_log=False,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=settings.keep_alive_s,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
