"""Volumes through a segmentation run trained on studies: slice by slice, stacked back into a NIfTI mask.

`predict_volume` reads a NIfTI file or a DICOM series folder (canonical RAS), windows and stacks it exactly
as the run's training slices were (the checkpoint's preprocessing["medical"]), predicts every axial slice
at the model's size, upsamples the logits to the slice's own size, and restacks the class indices into
(X, Y, Z). `write_volume_prediction` writes them in the input's own orientation and affine, so the mask
overlays the input in any viewer; `evaluate_volume` scores a prediction against a mask volume (a NIfTI, or a
DICOM SEG placed on the predicted image's grid: cnnkit.data.medical.slices.read_mask) with Dice per
structure, HD95 and ASSD in millimetres (cnnkit.metrics.surface).
"""

from __future__ import annotations

from pathlib import Path

import numpy
import torch
import torch.nn.functional as F

from cnnkit.errors import CheckpointError, DataError
from cnnkit.tasks.segmentation.task import predict_logits


@torch.no_grad()
def predict_volume(segmenter, source: str | Path, batch_size: int = 16):
    """(Volume of the input, canonical RAS; int64 (X, Y, Z) class indices on its grid)."""
    from cnnkit.data.medical.slices import model_inputs, read_volume
    from cnnkit.data.medical.volumes import Volume, resample, restack

    medical = segmenter.medical
    if medical is None:
        raise CheckpointError(f"{segmenter.run_dir or 'this run'} was not trained on studies (its checkpoint has no "
                              "window or slice stack): volumes can only be predicted by runs trained with "
                              "--data STUDIES (a studies CSV or patient folders)")
    volume = read_volume(source)
    grid = resample(volume, medical["spacing"]) if medical.get("spacing") else volume  # the training spacing
    inputs = model_inputs(grid, medical.get("window"), int(medical.get("stack", 1)))  # (Z, K, H, W)
    if inputs.shape[1] != segmenter.preprocessing.channels:
        raise DataError(f"{source}: {inputs.shape[1]}-slice stacks but the model takes "
                        f"{segmenter.preprocessing.channels} channels")
    labels = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start:start + batch_size]
        logits = predict_logits(segmenter.model, segmenter._inputs(batch), segmenter.tta)  # (B, K, h, w)
        logits = F.interpolate(logits, size=batch.shape[-2:], mode="bilinear", align_corners=False)
        labels.append(logits.argmax(dim=1).cpu())
    labels = restack(torch.cat(labels).numpy()).astype(numpy.int64)
    if grid is not volume:  # back to the scan's own grid
        labels = resample(Volume(labels, grid.affine, {}), mask=True, shape=volume.shape).data
    return volume, labels


def write_volume_prediction(labels: numpy.ndarray, volume, out: str | Path) -> Path:
    """The class indices as a NIfTI (uint8, or int16 beyond 255 classes) in the input's orientation and affine."""
    from cnnkit.data.medical.nifti import write_like

    dtype = numpy.uint8 if labels.max(initial=0) < 256 else numpy.int16
    return write_like(labels.astype(dtype), volume, out)


def evaluate_volume(segmenter, labels: numpy.ndarray, volume, mask_path: str | Path, distances: bool = True,
                    image: str | Path | None = None) -> dict:
    """Dice per structure, HD95 and ASSD (mm) of `labels` against the mask volume at `mask_path`.

    Args:
        mask_path: A NIfTI label volume on the image's grid, or a DICOM SEG made on the image.
        image: The file or series folder `labels` were predicted on, where a SEG's frames are placed
            (default: the one `volume` was read from).
    """
    from cnnkit.data.medical.slices import read_mask
    from cnnkit.metrics.surface import volume_metrics

    truth = read_mask(mask_path, image if image is not None else volume.meta.get("source"), labels.shape)
    return volume_metrics(labels, truth.data, segmenter.classes, volume.spacing, distances=distances)


def volume_metrics_text(metrics: dict) -> str:
    """Per-structure lines: Dice, HD95, ASSD, voxels; then the means."""
    def show(value, digits=4):
        return "-" if value is None else ("inf" if value == float("inf") else f"{value:.{digits}f}")

    rows = metrics["per_structure"]
    width = max([len("structure"), *(len(name) for name in rows)])
    lines = [f"{'structure'.ljust(width)}  dice    hd95_mm  assd_mm  true_voxels"]
    for name, entry in rows.items():
        lines.append(f"{name.ljust(width)}  {show(entry['dice']).ljust(6)}  {show(entry.get('hd95_mm'), 2).ljust(7)}  "
                     f"{show(entry.get('assd_mm'), 2).ljust(7)}  {entry['true_voxels']}")
    lines.append(f"mean over {metrics['structures']} structure(s): Dice {show(metrics['mean_dice'])}"
                 + (f", HD95 {show(metrics.get('mean_hd95_mm'), 2)} mm, ASSD {show(metrics.get('mean_assd_mm'), 2)} mm"
                    if "mean_hd95_mm" in metrics else ""))
    return "\n".join(lines)


def evaluate_studies(segmenter, config, split: str) -> list[dict]:
    """Per study of `split` (a run trained on a study layout): the volume predicted slice by slice and scored
    in 3-D against its mask (a NIfTI, or a DICOM SEG placed on the study's image), on the study's slab when it
    has one: Dice per structure, HD95, ASSD (mm)."""
    import json

    from cnnkit.data.medical.slices import prepare_slices, read_mask
    from cnnkit.metrics.surface import volume_metrics

    root = prepare_slices(config.data, config.window, config.slice_stack, config.val_fraction, config.seed,
                          config.empty_slice_fraction, config.voxel_spacing)
    info = json.loads((root / "medical.json").read_text(encoding="utf-8"))
    results, cache = [], {}
    for study in info["studies"]:
        if study["split"] != split:
            continue
        if study["image"] not in cache:  # slabs of one volume are predicted once
            cache[study["image"]] = predict_volume(segmenter, study["image"])
        volume, labels = cache[study["image"]]
        truth = read_mask(study["mask"], study["image"], labels.shape).data
        first, last = study["slices"] or (0, labels.shape[2])
        metrics = volume_metrics(labels[:, :, first:last], truth[:, :, first:last], segmenter.classes, volume.spacing)
        results.append({"patient": study["patient"], "image": study["image"], "slices": [first, last], **metrics})
    return results
