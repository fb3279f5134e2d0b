"""Semantic segmentation: a class for every pixel. `cnnkit train --task segment`, evaluate, predict.

The model maps a normalized image batch (B, C, H, W) to logits (B, K, H, W); the loss compares them
with the index masks (B, H, W) pixel by pixel (cnnkit.losses.segmentation: cross-entropy, Dice, focal
or a sum, `seg_loss=`), skipping pixels whose mask value is `ignore_index`. Validation accumulates a
pixel confusion matrix (cnnkit.metrics.segmentation) from which mIoU, per-class IoU, pixel accuracy and
Dice follow; the best checkpoint is the one with the highest validation mIoU.

Data (cnnkit.data.segmentation): a scenes-style folder ({train,val,test}/images + masks, classes.txt)
or a Pascal VOC folder. Without a val split, `val_fraction` of the training images is held out (seeded).
Images are resized to `image_size` (default: the first training image's size); validation during training
is done at that size too (masks resized with nearest neighbour). `evaluate` and `predict` upsample the
logits back to each image's own size, so test metrics are measured on the masks as they are and predicted
masks match the input files.

    task.py       SegmentationTask, predict_logits (flip TTA), VALUE_RANGE
    data.py       prepare_data (splits, mask checks, normalisation), make_loader, pixel_class_weights
    setup.py      setup: model, pretrained backbone (cnnkit.transfer.load_matching), loss, record
    predictor.py  Segmenter: what `cnnkit.load` returns (predict, predict_proba, evaluate at full resolution)
    output.py     mask PNG (VOC palette) and overlay per image, what `cnnkit evaluate` / `predict` print
    report.py     the run report's part: test mIoU, per-class IoU/Dice, masks beside the truth
"""

from cnnkit.tasks.base import TaskInfo
from cnnkit.tasks.segmentation.data import SegmentationData, make_loader, pixel_class_weights, prepare_data
from cnnkit.tasks.segmentation.output import (evaluation_text, overlay, palette, predict_images, prediction_text,
                                              write_predictions)
from cnnkit.tasks.segmentation.predictor import Segmenter
from cnnkit.tasks.segmentation.report import report_sections
from cnnkit.tasks.segmentation.setup import setup
from cnnkit.tasks.segmentation.task import VALUE_RANGE, SegmentationTask, predict_logits
from cnnkit.transfer import load_matching as load_pretrained  # segmentation's name for it before cnnkit.transfer

TASK = TaskInfo(name="segment", setup=setup, predictor=Segmenter, evaluation_text=evaluation_text,
                evaluation_saved="per-class metrics", predict=predict_images, prediction_text=prediction_text,
                report_sections=report_sections)

__all__ = ["TASK", "VALUE_RANGE", "SegmentationData", "SegmentationTask", "Segmenter", "load_pretrained",
           "make_loader", "overlay", "palette", "pixel_class_weights", "predict_logits", "prepare_data", "setup",
           "write_predictions"]
