"""The HTTP application (FastAPI) and `serve()`, which runs it with uvicorn.

Routes:
    GET  /          the web page (page.py)
    GET  /healthz   {"status": "ok", "model": {...}, "queue": {"pending", "capacity"}, "limits": {...}}
    POST /predict   multipart form with the image in the field "file"; query top_k (1-100, default 5) and
                    explain (Grad-CAM overlay as a PNG data URL, default false) -> JSON
    GET  /docs      the OpenAPI page FastAPI generates

The request path for /predict: BodySizeLimit (Content-Length, 411/413) -> FastAPI parses the multipart
form -> BoundedExecutor admits the job or answers 503 -> on a worker thread: open_image (header only:
415/413) -> handler.predict (decode: 422; the model) -> JSON; the whole job bounded by the timeout (504).
Every error is JSON: {"error": code, "status": status, "detail": message}.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from cnnkit.serve.handlers import TaskHandler, load_handler
from cnnkit.serve.limits import BodySizeLimit, ServeError, ServeLimits, open_image
from cnnkit.serve.page import PAGE
from cnnkit.serve.queue import BoundedExecutor

logger = logging.getLogger("cnnkit.serve")


def _job(handler: TaskHandler, limits: ServeLimits, data: bytes, top_k: int, explain: bool) -> dict[str, Any]:
    """What a worker thread does for one request: check the header, decode, predict."""
    started = time.perf_counter()
    image = open_image(data, limits.max_pixels)
    header = {"format": image.format, "width": image.width, "height": image.height, "mode": image.mode}
    result = handler.predict(image, top_k, explain)
    return {**result, "image": header, "timing_ms": {"total": 1000 * (time.perf_counter() - started)}}


def create_app(handler: TaskHandler, limits: ServeLimits = ServeLimits()) -> FastAPI:
    """The FastAPI app serving `handler` within `limits` (see the module docstring for the routes)."""
    executor = BoundedExecutor(limits.workers, limits.queue_size, limits.timeout_s)
    info = handler.info()
    app = FastAPI(title=f"cnnkit: {info.get('run', 'model')}", version="1",
                  description="POST an image to /predict; GET / for a web page.")
    app.add_middleware(BodySizeLimit, max_body_bytes=limits.max_body_bytes)
    app.router.add_event_handler("shutdown", executor.shutdown)
    app.state.executor = executor

    @app.exception_handler(ServeError)
    async def refused(_request: Request, error: ServeError) -> JSONResponse:
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, problem['loc']))}: {problem['msg']}" for problem in error.errors())
        return JSONResponse({"error": "invalid_request", "status": 422,
                             "detail": f"{problems}. Send multipart/form-data with the image in a field named "
                                       "'file', e.g. curl -F file=@shoe.png http://HOST:PORT/predict"}, 422)

    @app.exception_handler(Exception)
    async def failed(_request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error while serving a request")
        return JSONResponse({"error": "internal_error", "status": 500,
                             "detail": f"unexpected {type(error).__name__}; the server log has the details"}, 500)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return PAGE

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": info, "queue": {"pending": executor.pending, "capacity": executor.capacity},
                "limits": dataclasses.asdict(limits)}

    @app.post("/predict")
    async def predict(file: UploadFile = File(description="the image (PNG, JPEG, GIF, BMP, TIFF, WebP, PPM)"),
                      top_k: int = Query(5, ge=1, le=100, description="how many classes to return"),
                      explain: bool = Query(False, description="add a Grad-CAM overlay (PNG data URL)")
                      ) -> dict[str, Any]:
        data = await file.read()
        return await executor.run(partial(_job, handler, limits, data, top_k, explain))

    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(run: str | Path, host: str = "127.0.0.1", port: int = 8000, backend: str = "auto",
          limits: ServeLimits = ServeLimits()) -> None:
    """Serve a run over HTTP until interrupted; the Python twin of `cnnkit serve`."""
    import uvicorn

    handler = load_handler(run, backend)
    info = handler.info()
    if not is_loopback(host):
        print(f"cnnkit serve: warning: listening on {host}, reachable from other machines; the server has no "
              "authentication, so put it behind a proxy that has, or use the default 127.0.0.1", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"cnnkit serve: {info['run']} ({info['task']}, {len(info.get('classes', []))} classes, backend "
          f"{info['backend']}) at http://{shown}:{port}/  (POST /predict, GET /healthz, Ctrl-C stops)", flush=True)
    uvicorn.run(create_app(handler, limits), host=host, port=port, log_level="info",
                timeout_graceful_shutdown=5)
