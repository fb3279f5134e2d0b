"""`cnnkit serve` on an embed run: /embed, /verify, /predict answering as /embed, /healthz, the refusals.

The run is trained in-process for one epoch on a few random PNG identities (seconds): what is tested is the
server, not the embedding's quality. FastAPI's TestClient drives the app; test_serve.py covers the limits
over real HTTP for classifiers, and the routes below reuse the same checks (BodySizeLimit, open_image, the
queue), which the 413/415/422 cases here confirm for the new routes.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cnnkit.serve import EmbeddingHandler, ServeLimits, create_app, load_handler

IDENTITIES, IMAGES_PER_IDENTITY, SIDE, DIMENSION = 8, 6, 28, 16


def png_bytes(array: numpy.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def embed_run(tmp_path_factory) -> Path:
    """A one-epoch embed run (simple_cnn, 16-d) on IDENTITIES folders of noisy copies of one random pattern each."""
    from cnnkit.api import train

    root = tmp_path_factory.mktemp("serve-embed")
    generator = numpy.random.default_rng(0)
    for identity in range(IDENTITIES):
        folder = root / "faces" / f"person{identity}"
        folder.mkdir(parents=True)
        pattern = generator.integers(0, 256, (SIDE, SIDE))
        for index in range(IMAGES_PER_IDENTITY):
            noisy = numpy.clip(pattern + generator.normal(0, 20, (SIDE, SIDE)), 0, 255).astype(numpy.uint8)
            Image.fromarray(noisy, mode="L").save(folder / f"{index}.png")
    run = train(task="embed", data=str(root / "faces"), model="simple_cnn", embedding_dim=DIMENSION, epochs=1,
                batch_size=16, val_fraction=0.25, precision="fp32", channels_last=False, progress=False,
                report=False, num_workers=0, out=str(root / "runs"), name="run")
    return Path(run.run_dir)


@pytest.fixture(scope="module")
def client(embed_run) -> TestClient:
    return TestClient(create_app(load_handler(embed_run, backend="torch"), ServeLimits(max_body_bytes=200_000)))


def test_load_handler_picks_the_embedder_from_the_task_info(embed_run):
    from cnnkit.tasks import task_info

    assert task_info("embed").serve_as == "embedder" and task_info("classify").serve_as == "classifier"
    handler = load_handler(embed_run, backend="torch")
    assert isinstance(handler, EmbeddingHandler) and handler.dimension == DIMENSION


def test_healthz_names_the_task_and_the_dimension(client):
    answer = client.get("/healthz")
    assert answer.status_code == 200
    model = answer.json()["model"]
    assert model["task"] == "embed" and model["dimension"] == DIMENSION and model["backend"] == "torch"
    assert 0 < model["threshold"] <= 1 and model["input"] == {"channels": 1, "image_size": [SIDE, SIDE]}


def test_embed_answers_a_unit_vector_and_predict_answers_alike(client):
    image = png_bytes(numpy.full((40, 30), 128, numpy.uint8))
    answer = client.post("/embed", files={"file": ("a.png", image, "image/png")})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["task"] == "embed" and result["dimension"] == DIMENSION == len(result["embedding"])
    assert math.sqrt(sum(value * value for value in result["embedding"])) == pytest.approx(1.0, abs=1e-4)
    assert result["image"] == {"format": "PNG", "width": 30, "height": 40, "mode": "L"}
    predicted = client.post("/predict", files={"file": ("a.png", image, "image/png")}).json()
    assert predicted["embedding"] == result["embedding"]


def test_verify_an_image_with_itself_says_same(client, embed_run):
    generator = numpy.random.default_rng(1)
    image = png_bytes(generator.integers(0, 256, (SIDE, SIDE), dtype=numpy.uint8))
    other = png_bytes(generator.integers(0, 256, (SIDE, SIDE, 3), dtype=numpy.uint8))
    answer = client.post("/verify", files={"first": ("a.png", image, "image/png"),
                                           "second": ("b.png", image, "image/png")})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["score"] == pytest.approx(1.0, abs=1e-3) and result["same"] is True
    assert result["threshold"] == client.get("/healthz").json()["model"]["threshold"]
    assert [header["format"] for header in result["images"]] == ["PNG", "PNG"]
    different = client.post("/verify", files={"first": ("a.png", image, "image/png"),
                                              "second": ("b.png", other, "image/png")}).json()
    assert -1 <= different["score"] < 1 and different["same"] == (different["score"] >= different["threshold"])


@pytest.mark.parametrize("route, files, status, code, detail", [
    ("/embed", {"file": ("a.txt", b"not an image at all", "text/plain")}, 415, "unsupported_media_type", "not an image"),
    ("/verify", {"first": ("a.png", png_bytes(numpy.zeros((8, 8), numpy.uint8)), "image/png"),
                 "second": ("b.png", png_bytes(numpy.arange(4096, dtype=numpy.uint8).reshape(64, 64))[:80],
                            "image/png")}, 422, "unreadable_image", "truncated"),
    ("/verify", {"first": ("a.png", png_bytes(numpy.zeros((8, 8), numpy.uint8)), "image/png")}, 422,
     "invalid_request", "'first' and 'second'"),
    ("/embed", {"file": ("big.png", b"\0" * 300_000, "image/png")}, 413, "payload_too_large", "at most"),
])
def test_bad_uploads_get_the_error_envelope(client, route, files, status, code, detail):
    answer = client.post(route, files=files)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["error"] == code and body["status"] == status and detail in body["detail"]


def test_pixel_limits_apply_to_each_verify_image(embed_run):
    app = create_app(load_handler(embed_run, backend="torch"), ServeLimits(max_decoded_pixels=1000))
    small, large = png_bytes(numpy.zeros((8, 8), numpy.uint8)), png_bytes(numpy.zeros((40, 40), numpy.uint8))
    answer = TestClient(app).post("/verify", files={"first": ("a.png", small, "image/png"),
                                                    "second": ("b.png", large, "image/png")})
    assert answer.status_code == 413 and "1,600 pixels" in answer.json()["detail"]


def test_the_page_lists_the_routes_instead_of_the_classifier_upload(client):
    page = client.get("/")
    assert page.status_code == 200 and "POST /verify" in page.text and "predictions" not in page.text


def test_onnxruntime_backend_serves_the_same_embedding(client, embed_run):
    pytest.importorskip("onnxruntime")
    exported = TestClient(create_app(load_handler(embed_run, backend="onnxruntime")))
    assert exported.get("/healthz").json()["model"]["backend"] == "onnxruntime"
    image = png_bytes(numpy.random.default_rng(2).integers(0, 256, (SIDE, SIDE), dtype=numpy.uint8))
    from_onnx = exported.post("/embed", files={"file": ("a.png", image, "image/png")}).json()["embedding"]
    from_torch = client.post("/embed", files={"file": ("a.png", image, "image/png")}).json()["embedding"]
    assert max(abs(a - b) for a, b in zip(from_onnx, from_torch)) < 1e-4
