"""The HTTP application (FastAPI) and `serve()`, which runs it with uvicorn.

Routes:
    GET  /          the web page (page.py)
    GET  /healthz   {"status": "ok", "model": {...}, "queue": {"pending", "capacity"}, "limits": {...}}
    POST /predict   multipart form with the image in the field "file"; query top_k (1-100, default 5) and
                    explain (Grad-CAM overlay as a PNG data URL, default false) -> JSON; an embedder answers
                    as /embed
    POST /embed     embedders only: the image in the field "file" -> {"embedding": [...], "dimension": D}
    POST /verify    embedders only: two images in the fields "first" and "second" -> {"score", "threshold",
                    "same"} (cosine similarity against the run's threshold)
    GET  /docs      the OpenAPI page FastAPI generates, only with docs=True (`cnnkit serve --docs`): it loads
                    its scripts from a CDN, so it is off by default; /openapi.json is always there

The request path for /predict (and /embed, /verify): SlowClientProtocol (headers within read_timeout_s, else the connection is
closed) -> BodySizeLimit (Host, Content-Length vs Transfer-Encoding, the body read and counted: 400/408/
411/413) -> FastAPI parses the multipart
form -> BoundedExecutor admits the job or answers 503 -> on a worker thread: open_image (header only:
415/413; /verify checks both headers before decoding either) -> handler.predict or handler.verify (decode:
422; the model) -> JSON; the whole job bounded by the timeout (504).
Every error is JSON: {"error": code, "status": status, "detail": message}, Starlette's own (404, 405,
a malformed multipart body) included.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import h11
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

from cnnkit.serve.handlers import TaskHandler, load_handler
from cnnkit.serve.limits import BodySizeLimit, PayloadTooLarge, ServeError, ServeLimits, loopback_hosts, open_image
from cnnkit.serve.page import PAGE, no_page
from cnnkit.serve.queue import BoundedExecutor

logger = logging.getLogger("cnnkit.serve")


def _opened(data: bytes, limits: ServeLimits) -> tuple[Any, dict[str, Any]]:
    """An upload opened and checked (header only: format, pixels declared, pixels decoded), and its header."""
    image = open_image(data, limits.max_pixels)
    if image.format != "JPEG" and image.width * image.height > limits.max_decoded_pixels:
        raise PayloadTooLarge(f"the {image.format} image is {image.width} x {image.height} = "
                              f"{image.width * image.height:,} pixels, decoded at full size; this server decodes at "
                              f"most {limits.max_decoded_pixels:,} (JPEGs up to {limits.max_pixels:,}): send a "
                              "smaller image, or a JPEG")
    return image, {"format": image.format, "width": image.width, "height": image.height, "mode": image.mode}


def _job(handler: TaskHandler, limits: ServeLimits, data: bytes, top_k: int, explain: bool) -> dict[str, Any]:
    """What a worker thread does for one request: check the header, decode, predict."""
    started = time.perf_counter()
    image, header = _opened(data, limits)
    result = handler.predict(image, top_k, explain)
    return {**result, "image": header, "timing_ms": {"total": 1000 * (time.perf_counter() - started)}}


def _verify_job(handler: TaskHandler, limits: ServeLimits, first: bytes, second: bytes) -> dict[str, Any]:
    """/verify on a worker thread: both headers checked before either image is decoded, then the handler."""
    started = time.perf_counter()
    (first_image, first_header), (second_image, second_header) = _opened(first, limits), _opened(second, limits)
    result = handler.verify(first_image, second_image)
    return {**result, "images": [first_header, second_header],
            "timing_ms": {"total": 1000 * (time.perf_counter() - started)}}


# What a malformed request to each route should have sent (the 422 answer says it).
UPLOAD_HINTS = {"/verify": "two images in fields named 'first' and 'second', e.g. curl -F first=@a.png "
                           "-F second=@b.png http://HOST:PORT/verify",
                "/embed": "the image in a field named 'file', e.g. curl -F file=@face.png http://HOST:PORT/embed"}
UPLOAD_HINT = "the image in a field named 'file', e.g. curl -F file=@shoe.png http://HOST:PORT/predict"


def create_app(handler: TaskHandler, limits: ServeLimits = ServeLimits(), allowed_hosts: frozenset[str] | None = None,
               docs: bool = False) -> FastAPI:
    """The FastAPI app serving `handler` within `limits` (see the module docstring for the routes).

    Args:
        allowed_hosts: Host names to answer (any port; `limits.loopback_hosts(host)` on loopback), or None for any.
        docs: Serve FastAPI's /docs page (its scripts come from a CDN).
    """
    executor = BoundedExecutor(limits.workers, limits.queue_size, limits.timeout_s)
    info = handler.info()
    endpoints = getattr(handler, "endpoints", ("predict",))
    page_fits = getattr(handler, "page", True)
    routes = ", ".join(f"/{name}" for name in endpoints)
    app = FastAPI(title=f"cnnkit: {info.get('run', 'model')}", version="1",
                  description=f"POST images to {routes}" + ("; GET / for a web page." if page_fits else "."),
                  docs_url="/docs" if docs else None, redoc_url=None)
    app.add_middleware(BodySizeLimit, max_body_bytes=limits.max_body_bytes, allowed_hosts=allowed_hosts,
                       read_timeout_s=limits.read_timeout_s)
    app.router.add_event_handler("shutdown", executor.shutdown)
    app.state.executor = executor

    @app.exception_handler(ServeError)
    async def refused(_request: Request, error: ServeError) -> JSONResponse:
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, problem['loc']))}: {problem['msg']}" for problem in error.errors())
        hint = UPLOAD_HINTS.get(request.url.path, UPLOAD_HINT)
        return JSONResponse({"error": "invalid_request", "status": 422,
                             "detail": f"{problems}. Send multipart/form-data with {hint}"}, 422)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, error: HTTPException) -> JSONResponse:
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return JSONResponse({"error": code, "status": error.status_code, "detail": str(error.detail)},
                            error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def failed(_request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error while serving a request")
        return JSONResponse({"error": "internal_error", "status": 500,
                             "detail": f"unexpected {type(error).__name__}; the server log has the details"}, 500)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return PAGE if page_fits else no_page(info, endpoints)

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

    if "embed" in endpoints:
        @app.post("/embed")
        async def embed(file: UploadFile = File(description="the image (PNG, JPEG, GIF, BMP, TIFF, WebP, PPM)")
                        ) -> dict[str, Any]:
            data = await file.read()
            return await executor.run(partial(_job, handler, limits, data, 1, False))

    if "verify" in endpoints:
        @app.post("/verify")
        async def verify(first: UploadFile = File(description="the first image"),
                         second: UploadFile = File(description="the second image")) -> dict[str, Any]:
            # Both are already in memory: BodySizeLimit read the whole body, at most max_body_bytes together.
            first_data, second_data = await first.read(), await second.read()
            return await executor.run(partial(_verify_job, handler, limits, first_data, second_data))

    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SlowClientProtocol(H11Protocol):
    """uvicorn's h11 protocol, with a deadline for each request's headers: a client that opens a connection and
    sends its request line and headers slowly (or not at all) is dropped after `read_timeout_s` (uvicorn itself
    waits for ever). The body's deadline is BodySizeLimit's."""

    read_timeout_s = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()  # the headers are in

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.read_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            logger.info("dropped a client that did not send its request headers within %g s", self.read_timeout_s)
            self.transport.close()


def server_config(app: FastAPI, limits: ServeLimits, host: str = "127.0.0.1", port: int = 8000, **options):
    """The uvicorn.Config `serve()` runs: h11 with the header deadline of `limits.read_timeout_s`."""
    import uvicorn

    protocol = type("SlowClientProtocol", (SlowClientProtocol,), {"read_timeout_s": limits.read_timeout_s})
    return uvicorn.Config(app, host=host, port=port, http=protocol, timeout_graceful_shutdown=5, **options)


def serve(run: str | Path, host: str = "127.0.0.1", port: int = 8000, backend: str = "auto",
          limits: ServeLimits = ServeLimits(), trust_code: bool = False, docs: bool = False) -> None:
    """Serve a run over HTTP until interrupted; the Python twin of `cnnkit serve`.

    On loopback (the default) only requests naming this machine in their Host header are answered
    (DNS rebinding). `trust_code` allows exported TorchScript / .pt2 files (see cnnkit.export.load_predictor).
    """
    import uvicorn

    handler = load_handler(run, backend, trust_code=trust_code)  # checked with one dummy batch
    info = handler.info()
    loopback = is_loopback(host)
    if not loopback:
        print(f"cnnkit serve: warning: listening on {host}, reachable from other machines; the server has no "
              "authentication, so put it behind a proxy that has, or use the default 127.0.0.1", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    size = f"{len(info['classes'])} classes" if "classes" in info else f"{info.get('dimension')}-d embeddings"
    routes = ", ".join(f"/{name}" for name in getattr(handler, "endpoints", ("predict",)))
    print(f"cnnkit serve: {info['run']} ({info['task']}, {size}, backend {info['backend']}) at "
          f"http://{shown}:{port}/  (POST {routes}, GET /healthz, Ctrl-C stops)", flush=True)
    app = create_app(handler, limits, allowed_hosts=loopback_hosts(host) if loopback else None, docs=docs)
    uvicorn.Server(server_config(app, limits, host, port, log_level="info")).run()
