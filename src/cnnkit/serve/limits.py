"""What the server refuses, and how: limits checked before any pixel is decoded, as JSON errors.

Order of checks for `POST /predict`, cheapest first, so a hostile or mistaken request costs little:

1. The request itself (`BodySizeLimit`, an ASGI middleware, before any route runs): a `Host` header
   other than this machine's names while bound to loopback -> 400 (DNS rebinding: a web page on another
   site must not reach a local server through a name it controls); both Content-Length and
   Transfer-Encoding -> 400 (RFC 9112 6.3: such a request is how a body hides its size); no
   Content-Length (a chunked upload) -> 411; a Content-Length over `max_body_bytes` -> 413. Then the body
   is read here, counting the bytes actually received: past `max_body_bytes` -> 413, so no more than the
   limit (plus one network read) is ever held; the rest of a refused body is read and thrown away (at most
   `LINGER_BYTES` within `LINGER_S`, as nginx's lingering close does) before the answer is sent and the
   connection closed: closing a socket with unread bytes makes the kernel send a reset, and a client still
   uploading then loses the answer ("peer closed connection") instead of reading the 413/411/400;
   a body not complete within `read_timeout_s` -> 408 (a slow client is dropped). Headers not complete
   within `read_timeout_s` close the connection (`SlowClientProtocol`, app.py).
2. Queue room (queue.py): all workers busy and the queue full -> 503 with Retry-After.
3. On a worker thread, the image header: Pillow's `Image.open` is lazy, it reads the format and size but
   no pixels. A format outside `IMAGE_FORMATS` (which keeps out the formats Pillow hands to outside
   programs, such as EPS) or not an image at all -> 415; width x height over `max_pixels` -> 413
   (a 30 kB PNG can declare 50,000 x 50,000 pixels: a decompression bomb). Formats decoded at full size
   (all but JPEG, which Pillow's `draft` decodes at 1/2..1/8 scale) over `max_decoded_pixels` -> 413:
   a 190 kB RGBA PNG of 49 MP would otherwise cost over 1 GB once decoded and converted.
4. Decoding (in the task handler): truncated or corrupt pixel data -> 422; the decoded image is reduced
   to about twice the model's input size before any conversion.
5. The whole job (waiting + decoding + inference) over `timeout_s` -> 504.

Every refusal is a `ServeError` with an HTTP status and a short machine-readable code; the app turns it
into `{"error": code, "status": status, "detail": message}`. No request gets a 500 or a traceback for
bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError
from starlette.responses import JSONResponse

from cnnkit.errors import CnnkitError, ConfigError

# Pillow format names accepted: the decoders cnnkit reads training images with (cnnkit.data.images).
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")
# How the supported formats' files start: a file that starts like one but does not open is unreadable (422),
# not "an unsupported format" (415) whose message would list its own format as supported.
MAGIC_BYTES = ((b"\x89PNG", "PNG"), (b"\xff\xd8", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"),
               (b"MM\x00*", "TIFF"), (b"RIFF", "WEBP"), (b"P6", "PPM"), (b"P5", "PPM"))


@dataclass(frozen=True)
class ServeLimits:
    """Server limits; every default works on a laptop.

    Attributes:
        max_body_bytes: Largest request body (default 10 MiB).
        max_pixels: Largest width x height an upload may declare (default 50 megapixels: phone photos pass).
        timeout_s: Longest a request may wait for and run its job (default 10 s).
        workers: Threads that decode and run the model (default 1: PyTorch and the ONNX runtimes already
            use every core for one image; more workers only help with many small requests).
        queue_size: Requests allowed to wait for a free worker (default 8); beyond it -> 503.
        max_decoded_pixels: Largest width x height of an upload in a format decoded at full size (all but
            JPEG; default 16,777,216 = 4096 x 4096, about 64 MB once decoded as RGBA).
        read_timeout_s: Longest a client may take to send its headers, and its body (default 10 s).
    """

    max_body_bytes: int = 10 * 2**20
    max_pixels: int = 50_000_000
    timeout_s: float = 10.0
    workers: int = 1
    queue_size: int = 8
    max_decoded_pixels: int = 4096 * 4096
    read_timeout_s: float = 10.0

    def __post_init__(self):
        for name in ("max_body_bytes", "max_pixels", "workers", "max_decoded_pixels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be 1 or more, got {getattr(self, name)}")
        if self.queue_size < 0 or not self.timeout_s > 0 or not self.read_timeout_s > 0:
            raise ConfigError(f"queue_size must be 0 or more and timeout_s, read_timeout_s positive, got "
                              f"{self.queue_size}, {self.timeout_s} and {self.read_timeout_s}")


class ServeError(CnnkitError):
    """A request the server refuses, with its HTTP status and a short code."""

    status, code = 500, "internal_error"
    headers: dict[str, str] = {}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.code, "status": self.status, "detail": str(self)}, self.status,
                            headers=self.headers)


# Refusals sent before the body is read close the connection: the unread rest cannot start the next request.
CLOSE = {"Connection": "close"}
# How much of a refused body is read and discarded before the refusal is sent (module docstring, step 1).
LINGER_BYTES, LINGER_S = 64 * 2**20, 2.0


class BadRequest(ServeError):
    status, code, headers = 400, "bad_request", CLOSE


class InvalidHost(ServeError):
    status, code, headers = 400, "invalid_host", CLOSE


class RequestTimeout(ServeError):
    status, code, headers = 408, "request_timeout", CLOSE


class LengthRequired(ServeError):
    status, code, headers = 411, "length_required", CLOSE


class PayloadTooLarge(ServeError):
    status, code = 413, "payload_too_large"


class BodyTooLarge(PayloadTooLarge):
    headers = CLOSE  # the rest of the body is never kept


class UnsupportedImage(ServeError):
    status, code = 415, "unsupported_media_type"


class UnreadableImage(ServeError):
    status, code = 422, "unreadable_image"


class QueueFull(ServeError):
    status, code, headers = 503, "busy", {"Retry-After": "1"}


class InferenceTimeout(ServeError):
    status, code = 504, "timeout"


def _megabytes(count: int) -> str:
    return f"{count / 2**20:.1f} MiB"


def loopback_hosts(host: str = "127.0.0.1") -> frozenset[str]:
    """The names a server bound to loopback `host` answers to in the Host header (any port)."""
    return frozenset({"localhost", "127.0.0.1", "[::1]", f"[{host}]" if ":" in host else host.lower()})


def host_name(header: str) -> str:
    """The name part of a Host header: "127.0.0.1:8000" -> "127.0.0.1", "[::1]:8000" -> "[::1]"."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[:header.find("]") + 1] if "]" in header else header
    return header.rsplit(":", 1)[0] if ":" in header else header


class BodySizeLimit:
    """ASGI middleware: the checks of step 1 (module docstring); the body reaches the app already read.

    Args:
        app: The ASGI app.
        max_body_bytes: Largest body, counted as it is read.
        allowed_hosts: Host names accepted (lower case, any port; `loopback_hosts`), or None for any (a public bind).
        read_timeout_s: Longest the body may take to arrive.
    """

    def __init__(self, app, max_body_bytes: int, allowed_hosts: frozenset[str] | None = None,
                 read_timeout_s: float = 10.0):
        self.app, self.max_body_bytes = app, max_body_bytes
        self.allowed_hosts, self.read_timeout_s = allowed_hosts, read_timeout_s

    def _refusal(self, scope) -> ServeError | None:
        headers: dict[bytes, list[bytes]] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.lower(), []).append(value)
        host = b",".join(headers.get(b"host", [])).decode("latin-1")
        if self.allowed_hosts is not None and host_name(host) not in self.allowed_hosts:
            return InvalidHost(f"Host {host[:100]!r} is not this server's name; a server bound to loopback answers "
                               f"only {', '.join(sorted(self.allowed_hosts))} (use --host to serve other names)")
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return None
        lengths, encodings = headers.get(b"content-length", []), headers.get(b"transfer-encoding", [])
        if lengths and encodings:
            return BadRequest("the request has both Content-Length and Transfer-Encoding headers (RFC 9112 section "
                              "6.3 says to refuse it); send the image with Content-Length only")
        if not lengths:
            return LengthRequired("send the request with a Content-Length header (no chunked uploads)")
        length = lengths[0]
        if len(lengths) > 1 or not length.isdigit():
            return LengthRequired(f"Content-Length {b','.join(lengths).decode(errors='replace')[:40]!r} is not one "
                                  "number")
        if int(length) > self.max_body_bytes:
            return self._too_large(int(length))
        return None

    def _too_large(self, size: int) -> ServeError:
        return BodyTooLarge(f"the request body is {_megabytes(size)}; this server accepts at most "
                            f"{_megabytes(self.max_body_bytes)} ({self.max_body_bytes} bytes): send a smaller image")

    async def _read_body(self, receive) -> tuple[bytes, bool]:
        """(body, client disconnected): at most max_body_bytes plus one network read is ever held."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", True
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large(size)  # what was received so far already says too much
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), False

    @staticmethod
    async def _discard(receive, budget: int) -> None:
        """Read and drop what is left of a refused body, up to `budget` bytes (nothing is kept)."""
        while budget > 0:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                return
            budget -= len(message.get("body", b""))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error = self._refusal(scope)
        uploading = scope["method"] in ("POST", "PUT", "PATCH")
        if error is None and uploading:
            try:
                body, disconnected = await asyncio.wait_for(self._read_body(receive), self.read_timeout_s)
            except ServeError as refused:
                error = refused
            except TimeoutError:
                error = RequestTimeout(f"the request body did not arrive within {self.read_timeout_s:g} s; send it "
                                       "at once")
            else:
                if disconnected:
                    return
                receive = _replay(body, receive)
        if error is not None:
            if uploading and error.headers is CLOSE and not isinstance(error, RequestTimeout):  # linger (docstring)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._discard(receive, LINGER_BYTES), min(LINGER_S, self.read_timeout_s))
            await error.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _replay(body: bytes, receive):
    """A receive() that gives the app the body already read, then waits on the connection (disconnects)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Open uploaded bytes lazily (header only) and check format and pixel count before any decoding.

    Raises:
        UnsupportedImage: Not an image, or a format outside IMAGE_FORMATS (415).
        PayloadTooLarge: More than `max_pixels` pixels declared (413).
    """
    if not data:
        raise UnreadableImage("the uploaded file is empty")
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        claimed = next((name for magic, name in MAGIC_BYTES if data.startswith(magic)), None)
        if claimed is not None:  # a supported format's file that Pillow cannot read (a multi-page or odd TIFF ...)
            raise UnreadableImage(f"the upload starts like a {claimed} file but cannot be read as one (an unusual "
                                  f"variant of the format, or a damaged file); send it as PNG or JPEG") from None
        raise UnsupportedImage(f"the upload is not an image in a supported format ({', '.join(IMAGE_FORMATS)})") from None
    except Image.DecompressionBombError as error:  # Pillow's own limit (179 MP) refuses even to open it
        raise PayloadTooLarge(f"the image declares too many pixels for this server (at most {max_pixels:,}): "
                              f"{error}; send a smaller image") from None
    except Exception as error:  # noqa: BLE001 - a header broken in a way Pillow reports with another type
        raise UnreadableImage(f"cannot read the image header: {error}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise PayloadTooLarge(f"the image is {width} x {height} = {width * height:,} pixels; this server accepts at "
                              f"most {max_pixels:,}: send a smaller image")
    return image
