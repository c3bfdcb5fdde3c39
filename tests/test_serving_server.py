"""The server as its clients see it: a real process on loopback following a real SeaweedFS channel, driven
by the official ``tritonclient`` HTTP client, plain JSON calls, hostile requests and a schema fuzzer."""

from __future__ import annotations

import gzip
import json
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from tests.s3_fixtures import seaweedfs_server  # noqa: F401 - session fixture
from tests.serving_fixtures import ChannelPublisher, ServerProcess, http, post_json, server_settings

pytestmark = pytest.mark.serving
TEXTS = ["rain forecast tokyo", "buy cheap shoes", "latest headlines berlin", "sunny weekend in oslo"]


@pytest.fixture(scope="module")
def served(tiny_build, seaweedfs, tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    model = tiny_build.config.model_name
    publisher = ChannelPublisher(seaweedfs, model, tiny_build.bundle_dir, root / "versions")
    version = publisher.publish()
    limits = {"max_texts_per_request": 16, "max_chars_per_text": 500, "max_body_bytes": 64 * 1024}
    # Two batcher workers (one engine thread each): the tests check every thread's priority.
    settings = server_settings(seaweedfs, model, root / "state", limits=limits, batching={"workers": 2})
    server = ServerProcess(root / "server", settings)
    server.start()
    yield server, version, model
    server.stop()


@pytest.fixture(scope="module")
def expected_labels(tiny_build):
    """What the bundle's engine itself predicts for TEXTS, loaded here without the server."""
    from enginekit.runtime import classify, load_engine

    return [label for label, _ in classify(load_engine(tiny_build.bundle_dir), TEXTS)]


def test_the_official_client_checks_health_reads_metadata_and_infers(served, expected_labels):
    import tritonclient.http as triton

    server, version, model = served
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(model)
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata(model)
    assert metadata["versions"] == [version] and [t["name"] for t in metadata["inputs"]] == ["text"]

    text = triton.InferInput("text", [len(TEXTS)], "BYTES")
    text.set_data_from_numpy(np.array(TEXTS, dtype=object))  # binary tensor data: the client's default
    result = client.infer(model, [text])
    assert [label.decode() for label in result.as_numpy("label")] == expected_labels
    assert result.get_response()["model_version"] == version
    scores = result.as_numpy("score")
    assert scores.dtype == np.float32 and np.all((scores > 0) & (scores <= 1))

    column = triton.InferInput("text", [2, 1], "BYTES")
    column.set_data_from_numpy(np.array([[TEXTS[0]], [TEXTS[1]]], dtype=object), binary_data=False)
    outputs = [triton.InferRequestedOutput("logits", binary_data=True), triton.InferRequestedOutput("label", False)]
    mixed = client.infer(model, [column], outputs=outputs, request_id="r-7")
    logits = mixed.as_numpy("logits")
    assert logits.shape == (2, 3) and mixed.as_numpy("label").tolist() == expected_labels[:2]
    assert mixed.get_response()["id"] == "r-7"
    with pytest.raises(triton.InferenceServerException, match="unknown model"):
        client.infer("no-such-model", [text])
    assert not client.is_model_ready("no-such-model")


def test_json_classify_names_the_version_in_body_and_headers(served, expected_labels):
    server, version, _model = served
    status, headers, body = post_json(server.url + "/v1/classify", {"texts": TEXTS, "return_scores": True})
    assert status == 200, body
    answer = json.loads(body)
    assert answer["version"] == version == headers["X-Model-Version"]
    assert answer["bundle_digest"] == headers["X-Bundle-Digest"] and len(answer["bundle_digest"]) == 64
    assert [p["label"] for p in answer["predictions"]] == expected_labels
    first = answer["predictions"][0]
    assert (
        sum(first["scores"].values()) == pytest.approx(1.0, abs=1e-5)
        and first["scores"][first["label"]] == first["score"]
    )
    for path in ("/v2/health/live", "/v2/health/ready", "/v2", f"/v2/models/{served[2]}"):
        assert server.get(path)[1]["X-Model-Version"] == version


def test_metrics_report_requests_batches_version_and_swaps(served):
    server, version, _model = served
    post_json(server.url + "/v1/classify", {"texts": TEXTS[:2]})
    text = server.get("/metrics")[2].decode()
    assert 'int8_requests_total{code="200",endpoint="/v1/classify"}' in text
    assert "int8_request_latency_seconds_bucket" in text and "int8_queue_time_seconds_bucket" in text
    assert "int8_batch_size_rows_bucket" in text and "int8_swap_phase_seconds_bucket" in text
    assert f'version="{version}"' in text and server.metric("int8_swaps_total", result="success") == 1
    assert server.metric("int8_resident_engines") == 1


SCHED_OTHER, SCHED_IDLE = 0, 5  # Linux's scheduling policies, as /proc/<pid>/stat reports them


def _threads(pid: int) -> list[tuple[str, int, int]]:
    """(OS name, niceness, scheduling policy) of every thread of ``pid``."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text().rsplit(")", 1)[1].split()  # fields 3.. of proc(5)
        found.append(((task / "comm").read_text().strip(), int(stat[16]), int(stat[38])))
    return found


def _children(pid: int) -> list[int]:
    return [
        int(child) for task in Path(f"/proc/{pid}/task").iterdir() for child in (task / "children").read_text().split()
    ]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="thread priorities are read from Linux's /proc")
def test_staging_runs_niced_and_every_serving_thread_does_not(served):
    """Threads take the niceness of the thread that creates them: had the staging thread started the
    tokenizer's pool, every request's tokenization would run at the staging priority. The staging thread
    (which builds single-threaded engines: no threads of their own) and one fetch process run at the lowest
    priority (nice 19 in the SCHED_IDLE class, the defaults); the follower and the second fetch process
    (late swaps: ``swap.late_after_s``) at normal."""
    server, _version, _model = served
    assert post_json(server.url + "/v1/classify", {"texts": TEXTS})[0] == 200
    assert server.process is not None
    threads = _threads(server.process.pid)
    names = [name for name, _nice, _policy in threads]
    assert names.count("int8-batcher") == 2 and "int8-follower" in names, threads
    assert [(nice, policy) for name, nice, policy in threads if name == "int8-stager"] == [(19, SCHED_IDLE)]
    normal = (0, SCHED_OTHER)
    assert [thread for thread in threads if thread[0] != "int8-stager" and thread[1:] != normal] == []
    assert len(threads) > 4  # the pools exist: the check above covered them
    fetchers = [child for child in _children(server.process.pid) if "serving.fetcher" in _cmdline(child)]
    priorities = sorted(sorted({thread[1:] for thread in _threads(child)}) for child in fetchers)
    assert priorities == [[normal], [(19, SCHED_IDLE)]]


def _cmdline(pid: int) -> str:
    return (Path(f"/proc/{pid}/cmdline").read_bytes()).replace(b"\0", b" ").decode()


def _gzip_bomb() -> bytes:
    return gzip.compress(b'{"texts": ["' + b"a" * 5_000_000 + b'"]}')


HOSTILE = [
    ("POST", "/v1/classify", b'{"texts": []}', {}, 422, "texts"),
    ("POST", "/v1/classify", b'{"texts": [""]}', {}, 422, "empty text"),
    ("POST", "/v1/classify", b'{"texts": ["   "]}', {}, 422, "empty text"),
    ("POST", "/v1/classify", json.dumps({"texts": ["x" * 501]}).encode(), {}, 413, "limit 500"),
    ("POST", "/v1/classify", json.dumps({"texts": ["q"] * 17}).encode(), {}, 413, "limit 16"),
    ("POST", "/v1/classify", b"{not json", {}, 422, "JSON"),
    ("POST", "/v1/classify", b"", {}, 400, "body"),
    ("POST", "/v1/classify", b'{"texts": "rain"}', {}, 422, "texts"),
    ("POST", "/v1/classify", b'{"texts": [1, 2]}', {}, 422, "texts.0"),
    ("POST", "/v1/classify", b'{"texts": ["a"], "text_pairs": ["b"]}', {}, 422, "takes no text_pairs"),
    ("POST", "/v1/classify", b'{"texts": ["a"], "extra": 1}', {}, 422, "extra"),
    ("POST", "/v1/classify", b"x" * 70_000, {}, 413, "exceeds the limit"),
    ("POST", "/v1/classify", _gzip_bomb(), {"Content-Encoding": "gzip"}, 413, "decompressed"),
    ("POST", "/v1/classify", b"{}", {"Content-Encoding": "br"}, 415, "not supported"),
    ("POST", "/v1/classify", b"\x00\x01garbage", {"Content-Encoding": "deflate"}, 400, "not valid deflate"),
    ("POST", "/v2/models/{model}/infer", b'{"inputs": []}', {}, 400, "non-empty list"),
    ("POST", "/v2/models/{model}/infer", b"[]", {}, 400, "JSON object"),
    ("POST", "/v2/models/nobody/infer", b'{"inputs": []}', {}, 404, "unknown model 'nobody'"),
    ("POST", "/v2/models/{model}/versions/v999/infer", b"{}", {}, 404, "not served here"),
    ("POST", "/v2/models/{model}/infer", b"{}", {"Inference-Header-Content-Length": "-5"}, 400, "does not fit"),
    ("GET", "/v2/models/nobody", None, {}, 404, "unknown model"),
    ("GET", "/v2/models/nobody/ready", None, {}, 404, "unknown model"),
    ("GET", "/v2/no/such/route", None, {}, 404, "Not Found"),
    ("DELETE", "/v1/classify", None, {}, 405, "Method Not Allowed"),
]


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "message"), HOSTILE)
def test_hostile_requests_get_a_4xx_with_a_clear_message(served, method, path, body, headers, status, message):
    server, _version, model = served
    got, _headers, answer = http(method, server.url + path.format(model=model), body, headers)
    assert got == status, answer[:300]
    error = json.loads(answer)["error"]
    assert message in error, error


def test_the_server_keeps_serving_after_hostile_requests(served, expected_labels):
    server, _version, _model = served
    deflated = zlib.compress(json.dumps({"texts": TEXTS}).encode())
    status, _headers, body = http(
        "POST",
        server.url + "/v1/classify",
        deflated,
        {"Content-Encoding": "deflate", "Content-Type": "application/json"},
    )
    assert status == 200 and [p["label"] for p in json.loads(body)["predictions"]] == expected_labels
    assert server.metric("int8_requests_total", endpoint="/v1/classify", code="500") == 0


def test_the_openapi_document_describes_every_endpoint(served):
    server, _version, _model = served
    document = json.loads(server.get("/openapi.json")[2])
    paths = set(document["paths"])
    assert {"/v2/health/live", "/v2/health/ready", "/v2/models/{name}/infer", "/v1/classify", "/metrics"} <= paths
    infer_body = document["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]
    assert infer_body["content"]["application/json"]["schema"]["required"] == ["inputs"]


def test_fuzzed_requests_from_the_openapi_schema_never_get_a_server_error(served):
    """Property-based fuzzing (schemathesis + hypothesis): valid and invalid data for every operation."""
    import schemathesis
    from hypothesis import given
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error

    server, _version, _model = served
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    calls = {"count": 0}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def check(case):
                calls["count"] += 1
                case.call_and_validate(checks=[not_a_server_error])

            try:
                check()
            except Unsatisfiable:  # nothing to make invalid (no parameters, no body): positive only
                assert mode is GenerationMode.NEGATIVE
    assert calls["count"] >= 100
    assert server.metric("int8_requests_total", endpoint="/v1/classify", code="500") == 0


def test_an_idle_client_connection_outlives_the_clients_own_idle_timeout(served):
    """The server must not close a keep-alive connection before the client does: a request sent as the
    server closes it fails for nothing. uvicorn's own default (5 s) is shorter than aiohttp's pool (15 s)."""
    import http.client

    server, _version, _model = served
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", "/v2/health/live")
        assert connection.getresponse().read() is not None
        first_socket = connection.sock
        time.sleep(6.0)
        connection.request("GET", "/v2/health/live")
        response = connection.getresponse()
        response.read()
        assert response.status == 200 and connection.sock is first_socket
    finally:
        connection.close()
