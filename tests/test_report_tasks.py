"""The report of detect, segment, instance and embed runs (each task's `report_sections`), and the per-layer
parameters of models whose layers sit in containers they never call.

Runs are trained in-process for one epoch on tiny data (the patterns of test_detection_cli.py, test_embed.py
and test_segmentation_cli.py); the numbers are checked for form, not quality.
"""

from __future__ import annotations

import pytest


def test_summary_counts_trunk_convolutions_and_rows_add_up_to_the_total():
    """yolo_fastnet's trunk stages sit in a ModuleDict the trunk never calls: the convolutions own their weights."""
    from cnnkit.inspect.summary import summary
    from cnnkit.registry import create_model

    model = create_model("yolo_fastnet", num_classes=3, input_size=64)
    result = summary(model, input_size=(3, 64, 64))
    rows = {row.name: row for row in result.rows}
    stem = rows["trunk.stages.stem.0"]
    assert stem.type == "Conv2d" and stem.parameters == sum(p.numel() for p in model.trunk.stages.stem[0].parameters())
    assert all(row.parameters > 0 for row in result.rows if row.type == "Conv2d")
    assert sum(row.parameters for row in result.rows) == result.totals.parameters


def _train(tmp_path, name: str, **settings):
    import cnnkit

    cnnkit.train({"epochs": 1, "out": str(tmp_path / "runs"), "name": name, "num_threads": 1, "report": False,
                  "progress": False, **settings})
    return tmp_path / "runs" / name


def _sections(text: str) -> list[str]:
    import re

    return re.findall(r'<section id="([^"]+)"', text)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools vs NumPy 2
def test_detection_report_shows_map_per_class_ap_pr_curves_and_drawings(tmp_path):
    from PIL import Image

    from conftest import FASHION_MNIST_DIR
    from cnnkit.inspect.report import write_report

    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("the scenes generator needs Fashion-MNIST")
    from cnnkit.data.scenes import ScenesConfig, make_scenes

    make_scenes(tmp_path / "scenes", ScenesConfig(seed=0, train=16, val=8, test=8, size=64), progress=False)
    run_dir = _train(tmp_path, "det", task="detect", model="yolo_fastnet", data=str(tmp_path / "scenes"),
                     batch_size=8, optimizer="adamw", lr=0.002)
    text = write_report(run_dir).read_text()
    assert _sections(text) == ["config", "summary", "curves", "per-class", "pr-curves", "predictions"]
    assert "Not available" not in text and "This is a" not in text
    assert "<th>test box mAP@.5</th>" in text and "(8 images)" in text
    assert "<th>box AP@.5</th>" in text and "<td>Trouser</td>" in text
    with Image.open(run_dir / "report" / "predictions.png") as picture:
        assert picture.width >= 2 * 256  # two enlarged drawings per row
    assert (run_dir / "report" / "pr-curves.png").is_file()


def test_segmentation_report_shows_miou_per_class_iou_and_masks(tmp_path):
    from test_segmentation_cli import write_squares

    from cnnkit.inspect.report import write_report

    data = write_squares(tmp_path / "data")
    run_dir = _train(tmp_path, "seg", task="segment", model="unet", data=str(data), batch_size=4, optimizer="adamw",
                     lr=0.01, model_args={"base_width": 4}, num_workers=0)
    text = write_report(run_dir).read_text()
    assert _sections(text) == ["config", "summary", "curves", "per-class", "masks"]
    assert "Not available" not in text
    assert "<th>test mIoU</th>" in text and "(4 images" in text and "<th>pixel accuracy</th>" in text
    assert "<th>IoU</th><th>Dice</th>" in text and "<td>square</td>" in text
    assert (run_dir / "report" / "masks.png").is_file()


def test_embed_report_shows_roc_cmc_scores_pca_and_false_matches(tmp_path):
    from cnnkit.data.glyphs import GlyphsConfig, find_fonts, make_glyphs
    from cnnkit.inspect.report import write_report

    fonts = find_fonts()
    if len(fonts) < 8:
        pytest.skip("fewer than 8 fonts installed (fonts-dejavu, fonts-liberation)")
    make_glyphs(tmp_path / "glyphs", GlyphsConfig(variants=1, test_fraction=0.34, min_fonts=8), fonts=fonts[:12],
                characters="ABCDEFGHJKLMNPRSTUVWXYZ", progress=False)
    run_dir = _train(tmp_path, "emb", task="embed", data=str(tmp_path / "glyphs"),
                     batch_size=32, val_fraction=0.2, embed_loss="triplet", images_per_identity=4)
    text = write_report(run_dir).read_text()
    assert _sections(text) == ["config", "summary", "curves", "roc", "cmc", "scores", "pca", "false-matches"]
    assert "Not available" not in text
    assert "<th>test TAR@FAR=1e-3</th>" in text and "<th>test identification</th>" in text
    names = sorted(path.name for path in (run_dir / "report").glob("*.png"))
    assert names == ["cmc.png", "curves.png", "false-matches.png", "pca.png", "roc.png", "scores.png"]


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_instance_report_sections_show_mask_map_and_drawn_masks(tmp_path):
    """An untrained Mask R-CNN around scenes with instance masks: the task's own sections, called directly."""
    import time

    import torch

    from conftest import FASHION_MNIST_DIR
    from cnnkit.config import TrainConfig
    from cnnkit.registry import create_model
    from cnnkit.tasks import task_info
    from cnnkit.tasks.instance import InstanceSegmenter

    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("the scenes generator needs Fashion-MNIST")
    from cnnkit.data.scenes import ScenesConfig, make_scenes

    make_scenes(tmp_path / "scenes", ScenesConfig(seed=0, train=4, val=2, test=2, size=64), progress=False)
    classes = (tmp_path / "scenes" / "classes.txt").read_text().split("\n")
    classes = [name for name in classes if name]
    torch.manual_seed(0)
    model = create_model("maskrcnn_resnet18_fpn", num_classes=len(classes), input_size=64, fpn_channels=16,
                         representation_size=32).eval()
    config = TrainConfig(task="instance", model="maskrcnn_resnet18_fpn", data=str(tmp_path / "scenes"), batch_size=2)
    record = {"task": "instance", "classes": classes, "config": config.to_dict()}
    segmenter = InstanceSegmenter(model, record, tmp_path, torch.device("cpu"))
    facts, sections = task_info("instance").report_sections(segmenter, tmp_path / "report", time.perf_counter() + 60)
    assert list(facts)[:2] == ["test mask mAP@.5", "test box mAP@.5"]
    assert [section[0] for section in sections] == ["per-class", "pr-curves", "predictions"]
    assert all("Not available" not in body for *_, body in sections), sections
    assert "<th>mask AP@.5</th>" in sections[0][2]
    assert {path.name for path in (tmp_path / "report").glob("*.png")} == {"pr-curves.png", "predictions.png"}


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_detection_meter_precision_recall_matches_its_ap():
    import torch

    from cnnkit.metrics.detection import DetectionMeter

    meter = DetectionMeter(["a", "b", "c"])
    targets = [{"boxes": torch.tensor([[0., 0., 10., 10.], [20., 20., 30., 30.]]), "labels": torch.tensor([0, 1])}]
    predictions = [{"boxes": torch.tensor([[0., 0., 10., 10.], [50., 50., 60., 60.], [20., 20., 30., 31.]]),
                    "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([0, 0, 1])}]
    meter.update(predictions, targets)
    result = meter.compute(per_class=True)
    curves = meter.precision_recall("bbox", 0.5)
    assert curves["c"] is None  # no ground truth
    recall, precision = curves["a"]
    assert recall.shape == precision.shape == (101,) and precision[0] == pytest.approx(1.0)
    assert precision.mean() == pytest.approx(result["per_class"]["a"]["ap50"])
    assert set(result) == {"count", "map", "map50", "map75", "mar100", "per_class"}  # outputs unchanged


def test_small_drawings_are_enlarged_before_boxes_and_labels():
    import torch

    from cnnkit.tasks.detection import draw_detections

    image = torch.zeros(3, 64, 48, dtype=torch.uint8)
    objects = [{"class": "bag", "label": 0, "score": 0.9, "box": [4, 4, 20, 20]}]
    assert draw_detections(image, objects).shape == (3, 64, 48)
    drawn = draw_detections(image, objects, min_side=256)
    assert drawn.shape == (3, 64 * 6, 48 * 6)  # the whole factor that brings 48 to >= 256
    assert drawn[:, 4 * 6, 10 * 6].any() and not drawn[:, 4 * 6 - 6, 10 * 6].any()  # the box edge moved with it
