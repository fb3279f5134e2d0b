"""Task handlers: what the server does with a checked image, chosen by the run's recorded task.

    handler = load_handler("runs/RUN", backend="auto")       # tasks whose TaskInfo names a `serve_as` kind
    handler.info()                                           # for /healthz and the web page
    handler.predict(image, top_k=5, explain=True)            # a JSON-ready dict
    handler.verify(first, second)                            # embedders: same identity or not

The app (app.py) knows nothing about classes, boxes or embeddings: it checks limits, opens the image header
(limits.py), runs the handler on a worker thread (queue.py) and returns its dict. A handler lists the routes it
answers in `endpoints` ("predict" always; "embed", "verify") and whether the web page fits it (`page`). Serving
a new kind of task is one class with `check()`, `info()` and `predict()`, added to `HANDLERS` under the kind its
tasks' TaskInfo names in `serve_as`; the web page draws a "gradcam" overlay picture when a handler returns one
(boxes or masks can come the same way).
"""

from __future__ import annotations

import base64
import io
import math
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy
import torch
from PIL import Image

from cnnkit.data.images import decode_image
from cnnkit.errors import CheckpointError, CnnkitError, ConfigError
from cnnkit.serve.limits import ServeError, UnreadableImage

OVERLAY_MIN_SIDE = 224  # small inputs (28 x 28) are enlarged so the overlay is visible on the page
# Modes Image.reduce averages correctly (the alpha ones premultiplied, as compositing onto black needs).
REDUCIBLE_MODES = ("L", "RGB", "RGBA", "LA")
# As Pillow's resize(reducing_gap=3) in cnnkit.data.images does: box-reduce, then filter from >= 3x the target.
REDUCING_GAP = 3
EXIF_ORIENTATION = 0x0112
ORIENTATIONS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                8: Image.Transpose.ROTATE_90}  # as PIL.ImageOps.exif_transpose


def reduced(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """A loaded `image` box-reduced by an integer factor, down to no less than 3x the model's larger side, before
    any mode conversion: a 4096 x 4096 RGBA upload is then converted at 1/48 of its size instead of in full
    (hundreds of MB). The EXIF orientation, which reduce() drops, is applied to the reduced image."""
    side = max(size) * REDUCING_GAP
    factor = min(image.width // side, image.height // side)
    if image.mode not in REDUCIBLE_MODES or factor < 2:
        return image
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - a malformed EXIF block: as cnnkit.data.images, ignore it
        orientation = 1
    small = image.reduce(factor)
    method = ORIENTATIONS.get(orientation)
    return small.transpose(method) if method is not None else small


def decode_upload(image: Image.Image, preprocessing) -> torch.Tensor:
    """A uint8 (1, C, H, W) batch of the model's size from an opened (header-checked) upload.

    Raises:
        UnreadableImage: The pixel data is corrupt or truncated (422).
    """
    try:
        # As cnnkit.data.images does for files: a large JPEG decodes at 1/2..1/8 scale, down to twice the
        # model's size (a no-op for other formats), so `cnnkit predict` and the server see the same pixels.
        image.draft(None, (2 * max(preprocessing.image_size),) * 2)
        image.load()  # the pixel data is decoded here: truncated or corrupt files fail now
        image = reduced(image, preprocessing.image_size)
    except Exception as error:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError ...
        raise UnreadableImage(f"the image data is corrupt or truncated ({error}); send the complete file") from None
    return decode_image(image, preprocessing.channels, preprocessing.image_size).unsqueeze(0)  # (1, C, H, W)


def _failure(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def run_on_blank(source: Path, preprocessing, run) -> torch.Tensor:
    """`run` (predict_proba, embed ...) on one blank uint8 image of the run's size: what every handler's check
    starts with. Raises CheckpointError naming `source` when the model fails on it."""
    blank = torch.zeros(1, preprocessing.channels, *preprocessing.image_size, dtype=torch.uint8)
    try:
        return run(blank)
    except Exception as error:  # noqa: BLE001 - whatever the model raises, the run cannot be served
        raise CheckpointError(f"{source}: the model fails on a blank {preprocessing.channels} x "
                              f"{preprocessing.image_size[0]} x {preprocessing.image_size[1]} image "
                              f"({_failure(error)}); retrain or export the run again") from None


class ModelOutputError(ServeError):
    """The model answered with NaN or inf: a server-side failure, said in cnnkit's envelope (500)."""

    status, code = 500, "model_output_not_finite"


class TaskHandler(Protocol):
    """What the server needs from a task."""

    endpoints: tuple[str, ...]  # the POST routes it answers: "predict", and "embed", "verify" for embedders
    page: bool  # whether the web page (page.py, a classifier's) fits its answers

    def check(self, source: Path) -> None:
        """Run the model on one blank image before serving; CheckpointError if it cannot."""

    def info(self) -> dict[str, Any]:
        """Task, labels, input size and backend: shown by /healthz and the web page."""

    def predict(self, image: Image.Image, top_k: int, explain: bool) -> dict[str, Any]:
        """Run the model on an opened (header-checked, not yet decoded) image; a JSON-ready dict."""


def overlay_png(image: torch.Tensor, heatmap: torch.Tensor, alpha: float) -> bytes:
    """PNG bytes of uint8 `image` (C, H, W) with the jet-coloured (H, W) heatmap blended over it.

    Drawn with numpy and Pillow rather than a matplotlib figure (as `cnnkit explain` does): no axes or
    title are needed on the page, and it takes about a millisecond instead of tens.
    """
    from matplotlib import colormaps

    base = image.float().div(255).permute(1, 2, 0).numpy()  # (C, H, W) -> (H, W, C)
    if base.shape[2] == 1:
        base = numpy.repeat(base, 3, axis=2)
    colours = colormaps["jet"](heatmap.numpy())[..., :3]  # (H, W) in [0, 1] -> (H, W, 3)
    blended = ((1 - alpha) * base + alpha * colours) * 255
    picture = Image.fromarray(numpy.clip(blended + 0.5, 0, 255).astype(numpy.uint8), mode="RGB")
    scale = max(1, math.ceil(OVERLAY_MIN_SIDE / min(picture.size)))
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


class ClassificationHandler:
    """Top-k classes with probabilities, and optionally a Grad-CAM overlay of the top class.

    Args:
        classifier: A Classifier on any backend (cnnkit.export.load_predictor).
        explainer: A PyTorch model for Grad-CAM, or None when only an exported file is served. It is
            a model of its own (not the classifier's), used under a lock: Grad-CAM adds hooks and needs
            gradients, which must not meet predictions running on other worker threads.
        name: The run's name, for the page title.
        backend: The backend's name, for /healthz.
    """

    task = "classification"
    kind = "classification"  # as the refusal of an unserved task lists it
    endpoints = ("predict",)
    page = True

    def __init__(self, classifier, explainer: torch.nn.Module | None, name: str, backend: str):
        self.classifier, self.explainer, self.name, self.backend = classifier, explainer, name, backend
        self._explain_lock = threading.Lock()

    @classmethod
    def from_run(cls, run: Path, backend: str, trust_code: bool = False) -> ClassificationHandler:
        import copy

        from cnnkit.export import load_predictor
        from cnnkit.export.runtimes import RuntimeModel
        from cnnkit.tasks import load_run as load

        classifier = load_predictor(run, backend=backend, device="cpu", trust_code=trust_code)
        used = classifier.model.runtime if isinstance(classifier.model, RuntimeModel) else "torch"
        if classifier.run_dir is None:  # an exported file: no checkpoint to explain with
            explainer, name = None, run.name
        else:
            explainer = copy.deepcopy(classifier.model) if used == "torch" else load(run, device="cpu").model
            name = (run if run.is_dir() else run.parent).name
        return cls(classifier, explainer, name, used)

    def check(self, source: Path) -> None:
        """Run the model on one blank image: a record it cannot run fails here, not on every request.

        Raises:
            CheckpointError: The model raises, or its output is not one finite score per class.
        """
        probabilities = run_on_blank(source, self.classifier.preprocessing, self.classifier.predict_proba)
        expected = (1, len(self.classifier.classes))
        if tuple(probabilities.shape) != expected or not bool(torch.isfinite(probabilities).all()):
            raise CheckpointError(f"{source}: the model answers a blank image with {tuple(probabilities.shape)} "
                                  f"scores{'' if torch.isfinite(probabilities).all() else ' that are not finite'}, "
                                  f"expected {expected} finite ones (one per class); retrain or export the run again")

    def info(self) -> dict[str, Any]:
        preprocessing = self.classifier.preprocessing
        return {"task": self.task, "run": self.name, "backend": self.backend, "classes": self.classifier.classes,
                "input": {"channels": preprocessing.channels, "image_size": list(preprocessing.image_size)},
                "explain": self.explainer is not None}

    def predict(self, image: Image.Image, top_k: int, explain: bool) -> dict[str, Any]:
        batch = decode_upload(image, self.classifier.preprocessing)  # (1, C, H, W) uint8
        probabilities = self.classifier.predict_proba(batch)[0]
        if not bool(torch.isfinite(probabilities).all()):  # never "probability": null (issue 26, item 4)
            raise ModelOutputError("the model's output for this image is not finite (NaN or inf): its weights or "
                                   "this input break it; retrain the run or check the image")
        values, indices = probabilities.topk(min(top_k, len(self.classifier.classes)))
        result: dict[str, Any] = {
            "task": self.task,
            "predictions": [{"class": self.classifier.classes[index], "probability": value}
                            for value, index in zip(values.tolist(), indices.tolist())]}
        if explain and self.explainer is not None:
            result["gradcam"] = self._gradcam(batch)
        return result

    def _gradcam(self, batch: torch.Tensor) -> dict[str, Any]:
        from cnnkit.inspect.gradcam import OVERLAY_ALPHA, gradcam

        with self._explain_lock:
            heatmap, index, layer = gradcam(self.explainer, self.classifier.preprocessing.normalize(batch))
        png = overlay_png(batch[0], heatmap, OVERLAY_ALPHA)
        return {"class": self.classifier.classes[index], "layer": layer,
                "overlay": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}


class EmbeddingHandler:
    """A unit-length embedding per image (/embed, and /predict alike), and verification of two images (/verify)
    against the run's threshold (chosen on the validation identities).

    Args:
        embedder: An Embedder on any backend (cnnkit.export.load_predictor).
        name: The run's name, for /healthz.
        backend: The backend's name, for /healthz.
    """

    kind = "embedding"
    endpoints = ("predict", "embed", "verify")
    page = False  # the page shows classes; an embedding is a list of numbers best read by a program

    def __init__(self, embedder, name: str, backend: str):
        self.embedder, self.name, self.backend = embedder, name, backend
        self.task = embedder.record["task"]
        self.dimension: int | None = None  # known once check() ran the model

    @classmethod
    def from_run(cls, run: Path, backend: str, trust_code: bool = False) -> EmbeddingHandler:
        from cnnkit.export import load_predictor
        from cnnkit.export.runtimes import RuntimeModel

        embedder = load_predictor(run, backend=backend, device="cpu", trust_code=trust_code)
        used = embedder.model.runtime if isinstance(embedder.model, RuntimeModel) else "torch"
        name = run.name if embedder.run_dir is None else (run if run.is_dir() else run.parent).name
        return cls(embedder, name, used)

    def check(self, source: Path) -> None:
        """Run the model on one blank image and learn the embedding's dimension.

        Raises:
            CheckpointError: The model raises, or its output is not one finite vector.
        """
        embeddings = run_on_blank(source, self.embedder.preprocessing, self.embedder.embed)
        if embeddings.dim() != 2 or len(embeddings) != 1 or embeddings.shape[1] < 1 \
                or not bool(torch.isfinite(embeddings).all()):
            raise CheckpointError(f"{source}: the model answers a blank image with {tuple(embeddings.shape)} values"
                                  f"{'' if torch.isfinite(embeddings).all() else ' that are not finite'}, expected "
                                  "one finite embedding (1, D); retrain or export the run again")
        self.dimension = int(embeddings.shape[1])

    def info(self) -> dict[str, Any]:
        preprocessing = self.embedder.preprocessing
        return {"task": self.task, "run": self.name, "backend": self.backend, "dimension": self.dimension,
                "threshold": round(self.embedder.threshold, 4),
                "input": {"channels": preprocessing.channels, "image_size": list(preprocessing.image_size)}}

    def predict(self, image: Image.Image, top_k: int = 5, explain: bool = False) -> dict[str, Any]:
        """{"task", "embedding", "dimension"}; `top_k` and `explain` (classifier options) are ignored."""
        embedding = self.embedder.embed(decode_upload(image, self.embedder.preprocessing))[0]
        if not bool(torch.isfinite(embedding).all()):
            raise ModelOutputError("the model's embedding of this image is not finite (NaN or inf); retrain the run "
                                   "or check the image")
        return {"task": self.task, "embedding": [round(value, 6) for value in embedding.tolist()],
                "dimension": len(embedding)}

    def verify(self, first: Image.Image, second: Image.Image) -> dict[str, Any]:
        """{"task", "score", "threshold", "same"}: cosine similarity against the run's threshold, as
        Embedder.verify computes it for files."""
        preprocessing = self.embedder.preprocessing
        decoded = []
        for image in (first, second):
            decoded.append(decode_upload(image, preprocessing))
            image.close()  # its full-size pixels are freed before the second is decoded: one at a time, as /predict
        a, b = self.embedder.embed(torch.cat(decoded))  # (2, C, H, W) -> two (D,) unit vectors
        score, threshold = float((a * b).sum()), self.embedder.threshold
        if not math.isfinite(score):
            raise ModelOutputError("the model's embeddings of these images are not finite (NaN or inf); retrain the "
                                   "run or check the images")
        return {"task": self.task, "score": round(score, 4), "threshold": round(threshold, 4),
                "same": score >= threshold}


# TaskInfo.serve_as -> the handler serving that kind of task.
HANDLERS: dict[str, type] = {"classifier": ClassificationHandler, "embedder": EmbeddingHandler}


def load_handler(run: str | Path, backend: str = "auto", trust_code: bool = False) -> TaskHandler:
    """The handler for a run directory (or checkpoint, or exported file) whose task's TaskInfo names a `serve_as`
    kind (HANDLERS), checked with one blank image. `trust_code`: allow exported TorchScript / .pt2 files (they are code)."""
    from cnnkit.export import recorded_task
    from cnnkit.export.formats import format_of_file
    from cnnkit.task_table import TASKS
    from cnnkit.tasks import task_info

    run = Path(run)
    if format_of_file(run) is None and not run.exists():
        raise CnnkitError(f"{run} does not exist; pass the run directory that `cnnkit train` printed")
    task = recorded_task(run)
    kind = task_info(task).serve_as if task in TASKS else None
    if kind not in HANDLERS:
        served = [(HANDLERS[info.serve_as].kind, name) for name in TASKS
                  if (info := task_info(name)).serve_as in HANDLERS]
        raise ConfigError(f"cnnkit serve does not serve {task} runs yet (it serves: "
                          f"{', '.join(f'{kind} (--task {name})' for kind, name in served)})")
    handler = HANDLERS[kind].from_run(run, backend, trust_code)
    handler.check(run)
    return handler
