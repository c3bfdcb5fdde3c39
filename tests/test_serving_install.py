"""The serving install profile on its own: a fresh virtual environment with ``.[serve]`` only (no torch,
transformers, modelopt, datasets, prefect) runs the server against a real store and answers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.s3_fixtures import seaweedfs_server  # noqa: F401 - session fixture
from tests.serving_fixtures import ROOT, ChannelPublisher, ServerProcess, post_json, server_settings

pytestmark = pytest.mark.serving
PIPELINE_ONLY = ("torch", "transformers", "modelopt", "datasets", "prefect", "mlflow", "onnx")


def test_the_serving_profile_installs_and_serves_without_the_pipeline(tiny_build, seaweedfs, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", f"{ROOT}[serve]"], capture_output=True, text=True, timeout=600
    )
    assert install.returncode == 0, install.stderr[-3000:]
    probe = (
        "import importlib.util, json, sys, serving.app, serving.cli;"
        f"print(json.dumps({{'missing': [m for m in {PIPELINE_ONLY!r} if importlib.util.find_spec(m) is None],"
        "'loaded': sorted(m for m in sys.modules if m.split('.')[0] in ('tasks', 'flows', 'torch', 'prefect')),"
        "'serving': serving.app.__file__}))"
    )
    found = json.loads(subprocess.run([python, "-c", probe], capture_output=True, text=True, cwd=tmp_path).stdout)
    assert found["missing"] == list(PIPELINE_ONLY) and found["loaded"] == []
    assert str(venv) in found["serving"]  # the installed package, not the checkout

    model = tiny_build.config.model_name + "-slim"
    bundle = tmp_path / "bundle"
    from bench.bundle_variants import derive_bundle
    from enginekit.bundle import read_manifest, write_manifest

    derive_bundle(tiny_build.bundle_dir, bundle, "slim")
    write_manifest(bundle, read_manifest(bundle).updated(model_name=model))
    version = ChannelPublisher(seaweedfs, model, bundle, tmp_path / "versions").publish()
    settings = server_settings(seaweedfs, model, tmp_path / "state")
    server = ServerProcess(tmp_path / "server", settings, python=python, cwd=tmp_path).start()
    try:
        status, headers, body = post_json(server.url + "/v1/classify", {"texts": ["rain forecast tokyo"]})
        assert status == 200 and headers["X-Model-Version"] == version, body
        assert json.loads(body)["predictions"][0]["label"] in tiny_build.data.labels
    finally:
        server.stop()
