"""The YOLO-style instance segmenter (cnnkit.models.yolo_seg): Mask R-CNN's output contract, the mask loss by
hand, masks cropped to their boxes, a mask loss that falls when overfitting, and a run through the instance task.

Tiny synthetic data: bright rectangles (class k lights channel k) on noise, each with its 0/1 mask.
"""

from __future__ import annotations

import math

import pytest
import torch

from cnnkit.errors import ModelError
from cnnkit.models.yolo_seg import YOLOSeg, box_crop, masks_at
from cnnkit.registry import create_model, get_entry

from conftest import FASHION_MNIST_DIR

NUM_CLASSES = 3


def synthetic_batch(count: int = 2, size: int = 128, seed: int = 0):
    """Images with one or two filled rectangles each and their targets with masks (an ellipse-ish blob: the
    rectangle minus its corners, so a mask is not simply its box)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 3, size, size, generator=generator) * 0.3
    targets = []
    for index in range(count):
        boxes, labels, masks = [], [], []
        for _ in range(1 + index % 2):
            width, height = torch.randint(size // 5, size // 2, (2,), generator=generator).tolist()
            x = torch.randint(0, size - width, (1,), generator=generator).item()
            y = torch.randint(0, size - height, (1,), generator=generator).item()
            label = torch.randint(0, NUM_CLASSES, (1,), generator=generator).item()
            mask = torch.zeros(size, size, dtype=torch.uint8)
            rows, columns = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
            inside = ((columns + 0.5 - x - width / 2) / (width / 2)) ** 2 + ((rows + 0.5 - y - height / 2) / (height / 2)) ** 2 <= 1
            mask[inside] = 1
            images[index, label][inside] = 1.0
            boxes.append([x, y, x + width, y + height])
            labels.append(label)
            masks.append(mask)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels),
                        "masks": torch.stack(masks)})
    return images, targets


def test_registered_as_an_instance_model_and_trains_forward_backward_at_128():
    assert get_entry("yolo_seg_fastnet").task == "instance"
    torch.manual_seed(0)
    model = create_model("yolo_seg_fastnet", num_classes=NUM_CLASSES, input_size=128).train()
    images, targets = synthetic_batch()
    losses = model(images, targets)
    assert set(losses) == {"box", "objectness", "class", "mask"}
    assert all(math.isfinite(float(value)) and float(value) > 0 for value in losses.values()), losses
    sum(losses.values()).backward()
    for module in (model.proto_out, model.coefficients, model.head, model.trunk.stages["stem"][0]):
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0, module
    # Prototypes at stride 4 of the image, coefficients per cell and anchor.
    raw, coefficients, protos = model.segmentation_outputs(images)
    assert protos.shape == (2, 32, 32, 32) and coefficients.shape == (2, 5, 16, 16, 32)
    assert raw.shape == (2, 5, 16, 16, 5 + NUM_CLASSES)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_outputs_follow_mask_rcnns_contract():
    """Same keys, dtypes and shapes as the Mask R-CNN wrapper's, for a batch of two sizes (masks at each image's
    own size), probabilities in [0, 1]."""
    torch.manual_seed(0)
    images = [torch.rand(3, 64, 64), torch.rand(3, 48, 80)]
    yolo = create_model("yolo_seg_fastnet", num_classes=NUM_CLASSES, input_size=64, score_threshold=0.0,
                        max_detections=7).eval()
    mask_rcnn = create_model("maskrcnn_resnet18_fpn", num_classes=NUM_CLASSES, input_size=64, fpn_channels=16,
                             representation_size=32, score_threshold=0.0).eval()
    with torch.no_grad():
        ours, theirs = yolo(images), mask_rcnn(images)
    for mine, reference, image in zip(ours, theirs, images):
        assert set(mine) == set(reference) == {"boxes", "scores", "labels", "masks"}
        assert {key: value.dtype for key, value in mine.items()} == {key: value.dtype for key, value in reference.items()}
        count = len(mine["scores"])
        assert count == 7  # threshold 0: max_detections of them
        assert mine["boxes"].shape == (count, 4) and mine["labels"].shape == (count,)
        assert mine["masks"].shape == (count, *image.shape[1:]) == (count, *reference["masks"].shape[1:])
        assert 0 <= float(mine["masks"].min()) and float(mine["masks"].max()) <= 1
        assert int(mine["labels"].min()) >= 0 and int(mine["labels"].max()) < NUM_CLASSES


def test_masks_are_zero_outside_their_boxes():
    """Hand-made prototypes (one map, all 8: sigmoid ~1 everywhere): each mask is its box, pixel for pixel."""
    model = YOLOSeg(2, input_size=32, num_protos=1, anchors=[[16.0, 16.0]])
    detections = [{"boxes": torch.tensor([[2.0, 4.0, 10.0, 20.0], [0.0, 0.0, 32.0, 32.0]]),
                   "scores": torch.tensor([0.9, 0.5]), "labels": torch.tensor([0, 1]), "index": torch.tensor([0, 5])}]
    coefficients = torch.ones(1, 1, 4, 4, 1)
    protos = torch.full((1, 1, 8, 8), 8.0)
    [result] = model.assemble(detections, coefficients, protos, [(32, 32)])
    assert "index" not in result and result["masks"].shape == (2, 32, 32)
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[4:20, 2:10] = True
    assert torch.equal(result["masks"][0] > 0.5, inside)
    assert float(result["masks"][0][~inside].abs().max()) == 0.0
    assert bool((result["masks"][1] > 0.99).all())  # the whole image
    # A box's crop counts the cells whose centres lie inside it: at stride 4, x 2..10 holds centres 2 and 6.
    assert box_crop(torch.tensor([[2.0, 4.0, 10.0, 20.0]]), 8, 8, stride=4)[0].sum() == 2 * 4


def test_mask_targets_are_cell_averages_and_the_loss_is_normalised_by_box_area():
    mask = torch.zeros(1, 8, 8, dtype=torch.uint8)
    mask[0, 0:2, 0:3] = 1
    averaged = masks_at([{"masks": mask}], (8, 8), stride=2)
    assert averaged.shape == (1, 4, 4)
    assert averaged[0, 0].tolist() == [1.0, 0.5, 0.0, 0.0] and float(averaged.sum()) == 1.5
    # Zero logits: BCE log(2) at every cell, whatever the target; normalised by the cells in the box, so a
    # small box and a large box both give log(2).
    model = YOLOSeg(2, input_size=32, num_protos=2, anchors=[[16.0, 16.0]])
    images, targets = synthetic_batch(2, size=32)
    raw = torch.zeros(2, 1, 4, 4, 7)
    match = model.assign(raw, targets)
    assert len(match.image) > 0
    loss = model.mask_loss(torch.zeros(2, 1, 4, 4, 2), torch.zeros(2, 2, 8, 8), targets, match, (32, 32))
    assert math.isclose(float(loss), math.log(2), rel_tol=1e-6)
    # Logits that are the truth's own (logit of the cell average): the loss is the targets' mean binary entropy
    # over the box's cells, by hand (one object, so one prototype serves all its positives).
    one = [targets[0]]
    match = model.assign(raw[:1], one)
    truth = masks_at(one, (32, 32), 4)[0].clamp(1e-6, 1 - 1e-6)  # (8, 8)
    protos = torch.stack([torch.log(truth / (1 - truth)), torch.zeros(8, 8)])[None]  # (1, 2, 8, 8)
    codes = torch.zeros(1, 1, 4, 4, 2)
    codes[..., 0] = 1.0
    loss = model.mask_loss(codes, protos, one, match, (32, 32))
    crop = box_crop(one[0]["boxes"], 8, 8, stride=4)[0]
    entropy = -(truth * truth.log() + (1 - truth) * (1 - truth).log())
    expected = float((entropy * crop).sum() / crop.sum())
    assert math.isclose(float(loss), expected, rel_tol=1e-4) and expected < 0.5 * math.log(2)


def test_mask_loss_falls_when_overfitting_a_batch():
    torch.manual_seed(0)
    model = create_model("yolo_seg_fastnet", num_classes=NUM_CLASSES, input_size=64).train()
    images, targets = synthetic_batch(4, size=64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = []
    for _ in range(30):
        losses = model(images, targets)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        history.append({key: float(value) for key, value in losses.items()})
    assert history[-1]["mask"] < 0.5 * history[0]["mask"], [h["mask"] for h in history[::5]]
    assert sum(history[-1].values()) < 0.5 * sum(history[0].values())


def test_bad_arguments_and_targets_without_masks_are_clear_errors():
    with pytest.raises(ModelError, match="proto_stride=16"):
        YOLOSeg(2, input_size=64, proto_stride=16)
    model = YOLOSeg(2, input_size=64).train()
    images, targets = synthetic_batch(2, size=64)
    with pytest.raises(ModelError, match='needs "masks"'):
        model(images, [{key: value for key, value in t.items() if key != "masks"} for t in targets])


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.skipif(not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason="the scenes generator needs Fashion-MNIST")
def test_instance_task_trains_evaluates_and_predicts(tmp_path):
    """cnnkit.train / cnnkit.load as `cnnkit train --task instance --model yolo_seg_fastnet` uses them: mask mAP
    from the task's evaluation, RLE masks from predict."""
    import cnnkit
    from cnnkit.data.scenes import ScenesConfig, make_scenes

    data = tmp_path / "scenes"
    make_scenes(data, ScenesConfig(seed=0, train=8, val=4, test=4, size=64), progress=False)
    run = cnnkit.train({"task": "instance", "model": "yolo_seg_fastnet", "data": str(data), "epochs": 1,
                        "batch_size": 4, "num_threads": 1, "report": False, "progress": False, "out": str(tmp_path),
                        "name": "run", "model_args": {"neck_width": 32, "proto_width": 16}})
    segmenter = cnnkit.load(run.run_dir, device="cpu")
    assert segmenter.record["architecture"]["name"] == "yolo_seg_fastnet"
    result = segmenter.evaluate("test")
    assert 0.0 <= result["mask_map50"] <= 1.0 and "map50" in result
    [objects] = segmenter.predict([str(data / "test" / "images" / "000000.png")], score_threshold=0.0)
    assert objects and set(objects[0]) >= {"class", "score", "box", "mask", "area"}
    assert objects[0]["mask"]["size"] == [64, 64]
