"""Volumes (X, Y, Z) in RAS with their affine: 2-D slices, 2.5-D stacks, restacking and resampling.

A `Volume` is a voxel array, a 4x4 affine (voxel index -> millimetres, RAS: x to the patient's Right,
y Anterior, z Superior) and a little metadata. Readers (`read_nifti`, `read_series`) return volumes in the
closest canonical RAS orientation (nibabel's `as_closest_canonical`: axes permuted and flipped, never
interpolated), so axis 2 is always inferior -> superior and an axial slice is `data[:, :, k]`, whatever
order the scanner wrote. `meta["original_affine"]` keeps the file's own affine, so predictions can be
written back in the input's orientation (`restore_orientation`).

Slices as images: an axial slice (X, Y) is shown as an image (H, W) = flipud(slice.T): anterior at the
top, the patient's left on the image's left (neurological convention). `volume_slices` and
`stack_volume` cut a volume into such images; `restack` puts images back into (X, Y, Z) and is the exact
inverse (tests check the round trip).

2.5-D stacks: slice k with its k // 2 neighbours on each side as channels, (K, H, W) per slice; at the
volume's ends the edge slice is repeated (a stack never reads outside the volume). K = 1 is plain 2-D.

Resampling (`resample`) to a fixed spacing uses torch's trilinear interpolation (nearest neighbour for
masks) with align_corners=False, and moves the affine with it so voxel centres stay where they are in mm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy
import torch
import torch.nn.functional as F

from cnnkit.errors import DataError


@dataclass
class Volume:
    """A voxel array with its affine.

    Attributes:
        data: (X, Y, Z) array (scanner units for images, class indices for masks).
        affine: (4, 4) float64, voxel index -> RAS millimetres.
        meta: Source, patient, window, original_affine ...
    """

    data: numpy.ndarray
    affine: numpy.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis (the affine's column lengths)."""
        return tuple(float(v) for v in numpy.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


def nibabel_module():
    """nibabel, or a DataError saying how to install it."""
    try:
        import nibabel
    except ImportError:
        raise DataError("reading NIfTI needs nibabel: pip install 'cnnkit[medical]' (or pip install nibabel)") from None
    return nibabel


def canonical(volume: Volume) -> Volume:
    """The volume in the closest canonical RAS orientation (axes permuted/flipped, no interpolation)."""
    nibabel = nibabel_module()
    from nibabel import orientations

    if volume.data.ndim != 3:
        raise DataError(f"{volume.meta.get('source', 'volume')}: expected a 3-D volume, got shape {volume.data.shape}")
    current = orientations.io_orientation(volume.affine)
    target = orientations.axcodes2ornt(("R", "A", "S"))
    transform = orientations.ornt_transform(current, target)
    data = orientations.apply_orientation(volume.data, transform)
    affine = volume.affine @ orientations.inv_ornt_aff(transform, volume.data.shape)
    meta = {**volume.meta, "original_affine": volume.meta.get("original_affine", volume.affine.tolist()),
            "original_shape": volume.meta.get("original_shape", list(volume.data.shape))}
    del nibabel
    return Volume(numpy.ascontiguousarray(data), affine, meta)


def restore_orientation(data: numpy.ndarray, original_affine) -> numpy.ndarray:
    """Canonical (RAS) voxels -> the original file's axis order and directions (the inverse of `canonical`)."""
    from nibabel import orientations

    original = orientations.io_orientation(numpy.asarray(original_affine, dtype=float))
    ras = orientations.axcodes2ornt(("R", "A", "S"))
    return numpy.ascontiguousarray(orientations.apply_orientation(data, orientations.ornt_transform(ras, original)))


def slice_image(volume_data: numpy.ndarray, index: int) -> numpy.ndarray:
    """Axial slice `index` of (X, Y, Z) data as an (H, W) = (Y, X) image (see the module docstring)."""
    return numpy.flipud(volume_data[:, :, index].T)


def volume_slices(volume_data: numpy.ndarray) -> numpy.ndarray:
    """(X, Y, Z) -> (Z, H, W) images, one per axial slice."""
    return numpy.ascontiguousarray(numpy.flip(volume_data.transpose(2, 1, 0), axis=1))


def restack(images: numpy.ndarray) -> numpy.ndarray:
    """(Z, H, W) slice images -> (X, Y, Z) voxels: the inverse of `volume_slices`."""
    images = numpy.asarray(images)
    if images.ndim != 3:
        raise DataError(f"restack takes (slices, H, W) images, got shape {images.shape}")
    return numpy.ascontiguousarray(numpy.flip(images, axis=1).transpose(2, 1, 0))


def stack_indices(num_slices: int, index: int, stack: int) -> list[int]:
    """The slice indices of the 2.5-D stack centred on `index` (edges repeated)."""
    if stack < 1 or stack % 2 == 0:
        raise DataError(f"slice stacks have an odd number of slices (1, 3, 5 ...), got {stack}")
    half = stack // 2
    return [min(max(index + offset, 0), num_slices - 1) for offset in range(-half, half + 1)]


def stack_slices(images: numpy.ndarray, stack: int) -> numpy.ndarray:
    """(Z, H, W) images -> (Z, K, H, W) 2.5-D stacks: slice z and its neighbours as channels."""
    images = numpy.asarray(images)
    order = numpy.array([stack_indices(len(images), z, stack) for z in range(len(images))])  # (Z, K)
    return images[order]


def stack_volume(volume_data: numpy.ndarray, stack: int = 1) -> numpy.ndarray:
    """(X, Y, Z) -> (Z, K, H, W): every axial slice as a K-slice stack."""
    return stack_slices(volume_slices(volume_data), stack)


def resample(volume: Volume, spacing: float | tuple[float, float, float] | None = None, mask: bool = False,
             shape: tuple[int, int, int] | None = None) -> Volume:
    """The volume at a new voxel spacing (mm), or on a grid of `shape`; trilinear for images, nearest for masks.

    The new shape is the old extent / spacing rounded to whole voxels, so the spacing reached is the nearest
    that tiles the same extent. The affine is rescaled about the first voxel's corner, so the volume covers
    the same millimetres (resampling back with the old shape returns to the old grid).
    """
    if shape is None:
        if spacing is None:
            raise DataError("resample needs a spacing or a shape")
        target = numpy.broadcast_to(numpy.asarray(spacing, dtype=float), (3,))
        if (target <= 0).any():
            raise DataError(f"spacing must be positive, got {spacing}")
        old = numpy.asarray(volume.spacing)
        shape = numpy.maximum(1, numpy.round(numpy.asarray(volume.shape) * old / target)).astype(int)
    shape = numpy.asarray(shape, dtype=int)
    values = torch.from_numpy(numpy.ascontiguousarray(volume.data).astype(numpy.float32))[None, None]
    mode = "nearest-exact" if mask else "trilinear"
    kwargs = {} if mask else {"align_corners": False}
    resized = F.interpolate(values, size=tuple(int(s) for s in shape), mode=mode, **kwargs)[0, 0].numpy()
    if mask:
        resized = resized.round().astype(volume.data.dtype)
    scale = numpy.asarray(volume.shape) / shape  # old voxels per new voxel, per axis
    change = numpy.eye(4)
    change[:3, :3] = numpy.diag(scale)
    change[:3, 3] = (scale - 1) / 2  # new voxel i's centre sits at old index (i + 0.5) * scale - 0.5
    return Volume(resized, volume.affine @ change, {**volume.meta, "resampled_shape": shape.tolist()})
