"""The `cnnkit` command end to end, through a real subprocess: train -> run directory -> evaluate / predict.

One run is trained by the session fixture `trained_run` (conftest.py); every later step uses only its
run directory, as a user would. `models` and `train --help` only print, so they run in-process
through `cnnkit.cli.main` (the function `python -m cnnkit` calls).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re

import numpy
import pytest
import yaml
from PIL import Image

import cnnkit
from cnnkit.cli import main
from cnnkit.config import TrainConfig
from conftest import CLASSES, TEST_IMAGES, TEST_PER_CLASS, TRAIN_EPOCHS, VAL_IMAGES, run_cli

CLASS_NAMES = sorted(CLASSES)  # the loader orders classes by folder name
MIN_ACCURACY = 0.8  # measured 0.94-0.975 on validation and 0.95-0.99 on test for seeds 0-2


def test_train_writes_a_complete_run_directory(trained_run, image_folder):
    run_dir, result = trained_run
    names = {path.name for path in run_dir.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "best.safetensors", "best.json", "last.safetensors", "last.json"} <= names
    assert not [name for name in names if name.endswith(".tmp")], "temporary files left behind"

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert set(config) == {field.name for field in dataclasses.fields(TrainConfig)}
    assert (config["model"], config["epochs"], config["data"]) == ("fastnet", TRAIN_EPOCHS, str(image_folder))
    # lr unset: the default scales with the batch (0.2 x 64 / 256 = 0.05), which is what lets these tiny runs converge
    assert (config["lr"], config["batch_size"], config["num_threads"], config["val_fraction"]) == (None, 64, 1, 0.2)
    assert config["name"] == "run"

    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == list(range(1, TRAIN_EPOCHS + 1))
    for line in lines:
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_seconds"):
            assert math.isfinite(line[key]), (key, line)
        assert 0.0 <= line["val_accuracy"] <= 1.0 and line["lr"] > 0
        assert line["val_count"] == VAL_IMAGES
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    val_accuracies = [line["val_accuracy"] for line in lines]
    assert max(val_accuracies) >= MIN_ACCURACY, val_accuracies

    best = json.loads((run_dir / "best.json").read_text())
    best_epoch = 1 + val_accuracies.index(max(val_accuracies))  # the first epoch with the highest value
    assert best["epoch"] == best["metrics"]["epoch"] == best_epoch
    assert best["metrics"]["val_accuracy"] == max(val_accuracies)
    assert best["classes"] == CLASS_NAMES
    assert best["architecture"]["name"] == "fastnet"
    assert best["architecture"]["args"]["num_classes"] == len(CLASSES)
    assert best["preprocessing"]["channels"] == 1 and best["preprocessing"]["image_size"] == [28, 28]
    last = json.loads((run_dir / "last.json").read_text())
    assert last["trainer_state"]["epoch"] == TRAIN_EPOCHS

    assert f"320 train / {VAL_IMAGES} val images, 4 classes" in result.stdout
    assert re.search(rf"done: best val_accuracy {max(val_accuracies):.4f} at epoch {best_epoch}", result.stdout)


def test_evaluate_json_reports_accuracy_per_class_and_confusion_matrix(trained_run):
    run_dir, _ = trained_run
    result = run_cli("evaluate", run_dir, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["split"] == "test" and report["count"] == TEST_IMAGES
    assert report["accuracy"] >= MIN_ACCURACY
    assert math.isfinite(report["loss"]) and report["loss"] > 0
    assert list(report["per_class"]) == CLASS_NAMES
    assert all(values["support"] == TEST_PER_CLASS for values in report["per_class"].values())
    matrix = numpy.array(report["confusion_matrix"])
    assert matrix.shape == (len(CLASSES), len(CLASSES))
    assert matrix.sum() == TEST_IMAGES
    assert (matrix.sum(axis=1) == TEST_PER_CLASS).all()  # rows are the true classes
    assert report["accuracy"] == pytest.approx(numpy.trace(matrix) / TEST_IMAGES)
    for index, name in enumerate(CLASS_NAMES):
        assert report["per_class"][name]["recall"] == pytest.approx(matrix[index, index] / TEST_PER_CLASS)


def test_evaluate_val_split_reproduces_the_best_epoch(trained_run):
    run_dir, _ = trained_run
    result = run_cli("evaluate", run_dir, "--split", "val")
    assert result.returncode == 0, result.stderr
    first, header, *rows = result.stdout.splitlines()
    match = re.fullmatch(r"val accuracy (\S+)  loss (\S+)  balanced accuracy (\S+)  \((\d+) images\)", first)
    assert match, first
    assert int(match.group(4)) == VAL_IMAGES
    # The same seeded validation split and the best weights: the best epoch's value, up to one image.
    best = json.loads((run_dir / "best.json").read_text())["metrics"]
    assert float(match.group(1)) == pytest.approx(best["val_accuracy"], abs=1 / VAL_IMAGES + 1e-4)
    assert header.split() == ["class", "precision", "recall", "f1", "support"]
    assert [row.split()[0] for row in rows] == CLASS_NAMES


def _variant_files(pixels: numpy.ndarray, folder) -> dict[str, object]:
    """One Trouser test image saved in other modes and sizes."""
    files = {"gray": folder / "gray.png"}
    Image.fromarray(pixels, mode="L").save(files["gray"])
    # Lossless variants whose decoded gray pixels are exactly `pixels`:
    files["rgba"] = folder / "rgba.png"
    Image.fromarray(numpy.dstack([pixels, pixels, pixels, numpy.full_like(pixels, 255)]), mode="RGBA").save(files["rgba"])
    files["palette"] = folder / "palette.png"
    palette_image = Image.fromarray(pixels, mode="P")
    palette_image.putpalette([value for gray in range(256) for value in (gray, gray, gray)])
    palette_image.save(files["palette"])
    files["sixteen"] = folder / "sixteen.png"
    Image.fromarray(pixels.astype(numpy.uint16) * 257).save(files["sixteen"])  # 0..255 -> 0..65535
    # Lossy: upscaled to 100x80 (W x H), RGB, JPEG.
    files["jpeg"] = folder / "big.jpg"
    Image.fromarray(pixels, mode="L").resize((100, 80), Image.Resampling.BICUBIC).convert("RGB").save(files["jpeg"], quality=95)
    modes = {name: Image.open(path).mode for name, path in files.items()}
    assert modes == {"gray": "L", "rgba": "RGBA", "palette": "P", "sixteen": "I;16", "jpeg": "RGB"}
    return files


@pytest.fixture(scope="module")
def predicted(trained_run, image_folder, fashion_images, tmp_path_factory):
    """One `cnnkit predict --top-k 2 --json` over 3 test images per class and 5 variants of another image.

    Returns ([(path, true class)] of the test images, {variant: path}, {path: predictions}).
    """
    run_dir, _ = trained_run
    images = [(str(image_folder / "test" / name / f"{index:03d}.png"), name)
              for name in CLASS_NAMES for index in range(3)]
    variants = _variant_files(fashion_images["test"]["Trouser"][5], tmp_path_factory.mktemp("variants"))
    paths = [path for path, _ in images] + [str(path) for path in variants.values()]
    result = run_cli("predict", run_dir, *paths, "--top-k", "2", "--json")
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert [entry["image"] for entry in output] == paths  # one entry per image, in order
    return images, {name: str(path) for name, path in variants.items()}, {e["image"]: e["predictions"] for e in output}


def test_predict_json_gives_top_k_classes_and_probabilities(predicted):
    images, _, output = predicted
    correct = 0
    for path, truth in images:
        predictions = output[path]
        assert len(predictions) == 2
        assert {p["class"] for p in predictions} <= set(CLASS_NAMES)
        assert predictions[0]["class"] != predictions[1]["class"]
        probabilities = [p["probability"] for p in predictions]
        assert all(0.0 <= p <= 1.0 for p in probabilities)
        assert probabilities[0] >= probabilities[1]
        assert sum(probabilities) <= 1.0 + 1e-6
        correct += predictions[0]["class"] == truth
    assert correct >= 0.8 * len(images), output


def test_python_api_predicts_what_the_cli_printed(predicted, trained_run):
    images, _, output = predicted
    classifier = cnnkit.load(trained_run[0])
    assert classifier.classes == CLASS_NAMES
    paths = [path for path, _ in images]
    for path, top in zip(paths, classifier.predict(paths, top_k=2)):
        assert [name for name, _ in top] == [p["class"] for p in output[path]]
        assert [p for _, p in top] == pytest.approx([p["probability"] for p in output[path]], abs=1e-6)


def test_predict_accepts_other_image_modes_and_sizes(predicted):
    """JPEG RGB of another size, RGBA, palette and 16-bit PNG all decode like the training images."""
    _, variants, output = predicted
    by_name = {name: output[path] for name, path in variants.items()}
    assert by_name["gray"][0]["class"] == "Trouser"
    reference = [(p["class"], p["probability"]) for p in by_name["gray"]]
    for name in ("rgba", "palette", "sixteen"):  # the same pixels, so the same probabilities
        shown = [(p["class"], p["probability"]) for p in by_name[name]]
        assert [c for c, _ in shown] == [c for c, _ in reference], name
        assert [p for _, p in shown] == pytest.approx([p for _, p in reference], abs=1e-6), name
    assert by_name["jpeg"][0]["class"] == "Trouser"


# `models` and `--help` do no work besides printing: run in-process through the entry point's main()
# (what `python -m cnnkit` calls) to save two interpreter start-ups.

def test_models_lists_architectures_with_parameter_counts(capsys):
    assert main(["models"]) == 0
    stdout = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in stdout.splitlines()[1:]}
    for name in ("fastnet", "lenet5", "simple_cnn", "resnet20"):
        assert name in rows, stdout
        expected = sum(p.numel() for p in cnnkit.create_model(name, num_classes=10, in_chans=1, input_size=28).parameters())
        shown = rows[name][2]
        assert shown.endswith("M")
        assert float(shown[:-1]) == pytest.approx(expected / 1e6, abs=5e-4), name
    assert float(rows["lenet5"][2][:-1]) < float(rows["fastnet"][2][:-1]) < float(rows["simple_cnn"][2][:-1])


def test_train_help_mentions_every_setting(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    stdout = capsys.readouterr().out
    lines = {line.split("=", 1)[0].strip(): line for line in stdout.splitlines() if re.match(r"  \w+=", line)}
    missing = [field.name for field in dataclasses.fields(TrainConfig) if field.name not in lines]
    assert not missing, f"not in `cnnkit train --help`: {missing}"
    for field in dataclasses.fields(TrainConfig):
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        described = lines[field.name].replace(f"  {field.name}={default!r}", "", 1).strip()
        assert described, f"`cnnkit train --help` lists {field.name} without a description"
    for flag in ("--data", "--model", "--epochs", "--out", "--name", "--resume", "--config"):
        assert flag in stdout
    assert "lr=None" in stdout and "peak learning rate" in stdout
