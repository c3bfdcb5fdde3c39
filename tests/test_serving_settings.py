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


@pytest.mark.parametrize(
    ("age_s", "late_after_s", "expected"),
    [
        (0.2, 1.5, 1.3),  # seen 0.2 s after the move: 1.3 s of niced staging left
        (1.0, 1.5, 0.5),
        (4.0, 1.5, 0.0),  # seen long after the move (a slow poll, a restart): normal priority at once
        (-30.0, 1.5, 1.5),  # the publisher's clock ahead of ours: never more than late_after_s
        (0.2, 0.0, None),  # 0: never late
    ],
)
def test_a_swap_goes_late_counting_from_the_pointer_move(tmp_path, age_s, late_after_s, expected):
    from datetime import UTC, datetime, timedelta

    from enginekit.objectstore import ChannelPointer
    from serving.engines import EngineSet
    from serving.follower import ChannelFollower

    path = tmp_path / "serve.yaml"
    path.write_text(BASE + f"swap:\n  late_after_s: {late_after_s}\n  state_dir: {tmp_path / 'state'}\n")
    follower = ChannelFollower(load_settings(path), EngineSet(keep_previous_s=1.0))
    moved = datetime.now(UTC) - timedelta(seconds=age_s)
    pointer = ChannelPointer(
        model="m",
        channel="production",
        version="v2",
        bundle_digest="0" * 64,
        manifest_key="k",
        manifest_sha256="0" * 64,
        previous_version="v1",
        updated_at=moved.isoformat(),
        reason="test",
    )
    deadline = follower._deadline(pointer, seen=100.0)
    if expected is None:
        assert deadline is None
    else:
        assert deadline == pytest.approx(100.0 + expected, abs=0.05)
    broken = pointer.model_copy(update={"updated_at": "not a time"})  # no usable timestamp: from when seen
    if late_after_s:
        assert follower._deadline(broken, seen=100.0) == pytest.approx(100.0 + late_after_s)
