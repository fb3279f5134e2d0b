"""Detection through the real `cnnkit` command: train one short epoch on a tiny scenes dataset, evaluate
(COCO mAP, per-class AP), predict (JSON + the image with boxes drawn), and the errors a user can cause.

The dataset is the scenes benchmark at 64 px with 16 training canvases (cnnkit.data.scenes, the data side's
generator), so one epoch takes seconds. The numbers are not checked for quality, only for form.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import FASHION_MNIST_DIR, run_cli

SETTINGS = ["num_threads=1", "batch_size=8", "report=false", "progress=false", "optimizer=adamw", "lr=0.002"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST is not installed in {FASHION_MNIST_DIR}")
    from cnnkit.data.scenes import ScenesConfig, make_scenes

    root = tmp_path_factory.mktemp("scenes") / "scenes"
    make_scenes(root, ScenesConfig(seed=0, train=16, val=8, test=8, size=64), progress=False)
    return root


@pytest.fixture(scope="module")
def detection_run(tmp_path_factory, scenes) -> Path:
    out = tmp_path_factory.mktemp("runs")
    result = run_cli("train", "--task", "detect", "--model", "yolo_fastnet", "--data", scenes, "--epochs", 1,
                     "--out", out, "--name", "yolo", *SETTINGS)
    assert result.returncode == 0, f"cnnkit train failed:\n{result.stdout}\n{result.stderr}"
    assert "val mAP@.5" in result.stdout and "16 train / 8 val images" in result.stdout
    return out / "yolo"


def test_train_writes_a_self_describing_detection_run(detection_run: Path) -> None:
    record = json.loads((detection_run / "best.json").read_text())
    assert record["task"] == "detect"
    assert record["architecture"]["name"] == "yolo_fastnet"
    args = record["architecture"]["args"]
    assert args["num_classes"] == 10 and args["input_size"] == [64, 64] and len(args["image_mean"]) == 3
    assert record["classes"][0] == "T-shirt/top"
    metrics = [json.loads(line) for line in (detection_run / "metrics.jsonl").read_text().splitlines()]
    assert {"train_loss", "val_map", "val_map50"} <= set(metrics[0])


def test_evaluate_prints_map_and_per_class_ap(detection_run: Path) -> None:
    result = run_cli("evaluate", detection_run)
    assert result.returncode == 0, result.stderr
    assert "test mAP@[.5:.95]" in result.stdout and "mAP@.5" in result.stdout and "(8 images" in result.stdout
    assert "Ankle boot" in result.stdout  # the per-class table
    saved = json.loads((detection_run / "evaluation-test.json").read_text())
    assert 0 <= saved["map"] <= saved["map50"] <= 1 and set(saved["per_class"]) >= {"Trouser", "Bag"}


def test_predict_writes_json_and_the_image_with_boxes(detection_run: Path, scenes: Path, tmp_path: Path) -> None:
    images = sorted((scenes / "test" / "images").glob("*.png"))[:2]
    result = run_cli("predict", detection_run, *images, "--out", tmp_path, "--score-threshold", "0")
    assert result.returncode == 0, result.stderr
    for image in images:
        saved = json.loads((tmp_path / f"{image.stem}.json").read_text())
        assert saved["image"] == str(image) and (saved["width"], saved["height"]) == (64, 64)
        for detection in saved["detections"]:
            assert set(detection) == {"class", "label", "score", "box"} and len(detection["box"]) == 4
        assert saved["detections"], "score threshold 0 keeps every detection the model reports"
        with Image.open(tmp_path / f"{image.stem}.png") as drawing:
            assert drawing.size == (64, 64) and drawing.mode == "RGB"
    assert str(tmp_path / f"{images[0].stem}.png") in result.stdout


def _main(capsys, *args) -> tuple[int, str]:
    """The CLI in this process (the error paths need no fresh interpreter): (exit status, stderr)."""
    from cnnkit.cli import main

    status = main([str(arg) for arg in args])
    return status, capsys.readouterr().err


def test_predict_errors_name_the_problem(detection_run: Path, tmp_path: Path, capsys) -> None:
    status, error = _main(capsys, "predict", detection_run, tmp_path / "nope.png")
    assert status == 2 and "nope.png not found" in error
    (tmp_path / "broken.png").write_bytes(b"not a png")
    status, error = _main(capsys, "predict", detection_run, tmp_path / "broken.png")
    assert status == 2 and "broken.png" in error
    status, error = _main(capsys, "predict", detection_run, tmp_path / "broken.png", "--score-threshold", "2")
    assert status == 2 and "--score-threshold" in error


def test_train_errors_name_the_problem(scenes: Path, tmp_path: Path, capsys) -> None:
    settings = ["--task", "detect", "--out", tmp_path, *SETTINGS]
    status, error = _main(capsys, "train", "--model", "fastnet", "--data", scenes, *settings)
    assert status == 2 and "'fastnet' is a classify model" in error
    assert "yolo_fastnet" in error  # the message lists the detectors
    status, error = _main(capsys, "train", "--model", "yolo_fastnet", "--data", tmp_path / "absent", *settings)
    assert status == 2 and "absent" in error
    # A label file naming class 12 of 10: the data side's reader names the file.
    bad = tmp_path / "bad"
    (bad / "train" / "images").mkdir(parents=True)
    (bad / "train" / "labels").mkdir()
    Image.new("RGB", (64, 64)).save(bad / "train" / "images" / "a.png")
    (bad / "train" / "labels" / "a.txt").write_text("12 0.5 0.5 0.2 0.2\n")
    (bad / "classes.txt").write_text("\n".join(f"c{k}" for k in range(10)) + "\n")
    status, error = _main(capsys, "train", "--model", "yolo_fastnet", "--data", bad, *settings)
    assert status == 2 and "a.txt" in error


def test_val_is_split_off_train_when_the_layout_has_none(tmp_path: Path) -> None:
    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST is not installed in {FASHION_MNIST_DIR}")
    from cnnkit.config import TrainConfig
    from cnnkit.data.scenes import ScenesConfig, make_scenes
    from cnnkit.tasks.detection import image_statistics, read_detection_data

    make_scenes(tmp_path / "s", ScenesConfig(seed=1, train=12, val=0, test=4, size=64), progress=False)
    config = TrainConfig(task="detect", data=str(tmp_path / "s"), val_fraction=0.25, seed=3)
    data = read_detection_data(config, verbose=False)
    assert (len(data.train), len(data.val), len(data.test)) == (9, 3, 4)
    files = {image.file for image in data.train.images}
    assert not files & {image.file for image in data.val.images}  # disjoint, and the same for the same seed
    assert [i.file for i in read_detection_data(config, verbose=False).val.images] == [i.file for i in data.val.images]
    mean, std = image_statistics(data.train)
    assert len(mean) == 3 and all(0 < m < 1 for m in mean) and all(0 < s < 0.5 for s in std)
