"""NIfTI volumes (.nii, .nii.gz) through nibabel: read into canonical RAS with the spacing kept, write back.

`read_nifti` returns a `Volume` reoriented to the closest canonical RAS (axes permuted and flipped by
nibabel's orientation tools, never resampled), with the file's scaled values (scl_slope/scl_inter applied by
nibabel) as float32 for images, or the integers as they are for masks. `write_nifti` writes voxels with an
affine; `write_like` writes a prediction made on the canonical volume back in the original file's
orientation and affine, so it overlays the input in any viewer.
"""

from __future__ import annotations

from pathlib import Path

import numpy

from cnnkit.data.medical.volumes import Volume, canonical, nibabel_module, restore_orientation
from cnnkit.errors import DataError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: str | Path) -> bool:
    name = str(path).lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def read_nifti(path: str | Path, mask: bool = False) -> Volume:
    """Read a 3-D NIfTI (a 4-D file with one volume is accepted) as a canonical RAS `Volume`.

    Args:
        path: A .nii or .nii.gz file.
        mask: Keep integer voxels as int64 class indices (refusing fractional values) instead of float32.

    Raises:
        DataError: Naming the file: missing, unreadable, not 3-D, or a mask with fractional values.
    """
    nibabel = nibabel_module()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"NIfTI file not found: {path}")
    try:
        image = nibabel.load(str(path))
        data = numpy.asanyarray(image.dataobj)
    except Exception as error:  # noqa: BLE001 - nibabel raises ImageFileError, EOFError, zlib errors ...
        raise DataError(f"cannot read NIfTI file {path}: {error}; it may be truncated or not NIfTI") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"NIfTI file {path} has shape {data.shape}; cnnkit reads 3-D volumes (one per file)")
    if mask:
        if numpy.issubdtype(data.dtype, numpy.floating):
            if not numpy.all(numpy.isfinite(data)) or not numpy.array_equal(data, numpy.round(data)):
                raise DataError(f"mask {path} has fractional values: a mask holds integer class indices "
                                "(0 background, 1, 2 ... structures)")
        data = data.astype(numpy.int64)
    else:
        data = data.astype(numpy.float32)
    affine = numpy.asarray(image.affine, dtype=numpy.float64)
    return canonical(Volume(data, affine, {"source": str(path)}))


def write_nifti(data: numpy.ndarray, affine, path: str | Path) -> Path:
    """Write (X, Y, Z) voxels with their affine to .nii/.nii.gz (uint8/int16 masks stay integers)."""
    nibabel = nibabel_module()
    path = Path(path)
    if not is_nifti(path):
        raise DataError(f"{path}: NIfTI output must end in .nii or .nii.gz")
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nibabel.Nifti1Image(numpy.asarray(data), numpy.asarray(affine, dtype=numpy.float64))
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    nibabel.save(image, str(path))
    return path


def write_like(data: numpy.ndarray, volume: Volume, path: str | Path) -> Path:
    """Write voxels made on canonical `volume` in the orientation and affine of the file it came from."""
    original = volume.meta.get("original_affine")
    if original is None:
        return write_nifti(data, volume.affine, path)
    return write_nifti(restore_orientation(data, original), numpy.asarray(original), path)
