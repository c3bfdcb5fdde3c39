"""Hot swap on a real server process following a real SeaweedFS channel: new versions go live, bad ones are
refused while the old engine keeps answering, a rollback is instant, concurrent requests never fail, and a
restart without the store serves the last verified local copy."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest

from bench.bundle_variants import corrupt_stored_object
from tests.s3_fixtures import seaweedfs_server  # noqa: F401 - session fixture
from tests.serving_fixtures import ChannelPublisher, ServerProcess, post_json, server_settings

pytestmark = pytest.mark.serving
POLL_S = 0.25


@pytest.fixture(scope="module")
def setup(tiny_build, seaweedfs, tmp_path_factory):
    root = tmp_path_factory.mktemp("swaps")
    model = tiny_build.config.model_name + "-swaps"  # its own channel: other modules publish the same bundle
    bundle = root / "bundle"
    from bench.bundle_variants import derive_bundle
    from enginekit.bundle import read_manifest, write_manifest

    derive_bundle(tiny_build.bundle_dir, bundle, "swaps")
    write_manifest(bundle, read_manifest(bundle).updated(model_name=model))
    publisher = ChannelPublisher(seaweedfs, model, bundle, root / "versions")
    first = publisher.publish()
    settings = server_settings(seaweedfs, model, root / "state", swap={"poll_interval_s": POLL_S})
    server = ServerProcess(root / "server", settings).start()
    yield server, publisher, first, root, settings
    server.stop()


def classify(server, texts=("rain forecast tokyo", "buy cheap shoes")):
    status, headers, body = post_json(server.url + "/v1/classify", {"texts": list(texts)})
    return status, headers.get("X-Model-Version"), body


def wait_for_metric(server, name, value, timeout=20.0, **labels):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.metric(name, **labels) >= value:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{name}{labels} did not reach {value}: {server.ready()}\n{server.log()}")


def test_a_new_version_serves_within_the_poll_interval_plus_two_seconds(setup):
    server, publisher, first, _root, _settings = setup
    assert server.ready()["version"] == first
    moved = time.monotonic()
    second = publisher.publish()
    server.wait_for_version(second, timeout=10)
    assert time.monotonic() - moved <= POLL_S + 2.0
    status, served_by, _body = classify(server)
    assert status == 200 and served_by == second
    swap = server.ready()["last_swap"]
    assert swap["rollback"] is False
    # where the swap's time went, phase by phase, in the ready details (the metrics only sum them up)
    phases = swap["phase_seconds"]
    assert list(phases) == ["download", "verify", "compatibility", "build", "warm", "golden", "swap"]
    assert sum(phases.values()) <= swap["seconds"] + 0.01


def test_a_rollback_to_the_resident_previous_version_takes_under_a_second(setup):
    server, publisher, first, _root, _settings = setup
    current = server.ready()["version"]
    assert current != first
    rollbacks = server.metric("int8_swaps_total", result="rollback")
    moved = time.monotonic()
    publisher.move(first)
    server.wait_for_version(first, timeout=5)
    assert time.monotonic() - moved <= POLL_S + 1.0
    swap = server.ready()["last_swap"]
    assert swap["rollback"] is True and swap["seconds"] < 1.0  # nothing downloaded or built
    assert server.metric("int8_swaps_total", result="rollback") == rollbacks + 1
    publisher.move(current)  # and forward again: also resident
    server.wait_for_version(current, timeout=5)
    assert server.ready()["last_swap"]["rollback"] is True


@pytest.mark.parametrize(
    ("kind", "phase"),
    [("corrupt", "download"), ("incompatible", "compatibility"), ("golden_mismatch", "golden")],
)
def test_a_bad_version_is_refused_and_the_old_engine_keeps_answering(setup, seaweedfs, kind, phase):
    server, publisher, _first, _root, _settings = setup
    serving = server.ready()["version"]
    failures = server.metric("int8_swaps_total", result=f"{phase}_failed")
    if kind == "corrupt":
        version = publisher.publish(move=False)
        key = publisher.store.version_prefix(publisher.model_name, version) + "golden.json"
        corrupt_stored_object(seaweedfs.raw_client(), seaweedfs.bucket, key)
        publisher.move(version)
    else:
        version = publisher.publish(kind)
    wait_for_metric(server, "int8_swaps_total", failures + 1, result=f"{phase}_failed")
    ready = server.ready()
    assert ready["version"] == serving and ready["last_failure"]["version"] == version
    assert ready["last_failure"]["phase"] == phase
    assert list(ready["last_failure"]["phase_seconds"])[-1] == phase  # the phases it got through, then this one
    status, served_by, _body = classify(server)
    assert status == 200 and served_by == serving
    time.sleep(3 * POLL_S)  # not retried while the pointer stays where it is
    assert server.metric("int8_swaps_total", result=f"{phase}_failed") == failures + 1
    assert server.ready()["version"] == serving


def test_a_garbled_pointer_is_counted_and_the_engine_keeps_serving(setup, seaweedfs):
    server, publisher, _first, _root, _settings = setup
    serving = server.ready()["version"]
    errors = server.metric("int8_channel_polls_total", result="error")
    key = publisher.store.channel_key(publisher.model_name, publisher.channel)
    client = seaweedfs.raw_client()
    original = client.get_object(Bucket=seaweedfs.bucket, Key=key)["Body"].read()
    client.put_object(Bucket=seaweedfs.bucket, Key=key, Body=b"{ this is not a pointer")
    try:
        wait_for_metric(server, "int8_channel_polls_total", errors + 2, result="error")
        assert classify(server)[:2] == (200, serving)
        assert server.ready()["store_reachable"] is False and "not valid" in server.ready()["store_error"]
    finally:
        client.put_object(Bucket=seaweedfs.bucket, Key=key, Body=original)
    fresh = publisher.publish()
    server.wait_for_version(fresh, timeout=10)


def test_swaps_under_concurrent_requests_fail_no_request(setup):
    server, publisher, _first, _root, _settings = setup
    outcomes: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    stop = threading.Event()

    def client_loop():
        while not stop.is_set():
            status, served_by, body = classify(server)
            outcomes[str(status)] += 1
            if status == 200:
                versions[served_by] += 1
                if json.loads(body)["version"] != served_by:
                    outcomes["body and header disagree"] += 1

    clients = [threading.Thread(target=client_loop) for _ in range(4)]
    for thread in clients:
        thread.start()
    try:
        published = []
        for _ in range(3):
            published.append(publisher.publish())
            server.wait_for_version(published[-1], timeout=15)
            time.sleep(0.3)
    finally:
        stop.set()
        for thread in clients:
            thread.join()
    assert set(outcomes) == {"200"}, outcomes
    assert sum(outcomes.values()) > 50 and set(published) <= set(versions), versions
    assert server.metric("int8_resident_engines") <= 2


def test_a_late_swap_finishes_at_normal_priority_and_serves(setup, tmp_path):
    """``swap.late_after_s``: a swap still staging by then moves to the normal-priority fetch process and
    the follower's thread; it is counted by the phase it was in, marked in the ready details, and serves
    like any other. A server with nothing to serve stages at normal priority from the start: not late."""
    _server, publisher, _first, _root, settings = setup
    late = {**settings, "swap": {**settings["swap"], "late_after_s": 0.001, "state_dir": str(tmp_path / "state")}}
    server = ServerProcess(tmp_path / "server", late).start()
    try:
        assert server.ready()["last_swap"]["late"] is False
        version = publisher.publish()
        server.wait_for_version(version, timeout=10)
        assert server.ready()["last_swap"]["late"] is True
        assert server.metric("int8_swaps_late_total", phase="download") == 1
        assert classify(server)[:2] == (200, version)
        assert not list((tmp_path / "state" / "versions").glob(".*partial*"))
    finally:
        server.stop()


def test_a_restart_without_the_store_serves_the_last_verified_local_copy(setup):
    server, _publisher, _first, root, settings = setup
    serving = server.ready()["version"]
    server.stop()
    unreachable = {**settings, "store": {**settings["store"], "endpoint_url": "http://127.0.0.1:9"}}
    offline = ServerProcess(root / "offline", unreachable).start(timeout=60)
    try:
        ready = offline.ready()
        assert ready["version"] == serving and ready["source"] == "local copy"
        assert ready["store_reachable"] is False and "last verified local copy" in ready["source_note"]
        assert offline.metric("int8_serving_local_copy") == 1
        assert classify(offline)[:2] == (200, serving)
    finally:
        offline.stop()
        server.start()  # later tests (none today) get the module's server back


def test_a_restart_without_the_store_refuses_a_tampered_local_copy_and_says_where(setup):
    from serving.follower import LAST_VERIFIED

    server, _publisher, _first, root, settings = setup
    server.stop()
    record = json.loads((root / "state" / LAST_VERIFIED).read_text())
    manifest = json.loads((root / "state" / "versions" / record["version"] / "manifest.json").read_text())
    engine = root / "state" / "versions" / record["version"] / manifest["engine_file"]
    original = engine.read_bytes()
    engine.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    unreachable = {**settings, "store": {**settings["store"], "endpoint_url": "http://127.0.0.1:9"}}
    offline = ServerProcess(root / "offline-tampered", unreachable).start(wait_ready=False)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not offline.ready().get("last_failure"):
            time.sleep(0.1)
        status, _headers, body = offline.get("/v2/health/ready")
        ready = json.loads(body)
        assert status == 503 and ready.get("version") is None, ready
        failure = ready["last_failure"]
        assert failure["version"] == record["version"] and failure["phase"] == "verify", failure
        assert manifest["engine_file"] in failure["error"] and list(failure["phase_seconds"]) == ["verify"]
    finally:
        offline.stop()
        engine.write_bytes(original)
        server.start()
