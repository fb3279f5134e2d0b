"""`cnnkit train --task embed`: identity data (open set), the embedding network, its loss and the record."""

from __future__ import annotations

import torch
from tqdm import tqdm

from cnnkit.errors import ConfigError
from cnnkit.losses.metric import EMBED_LOSSES, PAIR_LOSSES
from cnnkit.registry import create_model, get_entry
from cnnkit.tasks.base import TaskSetup, build_record, describe_run, recorded_architecture
from cnnkit.tasks.embed.data import make_loader, read_identities
from cnnkit.tasks.embed.task import EmbedTask

DEFAULT_BACKBONE = "fastnet"  # `--model fastnet` (any zoo CNN) becomes the trunk of the embedder


def check_settings(config, dist_info) -> None:
    """The embed settings, before any data is read."""
    if config.embed_loss not in EMBED_LOSSES:
        raise ConfigError(f"embed_loss={config.embed_loss!r} is not one of {', '.join(EMBED_LOSSES)}")
    if config.embedding_dim < 1 or config.subcenters < 1 or config.images_per_identity < 2:
        raise ConfigError("embedding_dim and subcenters must be 1 or more, images_per_identity 2 or more")
    if not config.margin_lr_multiplier > 0:
        raise ConfigError(f"margin_lr_multiplier={config.margin_lr_multiplier} must be greater than 0")
    per_rank = config.batch_size // dist_info.world_size  # under DDP each rank mines its own share of the batch
    if config.embed_loss in PAIR_LOSSES and per_rank // config.images_per_identity < 2:
        where = f" ({per_rank} per process of {dist_info.world_size})" if dist_info.enabled else ""
        raise ConfigError(f"embed_loss={config.embed_loss}: batch_size {config.batch_size}{where} holds fewer than 2 "
                          f"identities of images_per_identity={config.images_per_identity}; raise batch_size")
    if config.pretrained:
        raise ConfigError("pretrained weights are not supported for --task embed yet; train from scratch")


def architecture_of(config, num_identities: int, preprocessing) -> dict:
    """The embedder's record: the trunk named by --model (a zoo classifier) or model_args' backbone."""
    backbone = config.model
    if get_entry(backbone).task == "embed":  # --model embedder backbone=...: model_args say which trunk
        backbone = config.model_args.get("backbone", DEFAULT_BACKBONE)
    elif get_entry(backbone).task != "classify":
        raise ConfigError(f"model {config.model!r} is a {get_entry(backbone).task} model; --task embed takes a "
                          "classifier of the zoo as its trunk (fastnet, resnet18 ...)")
    args = {key: value for key, value in config.model_args.items() if key != "backbone"}
    args.update(backbone=backbone, embedding_dim=config.embedding_dim, num_classes=num_identities,
                loss=config.embed_loss, margin=config.margin, scale=config.margin_scale, subcenters=config.subcenters,
                in_chans=preprocessing.channels, input_size=list(preprocessing.image_size))
    if config.drop_rate is not None:
        args["drop_rate"] = config.drop_rate
    return {"name": "embedder", "args": args}


def setup(config, device: torch.device, dist_info, resume) -> TaskSetup:
    """The embed task's model, data and record."""
    check_settings(config, dist_info)
    data = read_identities(config)
    torch.manual_seed(config.seed)
    if resume:
        architecture = recorded_architecture(resume)
    else:
        architecture = architecture_of(config, len(data.train_identities), data.preprocessing)
    model = create_model(architecture["name"], **architecture["args"])
    task = EmbedTask(model, config.embed_loss, config.margin)
    record = build_record(task.name, architecture, data.train_identities, data.preprocessing.to_dict(), config)
    train_loader = make_loader(data.train, data.preprocessing, config, device, train=True,
                               pk=config.embed_loss in PAIR_LOSSES, dist_info=dist_info)
    val_loader = make_loader(data.val, data.preprocessing, config, device, train=False) if data.val else None
    size = "x".join(map(str, data.preprocessing.image_size))
    sizes = (f"{len(data.train)} train images of {len(data.train_identities)} identities / "
             f"{len(data.val) if data.val else 0} val images of {len(data.val.classes) if data.val else 0} other "
             f"identities, {size}x{data.preprocessing.channels}, loss {config.embed_loss}")
    # The margin head's own LR (the class centres move at margin_lr_multiplier x the network's LR).
    scales = {f"margin_head.{name}": config.margin_lr_multiplier for name, _ in model.margin_head.named_parameters()} \
        if model.margin_head is not None and config.margin_lr_multiplier != 1.0 else None
    return TaskSetup(task, train_loader, val_loader, record, describe_run(config, model, device, sizes),
                     [print_embedding_metrics], head_parameters=scales)


def print_embedding_metrics(trainer, metrics: dict) -> None:
    """After each epoch: identification and verification on the validation identities."""
    if trainer.dist.is_main and "val_rank1" in metrics:
        tqdm.write(f"  val rank-1 {metrics['val_rank1']:.4f}  TAR@FAR=1e-3 {metrics['val_tar_at_far_0.001']:.4f}  "
                   f"EER {metrics['val_eer']:.4f}  mAP {metrics['val_map']:.4f}")
