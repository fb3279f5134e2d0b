"""Detectors: every registered detector trains and predicts under the one calling convention; the YOLO-style
detector's target assignment, box decoding and NMS on hand-made cases; a loss that falls when overfitting.

Tiny synthetic data in the shared contract's sample format: float images in [0, 1], one {"boxes" xyxy
pixels, "labels" 0-based} dict per image. Bright rectangles on noise stand in for objects.
"""

from __future__ import annotations

import math

import pytest
import torch

from cnnkit.errors import ModelError
from cnnkit.models.detection import batch_images, zoo_trunk
from cnnkit.models.rcnn import sliding_window_proposals
from cnnkit.models.yolo import YOLO, assign_targets, decode_boxes, mirror_raw
from cnnkit.registry import create_model, get_entry, list_models

NUM_CLASSES = 3
SIZE = 64


def synthetic_batch(count: int = 2, size: int = SIZE, seed: int = 0):
    """Images with one or two filled rectangles each (class k has brightness channel k) and their targets."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 3, size, size, generator=generator) * 0.3
    targets = []
    for index in range(count):
        boxes, labels = [], []
        for _ in range(1 + index % 2):
            width, height = torch.randint(14, 28, (2,), generator=generator).tolist()
            x, y = torch.randint(0, size - width, (1,), generator=generator).item(), \
                torch.randint(0, size - height, (1,), generator=generator).item()
            label = torch.randint(0, NUM_CLASSES, (1,), generator=generator).item()
            images[index, label, y:y + height, x:x + width] = 1.0
            boxes.append([x, y, x + width, y + height])
            labels.append(label)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)})
    return images, targets


# Small settings per family so each test takes a few seconds on one thread.
DETECTORS = {
    "yolo_fastnet": {},
    "yolo_resnet18": {},
    "yolo_fastnet_wide": {},
    "fasterrcnn_resnet18_fpn": {},
    "fasterrcnn_mobilenet_v3_large_fpn": {},
    "fasterrcnn_resnet50_fpn": {},
    "ssd_vgg16": {},
    "ssd_vgg16_bn": {},
    "ssdlite_mobilenet_v3_large": {"detector_size": SIZE},
    "fast_rcnn_fastnet": {},
    "rcnn_fastnet": {"window_sizes": (16, 32), "chunk": 64},
}
SLOW = {"fasterrcnn_resnet50_fpn", "ssd_vgg16", "yolo_fastnet_wide", "fasterrcnn_mobilenet_v3_large_fpn"}


def test_every_registered_detector_is_tested() -> None:
    assert set(list_models(task="detect")) == set(DETECTORS)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in DETECTORS])
def test_detector_trains_and_predicts_in_the_contract_format(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES, input_size=SIZE, **DETECTORS[name])
    images, targets = synthetic_batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    for _ in range(2):
        losses = model(images, targets)
        assert losses and all(torch.isfinite(v) and v.dim() == 0 for v in losses.values()), losses
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == len(images)
    for detection in detections:
        assert set(detection) == {"boxes", "scores", "labels"}
        count = len(detection["scores"])
        assert detection["boxes"].shape == (count, 4) and detection["labels"].shape == (count,)
        assert detection["labels"].dtype == torch.int64
        if count:  # labels are 0-based class indices; boxes lie inside the image
            assert 0 <= detection["labels"].min() and detection["labels"].max() < NUM_CLASSES
            assert detection["boxes"].min() >= 0 and detection["boxes"].max() <= SIZE
            assert (detection["boxes"][:, 2:] >= detection["boxes"][:, :2]).all()


def test_losses_need_train_mode_and_detections_come_from_any_mode() -> None:
    model = create_model("yolo_fastnet", num_classes=NUM_CLASSES, input_size=SIZE).eval()
    images, targets = synthetic_batch()
    with pytest.raises(ModelError, match="train mode"):
        model(images, targets)
    model.train()
    detections = model(images)  # detections while training: eval behaviour, the mode is restored after
    assert len(detections) == 2 and model.training and model.trunk.training


def test_images_without_objects_train() -> None:
    for name in ("yolo_fastnet", "fasterrcnn_resnet18_fpn", "rcnn_fastnet"):
        model = create_model(name, num_classes=NUM_CLASSES, input_size=SIZE).train()
        images, _ = synthetic_batch()
        empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2
        losses = model(images, empty)
        assert all(torch.isfinite(v) for v in losses.values()), (name, losses)


def test_detector_arguments_are_checked() -> None:
    with pytest.raises(ModelError, match="num_classes"):
        create_model("yolo_fastnet", num_classes=0)
    with pytest.raises(ModelError, match="at least 64x64"):
        create_model("fasterrcnn_resnet18_fpn", input_size=32)
    with pytest.raises(ModelError, match="backbone='alexnet' is not available"):
        YOLO(NUM_CLASSES, backbone="alexnet")
    with pytest.raises(ModelError, match="grid_stride=16"):
        create_model("yolo_fastnet", grid_stride=16)  # fastnet's deepest stage is at stride 8
    with pytest.raises(ModelError, match="anchors"):
        create_model("yolo_fastnet", anchors=[[10, -1]])
    assert get_entry("yolo_fastnet").task == "detect"


def test_zoo_trunk_measures_strides_and_channels() -> None:
    trunk = zoo_trunk("resnet18", 3, (128, 128))
    assert trunk.strides == [4, 4, 8, 16, 32] and trunk.channels == [64, 64, 128, 256, 512]
    fastnet = zoo_trunk("fastnet", 3, (64, 64))
    assert fastnet.strides == [1, 2, 4, 8] and fastnet.channels[-1] == 128


def test_batch_images_pads_smaller_images() -> None:
    batch, sizes = batch_images([torch.ones(3, 20, 30), torch.ones(3, 24, 16)])
    assert batch.shape == (2, 3, 24, 30) and sizes == [(20, 30), (24, 16)]
    assert batch[0, :, 20:].sum() == 0 and batch[1, :, :, 16:].sum() == 0


# --- YOLO: assignment, decoding and NMS by hand ----------------------------------------------------------

ANCHORS = torch.tensor([[16.0, 16.0], [100.0, 100.0]])


def _pairs(assignment) -> set[tuple[int, int, int, int]]:
    return set(zip(assignment.image.tolist(), assignment.anchor.tolist(), assignment.row.tolist(),
                   assignment.column.tolist()))


def test_yolo_assigns_the_centre_cell_and_its_two_nearest_neighbours() -> None:
    # Centre (13, 19) on a stride-8 grid: column 1.625 (right half: neighbour column 2), row 2.375
    # (upper half: neighbour row 1). 16x16 fits anchor 0 only (100 / 16 > 4).
    target = {"boxes": torch.tensor([[5.0, 11.0, 21.0, 27.0]]), "labels": torch.tensor([2])}
    assignment = assign_targets([target], (8, 8), ANCHORS, stride=8)
    assert _pairs(assignment) == {(0, 0, 2, 1), (0, 0, 2, 2), (0, 0, 1, 1)}
    assert assignment.labels.tolist() == [2, 2, 2]
    assert torch.equal(assignment.boxes, target["boxes"].expand(3, 4))


def test_yolo_assignment_stays_inside_the_grid_and_matches_every_fitting_anchor() -> None:
    # Centre (3, 3): cell (0, 0), left and upper halves, so no neighbour exists. 40x40 fits both anchors
    # (40 / 16 = 2.5 and 100 / 40 = 2.5 are below 4). A second image's box has its own image index.
    targets = [{"boxes": torch.tensor([[-17.0, -17.0, 23.0, 23.0]]), "labels": torch.tensor([0])},
               {"boxes": torch.tensor([[40.0, 40.0, 56.0, 56.0]]), "labels": torch.tensor([1])}]
    assignment = assign_targets(targets, (8, 8), ANCHORS, stride=8)
    first = {pair for pair in _pairs(assignment) if pair[0] == 0}
    assert first == {(0, 0, 0, 0), (0, 1, 0, 0)}
    # Centre (48, 48) on a cell corner: cell (6, 6), and the cells left and above, which touch the centre.
    assert {pair for pair in _pairs(assignment) if pair[0] == 1} == {(1, 0, 6, 6), (1, 0, 6, 5), (1, 0, 5, 6)}


def test_yolo_decodes_zero_outputs_to_the_anchor_at_the_cell_centre() -> None:
    raw = torch.zeros(1, 4)
    box = decode_boxes(raw, torch.tensor([[2.0, 3.0]]), torch.tensor([[16.0, 24.0]]), stride=8)
    # sigmoid(0) = 0.5: centre (2 + 0.5, 3 + 0.5) * 8 = (20, 28); size (2 * 0.5)^2 x anchor = the anchor.
    assert torch.allclose(box, torch.tensor([[12.0, 16.0, 28.0, 40.0]]))


def _raw_with(predictions, num_classes: int = 2, anchors: int = 1, grid: int = 4) -> torch.Tensor:
    """Head outputs (1, A, grid, grid, 5 + K) that are confidently empty except the given cells."""
    raw = torch.zeros(1, anchors, grid, grid, 5 + num_classes)
    raw[..., 4] = -20.0  # objectness ~0 everywhere
    raw[..., 5:] = -20.0
    for row, column, objectness, label in predictions:
        raw[0, 0, row, column, 4] = objectness
        raw[0, 0, row, column, 5 + label] = 20.0
    return raw


def test_yolo_decoding_thresholds_scores_and_suppresses_overlaps_per_class() -> None:
    model = YOLO(2, input_size=32, anchors=[[16.0, 16.0]], score_threshold=0.1, nms_threshold=0.5)
    # Neighbouring cells (1, 1) and (1, 2) predict 16x16 boxes 8 px apart (IoU 1/3 < 0.5): both kept.
    # Cell (2, 2) predicts class 1 with a score below the threshold.
    raw = _raw_with([(1, 1, 3.0, 0), (1, 2, 2.0, 0), (2, 2, -4.0, 1)])
    detections = model.decode(raw, [(32, 32)])[0]
    assert detections["labels"].tolist() == [0, 0]  # sigmoid(-4) = 0.018 < 0.1: dropped
    assert torch.allclose(detections["scores"], torch.sigmoid(torch.tensor([3.0, 2.0])), atol=1e-6)
    assert torch.allclose(detections["boxes"][0], torch.tensor([4.0, 4.0, 20.0, 20.0]))
    # Now overlapping boxes (same cell, two anchors of almost the same shape) of one class: NMS keeps one.
    model = YOLO(2, input_size=32, anchors=[[16.0, 16.0], [17.0, 17.0]], score_threshold=0.1)
    raw = torch.full((1, 2, 4, 4, 7), -20.0)
    raw[0, :, 1, 1, :4] = 0.0
    raw[0, 0, 1, 1, 4], raw[0, 1, 1, 1, 4] = 3.0, 2.0
    raw[0, :, 1, 1, 5] = 20.0
    detections = model.decode(raw, [(32, 32)])[0]
    assert len(detections["scores"]) == 1
    assert math.isclose(float(detections["scores"][0]), float(torch.sigmoid(torch.tensor(3.0))), rel_tol=1e-5)
    # The same two boxes in different classes are both kept (suppression is per class).
    raw[0, 1, 1, 1, 5], raw[0, 1, 1, 1, 6] = -20.0, 20.0
    assert model.decode(raw, [(32, 32)])[0]["labels"].tolist() == [0, 1]


def test_yolo_mirrored_outputs_decode_to_mirrored_boxes() -> None:
    # flip_test averages the outputs of an image with `mirror_raw` of its mirror image's: that is right only if
    # mirror_raw's outputs decode to the mirror images of the boxes. 4x4 cells of 8 px: a 32-px wide image.
    raw = torch.randn(1, 2, 4, 4, 4)
    rows, columns = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    cells = torch.stack([columns, rows], dim=-1)  # (4, 4, 2) as (column, row)
    anchors = torch.tensor([[16.0, 24.0], [30.0, 10.0]]).view(2, 1, 1, 2)
    boxes = decode_boxes(raw, cells, anchors, stride=8)  # (1, 2, 4, 4, 4)
    mirrored = decode_boxes(mirror_raw(torch.cat([raw, torch.zeros(1, 2, 4, 4, 1)], -1))[..., :4], cells, anchors, 8)
    expected = torch.stack([32 - boxes[..., 2], boxes[..., 1], 32 - boxes[..., 0], boxes[..., 3]], dim=-1).flip(3)
    assert torch.allclose(mirrored, expected, atol=1e-4)


def test_yolo_flip_test_changes_only_inference() -> None:
    torch.manual_seed(0)
    plain = create_model("yolo_fastnet", num_classes=NUM_CLASSES, input_size=SIZE, score_threshold=0.02)
    flipped = create_model("yolo_fastnet", num_classes=NUM_CLASSES, input_size=SIZE, score_threshold=0.02,
                           flip_test=True)
    flipped.load_state_dict(plain.state_dict())
    images, targets = synthetic_batch()
    plain.train(), flipped.train()
    torch.manual_seed(1)
    first = plain(images, targets)
    torch.manual_seed(1)
    second = flipped(images, targets)
    assert all(torch.equal(first[k], second[k]) for k in first)  # same losses: training is unchanged
    plain.eval(), flipped.eval()
    with torch.no_grad():
        raw = (plain.raw_outputs(images) + mirror_raw(plain.raw_outputs(images.flip(-1)))) / 2
        expected = plain.decode(raw, [(SIZE, SIZE)] * 2)
        for got, want in zip(flipped(images), expected):
            assert torch.equal(got["scores"], want["scores"]) and torch.equal(got["boxes"], want["boxes"])


def test_yolo_loss_falls_when_overfitting_one_batch() -> None:
    torch.manual_seed(0)
    model = create_model("yolo_fastnet", num_classes=NUM_CLASSES, input_size=SIZE).train()
    images, targets = synthetic_batch(4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = []
    for _ in range(40):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
    assert history[-1] < 0.4 * history[0], history[::5]
    assert all(math.isfinite(value) for value in history)


# --- R-CNN / Fast R-CNN proposals ------------------------------------------------------------------------

def test_sliding_windows_tile_the_image() -> None:
    boxes = sliding_window_proposals(32, 32, sizes=(16,), aspect_ratios=(1.0,), step=0.5)
    # 16-px windows every 8 px: x and y in {0, 8, 16} -> 9 windows, all inside the image.
    assert boxes.shape == (9, 4)
    assert sorted(set(boxes[:, 0].tolist())) == [0.0, 8.0, 16.0] and boxes.max() == 32
    tall = sliding_window_proposals(32, 32, sizes=(16,), aspect_ratios=(4.0,), step=0.5)
    assert torch.allclose(tall[0], torch.tensor([0.0, 0.0, 8.0, 32.0]))  # 16/2 wide, 16*2 high
    with pytest.raises(ModelError, match="no proposal window"):
        sliding_window_proposals(8, 8, sizes=(16,))


@pytest.mark.parametrize("output_size, sampling_ratio", [((7, 7), 1), ((14, 14), 1), ((5, 3), 2)])
def test_matmul_roi_align_matches_torchvision_values_and_gradients(output_size, sampling_ratio) -> None:
    from torchvision.ops import roi_align

    from cnnkit.layers.roi_align import matmul_roi_align

    generator = torch.Generator().manual_seed(0)
    features = torch.randn(3, 4, 16, 12, generator=generator, dtype=torch.float64)
    # Boxes inside, straddling the border, far outside, thinner than a pixel, and images in any order.
    corners = torch.rand(40, 2, generator=generator) * 90 - 15
    sizes = torch.rand(40, 2, generator=generator) * 40 + 0.2
    rois = torch.cat([torch.randint(0, 3, (40, 1), generator=generator), corners, corners + sizes], 1).double()
    ours, theirs = features.clone().requires_grad_(), features.clone().requires_grad_()
    expected = roi_align(theirs, rois, output_size, 0.25, sampling_ratio, aligned=False)
    got = matmul_roi_align(ours, rois, output_size, 0.25, sampling_ratio)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    weights = torch.randn(expected.shape, generator=generator, dtype=torch.float64)
    (expected * weights).sum().backward()
    (got * weights).sum().backward()
    torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-4, rtol=1e-4)


def test_matmul_roi_align_pools_like_torchvision_multiscale_roi_align() -> None:
    from torchvision.ops import MultiScaleRoIAlign

    from cnnkit.layers.roi_align import MatmulRoIAlign

    generator = torch.Generator().manual_seed(1)
    features = {"0": torch.randn(2, 8, 32, 32, generator=generator), "pool": torch.randn(2, 8, 4, 4)}
    boxes = [torch.tensor([[3.0, 5.0, 60.0, 40.0], [100.0, 90.0, 127.0, 127.0]]), torch.tensor([[0.0, 0.0, 128.0, 20.0]])]
    shapes = [(128, 128), (120, 128)]
    expected = MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=1)(features, boxes, shapes)
    torch.testing.assert_close(MatmulRoIAlign(["0"], output_size=7, sampling_ratio=1)(features, boxes, shapes), expected,
                               atol=1e-4, rtol=1e-4)
