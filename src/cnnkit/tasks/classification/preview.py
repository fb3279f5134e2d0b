"""`cnnkit augment preview`: a grid of training images exactly as the model sees them.

The images come from the real training loader of a config (the same batched augmentations, the
same MixUp/CutMix), de-normalized for display. Look at it before a long run: an augmentation that
destroys what the class is about (a rotated "6" that is now a "9", a crop that loses the object)
shows at a glance.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cnnkit.config import TrainConfig


def preview_batch(config: TrainConfig, count: int = 32, epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``count`` augmented training images (uint8, (N, C, H, W)), their (N, K) label weights, class names."""
    from cnnkit.data.mixing import BatchMixer
    from cnnkit.tasks.classification.data import make_loader, prepare_data

    data = prepare_data(config)
    preview_config = TrainConfig(**{**config.to_dict(), "batch_size": count, "channels_last": False})
    loader = make_loader(data.train, data.preprocessing, preview_config, torch.device("cpu"), train=True)
    loader.set_epoch(epoch)
    images, labels = next(iter(loader))
    torch.manual_seed(config.seed)
    mixer = BatchMixer(len(data.classes), config.mixup, config.cutmix, config.mix_probability)
    images, weights = mixer(images, labels)
    mean = torch.tensor(data.preprocessing.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.preprocessing.std).view(1, -1, 1, 1)
    pixels = ((images * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)
    return pixels, weights, data.classes


def label_text(weights: torch.Tensor, classes: list[str]) -> str:
    """'Sneaker' for a plain label, 'Sneaker 0.62 + Bag 0.38' for a mixed one."""
    values, indices = weights.topk(min(2, len(classes)))
    if values[1] <= 1e-6:
        return classes[int(indices[0])]
    return " + ".join(f"{classes[int(i)]} {float(v):.2f}" for v, i in zip(values, indices))


def save_preview(config: TrainConfig, path: str | Path, count: int = 32, columns: int = 8) -> Path:
    """Write the preview grid as a PNG with each image's (mixed) label; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pixels, weights, classes = preview_batch(config, count)
    count = len(pixels)
    rows = (count + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.7, rows * 1.9), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= count:
            continue
        image = pixels[index].permute(1, 2, 0).numpy()
        axis.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
        axis.set_title(label_text(weights[index], classes), fontsize=6)
    figure.suptitle(_describe(config), fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _describe(config: TrainConfig) -> str:
    """The augmentation settings that differ from 'off', for the figure's title."""
    augment = config.augment_config()
    parts = [f"{name}={value}" for name, value in vars(augment).items()
             if value not in (False, 0, 0.0, "none", "reflect")]
    parts += [f"{name}={getattr(config, name)}" for name in ("mixup", "cutmix") if getattr(config, name)]
    return f"{config.data}: " + (", ".join(parts) if parts else "no augmentation")
