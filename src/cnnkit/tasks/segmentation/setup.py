"""`cnnkit train --task segment`: model (pretrained backbone weights fitted), data, loss and the record."""

from __future__ import annotations

import torch
from tqdm import tqdm

from cnnkit.errors import ConfigError
from cnnkit.losses.segmentation import SegmentationLoss
from cnnkit.registry import create_model, get_entry
from cnnkit.tasks.base import TaskSetup, build_record, describe_run, recorded_architecture, resolve_architecture
from cnnkit.tasks.segmentation.data import make_loader, pixel_class_weights, prepare_data
from cnnkit.tasks.segmentation.task import VALUE_RANGE, SegmentationTask
from cnnkit.transfer import load_matching


def setup(config, device, dist_info, resume) -> TaskSetup:
    """`cnnkit train --task segment`: model, data, loss and the checkpoint record."""
    data = prepare_data(config)
    torch.manual_seed(config.seed)
    if resume:
        architecture = recorded_architecture(resume)
    else:
        if get_entry(config.model).task != "segment":
            raise ConfigError(f"model={config.model!r} is not a segmentation model; choose one of "
                              "`cnnkit models --family unet|fcn|deeplab` (e.g. unet_resnet18)")
        architecture = resolve_architecture(config, len(data.classes), data.preprocessing)
    model = create_model(architecture["name"], **architecture["args"])
    if config.pretrained and not resume:
        message = load_matching(model, config.pretrained, architecture)
        if dist_info.is_main:
            print(message, flush=True)
    weights = pixel_class_weights(data.train, config.class_weights, config.class_weights_beta, config.ignore_index)
    loss = SegmentationLoss(config.seg_loss or config.loss, weights, config.ignore_index, config.focal_gamma,
                            (config.tversky_alpha, config.tversky_beta))
    task = SegmentationTask(model, data.classes, loss, config.ignore_index, config.tta)
    preprocessing = {**data.preprocessing.to_dict(), "value_range": VALUE_RANGE, "ignore_index": config.ignore_index}
    if data.medical is not None:  # the window and slice stack `predict` applies to a raw DICOM / NIfTI
        preprocessing["medical"] = data.medical
    record = build_record(task.name, architecture, data.classes, preprocessing, config)
    train_loader = make_loader(data.train, data.preprocessing, config, train=True, dist_info=dist_info)
    val_loader = None
    if data.val is not None:
        val_files = data.val
        if dist_info.enabled:
            val_files = val_files.subset(range(dist_info.rank, len(val_files), dist_info.world_size))
        val_loader = make_loader(val_files, data.preprocessing, config, train=False)
    size = "x".join(map(str, data.preprocessing.image_size))
    sizes = (f"{len(data.train)} train / {len(data.val) if data.val else 0} val images, {len(data.classes)} classes, "
             f"{size}x{data.preprocessing.channels}, loss {loss.spec}")
    header = describe_run(config, model, device, sizes, precision=False)
    return TaskSetup(task, train_loader, val_loader, record, header, [print_segmentation_metrics])


def print_segmentation_metrics(trainer, metrics: dict) -> None:
    """After each epoch: mIoU and pixel accuracy (the Trainer's epoch line shows losses only)."""
    if trainer.dist.is_main and "val_miou" in metrics:
        tqdm.write(f"  val mIoU {metrics['val_miou']:.4f}  pixel accuracy {metrics['val_pixel_accuracy']:.4f}  "
                   f"mean Dice {metrics['val_mean_dice']:.4f}")
