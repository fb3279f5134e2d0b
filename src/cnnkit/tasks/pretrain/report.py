"""The run report's pretrain part (TaskInfo.report_sections): the kNN accuracy of the test images, a 2-D PCA of
their features coloured by class (when the data has labels), and for MAE the reconstructions of masked test
images (original, what the encoder saw, the decoder's output). The loss and the kNN curve per epoch are in the
report's training curves (metrics.jsonl: train_loss, val_knn_accuracy)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from cnnkit.tasks.plots import guarded, html_image, plot_image_grid, pyplot, save_figure

PCA_IMAGES = 2000  # test images in the projection
RECONSTRUCTED = 8  # test images shown masked and reconstructed


def report_sections(encoder, out: Path, deadline: float) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """(facts, sections) of a pretrain run."""
    from cnnkit.tasks.base import config_of
    from cnnkit.tasks.pretrain.data import read_pretrain_data

    config = config_of(encoder.record)
    data = read_pretrain_data(config, encoder.preprocessing)
    split, dataset = ("test", data.test) if data.test is not None else ("val", data.val)
    if dataset is None:
        dataset, split = data.train, "train"
    facts, sections = {}, []
    if data.labelled and time.perf_counter() < deadline:
        result = encoder.evaluate("test" if data.test is not None else "val", probe=False)
        facts[f"{result['split']} kNN accuracy"] = (f"{result['knn_accuracy']:.4f} (k={result['k']}, cosine, bank of "
                                                    f"{result['bank_count']} training images)")
    if data.labelled:
        images, labels = dataset.images[:PCA_IMAGES], dataset.labels[:PCA_IMAGES]
        sections.append(guarded("projection", f"Features of {split} images, by class",
                                lambda: _projection(encoder.embed(images), labels, encoder.classes, out)))
    if encoder.method == "mae":
        sections.append(guarded("reconstructions", f"MAE reconstructions of masked {split} images",
                                lambda: _reconstructions(encoder, dataset.images[:RECONSTRUCTED], out)))
    return facts, sections


def _projection(features: torch.Tensor, labels: torch.Tensor, classes: list[str], out: Path) -> str:
    points = torch.nn.functional.normalize(features.double(), dim=1)
    _, _, components = torch.pca_lowrank(points, q=2, center=True)  # (D, 2)
    projected = (points - points.mean(dim=0)) @ components  # (n, 2)
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 5.0))
    for index, name in enumerate(classes):
        rows = labels == index
        if rows.any():
            axis.scatter(projected[rows, 0].numpy(), projected[rows, 1].numpy(), s=6, color=f"C{index % 10}",
                         marker="o" if index < 10 else "x", label=name)
    axis.set_xlabel("first principal component")
    axis.set_ylabel("second principal component")
    axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    axis.grid(alpha=0.3)
    path = save_figure(figure, out / "projection.png")
    return html_image(path, "PCA of the backbone features") + (
        f"<p>{len(labels)} images' L2-normalised backbone features (what the kNN monitor compares), projected on "
        "their two directions of largest variance (torch.pca_lowrank). The labels were never trained on: classes "
        "that separate here were told apart by self-supervision alone.</p>")


@torch.no_grad()
def _reconstructions(encoder, images: torch.Tensor, out: Path) -> str:
    from cnnkit.models.ssl import patchify, random_masking, unpatchify

    net = encoder.model
    preprocessing = encoder.preprocessing
    inputs = preprocessing.normalize(images).to(encoder.device)
    length, size = net.backbone.patch_embed.num_patches, net.patch_size
    keep, mask = random_masking(len(inputs), length, net.mask_ratio, encoder.device,
                                generator=torch.Generator().manual_seed(0))
    predictions, _ = net.reconstruct(inputs, keep, mask.to(encoder.device))
    # Predictions are per-patch normalised pixels: give them each true patch's mean and spread back.
    patches = patchify(inputs.float(), size)
    mean, std = patches.mean(-1, keepdim=True), (patches.var(-1, keepdim=True) + 1e-6).sqrt()
    restored = torch.where(mask.unsqueeze(-1).bool(), predictions.float() * std + mean, patches)
    channels, height, width = inputs.shape[1:]
    masked = patches * (1 - mask.unsqueeze(-1)) + mask.unsqueeze(-1) * patches.min()
    pictures, labels = [], []
    for name, tensor in (("original", inputs), ("visible", unpatchify(masked, size, channels, height, width)),
                         ("reconstruction", unpatchify(restored, size, channels, height, width))):
        for index, picture in enumerate(_to_uint8(tensor.cpu(), preprocessing)):
            pictures.append(picture)
            labels.append(f"{name} {index + 1}")
    order = [row * len(inputs) + column for column in range(len(inputs)) for row in range(3)]
    path = plot_image_grid([pictures[i] for i in order], [labels[i] for i in order],
                           f"MAE: {mask[0].sum():.0f} of {length} patches masked (mask_ratio {net.mask_ratio})",
                           out / "reconstructions.png", columns=6)
    return html_image(path, "MAE reconstructions") + (
        "<p>Each triple: the test image, the patches the encoder saw (masked ones dark), and the image with the "
        "masked patches replaced by the decoder's output. The loss is computed on per-patch normalised pixels, so "
        "each reconstructed patch is shown with its true patch's mean and spread.</p>")


def _to_uint8(images: torch.Tensor, preprocessing) -> torch.Tensor:
    mean = torch.tensor(preprocessing.mean).view(1, -1, 1, 1)
    std = torch.tensor(preprocessing.std).view(1, -1, 1, 1)
    return ((images * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)


