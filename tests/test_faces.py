"""Face finding and cropping before embedding (cnnkit.data.faces, `--face-crop`), on real faces.

scikit-image's lfw_subset is 100 LFW faces and 100 non-faces (25x25, no identities), upscaled here to 100x100:
it tests the detector's settings (faces found, non-faces left alone) and the errors, not face recognition.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy
import pytest
from PIL import Image

pytest.importorskip("cv2", reason="face cropping needs opencv-python-headless (pip install 'cnnkit[faces]')")
skimage_data = pytest.importorskip("skimage.data", reason="the faces come from scikit-image's lfw_subset")

from cnnkit.data.faces import crop_face, find_faces  # noqa: E402
from cnnkit.errors import DataError  # noqa: E402
from conftest import run_cli  # noqa: E402

SIDE = 100


@pytest.fixture(scope="module")
def lfw() -> tuple[list[Image.Image], list[Image.Image]]:
    """(faces, non-faces): lfw_subset's 100 + 100 grayscale images upscaled to SIDE x SIDE."""
    images = [Image.fromarray((image * 255).round().astype(numpy.uint8)).resize((SIDE, SIDE), Image.BILINEAR)
              for image in skimage_data.lfw_subset()]
    return images[:100], images[100:]


@pytest.fixture(scope="module")
def one_face(lfw) -> list[Image.Image]:
    return [image for image in lfw[0] if len(find_faces(image)) == 1]


def test_faces_are_found_and_non_faces_are_not(lfw):
    faces, non_faces = lfw
    face_rate = sum(len(find_faces(image)) >= 1 for image in faces) / len(faces)
    false_rate = sum(len(find_faces(image)) >= 1 for image in non_faces) / len(non_faces)
    # measured with OpenCV 4.14: 0.95 of the faces, 0.00 of the non-faces
    assert face_rate >= 0.85, f"faces found in only {face_rate:.2f} of lfw_subset's faces"
    assert false_rate <= 0.05, f"a face found in {false_rate:.2f} of lfw_subset's non-faces"


def test_boxes_lie_inside_the_image_and_the_crop_adds_the_margin(one_face):
    image = one_face[0]
    (x, y, w, h), = find_faces(image)
    assert 0 <= x and 0 <= y and x + w <= SIDE and y + h <= SIDE and w >= 24
    assert crop_face(image, margin=0).size == (w, h)
    crop = crop_face(image)
    assert crop.mode == "RGB" and crop.size[0] >= w and crop.size[1] >= h


def test_a_blank_image_has_no_face(tmp_path):
    blank = tmp_path / "wall.png"
    Image.new("L", (SIDE, SIDE), 128).save(blank)
    with pytest.raises(DataError, match=r"wall\.png: no face found.*--face-crop"):
        crop_face(str(blank))


def test_two_people_side_by_side_are_ambiguous(one_face):
    pair = numpy.concatenate([numpy.asarray(one_face[0]), numpy.asarray(one_face[1])], axis=1)  # (100, 200)
    assert len(find_faces(pair)) == 2
    with pytest.raises(DataError, match="2 faces found"):
        crop_face(pair)


@pytest.fixture(scope="module")
def embed_run(tmp_path_factory) -> Path:
    """A one-epoch embed run (simple_cnn, 8-d) on a few random-pattern identities: seconds, as test_serve_embed's."""
    from cnnkit.api import train

    root = tmp_path_factory.mktemp("faces-embed")
    generator = numpy.random.default_rng(0)
    for identity in range(6):
        folder = root / "people" / f"person{identity}"
        folder.mkdir(parents=True)
        pattern = generator.integers(0, 256, (28, 28))
        for index in range(4):
            noisy = numpy.clip(pattern + generator.normal(0, 20, (28, 28)), 0, 255).astype(numpy.uint8)
            Image.fromarray(noisy, mode="L").save(folder / f"{index}.png")
    run = train(task="embed", data=str(root / "people"), model="simple_cnn", embedding_dim=8, epochs=1,
                batch_size=8, val_fraction=0.34, precision="fp32", channels_last=False, progress=False,
                report=False, num_workers=0, out=str(root / "runs"), name="run")
    return Path(run.run_dir)


def test_verify_with_face_crop_end_to_end(embed_run, one_face, tmp_path):
    # the same face in a wider photo (grey margins around it) and on its own: the crops match
    photo = Image.new("L", (3 * SIDE, 2 * SIDE), 128)
    photo.paste(one_face[0], (SIDE, SIDE // 2))
    photo.save(tmp_path / "photo.png")
    one_face[0].save(tmp_path / "portrait.png")
    Image.new("L", (SIDE, SIDE), 128).save(tmp_path / "wall.png")

    # the run is random patterns, so its own threshold means nothing here: what is checked is that the two crops
    # show the same thing (near-identical embeddings) where the uncropped photos do not
    scores = {}
    for crop in ("--face-crop", None):
        result = run_cli("verify", embed_run, tmp_path / "photo.png", tmp_path / "portrait.png", "--json",
                         "--device", "cpu", *([crop] if crop else []))
        assert result.returncode in (0, 1), result.stdout + result.stderr
        scores[crop] = json.loads(result.stdout)["score"]
    assert scores["--face-crop"] > 0.95 and scores["--face-crop"] > scores[None], scores

    result = run_cli("verify", embed_run, tmp_path / "wall.png", tmp_path / "portrait.png", "--face-crop",
                     "--device", "cpu")
    assert result.returncode != 0
    assert "wall.png: no face found" in result.stderr and "Traceback" not in result.stderr
