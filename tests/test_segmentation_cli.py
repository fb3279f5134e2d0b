"""`cnnkit train --task segment|instance`, `evaluate` and `predict` through real subprocesses on tiny data."""

from __future__ import annotations

import json

import numpy
import pytest
from PIL import Image

from conftest import FASHION_MNIST_DIR, run_cli

SEGMENT_SETTINGS = ["batch_size=4", "num_threads=1", "optimizer=adamw", "lr=0.01", "report=false",
                    "model_args={base_width: 4}", "num_workers=0"]


def write_squares(root, counts={"train": 12, "val": 4, "test": 4}, size=32, seed=0):
    """A scenes-layout dataset: red squares (class 1) and green bars (class 2) on dark noise."""
    rng = numpy.random.default_rng(seed)
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("square\nbar\n")
    for split, count in counts.items():
        for folder in ("images", "masks"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image = rng.integers(0, 40, (size, size, 3)).astype(numpy.uint8)
            mask = numpy.zeros((size, size), numpy.uint8)
            y, x = rng.integers(0, size - 10, 2)
            image[y:y + 10, x:x + 10], mask[y:y + 10, x:x + 10] = (220, 40, 40), 1
            row = rng.integers(0, size - 3)
            image[row:row + 3, :], mask[row:row + 3, :] = (40, 220, 40), 2
            Image.fromarray(image).save(root / split / "images" / f"{index:03d}.png")
            Image.fromarray(mask, mode="L").save(root / split / "masks" / f"{index:03d}.png")
    return root


@pytest.fixture(scope="module")
def segment_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    data = write_squares(root / "data")
    result = run_cli("train", "--task", "segment", "--data", data, "--model", "unet", "--epochs", 1,
                     "--out", root / "runs", "--name", "run", *SEGMENT_SETTINGS, "seg_loss=ce+dice")
    assert result.returncode == 0, result.stdout + result.stderr
    return root / "runs" / "run", data, result


def test_train_writes_a_segmentation_run(segment_run):
    run_dir, _, result = segment_run
    assert "--task segment: unet" in result.stdout and "loss ce+dice" in result.stdout
    assert "best val_miou" in result.stdout
    record = json.loads((run_dir / "best.json").read_text())
    assert record["task"] == "segment" and record["classes"] == ["background", "square", "bar"]
    assert record["preprocessing"]["image_size"] == [32, 32] and record["preprocessing"]["ignore_index"] == 255
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert 0 <= metrics[-1]["val_miou"] <= 1 and "val_pixel_accuracy" in metrics[-1]


def test_evaluate_prints_miou_and_writes_json(segment_run):
    run_dir, _, _ = segment_run
    result = run_cli("evaluate", run_dir, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("test mIoU ") and "square" in result.stdout
    written = json.loads((run_dir / "evaluation-test.json").read_text())
    assert written["images"] == 4 and set(written["per_class"]) == {"background", "square", "bar"}
    assert len(written["confusion_matrix"]) == 3


def test_evaluate_tta_override_scores_the_mirrored_average_and_writes_beside(segment_run):
    run_dir, _, _ = segment_run
    plain = json.loads((run_dir / "evaluation-test.json").read_text()) if (run_dir / "evaluation-test.json").is_file() \
        else None
    result = run_cli("evaluate", run_dir, "--device", "cpu", "--tta", "on", "--json")
    assert result.returncode == 0, result.stderr
    on = json.loads((run_dir / "evaluation-test-tta-on.json").read_text())
    assert on["tta"] is True and json.loads(result.stdout)["miou"] == on["miou"]
    off = run_cli("evaluate", run_dir, "--device", "cpu", "--tta", "off", "--json")
    assert off.returncode == 0, off.stderr
    off = json.loads((run_dir / "evaluation-test-tta-off.json").read_text())
    assert off["tta"] is False
    if plain is not None:  # the run was trained without tta: "off" is its own evaluation
        assert off["miou"] == plain["miou"]
    # the mirrored average changes the logits of an asymmetric test set, so the two confusion matrices differ
    assert on["confusion_matrix"] != off["confusion_matrix"]


def test_evaluate_tta_is_refused_where_the_task_has_none(tmp_path, monkeypatch, capsys):
    import cnnkit.api
    from cnnkit.cli import main

    class Detector:  # what load() gives for a detection run: no flip TTA to switch
        record = {"task": "detect"}

    monkeypatch.setattr(cnnkit.api, "load", lambda run_dir, device: Detector())
    assert main(["evaluate", str(tmp_path), "--tta", "on"]) == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr and "--tta applies to classification and segmentation runs" in stderr
    assert "detect run: leave --tta out" in stderr and not list(tmp_path.iterdir())


def test_predict_writes_mask_and_overlay_at_the_image_size(segment_run, tmp_path):
    run_dir, data, _ = segment_run
    odd = tmp_path / "odd.png"  # another size than training (32x32): the mask must match the input
    Image.open(data / "test" / "images" / "000.png").resize((48, 40)).save(odd)
    out = tmp_path / "out"
    result = run_cli("predict", run_dir, odd, data / "test" / "images" / "001.png", "--out", out, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    mask, overlay = Image.open(out / "odd-mask.png"), Image.open(out / "odd-overlay.png")
    assert mask.mode == "P" and mask.size == (48, 40) and overlay.size == (48, 40) and overlay.mode == "RGB"
    assert set(numpy.unique(numpy.asarray(mask)).tolist()) <= {0, 1, 2}
    assert (out / "001-mask.png").is_file() and "odd.png: " in result.stdout


def test_bad_mask_is_a_clear_error(tmp_path, capsys):
    """In-process (cnnkit.cli.main, the same code as the command): exit status 2 and the file named."""
    from cnnkit.cli import main

    data = write_squares(tmp_path / "data", counts={"train": 4})
    Image.fromarray(numpy.full((32, 32), 9, numpy.uint8), mode="L").save(data / "train" / "masks" / "002.png")
    arguments = ["train", "--task", "segment", "--data", str(data), "--model", "unet", "--epochs", "1",
                 "--out", str(tmp_path / "runs"), *SEGMENT_SETTINGS]
    assert main(arguments) == 2
    assert "masks/002.png has values 9 outside the 3 classes" in capsys.readouterr().err
    arguments[arguments.index("unet")] = "resnet18"
    Image.fromarray(numpy.zeros((32, 32), numpy.uint8), mode="L").save(data / "train" / "masks" / "002.png")
    assert main(arguments) == 2
    assert "not a segmentation model" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools vs NumPy 2
def test_instance_predictions_json_with_rle(tmp_path):
    """An untrained Mask R-CNN at threshold 0 still proposes objects: JSON with RLE masks that decode to the
    image's size and area, an instance-id PNG and an overlay."""
    import torch
    from pycocotools import mask as mask_utils

    from cnnkit.registry import create_model
    from cnnkit.tasks.instance import InstanceSegmenter, write_predictions

    torch.manual_seed(0)
    model = create_model("maskrcnn_resnet18_fpn", num_classes=2, input_size=64, fpn_channels=16,
                         representation_size=32).eval()
    record = {"task": "instance", "classes": ["square", "bar"]}
    segmenter = InstanceSegmenter(model, record, tmp_path, torch.device("cpu"))
    image = tmp_path / "scene.png"
    Image.fromarray(numpy.random.default_rng(0).integers(0, 255, (64, 80, 3)).astype(numpy.uint8)).save(image)
    [entry] = write_predictions(segmenter, [str(image)], tmp_path / "out", score_threshold=0.0)
    written = json.loads((tmp_path / "out" / "scene.json").read_text())
    assert written["objects"] and written["width"] == 80 and written["height"] == 64
    first = written["objects"][0]
    assert first["class"] in ("square", "bar") and len(first["box"]) == 4
    decoded = mask_utils.decode({"size": first["mask"]["size"], "counts": first["mask"]["counts"].encode()})
    assert decoded.shape == (64, 80) and int(decoded.sum()) == first["area"]
    ids = numpy.asarray(Image.open(entry["mask"]))
    assert ids.shape == (64, 80) and ids.max() <= len(written["objects"])
    assert Image.open(entry["overlay"]).size == (80, 64)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.skipif(not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason="the scenes generator needs Fashion-MNIST")
def test_instance_train_evaluate_predict_with_rle(tmp_path):
    from pycocotools import mask as mask_utils

    data = tmp_path / "scenes"
    made = run_cli("data", "make-scenes", data, "--train", 8, "--val", 4, "--test", 4, "--size", 64, "--quiet")
    assert made.returncode == 0, made.stderr
    result = run_cli("train", "--task", "instance", "--data", data, "--model", "maskrcnn_resnet18_fpn", "--epochs", 1,
                     "--out", tmp_path / "runs", "--name", "run", "batch_size=4", "num_threads=1", "report=false",
                     "model_args={fpn_channels: 16, representation_size: 32}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "val mask mAP@.5" in result.stdout and "best val_mask_map50" in result.stdout
    run_dir = tmp_path / "runs" / "run"
    evaluated = run_cli("evaluate", run_dir, "--device", "cpu")
    assert evaluated.returncode == 0 and evaluated.stdout.startswith("test mask mAP@.5 "), evaluated.stderr
    out = tmp_path / "out"
    image = data / "test" / "images" / "000000.png"
    predicted = run_cli("predict", run_dir, image, "--out", out, "--score-threshold", 0, "--device", "cpu")
    assert predicted.returncode == 0, predicted.stderr
    entry = json.loads((out / "000000.json").read_text())
    assert entry["objects"], "an untrained model still proposes objects at threshold 0"
    first = entry["objects"][0]
    assert set(first) >= {"class", "score", "box", "mask", "area"}
    decoded = mask_utils.decode({"size": first["mask"]["size"], "counts": first["mask"]["counts"].encode()})
    assert decoded.shape == (64, 64) and int(decoded.sum()) == first["area"]
    assert Image.open(out / "000000-mask.png").size == (64, 64)
    assert Image.open(out / "000000-overlay.png").mode == "RGB"
