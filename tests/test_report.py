"""The run report: written from the run directory alone, rendered by a real headless browser with every picture.

Each test copies the shared `trained_run` (conftest.py) before writing into it.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

import cnnkit
from cnnkit.engine import checkpoint as ckpt
from cnnkit.inspect.report import write_report
from conftest import CLASSES, TEST_IMAGES, run_cli

SECTIONS = ["config", "summary", "curves", "confusion", "per-class", "wrong", "filters", "features", "gradcam"]


def _copy_run(trained_run, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run[0], run_dir)
    return run_dir


def _rewrite_record(run_dir: Path, **changes) -> None:
    """Change the best checkpoint's record (as if another task, or data that moved, had written it)."""
    tensors, record = ckpt.load_checkpoint(run_dir / "best.safetensors")
    record.pop("format_version")
    for key, value in changes.items():
        if key == "data":
            record["config"]["data"] = value
        else:
            record[key] = value
    ckpt.save_checkpoint(run_dir / "best.safetensors", tensors, record)


@pytest.fixture(scope="module")
def report(trained_run, tmp_path_factory) -> Path:
    """report.html of a copy of the trained fixture run, made through the CLI as a user would."""
    run_dir = _copy_run(trained_run, tmp_path_factory.mktemp("report"))
    result = run_cli("report", run_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(run_dir / "report.html")
    return run_dir / "report.html"


def test_report_renders_in_a_browser_with_every_image(report, chrome):
    chrome.get(report.as_uri())
    assert chrome.title == "cnnkit report: run"
    ids = chrome.execute_script("return Array.from(document.querySelectorAll('section')).map(s => s.id)")
    assert ids == SECTIONS
    images = chrome.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.src.slice(0, 22)])")
    assert len(images) >= 6 + 4, images  # curves, confusion, wrong, filters, features + Grad-CAMs
    for alt, complete, width, source in images:
        assert complete and width > 0, f"image {alt!r} did not load"
        assert source == "data:image/png;base64,", alt
    headings = chrome.execute_script("return Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
    assert headings[:3] == ["Config", "Model summary", "Training curves"]
    assert "Confusion matrix (test)" in headings
    # the per-class table has one row per class (plus its header)
    rows = chrome.execute_script("return document.querySelectorAll('#per-class tr').length")
    assert rows == len(CLASSES) + 1


def test_report_is_self_contained_and_complete(report):
    text = report.read_text()
    assert "Not available" not in text, re.findall(r"Not available: [^<]*", text)
    # nothing is fetched: no external URL in any src/href, no scripts, no stylesheets to load
    assert not re.findall(r'(?:src|href)="(?!data:|#)', text)
    assert "<script" not in text and "<link" not in text
    pictures = sorted(path.name for path in (report.parent / "report").glob("*.png"))
    assert {"curves.png", "confusion.png", "wrong.png", "filters.png", "features.png"} <= set(pictures)
    assert len([name for name in pictures if name.startswith("gradcam-")]) >= 4
    for name in pictures:  # every saved plot is in the page, named under its picture
        assert f"report/{name}</figcaption>" in text
    # the numbers match `cnnkit evaluate`'s (the same split, preprocessing and precision)
    evaluation = cnnkit.load(report.parent, device="cpu").evaluate("test")
    assert f"{evaluation['accuracy']:.4f} ({TEST_IMAGES} images)" in text
    for name, values in evaluation["per_class"].items():
        assert f"<td>{name}</td><td>{values['precision']:.4f}</td><td>{values['recall']:.4f}</td>" in text
    # the config as saved, a summary row of the model's first layer, the Grad-CAM layer
    assert "model: fastnet" in text and "stem.0" in text and "Grad-CAM at layer stages.2.conv2 " in text


def test_report_of_another_task_has_config_curves_and_summary(trained_run, tmp_path):
    run_dir = _copy_run(trained_run, tmp_path)
    _rewrite_record(run_dir, task="detect")
    text = write_report(run_dir).read_text()
    assert re.findall(r'<section id="([^"]+)"', text) == ["config", "summary", "curves", "task"]
    assert "Not available" not in text and "<b>detect</b>" in text
    assert sorted(path.name for path in (run_dir / "report").glob("*.png")) == ["curves.png"]


def test_report_of_a_transformer_run(trained_run, tmp_path):
    from cnnkit.registry import create_model

    run_dir = _copy_run(trained_run, tmp_path)
    tensors, record = ckpt.load_checkpoint(run_dir / "best.safetensors")
    record.pop("format_version")
    record["architecture"] = {"name": "vit_small_patch16_224",
                              "args": {"num_classes": len(CLASSES), "in_chans": 1, "input_size": [28, 28]}}
    model = create_model(record["architecture"]["name"], **record["architecture"]["args"])  # untrained is enough
    ckpt.save_checkpoint(run_dir / "best.safetensors", model.state_dict(), record)
    text = write_report(run_dir).read_text()
    assert re.findall(r'<section id="([^"]+)"', text) == SECTIONS
    assert "Not available" not in text, re.findall(r"Not available: [^<]*", text)
    assert (run_dir / "report" / "gradcam-0.png").is_file() and "Grad-CAM at layer blocks.11.norm1 " in text


def test_report_without_the_data_still_shows_the_rest(trained_run, tmp_path):
    run_dir = _copy_run(trained_run, tmp_path)
    _rewrite_record(run_dir, data=str(tmp_path / "moved-away"))
    text = write_report(run_dir).read_text()
    assert re.findall(r'<section id="([^"]+)"', text) == ["config", "summary", "curves", "evaluation", "filters"]
    assert re.search(r'id="evaluation"><h2>Evaluation</h2><p class="missing">Not available: .*moved-away', text)
    assert (run_dir / "report" / "filters.png").is_file()


def test_time_budget_cuts_evaluation_short_and_says_so(trained_run, tmp_path, monkeypatch):
    import cnnkit.tasks.classification as classification

    make_loader = classification.make_loader

    def batches_of_16(*args, **kwargs):  # the evaluation batch (>= 512) would hold all 80 test images at once
        return [(images[start:start + 16], targets[start:start + 16])
                for images, targets in make_loader(*args, **kwargs) for start in range(0, len(targets), 16)]

    monkeypatch.setattr(classification, "make_loader", batches_of_16)
    run_dir = _copy_run(trained_run, tmp_path)
    text = write_report(run_dir, max_seconds=1e-6).read_text()
    assert f"time budget spent: evaluated 16 of {TEST_IMAGES} images" in text
    assert "16 images)" in text  # the accuracy shown is over those 16
    assert text.count("skipped: the time budget (max_seconds) was spent") == 2  # feature maps and Grad-CAM


def test_cli_report_errors_are_one_line(tmp_path, capsys):
    from cnnkit.cli import main

    cases = [([str(tmp_path / "nope")], "is not a directory"),
             ([str(tmp_path)], "best.safetensors does not exist"),
             ([str(tmp_path), "--max-seconds", "0"], "--max-seconds must be positive")]
    for arguments, message in cases:
        assert main(["report", *arguments]) == 2
        error = capsys.readouterr().err
        assert error.startswith("cnnkit report: error: ") and message in error and len(error.splitlines()) == 1
