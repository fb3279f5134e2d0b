"""Instance segmentation: a class, a box and a mask for every object. `cnnkit train --task instance`.

    cnnkit train --task instance --model maskrcnn_resnet18_fpn --data SCENES_DIR epochs=12
    cnnkit train --task instance --model yolo_seg_fastnet --data SCENES_DIR budget=15m   # one-stage, YOLACT-style
    cnnkit evaluate RUN_DIR                     # COCO mask mAP@.5, mAP@[.5:.95] (and box mAP) on the test split,
                                                # and the masks painted as a semantic map: mIoU as --task segment
    cnnkit predict RUN_DIR scene.png --out out/ # JSON (boxes, scores, RLE masks), instance mask PNG, overlay

The task never asks which model it drives: any model registered with task="instance" that follows the
detection contract with masks fits (`model(images)` -> per image "boxes", "scores", "labels" 0-based and
"masks" (N, H, W) probabilities at the image's size; `model(images, targets)` -> named losses): torchvision's
Mask R-CNN through its wrapper (cnnkit.models.segmentation_maskrcnn) and cnnkit's one-stage YOLO-style
segmenter (cnnkit.models.yolo_seg) alike.

Everything but the masks is detection's (cnnkit.tasks.detection): the same data readers and validation
(COCO JSON with polygon/RLE segmentations, or the scenes benchmark's instance PNGs), the same box-aware
augmentation (`detect_augment`; masks move with the image), the same detection Dataset (here with
masks=True) and the same DetectionMeter, asked for both iouType "bbox" and "segm". The monitor is
val_mask_map50: COCO mask AP at IoU 0.5, averaged over the classes. The meter also paints the masks of score
>= 0.25 into a semantic map (val_semantic_miou), so an instance segmenter compares with the semantic ones.

Predicted masks are the model's per-pixel probabilities thresholded at 0.5. `predict` writes them as COCO
RLE (pycocotools.mask.encode; "counts" as a string), as an instance-id PNG (0 background, i for the i-th
detection kept, highest score drawn last so it stays on top) and as an overlay of coloured masks and boxes.

    task.py       InstanceTask, read_instance_data (detection's splits, masks required), MASK_THRESHOLD
    setup.py      setup: detection's detector_setup with masks
    predictor.py  InstanceSegmenter: what `cnnkit.load` returns
    output.py     RLE JSON, instance-id PNG and overlay per image; what `cnnkit evaluate` / `predict` print
    report.py     the run report's part: detection's, with mask mAP and drawn masks
"""

from cnnkit.tasks.base import TaskInfo, unique_stems
from cnnkit.tasks.instance.output import (decode_masks, draw_instances, evaluation_text, instance_id_mask,
                                          predict_images, prediction_text, write_predictions)
from cnnkit.tasks.instance.predictor import InstanceSegmenter
from cnnkit.tasks.instance.report import report_sections
from cnnkit.tasks.instance.setup import make_instance_loader, setup
from cnnkit.tasks.instance.task import MASK_THRESHOLD, InstanceTask, read_instance_data

TASK = TaskInfo(name="instance", setup=setup, predictor=InstanceSegmenter, evaluation_text=evaluation_text,
                evaluation_saved="per-class metrics", predict=predict_images, prediction_text=prediction_text,
                report_sections=report_sections)

__all__ = ["MASK_THRESHOLD", "TASK", "InstanceSegmenter", "InstanceTask", "decode_masks", "draw_instances",
           "instance_id_mask", "make_instance_loader", "read_instance_data", "setup", "unique_stems",
           "write_predictions"]
