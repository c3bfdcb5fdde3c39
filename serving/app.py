"""The HTTP face: the Open Inference Protocol (KServe v2 REST), a plain JSON endpoint, metrics, OpenAPI.

Routes are thin: read the body (capped), parse (``serving.protocol``), hand the texts to the batcher,
answer. Every response names the engine version and bundle digest (``X-Model-Version``,
``X-Bundle-Digest``; infer answers also in the body), and every error is ``{"error": "..."}`` with a 4xx
status for a bad request and 503 (with Retry-After where it helps) for "not now".
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from enginekit.runtime import softmax
from serving.batching import Batcher, DeadlineExceededError, NotReadyError, OverloadedError
from serving.engines import EngineSet, LoadedEngine, limit_malloc_arenas
from serving.follower import ChannelFollower
from serving.metrics import ServerMetrics
from serving.osthreads import start_shared_pools
from serving.protocol import (
    HEADER_LENGTH,
    Limits,
    ProtocolError,
    encode_infer_response,
    model_metadata,
    output_tensors,
    parse_infer_request,
)
from serving.settings import ServerSettings

logger = logging.getLogger("serving")

SERVER_NAME = "int8-search-serving"
VERSION_HEADER = "X-Model-Version"
DIGEST_HEADER = "X-Bundle-Digest"


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps({"error": message}), status, headers=headers, media_type="application/json")


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload), status, headers=headers, media_type="application/json")


def _engine_headers(engine: LoadedEngine | None) -> dict[str, str]:
    if engine is None:
        return {}
    return {VERSION_HEADER: engine.version, DIGEST_HEADER: engine.digest}


# --------------------------------------------------------------------------------------------- /v1 model


class ClassifyRequest(BaseModel):
    """``POST /v1/classify``: texts (or text pairs) → label and score per text."""

    model_config = ConfigDict(extra="forbid", strict=True)

    texts: list[str] = Field(min_length=1, description="Texts to classify (limits in the server settings).")
    text_pairs: list[str] | None = Field(
        default=None, description="Second text per row, for pair models (e.g. query/title)."
    )
    return_scores: bool = Field(default=False, description="Also return every label's probability.")


class Prediction(BaseModel):
    label: str
    score: float
    scores: dict[str, float] | None = None


class ClassifyResponse(BaseModel):
    model: str
    version: str
    bundle_digest: str
    predictions: list[Prediction]


_INFER_SCHEMA = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string", "maxLength": 256},
        "parameters": {"type": "object"},
        "inputs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype"],
                "properties": {
                    "name": {"type": "string", "enum": ["text", "text_pair"]},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "datatype": {"type": "string", "enum": ["BYTES"]},
                    "parameters": {"type": "object"},
                    "data": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "enum": ["label", "score", "logits"]},
                    "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}},
                },
            },
        },
    },
}


# ------------------------------------------------------------------------------------------- middleware


class RequestAccounting:
    """Counts requests by endpoint (the route template) and status, and times them; pure ASGI."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes after decompression (gzip/deflate), else 413."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise ApiError(415, f"Content-Encoding {encoding!r} is not supported (use gzip, deflate or none)")
    try:
        decompressor = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
        plain = decompressor.decompress(body, limit + 1)
    except zlib.error as error:
        raise ApiError(400, f"request body is not valid {encoding} data: {error}") from None
    if len(plain) > limit or decompressor.unconsumed_tail:
        raise ApiError(413, f"decompressed request body exceeds the limit of {limit} bytes")
    return plain


# ------------------------------------------------------------------------------------------------- app


@dataclass
class ServerState:
    settings: ServerSettings
    engines: EngineSet
    batcher: Batcher
    follower: ChannelFollower
    metrics: ServerMetrics

    @property
    def limits(self) -> Limits:
        return Limits(self.settings.limits.max_texts_per_request, self.settings.limits.max_chars_per_text)


def build_state(settings: ServerSettings) -> ServerState:
    if settings.malloc_arena_max:
        limit_malloc_arenas(settings.malloc_arena_max)
    if settings.shared_thread_pool:
        from enginekit.runtime_onnx import share_thread_pool

        if not share_thread_pool(settings.engine_threads):
            logger.warning("ONNX Runtime's thread pool was set up before this server: engines keep their own pools")
    else:
        from enginekit.runtime_onnx import set_intra_op_spinning

        set_intra_op_spinning(settings.engine_spinning)
    start_shared_pools()  # before the follower's niced thread could be the one to start them
    engines = EngineSet(settings.swap.keep_previous_s)
    metrics = ServerMetrics(engines)
    batcher = Batcher(engines, settings.batching, metrics.batch_observer())
    metrics.queued_rows.set_function(lambda: batcher.queued_rows)
    follower = ChannelFollower(settings, engines, metrics.swap_observer(), serving_idle=batcher.wait_idle)
    return ServerState(settings, engines, batcher, follower, metrics)


def create_app(settings: ServerSettings, state: ServerState | None = None) -> FastAPI:
    state = state or build_state(settings)
    model_name = settings.model_name

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state.batcher.start()
        state.follower.start()
        try:
            yield
        finally:
            state.follower.stop()
            state.batcher.stop()

    app = FastAPI(
        title="INT8 search model server",
        version=_package_version(),
        summary="Open Inference Protocol (KServe v2) and JSON classification over a hot-swapped INT8 engine",
        lifespan=lifespan,
    )
    app.state.serving = state

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, error: ApiError) -> Response:
        return _error(error.status, str(error), error.headers)

    @app.exception_handler(ProtocolError)
    async def _protocol_error(_request: Request, error: ProtocolError) -> Response:
        return _error(error.status, str(error))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, error: StarletteHTTPException) -> Response:
        return _error(error.status_code, str(error.detail), dict(error.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg')}")

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, error: Exception) -> Response:
        logger.exception("unexpected error while answering a request")
        return _error(500, f"internal error ({type(error).__name__}); see the server log")

    def current_engine() -> LoadedEngine:
        engine = state.engines.current
        if engine is None:
            raise ApiError(503, "no verified engine is loaded yet", {"Retry-After": "1"})
        return engine

    def check_model(name: str, version: str | None = None) -> LoadedEngine:
        if name != model_name:
            raise ApiError(404, f"unknown model {name!r}; this server serves {model_name!r}")
        engine = current_engine()
        if version is not None and version != engine.version:
            raise ApiError(404, f"version {version!r} of {name!r} is not served here (serving {engine.version!r})")
        return engine

    async def run_batch(texts: list[str], pairs: list[str] | None, timeout_ms: float | None, endpoint: str):
        try:
            return await state.batcher.submit(texts, pairs, timeout_ms)
        except OverloadedError as error:
            state.metrics.failures.labels(endpoint, "overloaded").inc()
            raise ApiError(503, str(error), {"Retry-After": str(max(1, round(error.retry_after_s)))}) from None
        except DeadlineExceededError as error:
            state.metrics.failures.labels(endpoint, "deadline").inc()
            raise ApiError(503, str(error), {"Retry-After": "1"}) from None
        except NotReadyError as error:
            state.metrics.failures.labels(endpoint, "not_ready").inc()
            raise ApiError(503, str(error), {"Retry-After": "1"}) from None

    # ---- health and metadata

    @app.get("/v2/health/live", tags=["health"], summary="The process is up")
    async def live() -> Response:
        return _json({"live": True}, headers=_engine_headers(state.engines.current))

    @app.get("/v2/health/ready", tags=["health"], summary="Ready: a verified engine is loaded (503 if not)")
    async def ready() -> Response:
        engine = state.engines.current
        details: dict[str, Any] = {"model": model_name, "channel": settings.channel, **state.follower.snapshot()}
        if engine is None:
            return _json({"ready": False, "reason": "no verified engine is loaded yet", **details}, 503)
        details.update(version=engine.version, bundle_digest=engine.digest, source=engine.source)
        details["resident_engines"] = state.engines.resident
        return _json({"ready": True, **details}, headers=_engine_headers(engine))

    @app.get("/v2", tags=["metadata"], summary="Server metadata")
    async def server_metadata() -> Response:
        payload = {"name": SERVER_NAME, "version": _package_version(), "extensions": ["binary_tensor_data"]}
        return _json(payload, headers=_engine_headers(state.engines.current))

    def metadata_response(engine: LoadedEngine) -> Response:
        manifest = engine.runtime.manifest
        platform = f"{manifest.backend}_{manifest.precision}"
        payload = model_metadata(model_name, [engine.version], manifest.labels, manifest.tokenizer.text_pair, platform)
        payload["parameters"]["bundle_digest"] = engine.digest
        return _json(payload, headers=_engine_headers(engine))

    @app.get("/v2/models/{name}", tags=["metadata"], summary="Model metadata: input and output tensors")
    async def model(name: str) -> Response:
        return metadata_response(check_model(name))

    @app.get("/v2/models/{name}/versions/{version}", tags=["metadata"], summary="Model metadata of a version")
    async def model_version(name: str, version: str) -> Response:
        return metadata_response(check_model(name, version))

    @app.get("/v2/models/{name}/ready", tags=["health"], summary="The model is ready (503 if not)")
    async def model_ready(name: str) -> Response:
        engine = check_model(name)
        return _json({"name": name, "ready": True}, headers=_engine_headers(engine))

    @app.get("/v2/models/{name}/versions/{version}/ready", tags=["health"], summary="A model version is ready")
    async def model_version_ready(name: str, version: str) -> Response:
        engine = check_model(name, version)
        return _json({"name": name, "version": version, "ready": True}, headers=_engine_headers(engine))

    # ---- inference

    async def infer_response(name: str, version: str | None, request: Request, endpoint: str) -> Response:
        engine = check_model(name, version)
        body = await read_body(request, settings.limits.max_body_bytes)
        parsed = parse_infer_request(
            body,
            request.headers.get(HEADER_LENGTH),
            text_pair=engine.runtime.manifest.tokenizer.text_pair,
            limits=state.limits,
        )
        result = await run_batch(parsed.texts, parsed.pairs, parsed.timeout_ms, endpoint)
        tensors = output_tensors(result.engine.labels, result.logits, softmax(result.logits))
        content, headers = encode_infer_response(name, result.engine.version, parsed, tensors)
        return Response(content, headers={**headers, **_engine_headers(result.engine)})

    infer_doc = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _INFER_SCHEMA}},
            "description": "JSON, or the binary tensor data extension (Inference-Header-Content-Length).",
        }
    }

    @app.post("/v2/models/{name}/infer", tags=["inference"], summary="Classify texts", openapi_extra=infer_doc)
    async def infer(name: str, request: Request) -> Response:
        return await infer_response(name, None, request, "/v2/models/{name}/infer")

    @app.post(
        "/v2/models/{name}/versions/{version}/infer",
        tags=["inference"],
        summary="Classify texts with a given (serving) version",
        openapi_extra=infer_doc,
    )
    async def infer_version(name: str, version: str, request: Request) -> Response:
        return await infer_response(name, version, request, "/v2/models/{name}/versions/{version}/infer")

    classify_doc = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ClassifyRequest.model_json_schema()}},
        }
    }

    @app.post(
        "/v1/classify",
        tags=["inference"],
        summary="Classify texts (plain JSON)",
        response_model=ClassifyResponse,
        openapi_extra=classify_doc,
    )
    async def classify(request: Request) -> Response:
        engine = current_engine()
        body = await read_body(request, settings.limits.max_body_bytes)
        try:
            parsed = ClassifyRequest.model_validate_json(body)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "body"
            raise ApiError(422 if body.strip() else 400, f"{where}: {first['msg']}") from None
        limits = state.limits
        if len(parsed.texts) > limits.max_texts:
            raise ApiError(413, f"{len(parsed.texts)} texts (limit {limits.max_texts} per request)")
        pair_model = engine.runtime.manifest.tokenizer.text_pair
        if pair_model != (parsed.text_pairs is not None):
            wanted = "needs text_pairs" if pair_model else "takes no text_pairs"
            raise ApiError(422, f"this model {wanted}")
        if parsed.text_pairs is not None and len(parsed.text_pairs) != len(parsed.texts):
            raise ApiError(422, f"{len(parsed.texts)} texts but {len(parsed.text_pairs)} text_pairs")
        for field_name, values in (("texts", parsed.texts), ("text_pairs", parsed.text_pairs or [])):
            for index, text in enumerate(values):
                if not text.strip():
                    raise ApiError(422, f"{field_name}.{index}: empty text")
                if len(text) > limits.max_chars:
                    raise ApiError(413, f"{field_name}.{index}: {len(text)} characters (limit {limits.max_chars})")
        result = await run_batch(parsed.texts, parsed.text_pairs, None, "/v1/classify")
        probabilities = softmax(result.logits)
        labels = result.engine.labels
        predictions = []
        for row in probabilities:
            best = int(row.argmax())
            entry: dict[str, Any] = {"label": labels[best], "score": float(row[best])}
            if parsed.return_scores:
                entry["scores"] = {label: float(value) for label, value in zip(labels, row, strict=True)}
            predictions.append(entry)
        payload = {
            "model": model_name,
            "version": result.engine.version,
            "bundle_digest": result.engine.digest,
            "predictions": predictions,
        }
        return _json(payload, headers=_engine_headers(result.engine))

    # ---- operations

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(RequestAccounting, metrics=state.metrics)
    return app


def _package_version() -> str:
    try:
        return metadata.version("int8-search-pipeline")
    except metadata.PackageNotFoundError:
        return "unknown"
