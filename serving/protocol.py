"""The Open Inference Protocol (KServe v2, as Triton serves it) for a text classifier: parse and answer.

Pure functions over bytes, so every rule is tested without a server. Both body forms of the infer call:

- JSON: ``{"inputs": [{"name": "text", "shape": [N], "datatype": "BYTES", "data": [...]}], "outputs": [...]}``;
- the **binary tensor data extension** (what ``tritonclient`` sends by default): the header
  ``Inference-Header-Content-Length: L``; the body is L bytes of that JSON (inputs carry
  ``"parameters": {"binary_data_size": K}`` instead of ``data``) followed by the raw tensors in input order.
  A BYTES element is a 4-byte little-endian length and that many bytes.

The model's tensors: inputs ``text`` (BYTES, one string per row) and, for pair models, ``text_pair``;
outputs ``label`` (BYTES), ``score`` (FP32, the label's softmax probability) and, on request only,
``logits`` (FP32, rows x labels). An output asked with ``"parameters": {"binary_data": true}`` (or all of
them with the request parameter ``binary_data_output``) comes back binary, with
``Inference-Header-Content-Length`` set. Errors are ``{"error": "..."}`` with a 4xx status.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"
TEXT_INPUT = "text"
PAIR_INPUT = "text_pair"
OUTPUTS = ("label", "score", "logits")
DEFAULT_OUTPUTS = ("label", "score")
_LENGTH = struct.Struct("<I")


class ProtocolError(ValueError):
    """The request breaks the protocol or a limit; ``status`` is the HTTP status to answer (4xx)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    texts: list[str]
    pairs: list[str] | None
    outputs: list[RequestedOutput]
    request_id: str | None = None
    timeout_ms: float | None = None
    """From the request parameter ``timeout`` (microseconds, as Triton's clients send it)."""


@dataclass(frozen=True)
class Limits:
    max_texts: int
    max_chars: int


@dataclass
class OutputTensor:
    name: str
    datatype: str
    shape: list[int]
    values: Any = field(repr=False)
    """list[str] for BYTES, a float32 numpy array otherwise."""


def model_metadata(name: str, versions: list[str], labels: list[str], text_pair: bool, platform: str) -> dict:
    """``GET /v2/models/{name}``: the tensors a client sends and receives."""
    inputs = [{"name": TEXT_INPUT, "datatype": "BYTES", "shape": [-1]}]
    if text_pair:
        inputs.append({"name": PAIR_INPUT, "datatype": "BYTES", "shape": [-1]})
    return {
        "name": name,
        "versions": versions,
        "platform": platform,
        "inputs": inputs,
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "score", "datatype": "FP32", "shape": [-1]},
            {"name": "logits", "datatype": "FP32", "shape": [-1, len(labels)]},
        ],
        "parameters": {"labels": labels},
    }


# ------------------------------------------------------------------------------------------------ parsing


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProtocolError(f"{what} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        flat: list[Any] = []
        for item in data:
            flat.extend(_flatten(item) if isinstance(item, list) else [item])
        return flat
    return [data]


def _rows(shape: Any, name: str) -> int:
    """Rows of a [N] or [N, 1] tensor shape."""
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or not all(isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in shape)
        or (len(shape) == 2 and shape[1] != 1)
    ):
        raise ProtocolError(f"input {name!r}: shape must be [N] or [N, 1] with N >= 0, got {shape!r}")
    return shape[0]


def _decode_bytes_tensor(raw: bytes, count: int, name: str) -> list[str]:
    """``count`` BYTES elements (4-byte little-endian length + bytes each) decoded as UTF-8."""
    values, offset = [], 0
    for index in range(count):
        if offset + 4 > len(raw):
            raise ProtocolError(f"input {name!r}: binary data ends before element {index} of {count}")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise ProtocolError(f"input {name!r}: element {index} claims {length} bytes, beyond the data")
        try:
            values.append(raw[offset : offset + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise ProtocolError(f"input {name!r}: element {index} is not valid UTF-8 text") from None
        offset += length
    if offset != len(raw):
        raise ProtocolError(f"input {name!r}: {len(raw) - offset} bytes left after {count} elements")
    return values


def _check_texts(values: list[Any], name: str, limits: Limits) -> list[str]:
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise ProtocolError(f"input {name!r}: element {index} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise ProtocolError(f"input {name!r}: element {index} is empty")
        if len(value) > limits.max_chars:
            raise ProtocolError(
                f"input {name!r}: element {index} has {len(value)} characters (limit {limits.max_chars})", 413
            )
    return values


def parse_infer_request(body: bytes, header_length: str | None, *, text_pair: bool, limits: Limits) -> InferRequest:
    """An infer request in either body form → texts (and pairs) and the outputs to return."""
    if header_length is not None:
        try:
            json_length = int(header_length)
        except ValueError:
            raise ProtocolError(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 < json_length <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} {json_length} does not fit a body of {len(body)} bytes")
        request = _json_object(body[:json_length], "the inference header")
        binary = body[json_length:]
    else:
        request = _json_object(body, "the request body")
        binary = b""
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError("'inputs' must be a non-empty list of tensors")
    expected = {TEXT_INPUT, PAIR_INPUT} if text_pair else {TEXT_INPUT}
    tensors: dict[str, list[str]] = {}
    offset = 0
    for position, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise ProtocolError(f"inputs[{position}] must be an object")
        name = tensor.get("name")
        if name not in expected:
            raise ProtocolError(f"inputs[{position}]: unknown input {name!r}; this model takes {sorted(expected)}")
        if name in tensors:
            raise ProtocolError(f"input {name!r} is given twice")
        if tensor.get("datatype") != "BYTES":
            raise ProtocolError(f"input {name!r}: datatype must be BYTES, got {tensor.get('datatype')!r}")
        rows = _rows(tensor.get("shape"), name)
        if rows > limits.max_texts:
            raise ProtocolError(f"input {name!r}: {rows} texts (limit {limits.max_texts} per request)", 413)
        parameters = tensor.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ProtocolError(f"input {name!r}: parameters must be an object")
        size = parameters.get("binary_data_size")
        if size is not None:
            if header_length is None:
                raise ProtocolError(f"input {name!r} has binary_data_size but the request has no {HEADER_LENGTH}")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
                raise ProtocolError(f"input {name!r}: binary_data_size {size!r} does not fit the binary data")
            values: list[Any] = _decode_bytes_tensor(binary[offset : offset + size], rows, name)
            offset += size
        else:
            if "data" not in tensor:
                raise ProtocolError(f"input {name!r} has neither 'data' nor a binary_data_size parameter")
            values = _flatten(tensor["data"])
            if len(values) != rows:
                raise ProtocolError(f"input {name!r}: shape says {rows} elements, data holds {len(values)}")
        tensors[name] = _check_texts(values, name, limits)
    if offset != len(binary):
        raise ProtocolError(f"{len(binary) - offset} bytes of binary data belong to no input")
    if TEXT_INPUT not in tensors:
        raise ProtocolError(f"input {TEXT_INPUT!r} is required")
    if not tensors[TEXT_INPUT]:
        raise ProtocolError(f"input {TEXT_INPUT!r} holds no texts")
    pairs = tensors.get(PAIR_INPUT)
    if text_pair and pairs is None:
        raise ProtocolError(f"this model classifies text pairs: input {PAIR_INPUT!r} is required")
    if pairs is not None and len(pairs) != len(tensors[TEXT_INPUT]):
        raise ProtocolError(f"{len(tensors[TEXT_INPUT])} texts but {len(pairs)} text pairs")
    parameters = request.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError("request 'parameters' must be an object")
    return InferRequest(
        texts=tensors[TEXT_INPUT],
        pairs=pairs,
        outputs=_requested_outputs(request.get("outputs"), bool(parameters.get("binary_data_output", False))),
        request_id=_request_id(request.get("id")),
        timeout_ms=_timeout_ms(parameters.get("timeout")),
    )


def _requested_outputs(outputs: Any, all_binary: bool) -> list[RequestedOutput]:
    if outputs is None:
        return [RequestedOutput(name, all_binary) for name in DEFAULT_OUTPUTS]
    if not isinstance(outputs, list) or not outputs:
        raise ProtocolError("'outputs' must be a non-empty list when given")
    requested = []
    for position, output in enumerate(outputs):
        if not isinstance(output, dict) or output.get("name") not in OUTPUTS:
            name = output.get("name") if isinstance(output, dict) else output
            raise ProtocolError(f"outputs[{position}]: unknown output {name!r}; this model has {list(OUTPUTS)}")
        parameters = output.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ProtocolError(f"output {output['name']!r}: parameters must be an object")
        requested.append(RequestedOutput(output["name"], bool(parameters.get("binary_data", all_binary))))
    return requested


def _request_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 256:
        raise ProtocolError("request 'id' must be a string of at most 256 characters")
    return value


def _timeout_ms(value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ProtocolError(f"parameter 'timeout' must be a positive integer of microseconds, got {value!r}")
    return value / 1000.0


# ----------------------------------------------------------------------------------------------- answers


def output_tensors(labels: list[str], logits: np.ndarray, probabilities: np.ndarray) -> dict[str, OutputTensor]:
    rows = len(logits)
    predicted = probabilities.argmax(-1)
    return {
        "label": OutputTensor("label", "BYTES", [rows], [labels[int(i)] for i in predicted]),
        "score": OutputTensor("score", "FP32", [rows], probabilities.max(-1).astype(np.float32)),
        "logits": OutputTensor("logits", "FP32", [rows, logits.shape[1]], logits.astype(np.float32)),
    }


def _binary(tensor: OutputTensor) -> bytes:
    if tensor.datatype == "BYTES":
        return b"".join(_LENGTH.pack(len(data)) + data for data in (value.encode() for value in tensor.values))
    return np.ascontiguousarray(tensor.values, dtype="<f4").tobytes()


def _json_data(tensor: OutputTensor) -> list[Any]:
    if tensor.datatype == "BYTES":
        return list(tensor.values)
    return [float(value) for value in np.asarray(tensor.values, dtype=np.float32).ravel()]


def encode_infer_response(
    model_name: str,
    model_version: str,
    request: InferRequest,
    tensors: dict[str, OutputTensor],
) -> tuple[bytes, dict[str, str]]:
    """Response body and headers: plain JSON, or JSON header + binary outputs when any was asked binary."""
    outputs, chunks = [], []
    for requested in request.outputs:
        tensor = tensors[requested.name]
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        if requested.binary:
            chunk = _binary(tensor)
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            entry["data"] = _json_data(tensor)
        outputs.append(entry)
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": outputs}
    if request.request_id is not None:
        response["id"] = request.request_id
    header = json.dumps(response, separators=(",", ":")).encode()
    if not chunks:
        return header, {"Content-Type": "application/json"}
    return header + b"".join(chunks), {
        "Content-Type": "application/octet-stream",
        HEADER_LENGTH: str(len(header)),
    }
