"""What the server refuses, and how: limits checked before any pixel is decoded, as JSON errors.

Order of checks for `POST /predict`, cheapest first, so a hostile or mistaken request costs little:

1. Body size, from the Content-Length header, before the body is read (`BodySizeLimit`, an ASGI
   middleware): over `max_body_bytes` -> 413. A body without Content-Length (chunked upload) -> 411,
   because its size cannot be known before reading it; browsers, curl and httpx all send the header for
   file uploads, and the HTTP parser (h11/httptools) never delivers more body than it declares.
2. Queue room (queue.py): all workers busy and the queue full -> 503 with Retry-After.
3. On a worker thread, the image header: Pillow's `Image.open` is lazy, it reads the format and size but
   no pixels. A format outside `IMAGE_FORMATS` (which keeps out the formats Pillow hands to outside
   programs, such as EPS) or not an image at all -> 415; width x height over `max_pixels` -> 413
   (a 30 kB PNG can declare 50,000 x 50,000 pixels: a decompression bomb).
4. Decoding (in the task handler): truncated or corrupt pixel data -> 422.
5. The whole job (waiting + decoding + inference) over `timeout_s` -> 504.

Every refusal is a `ServeError` with an HTTP status and a short machine-readable code; the app turns it
into `{"error": code, "status": status, "detail": message}`. No request gets a 500 or a traceback for
bad input.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError
from starlette.responses import JSONResponse

from cnnkit.errors import CnnkitError, ConfigError

# Pillow format names accepted: the decoders cnnkit reads training images with (cnnkit.data.images).
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")


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
    """

    max_body_bytes: int = 10 * 2**20
    max_pixels: int = 50_000_000
    timeout_s: float = 10.0
    workers: int = 1
    queue_size: int = 8

    def __post_init__(self):
        for name in ("max_body_bytes", "max_pixels", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be 1 or more, got {getattr(self, name)}")
        if self.queue_size < 0 or self.timeout_s <= 0:
            raise ConfigError(f"queue_size must be 0 or more and timeout_s positive, got {self.queue_size} and "
                             f"{self.timeout_s}")


class ServeError(CnnkitError):
    """A request the server refuses, with its HTTP status and a short code."""

    status, code = 500, "internal_error"
    headers: dict[str, str] = {}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.code, "status": self.status, "detail": str(self)}, self.status,
                            headers=self.headers)


class LengthRequired(ServeError):
    status, code = 411, "length_required"


class PayloadTooLarge(ServeError):
    status, code = 413, "payload_too_large"


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


class BodySizeLimit:
    """ASGI middleware: refuse request bodies over `max_body_bytes` from the Content-Length header, unread."""

    def __init__(self, app, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            error = None
            if length is None:
                error = LengthRequired("send the request with a Content-Length header (no chunked uploads)")
            elif not length.isdigit():
                error = LengthRequired(f"Content-Length {length.decode(errors='replace')!r} is not a number")
            elif int(length) > self.max_body_bytes:
                error = PayloadTooLarge(f"the request body is {_megabytes(int(length))}; this server accepts at most "
                                        f"{_megabytes(self.max_body_bytes)} ({self.max_body_bytes} bytes): send a "
                                        "smaller image")
            if error is not None:
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


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
