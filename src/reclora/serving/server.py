"""The HTTP server: the FastAPI app KServe's ModelServer builds (V1 + V2 + health + /metrics), served
by our own uvicorn config so the host is ours to choose (ModelServer hard-codes 0.0.0.0).

    build_app(predictor)  -> FastAPI app (the predictor must be loaded); besides KServe's routes,
                             GET /reclora/info: the precision, hardware and rows/tokens scored
    serve(model_uri, port=8080, host="127.0.0.1", ...)  load the model and serve until SIGINT/SIGTERM

Slow and broken clients (neither kserve 0.21's ModelServer nor uvicorn bounds how long a request may
take to arrive: its only timeout is the keep-alive between requests):

* every request must arrive whole (headers and body) within ``request_timeout`` seconds of its first
  byte (or of the connection opening): else a 408 and the connection is closed
  (:func:`deadline_protocol`); the time the model takes to answer is not limited;
* a JSON body that repeats a key in an object is a 400 naming the key (:class:`StrictJSONBody`);
* a V2 infer body with a key the Open Inference Protocol does not define, at any level (``"Inputs"``,
  ``"instances"``, an input's ``"Data"``), is a 400 naming it on both infer routes (:func:`_checked_infer`,
  or :func:`_validation_error` when kserve's request model refuses the body too; it would drop the key unseen);
* a client's mistake (400, 404) or a client that goes away logs one line, never a traceback; a 500
  (a fault of the server) keeps kserve's traceback;
* ``/v2/models/NAME/versions/V/...`` (infer, ready, metadata) answers for the version being served and
  is a 404 naming the served version for any other (kserve 0.21 answers 501).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import typing
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import FastAPIDeprecationWarning, RequestValidationError
from fastapi.responses import JSONResponse, ORJSONResponse

from reclora.io import DuplicateKeyError, loads_json
from reclora.serving.predictor import DEFAULT_NAME, RecLoRAPredictor
from reclora.serving.requests import check_v2_fields

if TYPE_CHECKING:
    from reclora.config.model_sections import ModelSection

log = logging.getLogger(__name__)
REQUEST_TIMEOUT = 30.0  # seconds a request may take to arrive whole (reclora serve --request-timeout)
TIMED_OUT = "reclora.request_timed_out"  # scope key: the deadline closed this request (already logged)
# kserve's V1 endpoints answer with ORJSONResponse, which FastAPI deprecates in a warning on every request
warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated", category=FastAPIDeprecationWarning)


def _client(scope: Any) -> str:
    c = scope.get("client") if isinstance(scope, dict) else None
    return f"{c[0]}:{c[1]}" if c else "client"


def _one_line(request: Request, status: int, what: str) -> None:
    """One log line for a client's mistake or disconnect: never a traceback."""
    log.warning(
        "%s %s %s from %s: %s",
        status,
        request.method,
        request.url.path,
        _client(request.scope),
        " ".join(str(what).split())[:300],
    )


async def _client_error(request: Request, exc: Exception) -> JSONResponse:
    """kserve's InvalidInput (400) and ModelNotFound (404), logged in one line (kserve logs a traceback)."""
    from kserve.errors import ModelNotFound

    status = 404 if isinstance(exc, ModelNotFound) else 400
    _one_line(request, status, str(exc))
    return JSONResponse(status_code=status, content={"error": str(exc)})


async def _disconnected(request: Request, exc: Exception) -> Response:
    """The client went away before its request was whole: one line (none when the deadline closed it)."""
    if not request.scope.get(TIMED_OUT):
        _one_line(request, 499, "the client closed the connection before the request was complete")
    return Response(status_code=499)


class StrictJSONBody:
    """ASGI middleware: a POST body that is JSON and repeats a key in one object is a 400 naming the key
    (JSON parsers keep either copy silently: orjson, kserve's, the last). Other bodies pass unchanged (for
    the V2 binary extension only the JSON header, ``inference-header-content-length`` bytes, is checked)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        """The ASGI call: reads a POST body whole; answers 400 when its JSON repeats a key, else hands the
        request to ``app`` with the body replayed."""
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        chunks, first_extra = [], None
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                first_extra = msg  # a disconnect: handed on after the body read so far
                break
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body", False):
                break
        body = b"".join(chunks)
        headers = dict(scope.get("headers") or [])
        head = body
        n = headers.get(b"inference-header-content-length")
        if n is not None and n.isdigit():
            head = body[: int(n)]
        repeated = None
        if first_extra is None and head.lstrip()[:1] in (b"{", b"["):
            try:
                loads_json(head)
            except DuplicateKeyError as e:
                repeated = e.key
            except ValueError:
                pass  # not JSON: kserve says so
        if repeated is not None:
            error = f"the JSON body repeats the key {repeated!r} in one object; a repeated key is ambiguous"
            log.warning("400 POST %s from %s: %s", scope.get("path"), _client(scope), error)
            payload = json.dumps({"error": error}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(payload)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": payload})
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return (
                    {"type": "http.request", "body": body, "more_body": False} if first_extra is None else first_extra
                )
            return await receive()

        await self.app(scope, replay, send)


def deadline_protocol(request_timeout: float = REQUEST_TIMEOUT) -> type:
    """uvicorn's httptools HTTP protocol with a request deadline: a request (headers and body) must arrive
    whole within ``request_timeout`` seconds of its first byte, or of the connection opening; else the
    server answers 408 (when no response has started) and closes the connection, and logs one line.
    The clock stops when the request is whole: the model's own time is not limited. Pass the class as
    ``uvicorn.Config(http=...)``. Raises ValueError for a timeout that is not a positive number."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    if not request_timeout > 0:
        raise ValueError(f"request_timeout must be > 0 seconds, got {request_timeout!r}")

    class DeadlineProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(request_timeout, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if cycle is not None and not cycle.more_body:
                return  # the request is whole (pipelined): the model is working on it
            log.warning(
                "408 from %s: the request did not arrive whole within %g s; connection closed",
                _client({"client": self.client}),
                request_timeout,
            )
            if self.scope is not None:
                self.scope[TIMED_OUT] = True  # type: ignore[literal-required]
            if cycle is None or not cycle.response_started:
                body = json.dumps({"error": f"the request did not arrive whole within {request_timeout:g} s"}).encode()
                self.transport.write(
                    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
                )
            self.transport.close()

    return DeadlineProtocol


_VERSION_RE = re.compile(r"[vV]?0*(\d+)")


def _same_version(asked: str, served: str) -> bool:
    """``v0003``, ``V3``, ``3``, ``0003`` all name registry version v0003."""
    if asked == served:
        return True
    a, b = _VERSION_RE.fullmatch(asked.strip()), _VERSION_RE.fullmatch(served)
    return bool(a and b and int(a.group(1)) == int(b.group(1)))


async def _checked_infer(
    v2: Any, raw_request: Request, raw_response: Response, model_name: str, request_body: Any
) -> Any:
    """kserve's V2 infer after :func:`reclora.serving.requests.check_v2_fields` on the body's JSON (for the
    binary extension its JSON header, ``inference-header-content-length`` bytes): the parsed request model
    no longer shows an unknown key. A body that is not JSON is left to kserve's own 400."""
    body = await raw_request.body()  # the bytes FastAPI read for request_body (cached on the request)
    n = raw_request.headers.get("inference-header-content-length")
    head = body[: int(n)] if n is not None and n.isdigit() else body
    try:
        doc = loads_json(head)
    except ValueError:
        doc = None  # not JSON: kserve says so (a repeated key was refused by StrictJSONBody)
    if doc is not None:
        check_v2_fields(doc)
    return await v2.infer(raw_request, raw_response, model_name, request_body)


def _versioned_routes(app: FastAPI, predictor: RecLoRAPredictor, v2: Any) -> None:
    """/v2/models/NAME/versions/V/{infer,ready} and metadata for the served version (kserve 0.21: 501),
    and /v2/models/NAME/infer: both infer routes check the body's keys (:func:`_checked_infer`)."""
    from kserve.errors import ModelNotFound
    from kserve.protocol.rest.v2_datamodels import InferenceRequest, ModelMetadataResponse, ModelReadyResponse

    def check(model_name: str, model_version: str) -> None:
        if model_name != predictor.name or not _same_version(model_version, str(predictor.version)):
            raise ModelNotFound(
                f"{model_name} version {model_version} (this server serves {predictor.name} "
                f"version {predictor.version})"
            )

    async def infer(
        raw_request: Request, raw_response: Response, model_name: str, model_version: str, request_body: Any
    ) -> Any:
        check(model_name, model_version)
        return await _checked_infer(v2, raw_request, raw_response, model_name, request_body)

    async def infer_served(raw_request: Request, raw_response: Response, model_name: str, request_body: Any) -> Any:
        return await _checked_infer(v2, raw_request, raw_response, model_name, request_body)

    # resolved here (this module's annotations are strings): the body as kserve's own infer route reads it
    body_type = typing.get_type_hints(type(v2).infer).get("request_body", InferenceRequest)
    infer.__annotations__ = {
        "raw_request": Request,
        "raw_response": Response,
        "model_name": str,
        "model_version": str,
        "request_body": body_type,
        "return": Any,
    }
    infer_served.__annotations__ = {k: v for k, v in infer.__annotations__.items() if k != "model_version"}

    async def ready(model_name: str, model_version: str) -> Any:
        check(model_name, model_version)
        return await v2.model_ready(model_name)

    async def metadata(model_name: str, model_version: str) -> Any:
        check(model_name, model_version)
        return await v2.model_metadata(model_name)

    base = "/v2/models/{model_name}/versions/{model_version}"
    app.add_api_route(f"{base}/infer", infer, methods=["POST"], response_model=None)
    app.add_api_route("/v2/models/{model_name}/infer", infer_served, methods=["POST"], response_model=None)
    app.add_api_route(f"{base}/ready", ready, methods=["GET"], response_model=ModelReadyResponse)
    app.add_api_route(base, metadata, methods=["GET"], response_model=ModelMetadataResponse)


async def _validation_error(_request: Any, exc: Exception) -> JSONResponse:
    """A V2 body that does not match the Open Inference Protocol schema: 400 (not FastAPI's 422); a key the
    protocol lacks is named first (``{"Inputs": [...]}`` lacks "inputs" because of its misspelt key)."""
    from kserve.errors import InvalidInput

    assert isinstance(exc, RequestValidationError)
    errs = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()[:5])
    if _request.url.path.endswith("/infer") and isinstance(exc.body, (Mapping, list)):
        try:
            check_v2_fields(exc.body)
        except InvalidInput as e:
            errs = str(e)
    _one_line(_request, 400, f"invalid request body: {errs}")
    return JSONResponse(status_code=400, content={"error": f"invalid request body: {errs}"})


def build_app(predictor: RecLoRAPredictor) -> FastAPI:
    """The app of kserve's RESTServer (same routes, middlewares and exception handlers) for ``predictor``."""
    from importlib import metadata

    from kserve.errors import InvalidInput, ModelNotFound
    from kserve.model_repository import ModelRepository  # type: ignore[import-untyped]
    from kserve.protocol.dataplane import DataPlane  # type: ignore[import-untyped]
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension  # type: ignore[import-untyped]
    from kserve.protocol.rest.server import RESTServer  # type: ignore[import-untyped]
    from kserve.protocol.rest.v2_endpoints import V2Endpoints  # type: ignore[import-untyped]
    from starlette.requests import ClientDisconnect

    if not predictor.ready:
        raise RuntimeError("load the predictor before building the app")
    repo = ModelRepository()
    repo.update(predictor)
    dataplane = DataPlane(model_registry=repo)
    ext = ModelRepositoryExtension(model_registry=repo)
    app = FastAPI(
        title="RecLoRA (KServe ModelServer)",
        version=metadata.version("kserve"),
        docs_url=None,
        redoc_url=None,
        default_response_class=ORJSONResponse,
    )
    # RESTServer only holds the uvicorn config we do not use; its helpers wire a given app the
    # way ModelServer wires its module-level one.
    rest = RESTServer("kserve.model_server:app", dataplane, ext, http_port=0)
    rest._add_middlewares(app)
    _versioned_routes(app, predictor, V2Endpoints(dataplane, ext))  # before kserve's routes: these match first
    rest._register_endpoints(app)
    rest._add_exception_handlers(app)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for client_error in (InvalidInput, ModelNotFound):  # the client's mistake: one log line, no traceback
        app.add_exception_handler(client_error, _client_error)
    app.add_exception_handler(ClientDisconnect, _disconnected)
    app.add_middleware(StrictJSONBody)
    app.add_api_route("/reclora/info", lambda: predictor.info(), methods=["GET"])  # precision, hardware, rows scored
    app.state.predictor = predictor
    return app


def serve(
    model_uri: str | Path,
    port: int = 8080,
    host: str = "127.0.0.1",
    ref: str = "champion",
    base_model: str | Path | None = None,
    feature_store: str | Path | None = None,
    name: str = DEFAULT_NAME,
    max_candidates: int = 100,
    num_threads: int | None = None,
    log_level: str = "warning",
    request_timeout: float = REQUEST_TIMEOUT,
    precision: str | None = None,
    rating_ranges: Mapping[str, Sequence[float]] | None = None,
    model: ModelSection | Mapping[str, Any] | None = None,
) -> None:
    """Load the model, then serve V1/V2 on host:port until interrupted; a request must arrive whole within
    ``request_timeout`` seconds (:func:`deadline_protocol`). ``precision``: auto (None) | fp32 | bf16 | fp16,
    decided by this machine; ``rating_ranges``: the serving machine's validation.rating_range, for a version
    whose params lack it; ``model``: the serving machine's params ``model`` section, which finds the base LLM
    here (see :class:`RecLoRAPredictor`)."""
    import torch
    import uvicorn

    predictor = RecLoRAPredictor(
        model_uri,
        ref=ref,
        name=name,
        base_model=base_model,
        feature_store=feature_store,
        max_candidates=max_candidates,
        num_threads=num_threads,
        precision=precision,
        rating_ranges=rating_ranges,
        model=model,
    )
    predictor.load()
    app = build_app(predictor)
    print(
        f"serving {name} {predictor.version} ({predictor.version_dir}) on http://{host}:{port} "
        f"({predictor.precision.name}, {torch.get_num_threads()} threads)",
        flush=True,
    )
    protocol = deadline_protocol(request_timeout)
    uvicorn.Server(
        uvicorn.Config(app, host=host, port=int(port), log_level=log_level, log_config=None, http=protocol)
    ).run()
