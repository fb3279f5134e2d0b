"""`cnnkit train --task instance`: detection's setup (data, detector, record) with instance masks."""

from __future__ import annotations

import torch
from tqdm import tqdm

from cnnkit.errors import ConfigError
from cnnkit.registry import get_entry, list_models
from cnnkit.tasks.base import TaskSetup
from cnnkit.tasks.detection.data import make_detection_loader
from cnnkit.tasks.detection.setup import detector_setup, keep_freed_memory
from cnnkit.tasks.instance.task import InstanceTask, read_instance_data

EVAL_BATCH_SIZE = 16  # images per evaluation batch at least (masks make them larger than detection's)


def setup(config, device: torch.device, dist_info, resume) -> TaskSetup:
    """`cnnkit train --task instance`: data with masks, the model, the record.

    Any model registered with task="instance" that follows the detection contract with masks (Mask R-CNN,
    the YOLO-style segmenter: see cnnkit.models.segmentation_maskrcnn and cnnkit.models.yolo_seg) fits.
    """
    if not resume and get_entry(config.model).task != "instance":
        raise ConfigError(f"model {config.model!r} is not an instance segmentation model; --task instance needs one "
                          f"of {', '.join(list_models(task='instance'))}")
    keep_freed_memory()  # as detection's setup: large per-step buffers reused instead of mapped afresh
    return detector_setup(config, device, dist_info, resume, InstanceTask, read_instance_data,
                          resize_note="none: the model takes images of any size", callbacks=[print_instance_metrics],
                          masks=True, eval_batch_size=EVAL_BATCH_SIZE)


def make_instance_loader(annotations, config, train: bool, dist_info=None, input_size=None):
    """Detection's loader with masks: (uint8 images, targets with "masks" (N, H, W)) batches."""
    return make_detection_loader(annotations, config, train, dist_info, input_size, masks=True,
                                 eval_batch_size=EVAL_BATCH_SIZE)


def print_instance_metrics(trainer, metrics: dict) -> None:
    """After each epoch: the mask and box mAP (the Trainer's epoch line shows losses only)."""
    if trainer.dist.is_main and "val_mask_map50" in metrics:
        tqdm.write(f"  val mask mAP@.5 {metrics['val_mask_map50']:.4f}  mask mAP@[.5:.95] {metrics['val_mask_map']:.4f}"
                   f"  box mAP@.5 {metrics['val_map50']:.4f}")
