"""`cnnkit train --task classify`: the model (pretrained weights fitted), the data, the loss and the record."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from cnnkit.data import ArrayDataset
from cnnkit.data.mixing import BatchMixer
from cnnkit.engine.distributed import DistInfo
from cnnkit.layers.checkpointing import enable_grad_checkpointing
from cnnkit.losses.classification import class_weights
from cnnkit.registry import create_model
from cnnkit.tasks.base import (TaskSetup, build_record, describe_run, recorded_architecture,
                               resolve_architecture)
from cnnkit.tasks.classification.data import make_loader, prepare_data
from cnnkit.tasks.classification.task import ClassificationTask
from cnnkit.transfer import (TransferSchedule, adapt_state_dict, head_parameter_names, load_pretrained_state,
                             pretrained_preprocessing)


def setup(config, device: torch.device, dist_info: DistInfo, resume: Path | None) -> TaskSetup:
    """The classification task's model, data, callbacks and checkpoint record."""
    data = prepare_data(config)
    if config.pretrained:  # inputs normalised as the pretrained network was trained (cnnkit run directories)
        data.preprocessing = pretrained_preprocessing(config.pretrained, data.preprocessing)
    if dist_info.is_main and isinstance(data.val, ArrayDataset):  # streamed data: `cnnkit data check` only
        from cnnkit.data.check import validation_overlap_warning

        warning = validation_overlap_warning(data.train, data.val)
        if warning:
            print(warning, file=sys.stderr, flush=True)
    torch.manual_seed(config.seed)  # the same initial weights for the same seed
    if resume:
        architecture = recorded_architecture(resume)
    else:
        architecture = resolve_architecture(config, len(data.classes), data.preprocessing)
    model = create_model(architecture["name"], **architecture["args"])
    callbacks, head_parameters = [], None
    if config.pretrained and not resume:  # a resumed run gets its weights from last.safetensors
        state, source_classes = load_pretrained_state(config.pretrained, architecture["name"])
        report = adapt_state_dict(model, state, config.pretrained, source_classes, data.classes)
        if dist_info.is_main:
            print(report.summary(), flush=True)
    if config.pretrained:
        head_parameters = head_parameter_names(model)  # the head at the full LR, the backbone at backbone_lr_ratio
        probe_loaders = None  # unaugmented train and val images, all of them on every rank
        if config.head_init == "probe":
            probe_loaders = tuple(make_loader(split, data.preprocessing, config, device, train=False)
                                  if split is not None else None for split in (data.train, data.val))
        schedule = TransferSchedule(model, config.finetune, config.unfreeze_every, config.head_init, probe_loaders,
                                    config.freeze_bn)
        callbacks.append(schedule)
        if dist_info.is_main:
            print(f"transfer learning: {schedule.describe()}", flush=True)
    if config.grad_checkpointing:
        enable_grad_checkpointing(model)
    weights = class_weights(data.train.labels, len(data.classes), config.class_weights, config.class_weights_beta)
    task = ClassificationTask(model, data.classes, label_smoothing=config.label_smoothing, tta=config.tta,
                              class_weights=weights, focal_gamma=config.focal_gamma if config.loss == "focal" else 0.0)
    if config.mixup or config.cutmix:
        task.mixer = BatchMixer(len(data.classes), config.mixup, config.cutmix, config.mix_probability)
    preprocessing = data.preprocessing.to_dict()
    if data.medical is not None:  # the window `predict` applies to a raw DICOM
        preprocessing["medical"] = data.medical
    record = build_record(task.name, architecture, data.classes, preprocessing, config)

    train_loader = make_loader(data.train, data.preprocessing, config, device, train=True, dist_info=dist_info)
    val_loader = None
    if data.val is not None:
        val_loader = make_loader(data.val, data.preprocessing, config, device, train=False, dist_info=dist_info)
    val = len(data.val) if data.val is not None else 0
    sizes = (f"{len(data.train)} train / {val} val images, {len(data.classes)} classes, "
             f"{'x'.join(map(str, data.preprocessing.image_size))}x{data.preprocessing.channels}")
    return TaskSetup(task, train_loader, val_loader, record, describe_run(config, model, device, sizes), callbacks,
                     head_parameters=head_parameters,
                     find_unused_parameters=bool(config.pretrained) and config.finetune != "full")
