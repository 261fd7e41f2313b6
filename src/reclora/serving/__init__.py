"""Online serving of a registered RecLoRA version behind KServe's V1 and V2 (Open Inference) protocols.

RecLoRAPredictor(model_uri, ref="champion", ...)   a kserve.Model; .load(), async .predict(payload)
requests                                           V1/V2 request parsing and validation
build_app(predictor)                               the FastAPI app (V1, V2, health, /metrics)
serve(model_uri, port, host="127.0.0.1", ...)      load and serve (``reclora serve``)
"""

from reclora.serving.predictor import RecLoRAPredictor, resolve_version_dir

__all__ = ["RecLoRAPredictor", "build_app", "resolve_version_dir", "serve"]


def __getattr__(name: str):  # the server pulls in uvicorn/fastapi only when asked for
    if name in ("build_app", "serve"):
        from reclora.serving import server

        return getattr(server, name)
    raise AttributeError(name)
