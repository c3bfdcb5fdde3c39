"""The server's settings file: numbers as people write them, and errors that name the file and key."""

from __future__ import annotations

import pytest

from serving.settings import SettingsError, load_settings

BASE = "model_name: m\nstore:\n  endpoint_url: http://127.0.0.1:1\n  bucket: engines\n"


def test_exponent_floats_are_numbers(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text(BASE + "batching:\n  max_queue_delay_ms: 5e-1\nswap:\n  poll_interval_s: 1E0\n")
    settings = load_settings(path)
    assert settings.batching.max_queue_delay_ms == pytest.approx(0.5)
    assert settings.swap.poll_interval_s == 1.0


def test_a_bad_file_is_named(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text(BASE + "batching:\n  max_queue_delay_ms: soon\n")
    with pytest.raises(SettingsError, match=r"batching\.max_queue_delay_ms"):
        load_settings(path)
    path.write_text("model_name: [unclosed\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(path)
