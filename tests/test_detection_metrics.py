"""DetectionMeter against hand-computed COCO AP and against pycocotools' COCOeval run on result files.

COCO AP in one line: precision, made monotonic from the right, averaged at the 101 recall levels
0, 0.01, ..., 1, for each IoU threshold 0.5, 0.55, ..., 0.95; mAP averages that over classes with ground truth.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy
import pytest
import torch

from cnnkit.metrics.detection import DetectionMeter, coco_ap_table

CLASSES = ["cat", "dog", "fox"]


def _target(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels, dtype=torch.int64)}


def _prediction(boxes, scores, labels):
    return {**_target(boxes, labels), "scores": torch.tensor(scores, dtype=torch.float32)}


def _box_masks(boxes, size=64):
    masks = torch.zeros((len(boxes), size, size), dtype=torch.uint8)
    for index, (x_min, y_min, x_max, y_max) in enumerate(boxes):
        masks[index, y_min:y_max, x_min:x_max] = 1
    return masks


def _meter(pairs, **kwargs) -> DetectionMeter:
    meter = DetectionMeter(CLASSES, **kwargs)
    for prediction, target in pairs:
        meter.update([prediction], [target])
    return meter


def test_perfect_predictions_score_one_for_boxes_and_masks():
    boxes = [[2, 3, 20, 30], [30, 30, 60, 50]]
    target = {**_target(boxes, [0, 2]), "masks": _box_masks(boxes)}
    prediction = {**_prediction(boxes, [0.9, 0.8], [0, 2]), "masks": _box_masks(boxes).float()[:, None] * 0.9}
    result = _meter([(prediction, target)], iou_type=("bbox", "segm")).compute(per_class=True)
    for key in ("map", "map50", "map75", "mar100", "mask_map", "mask_map50"):
        assert result[key] == pytest.approx(1.0), key
    assert result["per_class"]["cat"]["ap"] == pytest.approx(1.0)
    assert result["per_class"]["dog"] == {"ap": None, "ap50": None, "mask_ap": None, "mask_ap50": None,
                                          "sem_iou": None}  # no dog
    assert result["semantic_miou"] == pytest.approx(1.0) and result["semantic_pixel_accuracy"] == pytest.approx(1.0)
    assert "dog" in coco_ap_table(result) and "-" in coco_ap_table(result).splitlines()[2]


def test_masks_scored_as_a_semantic_map():
    # 64x64: a cat (top left), a fox (top right), background below. Predicted: the cat (0.9), a dog over the
    # fox (0.8), a cat over the fox at 0.3 (painted first, so the dog stays on top) and a fox over the
    # background at 0.1 (below SEMANTIC_SCORE_THRESHOLD: not painted).
    truth_boxes = [[0, 0, 32, 32], [32, 0, 64, 32]]
    target = {**_target(truth_boxes, [0, 2]), "masks": _box_masks(truth_boxes)}
    boxes = [[0, 0, 32, 32], [32, 0, 64, 32], [32, 0, 64, 32], [0, 32, 64, 64]]
    prediction = {**_prediction(boxes, [0.9, 0.8, 0.3, 0.1], [0, 1, 0, 2]), "masks": _box_masks(boxes)}
    result = _meter([(prediction, target)], iou_type=("bbox", "segm")).compute(per_class=True)
    assert result["semantic_background_iou"] == pytest.approx(1.0)  # the 0.1 fox was not painted
    assert result["per_class"]["cat"]["sem_iou"] == pytest.approx(1.0)  # the 0.3 cat lies under the dog
    assert result["per_class"]["dog"]["sem_iou"] == pytest.approx(0.0)
    assert result["per_class"]["fox"]["sem_iou"] == pytest.approx(0.0)
    assert result["semantic_miou"] == pytest.approx(0.5)  # (1 + 1 + 0 + 0) / 4: background, cat, dog, fox
    assert result["semantic_pixel_accuracy"] == pytest.approx(0.75)
    assert "semantic_miou" not in _meter([(prediction, target)]).compute()  # boxes only: no masks to paint


def test_false_positive_ranked_first_halves_ap():
    # One cat; a wrong box scored 0.9 before the right one at 0.8: precision 0 then 1/2 at recall 1,
    # so the monotonic precision is 1/2 at every recall level: AP = 0.5 at every IoU threshold.
    target = _target([[10, 10, 30, 30]], [0])
    prediction = _prediction([[40, 40, 60, 60], [10, 10, 30, 30]], [0.9, 0.8], [0, 0])
    result = _meter([(prediction, target)]).compute()
    assert result["map50"] == pytest.approx(0.5)
    assert result["map"] == pytest.approx(0.5)


def test_false_positive_ranked_last_costs_nothing():
    target = _target([[10, 10, 30, 30]], [0])
    prediction = _prediction([[10, 10, 30, 30], [40, 40, 60, 60]], [0.9, 0.1], [0, 0])
    assert _meter([(prediction, target)]).compute()["map50"] == pytest.approx(1.0)


def test_missed_object_gives_recall_levels_up_to_half():
    # Two cats, one found: precision 1 at the 51 recall levels 0..0.5, 0 at the 50 above.
    target = _target([[10, 10, 30, 30], [40, 40, 60, 60]], [0, 0])
    prediction = _prediction([[10, 10, 30, 30]], [0.9], [0])
    result = _meter([(prediction, target)]).compute()
    assert result["map50"] == pytest.approx(51 / 101)
    assert result["mar100"] == pytest.approx(0.5)


def test_loose_box_counts_only_at_low_iou_thresholds():
    # IoU of [0, 0, 100, 62] with [0, 0, 100, 100] is 0.62: a match at 0.5, 0.55 and 0.6 of the 10 thresholds.
    target = _target([[0, 0, 100, 100]], [1])
    prediction = _prediction([[0, 0, 100, 62]], [0.7], [1])
    result = _meter([(prediction, target)]).compute()
    assert result["map50"] == pytest.approx(1.0)
    assert result["map"] == pytest.approx(0.3)
    assert result["map75"] == pytest.approx(0.0)


def test_wrong_class_scores_zero_and_empty_inputs_are_zero():
    target = _target([[10, 10, 30, 30]], [0])
    prediction = _prediction([[10, 10, 30, 30]], [0.9], [1])
    assert _meter([(prediction, target)]).compute()["map50"] == pytest.approx(0.0)
    no_predictions = _prediction([], [], [])
    assert _meter([(no_predictions, target)]).compute()["map"] == 0.0
    assert DetectionMeter(CLASSES).compute(per_class=True)["per_class"]["cat"]["ap"] is None
    with pytest.raises(ValueError, match="iou_type"):
        DetectionMeter(CLASSES, iou_type="keypoints")


def _random_case(seed: int, images: int = 12, size: int = 64):
    """Ground truth and noisy, partly wrong predictions for `images` images (xyxy, 0-based labels)."""
    rng = numpy.random.default_rng(seed)
    cases = []
    for _ in range(images):
        count = rng.integers(0, 4)
        corner = rng.uniform(0, size / 2, (count, 2))
        boxes = numpy.concatenate([corner, corner + rng.uniform(6, size / 2, (count, 2))], axis=1).round()
        labels = rng.integers(0, len(CLASSES), count)
        # Predictions: each object found with jitter (sometimes with a wrong class), plus random false positives.
        jitter = boxes + rng.normal(0, 1.5, boxes.shape)
        predicted_labels = numpy.where(rng.uniform(size=count) < 0.2, rng.integers(0, len(CLASSES), count), labels)
        extra = rng.integers(0, 3)
        extra_corner = rng.uniform(0, size / 2, (extra, 2))
        extra_boxes = numpy.concatenate([extra_corner, extra_corner + rng.uniform(4, size / 2, (extra, 2))], axis=1)
        predicted = numpy.concatenate([jitter, extra_boxes]).clip(0, size)
        predicted = numpy.concatenate([predicted[:, :2], numpy.maximum(predicted[:, 2:], predicted[:, :2] + 1)], axis=1)
        cases.append({"boxes": boxes, "labels": labels, "predicted": predicted.round(2),
                      "predicted_labels": numpy.concatenate([predicted_labels, rng.integers(0, len(CLASSES), extra)]),
                      "scores": rng.uniform(0.05, 1, count + extra).round(4)})
    return cases


def _reference_stats(tmp_path, cases, iou_type: str, size: int = 64):
    """COCOeval run the documented way: a ground-truth JSON file and a results JSON file."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(box):
        return [box[0], box[1], box[2] - box[0], box[3] - box[1]]

    def rle(box):
        encoded = mask_utils.encode(numpy.asfortranarray(_box_masks([[int(round(v)) for v in box]], size)[0].numpy()))
        return {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")}

    images, annotations, results = [], [], []
    for image_id, case in enumerate(cases, start=1):
        images.append({"id": image_id, "width": size, "height": size, "file_name": f"{image_id}.png"})
        for box, label in zip(case["boxes"].tolist(), case["labels"].tolist()):
            entry = {"id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1, "bbox": xywh(box),
                     "area": (box[2] - box[0]) * (box[3] - box[1]), "iscrowd": 0}
            if iou_type == "segm":
                entry["segmentation"] = rle(box)
                entry["area"] = float(mask_utils.area(entry["segmentation"]))
            annotations.append(entry)
        for box, label, score in zip(case["predicted"].tolist(), case["predicted_labels"].tolist(), case["scores"].tolist()):
            result = {"image_id": image_id, "category_id": label + 1, "score": score}
            result.update(segmentation=rle(box)) if iou_type == "segm" else result.update(bbox=xywh(box))
            results.append(result)
    ground_truth_file, results_file = tmp_path / "gt.json", tmp_path / f"results-{iou_type}.json"
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(CLASSES)]
    ground_truth_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    results_file.write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO(str(ground_truth_file))
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(str(results_file)), iouType=iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    per_class = []
    for k in range(len(CLASSES)):
        values = evaluation.eval["precision"][:, :, k, 0, -1]
        per_class.append(values[values > -1].mean() if (values > -1).any() else None)
    return evaluation.stats, per_class


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_matches_cocoeval_on_result_files(tmp_path, iou_type, capsys):
    cases = _random_case(seed=3)
    meter = DetectionMeter(CLASSES, iou_type=iou_type)
    for case in cases:
        prediction = _prediction(case["predicted"].tolist(), case["scores"].tolist(), case["predicted_labels"].tolist())
        target = _target(case["boxes"].tolist(), case["labels"].tolist())
        if iou_type == "segm":
            prediction["masks"] = _box_masks([[int(round(v)) for v in box] for box in case["predicted"].tolist()])
            target["masks"] = _box_masks(case["boxes"].astype(int).tolist())
        meter.update([prediction], [target])
    result = meter.compute(per_class=True)
    assert capsys.readouterr().out == ""  # pycocotools' printing is silenced
    stats, per_class = _reference_stats(tmp_path, cases, iou_type)
    prefix = "mask_" if iou_type == "segm" else ""
    assert 0.2 < stats[0] < 0.9 and stats[1] > stats[0]  # a case where the numbers mean something
    for key, index in (("map", 0), ("map50", 1), ("map75", 2), ("mar100", 8)):
        assert result[prefix + key] == pytest.approx(stats[index], abs=1e-12), key
    for name, reference in zip(CLASSES, per_class):
        assert result["per_class"][name][prefix + "ap"] == pytest.approx(reference, abs=1e-12)
