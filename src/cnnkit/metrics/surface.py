"""Volume segmentation metrics: Dice per structure, Hausdorff-95 and average symmetric surface distance.

Pixel-pooled Dice (cnnkit.metrics.segmentation) says how much of a structure overlaps; surface distances
say how far its boundary is off, in millimetres, which is what a radiotherapy margin or a surgeon cares
about. All take two label volumes on one grid and the voxel spacing (mm per axis).

    Dice_k     = 2 |P_k & T_k| / (|P_k| + |T_k|)                           per structure k, per volume
    surface(M) = voxels of M with a 6-neighbour outside M (M minus its erosion by a cross)
    d(a, B)    = distance in mm from voxel a to the nearest voxel of surface(B)  (Euclidean, spacing-aware)
    HD95       = max(95th percentile of d(a, T) over a in surface(P), 95th percentile of d(b, P) over b in surface(T))
    ASSD       = mean of all d(a, T) and d(b, P) together

HD95 takes the 95th percentile of each direction and then the larger one (MONAI's and the Medical
Segmentation Decathlon's convention), so a few stray voxels do not dominate it as they do the plain
Hausdorff distance (the 100th percentile, `percentile=100`). Edge cases: both masks empty -> None (nothing
to measure); exactly one empty -> inf (a missed or invented structure has no finite boundary error).

Distances come from scipy's exact Euclidean distance transform (`scipy.ndimage.distance_transform_edt`
with `sampling=spacing`); scipy is in the `medical` extra. Surfaces use 6-connectivity (face neighbours).
"""

from __future__ import annotations

import math

import numpy

from cnnkit.errors import DataError


def _ndimage():
    try:
        from scipy import ndimage
    except ImportError:
        raise DataError("surface distances need scipy: pip install 'cnnkit[medical]' (or pip install scipy)") from None
    return ndimage


def surface(mask: numpy.ndarray) -> numpy.ndarray:
    """Boolean surface voxels of a boolean mask (voxels with a face neighbour outside the mask)."""
    ndimage = _ndimage()
    mask = numpy.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure, border_value=0)


def surface_distances(prediction: numpy.ndarray, truth: numpy.ndarray,
                      spacing=None) -> tuple[numpy.ndarray, numpy.ndarray]:
    """(distances from the prediction's surface to the truth's, from the truth's to the prediction's), mm."""
    ndimage = _ndimage()
    prediction, truth = numpy.asarray(prediction, dtype=bool), numpy.asarray(truth, dtype=bool)
    if prediction.shape != truth.shape:
        raise DataError(f"prediction {prediction.shape} and truth {truth.shape} must have the same shape")
    spacing = (1.0,) * prediction.ndim if spacing is None else tuple(float(s) for s in spacing)
    predicted_surface, true_surface = surface(prediction), surface(truth)
    to_truth = ndimage.distance_transform_edt(~true_surface, sampling=spacing)
    to_prediction = ndimage.distance_transform_edt(~predicted_surface, sampling=spacing)
    return to_truth[predicted_surface], to_prediction[true_surface]


def _both_directions(prediction, truth, spacing):
    """(forward, backward) surface distances, or the edge case's answer: None (both empty), inf (one empty)."""
    prediction, truth = numpy.asarray(prediction, dtype=bool), numpy.asarray(truth, dtype=bool)
    if not prediction.any() and not truth.any():
        return None
    if not prediction.any() or not truth.any():
        return math.inf
    return surface_distances(prediction, truth, spacing)


def hausdorff(prediction, truth, spacing=None, percentile: float = 95.0) -> float | None:
    """HD95 (or another percentile; 100 = Hausdorff) in mm: see the module docstring for the edge cases."""
    distances = _both_directions(prediction, truth, spacing)
    if not isinstance(distances, tuple):
        return distances
    forward, backward = distances
    return float(max(numpy.percentile(forward, percentile), numpy.percentile(backward, percentile)))


def average_surface_distance(prediction, truth, spacing=None) -> float | None:
    """ASSD in mm: the mean of both directions' surface distances together."""
    distances = _both_directions(prediction, truth, spacing)
    if not isinstance(distances, tuple):
        return distances
    forward, backward = distances
    return float(numpy.concatenate([forward, backward]).mean())


def dice(prediction, truth) -> float | None:
    """Dice of two boolean masks; None when both are empty."""
    prediction, truth = numpy.asarray(prediction, dtype=bool), numpy.asarray(truth, dtype=bool)
    total = int(prediction.sum()) + int(truth.sum())
    return None if total == 0 else 2.0 * int((prediction & truth).sum()) / total


def volume_metrics(prediction: numpy.ndarray, truth: numpy.ndarray, classes: list[str], spacing=None,
                   distances: bool = True) -> dict:
    """Per structure (every class but index 0, the background): Dice, HD95 and ASSD in mm, voxel counts;
    plus their means over the structures present in the truth or the prediction.

    Args:
        prediction, truth: Integer label volumes of one shape.
        classes: Class names, index 0 the background.
        spacing: Voxel size in mm per axis (default 1).
        distances: False skips HD95/ASSD (Dice only; distance transforms of many structures take time).
    """
    prediction, truth = numpy.asarray(prediction), numpy.asarray(truth)
    if prediction.shape != truth.shape:
        raise DataError(f"prediction {prediction.shape} and truth {truth.shape} must have the same shape")
    per_structure = {}
    for index, name in enumerate(classes):
        if index == 0:
            continue
        predicted, true = prediction == index, truth == index
        entry = {"dice": dice(predicted, true), "true_voxels": int(true.sum()), "predicted_voxels": int(predicted.sum())}
        if distances:
            entry["hd95_mm"] = hausdorff(predicted, true, spacing)
            entry["assd_mm"] = average_surface_distance(predicted, true, spacing)
        per_structure[name] = entry
    present = [e for e in per_structure.values() if e["dice"] is not None]
    result = {"per_structure": per_structure, "structures": len(present),
              "mean_dice": float(numpy.mean([e["dice"] for e in present])) if present else None}
    if distances:
        for key in ("hd95_mm", "assd_mm"):
            values = [e[key] for e in present]
            result[f"mean_{key}"] = float(numpy.mean(values)) if values else None
    return result
