"""`cnnkit train --task pretrain`: the data (labels only for the kNN monitor), the network of the method, the
record (its architecture names the zoo backbone, which `pretrained=RUN` loads into a classify run)."""

from __future__ import annotations

import torch
from tqdm import tqdm

from cnnkit.errors import ConfigError
from cnnkit.registry import create_model, get_entry
from cnnkit.tasks.base import TaskSetup, build_record, describe_run, recorded_architecture
from cnnkit.tasks.pretrain.data import KNNLoader, make_view_loader, read_pretrain_data
from cnnkit.tasks.pretrain.task import CONTRASTIVE, METHODS, PretrainTask

DEFAULT_MASK_RATIOS = {"mae": 0.75, "beit": 0.4}  # MAE's 75%; BEiT's and MaskFeat's 40%
# Training images in the kNN monitor's bank: featurising all 54,000 Fashion-MNIST images took ~1.5 min per
# validation for vit_mini on 2 cores; 10,000 cost a fifth. `cnnkit evaluate` uses every training image.
MONITOR_BANK = 10_000


def check_settings(config, dist_info) -> None:
    """The pretrain settings, before any data is read."""
    if config.method not in METHODS:
        raise ConfigError(f"method={config.method!r} is not one of {', '.join(METHODS)}")
    if config.views not in ("simclr", "config"):
        raise ConfigError(f"views={config.views!r} is not one of simclr, config")
    if config.temperature is not None and not config.temperature > 0:
        raise ConfigError(f"temperature={config.temperature} must be greater than 0 (e.g. 0.2)")
    if config.mask_ratio is not None and not 0.0 < config.mask_ratio < 1.0:
        raise ConfigError(f"mask_ratio={config.mask_ratio} must be in (0, 1), e.g. 0.75")
    if config.masking != "random" and config.method != "beit":
        raise ConfigError(f"masking={config.masking} is for method=beit; {config.method} masks uniformly at random "
                          "(drop masking= or use method=beit)")
    if config.projection_dim < 1 or config.moco_queue < 1 or config.knn_k < 1 or not config.knn_temperature > 0:
        raise ConfigError("projection_dim, moco_queue and knn_k must be 1 or more, knn_temperature above 0")
    if not 0.0 <= config.moco_momentum < 1.0:
        raise ConfigError(f"moco_momentum={config.moco_momentum} must be in [0, 1), e.g. 0.99")
    if config.batch_size < 2 * dist_info.world_size:  # under torchrun each process trains batch_size / world
        raise ConfigError(f"batch_size={config.batch_size} gives fewer than 2 images to each of the "
                          f"{dist_info.world_size} processes; raise batch_size (it is the global batch)")
    if config.pretrained:
        raise ConfigError("--task pretrain starts from scratch; pretrained= is for the classify run that follows "
                          "(pretrained=RUN_DIR of this one)")
    if config.mixup or config.cutmix:
        raise ConfigError("mixup/cutmix mix labels; --task pretrain trains without labels: set them to 0")
    entry = get_entry(config.model)
    if entry.task != "classify":
        raise ConfigError(f"--task pretrain: --model names the backbone to pretrain, a classifier of the zoo "
                          f"(fastnet, resnet20, vit_mini ...); {config.model!r} is a {entry.task} model")
    if config.method in ("mae", "beit") and entry.family != "vit":
        raise ConfigError(f"method={config.method} masks patches of a Vision Transformer: pass --model vit_mini "
                          f"(or another ViT of timm's kind), not {config.model!r}")


def architecture_of(config, preprocessing) -> dict:
    """The record's architecture: the method's network around the backbone named by --model."""
    args = {"backbone": config.model, "in_chans": preprocessing.channels,
            "input_size": list(preprocessing.image_size), "backbone_args": dict(config.model_args)}
    if config.method in CONTRASTIVE:
        args["projection_dim"] = config.projection_dim
    if config.method == "moco":
        args.update(queue_size=config.moco_queue, momentum=config.moco_momentum)
    if config.method in DEFAULT_MASK_RATIOS:
        args["mask_ratio"] = config.mask_ratio if config.mask_ratio is not None else DEFAULT_MASK_RATIOS[config.method]
    if config.method == "beit" and config.masking != "random":
        args["masking"] = config.masking  # absent from older records: they were all "random"
    return {"name": config.method, "args": args}


def setup(config, device: torch.device, dist_info, resume) -> TaskSetup:
    """The pretrain task's network, data and record."""
    check_settings(config, dist_info)
    data = read_pretrain_data(config)
    torch.manual_seed(config.seed)
    architecture = recorded_architecture(resume) if resume else architecture_of(config, data.preprocessing)
    model = create_model(architecture["name"], **architecture["args"])
    task = PretrainTask(model, config.method, len(data.classes) if data.val is not None else 0, config.temperature,
                        config.knn_k, config.knn_temperature, config.probe_monitor)
    # A record names at least one class: unlabeled data is recorded as one "unlabeled" class, and says so.
    record = build_record(task.name, architecture, data.classes or ["unlabeled"], data.preprocessing.to_dict(), config)
    record["labelled"] = data.labelled
    train_loader = make_view_loader(data.train, data.preprocessing, config, device, config.method, dist_info)
    val_loader = None
    if task.num_classes:  # the monitor's bank: a seeded subset of the training images (`cnnkit evaluate`: all)
        bank = data.train
        if len(bank) > MONITOR_BANK:
            chosen = torch.randperm(len(bank), generator=torch.Generator().manual_seed(config.seed))[:MONITOR_BANK]
            bank = bank.subset(chosen.sort().values)
        val_loader = KNNLoader(bank, data.val, data.preprocessing, config, device)
    size = "x".join(map(str, data.preprocessing.image_size))
    labels = (f"kNN monitor (k={config.knn_k}) on {len(data.val)} labelled val images every {config.val_every} "
              f"epoch(s)" if val_loader else "no labels: monitoring the loss")
    sizes = f"{len(data.train)} images, {size}x{data.preprocessing.channels}, method {config.method}; {labels}"
    return TaskSetup(task, train_loader, val_loader, record, describe_run(config, model, device, sizes),
                     [print_knn_accuracy])


def print_knn_accuracy(trainer, metrics: dict) -> None:
    """After each validated epoch: the kNN accuracy of the backbone's features."""
    if trainer.dist.is_main and "val_knn_accuracy" in metrics:
        tqdm.write(f"  val kNN accuracy {metrics['val_knn_accuracy']:.4f} (k={trainer.config.knn_k}, bank of "
                   f"{metrics.get('val_bank_count', 0)} train images)"
                   + (f"; linear probe {metrics['val_linear_probe_accuracy']:.4f}"
                      if "val_linear_probe_accuracy" in metrics else ""))
