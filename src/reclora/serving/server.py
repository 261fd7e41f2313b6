"""The HTTP server: the FastAPI app KServe's ModelServer builds (V1 + V2 + health + /metrics), served
by our own uvicorn config so the host is ours to choose (ModelServer hard-codes 0.0.0.0).

    build_app(predictor)  -> FastAPI app (the predictor must be loaded); besides KServe's routes,
                             GET /reclora/info: the precision, hardware and rows/tokens scored
    serve(model_uri, port=8080, host="127.0.0.1", ...)  load the model and serve until SIGINT/SIGTERM
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, ORJSONResponse

from reclora.serving.predictor import DEFAULT_NAME, RecLoRAPredictor

log = logging.getLogger(__name__)


async def _validation_error(_request: Any, exc: Exception) -> JSONResponse:
    """A V2 body that does not match the Open Inference Protocol schema: 400 (not FastAPI's 422)."""
    assert isinstance(exc, RequestValidationError)
    errs = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()[:5])
    return JSONResponse(status_code=400, content={"error": f"invalid request body: {errs}"})


def build_app(predictor: RecLoRAPredictor) -> FastAPI:
    """The app of kserve's RESTServer (same routes, middlewares and exception handlers) for ``predictor``."""
    from importlib import metadata

    from kserve.model_repository import ModelRepository  # type: ignore[import-untyped]
    from kserve.protocol.dataplane import DataPlane  # type: ignore[import-untyped]
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension  # type: ignore[import-untyped]
    from kserve.protocol.rest.server import RESTServer  # type: ignore[import-untyped]

    if not predictor.ready:
        raise RuntimeError("load the predictor before building the app")
    repo = ModelRepository()
    repo.update(predictor)
    dataplane = DataPlane(model_registry=repo)
    ext = ModelRepositoryExtension(model_registry=repo)
    app = FastAPI(title="RecLoRA (KServe ModelServer)", version=metadata.version("kserve"), docs_url=None,
                  redoc_url=None, default_response_class=ORJSONResponse)  # fmt: skip
    # RESTServer only holds the uvicorn config we do not use; its helpers wire a given app the
    # way ModelServer wires its module-level one.
    rest = RESTServer("kserve.model_server:app", dataplane, ext, http_port=0)
    rest._add_middlewares(app)
    rest._register_endpoints(app)
    rest._add_exception_handlers(app)
    app.add_exception_handler(RequestValidationError, _validation_error)
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
    precision: str | None = None,
) -> None:
    """Load the model, then serve V1/V2 on host:port until interrupted. ``precision``: auto (None) |
    fp32 | bf16 | fp16, decided by this machine (see :class:`RecLoRAPredictor`)."""
    import uvicorn
    import torch

    predictor = RecLoRAPredictor(model_uri, ref=ref, name=name, base_model=base_model, feature_store=feature_store,
                                 max_candidates=max_candidates, num_threads=num_threads, precision=precision)  # fmt: skip
    predictor.load()
    app = build_app(predictor)
    print(f"serving {name} {predictor.version} ({predictor.version_dir}) on http://{host}:{port} "
          f"({predictor.precision.name}, {torch.get_num_threads()} threads)", flush=True)  # fmt: skip
    uvicorn.Server(uvicorn.Config(app, host=host, port=int(port), log_level=log_level, log_config=None)).run()
