"""The Open Inference Protocol rules, on bytes: what tritonclient really sends, and what it can read back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from serving.protocol import (
    HEADER_LENGTH,
    Limits,
    ProtocolError,
    encode_infer_response,
    output_tensors,
    parse_infer_request,
)

LIMITS = Limits(max_texts=8, max_chars=100)


def _tritonclient_body(texts, binary=True, outputs=None, shape=None):
    """The exact request body and header length the official client produces (its own builder)."""
    import tritonclient.http as triton
    from tritonclient.http._utils import _get_inference_request

    tensor = triton.InferInput("text", shape or [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=object).reshape(shape or [len(texts)]), binary_data=binary)
    return _get_inference_request(
        inputs=[tensor],
        request_id="",
        outputs=outputs,
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=0,
        timeout=None,
        custom_parameters=None,
    )


def test_the_official_clients_binary_request_is_understood():
    body, header_length = _tritonclient_body(["rain in paris", "größe 42 schuhe"])
    assert header_length is not None  # the client's default: binary tensor data
    request = parse_infer_request(body, str(header_length), text_pair=False, limits=LIMITS)
    assert request.texts == ["rain in paris", "größe 42 schuhe"] and request.pairs is None
    # No outputs asked: the client sets binary_data_output, so the default outputs come back binary.
    assert [(o.name, o.binary) for o in request.outputs] == [("label", True), ("score", True)]


def test_the_official_clients_json_request_with_a_column_shape_is_understood():
    import tritonclient.http as triton

    outputs = [triton.InferRequestedOutput("logits", binary_data=False)]
    body, header_length = _tritonclient_body([["a"], ["b"]], binary=False, outputs=outputs, shape=[2, 1])
    assert header_length is None
    request = parse_infer_request(body, None, text_pair=False, limits=LIMITS)
    assert request.texts == ["a", "b"] and [(o.name, o.binary) for o in request.outputs] == [("logits", False)]


def test_a_response_round_trips_through_the_official_client():
    from tritonclient.http import InferResult

    body, header_length = _tritonclient_body(["x", "y"])
    request = parse_infer_request(body, str(header_length), text_pair=False, limits=LIMITS)
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.5, 3.0]], dtype=np.float32)
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    tensors = output_tensors(["weather", "shopping", "news"], logits, probabilities)
    content, headers = encode_infer_response("m", "v7", request, tensors)
    result = InferResult.from_response_body(content, header_length=int(headers[HEADER_LENGTH]))
    assert result.as_numpy("label").tolist() == [b"weather", b"news"]
    np.testing.assert_allclose(result.as_numpy("score"), probabilities.max(-1), rtol=1e-6)
    assert result.get_response()["model_version"] == "v7"


def test_json_outputs_and_the_request_id_come_back_as_plain_json():
    payload = {
        "id": "req-1",
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["q"]}],
        "outputs": [{"name": "label"}, {"name": "logits"}],
    }
    request = parse_infer_request(json.dumps(payload).encode(), None, text_pair=False, limits=LIMITS)
    logits = np.array([[0.1, 0.9]], dtype=np.float32)
    content, headers = encode_infer_response("m", "v1", request, output_tensors(["a", "b"], logits, logits))
    assert headers["Content-Type"] == "application/json" and HEADER_LENGTH not in headers
    answer = json.loads(content)
    assert answer["id"] == "req-1" and answer["outputs"][0]["data"] == ["b"]
    assert answer["outputs"][1]["shape"] == [1, 2] and answer["outputs"][1]["data"] == pytest.approx([0.1, 0.9])


def test_pair_models_need_both_inputs_of_equal_length():
    payload = {
        "inputs": [
            {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["q1", "q2"]},
            {"name": "text_pair", "shape": [2], "datatype": "BYTES", "data": ["t1", "t2"]},
        ]
    }
    request = parse_infer_request(json.dumps(payload).encode(), None, text_pair=True, limits=LIMITS)
    assert request.pairs == ["t1", "t2"]
    single = {"inputs": payload["inputs"][:1]}
    with pytest.raises(ProtocolError, match="text pairs"):
        parse_infer_request(json.dumps(single).encode(), None, text_pair=True, limits=LIMITS)
    with pytest.raises(ProtocolError, match="unknown input 'text_pair'"):
        parse_infer_request(json.dumps(payload).encode(), None, text_pair=False, limits=LIMITS)


def _text_input(**fields):
    return {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["ok"], **fields}


@pytest.mark.parametrize(
    ("body", "header", "message", "status"),
    [
        (b"", None, "not valid JSON", 400),
        (b"{not json", None, "not valid JSON", 400),
        (b"[1, 2]", None, "must be a JSON object", 400),
        (b"{}", None, "'inputs' must be a non-empty list", 400),
        (json.dumps({"inputs": []}).encode(), None, "'inputs' must be a non-empty list", 400),
        (json.dumps({"inputs": [_text_input(data=[])]}).encode(), None, "shape says 1 elements, data holds 0", 400),
        (json.dumps({"inputs": [_text_input(shape=[0], data=[])]}).encode(), None, "holds no texts", 400),
        (json.dumps({"inputs": [_text_input(data=[""])]}).encode(), None, "element 0 is empty", 400),
        (json.dumps({"inputs": [_text_input(data=[7])]}).encode(), None, "must be a string", 400),
        (json.dumps({"inputs": [_text_input(data=["x" * 101])]}).encode(), None, "101 characters (limit 100)", 413),
        (json.dumps({"inputs": [_text_input(shape=[9], data=["a"] * 9)]}).encode(), None, "9 texts (limit 8", 413),
        (json.dumps({"inputs": [_text_input(datatype="INT64")]}).encode(), None, "datatype must be BYTES", 400),
        (json.dumps({"inputs": [_text_input(shape=[1, 2])]}).encode(), None, "shape must be [N] or [N, 1]", 400),
        (json.dumps({"inputs": [_text_input(shape="1")]}).encode(), None, "shape must be", 400),
        (json.dumps({"inputs": [_text_input(name="input_ids")]}).encode(), None, "unknown input 'input_ids'", 400),
        (json.dumps({"inputs": [_text_input(), _text_input()]}).encode(), None, "given twice", 400),
        (json.dumps({"inputs": [_text_input()], "outputs": [{"name": "x"}]}).encode(), None, "unknown output", 400),
        (json.dumps({"inputs": [_text_input()], "parameters": {"timeout": -1}}).encode(), None, "timeout", 400),
        (json.dumps({"inputs": [_text_input()], "id": 5}).encode(), None, "'id' must be a string", 400),
        (b'{"inputs": []}', "abc", "must be an integer", 400),
        (b'{"inputs": []}', "999", "does not fit a body", 400),
    ],
)
def test_malformed_requests_are_refused_with_the_reason(body, header, message, status):
    with pytest.raises(ProtocolError) as error:
        parse_infer_request(body, header, text_pair=False, limits=LIMITS)
    assert message in str(error.value) and error.value.status == status


def test_binary_data_that_lies_about_its_size_is_refused():
    body, header_length = _tritonclient_body(["abc", "def"])
    for damaged, message in (
        (body[:-2], "does not fit the binary data"),  # truncated
        (body + b"xx", "belong to no input"),  # trailing bytes
        (body[:header_length] + b"\xff\xff\xff\x7f" + body[header_length + 4 :], "claims"),  # huge element length
    ):
        with pytest.raises(ProtocolError, match=message):
            parse_infer_request(damaged, str(header_length), text_pair=False, limits=LIMITS)
    invalid_utf8 = body[:header_length] + b"\x03\x00\x00\x00\xff\xfe\xfd" + body[header_length + 7 :]
    with pytest.raises(ProtocolError, match="not valid UTF-8"):
        parse_infer_request(invalid_utf8, str(header_length), text_pair=False, limits=LIMITS)
