"""DICOM SEG files as label volumes on the grid of the image they segment (a DICOM series or a NIfTI).

What the libraries do and what is ours: pydicom reads the file and decodes its frames (1-bit BINARY frames
unpacked, FRACTIONAL frames as 8-bit values). It does not say which slice of which image a frame belongs to:
that mapping is written here, because it is not in pydicom and highdicom (which does it) is not a cnnkit
dependency. The rules:

- A frame goes to the slice of the series whose SOPInstanceUID it references (DerivationImageSequence /
  SourceImageSequence in its per-frame functional group). A frame with no reference, or one to an instance
  the series lacks, goes to the slice whose position along the slice normal (ImagePositionPatient .
  (row x column direction)) is within half the slice spacing of the frame's own; the frame's in-plane origin
  must then be within half a pixel of that slice's. Frames are placed pixel for pixel, so the SEG must
  have the series' rows, columns, orientation and pixel spacing (a SEG on another grid is refused, not
  resampled).
- On a NIfTI image (no UIDs) each frame is placed by geometry: its position and orientation (LPS, turned
  into RAS) through the inverse of the NIfTI affine must land on one voxel slice (within half a voxel), with
  its rows and columns along two voxel axes (one pixel = one voxel) and every pixel inside the volume; its
  first pixel goes to the nearest voxel.
- Segment number k becomes class k (0 is background). Where segments overlap, the higher segment number
  wins. BINARY frames count a pixel when it is 1; FRACTIONAL frames when value >= 0.5 x MaximumFractionalValue.
- Every frame must find its slice: a frame that matches none is an error naming the SEG and the image (a
  partly placed SEG would train on missing structures as background).

The label volume is built in the image reader's own voxel order and affine (`series_layout`, the NIfTI's
array) and passed through the same `canonical`, so its voxels line up with the image volume's one for one.
`meta["segment_labels"]` keeps {number: SegmentLabel} for class names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy

from cnnkit.data.medical.dicom import (_decode_error, dicom_files, pydicom_module, read_dataset, read_dicom,
                                       series_layout)
from cnnkit.data.medical.volumes import Volume, canonical, nibabel_module
from cnnkit.errors import DataError

SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"
LPS_TO_RAS = numpy.diag([-1.0, -1.0, 1.0])


def is_dicom_seg(path: str | Path) -> bool:
    """Whether `path` is a DICOM SEG file (SOPClassUID Segmentation Storage, or Modality SEG); False for
    anything else, unreadable files included."""
    path = Path(path)
    if not path.is_file():
        return False
    pydicom = pydicom_module()
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
    except Exception:  # noqa: BLE001 - not DICOM, truncated ...: not a SEG either
        return False
    return str(dataset.get("SOPClassUID", "")) == SEG_SOP_CLASS_UID or str(dataset.get("Modality", "")) == "SEG"


@dataclass
class Segmentation:
    """A SEG file's frames and, per frame, what places it.

    Attributes:
        path: The file.
        frames: bool (F, rows, cols): the segment's pixels (fractional frames thresholded).
        segments: The segment number of each frame.
        labels: {segment number: SegmentLabel}.
        references: Per frame, the SOPInstanceUIDs of the source images it was derived from.
        positions: Per frame, ImagePositionPatient (LPS, mm) or None.
        orientation: ImageOrientationPatient (row direction, column direction) or None.
        pixel_spacing: (row spacing, column spacing) in mm, or None.
    """

    path: Path
    frames: numpy.ndarray
    segments: list[int]
    labels: dict[int, str]
    references: list[list[str]]
    positions: list[numpy.ndarray | None]
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None


def _item(group, name: str):
    """The first item of sequence `name` in a functional group (None when absent)."""
    sequence = group.get(name) if group is not None else None
    return sequence[0] if sequence else None


def read_segmentation(path: str | Path) -> Segmentation:
    """Read a DICOM SEG: its frames (thresholded), segment numbers, labels, and each frame's references.

    Raises:
        DataError: Naming the file: unreadable, not a SEG, no frames, undecodable pixel data.
    """
    path = Path(path)
    dataset = read_dataset(path)
    modality, sop_class = str(dataset.get("Modality", "") or ""), str(dataset.get("SOPClassUID", "") or "")
    if (sop_class != SEG_SOP_CLASS_UID and modality != "SEG") or "SegmentSequence" not in dataset:
        raise DataError(f"{path} is not a DICOM SEG (Modality {modality or 'unknown'}, SOP class "
                        f"{getattr(dataset.get('SOPClassUID'), 'name', sop_class) or 'unknown'}): a study's mask is "
                        "a NIfTI label volume on the image's grid or a DICOM SEG made on the image series")
    if "PixelData" not in dataset:
        raise DataError(f"DICOM SEG {path} has no pixel data (no frames); export the segmentation again")
    try:
        values = dataset.pixel_array
    except Exception as error:  # noqa: BLE001 - decoder plugins raise RuntimeError, ValueError, NotImplementedError
        raise _decode_error(path, dataset, error) from None
    values = values[None] if values.ndim == 2 else values  # one frame: (rows, cols) -> (1, rows, cols)
    if str(dataset.get("SegmentationType", "BINARY")).upper() == "FRACTIONAL":
        maximum = float(dataset.get("MaximumFractionalValue", 255) or 255)
        frames = values.astype(numpy.float32) >= 0.5 * maximum
    else:
        frames = values > 0
    labels = {int(item.SegmentNumber): str(item.get("SegmentLabel", "") or f"segment_{int(item.SegmentNumber)}")
              for item in dataset.SegmentSequence}
    shared = _item(dataset, "SharedFunctionalGroupsSequence")
    per_frame = list(dataset.get("PerFrameFunctionalGroupsSequence", []))[:len(frames)]  # trimmed files keep more
    per_frame += [None] * (len(frames) - len(per_frame))
    segments, references, positions = [], [], []
    for group in per_frame:
        identification = _item(group, "SegmentIdentificationSequence") or _item(shared, "SegmentIdentificationSequence")
        segments.append(int(identification.ReferencedSegmentNumber) if identification else 1)
        uids = []
        for derivation in (group.get("DerivationImageSequence", []) if group is not None else []):
            uids += [str(source.ReferencedSOPInstanceUID) for source in derivation.get("SourceImageSequence", [])
                     if "ReferencedSOPInstanceUID" in source]
        references.append(uids)
        plane = _item(group, "PlanePositionSequence")
        position = plane.get("ImagePositionPatient") if plane is not None else None
        positions.append(numpy.array([float(v) for v in position]) if position else None)
    plane = _item(shared, "PlaneOrientationSequence") or _item(per_frame[0], "PlaneOrientationSequence")
    orientation = (plane.get("ImageOrientationPatient") if plane is not None else None) or \
        dataset.get("ImageOrientationPatient")
    measures = _item(shared, "PixelMeasuresSequence") or _item(per_frame[0], "PixelMeasuresSequence")
    spacing = (measures.get("PixelSpacing") if measures is not None else None) or dataset.get("PixelSpacing")
    return Segmentation(path, frames, segments, labels, references, positions,
                        tuple(float(v) for v in orientation) if orientation else None,
                        tuple(float(v) for v in spacing) if spacing else None)


def read_seg_volume(path: str | Path, image: str | Path) -> Volume:
    """A DICOM SEG as an int64 label volume on the canonical grid of `image` (see the module docstring).

    Args:
        path: The SEG file.
        image: What it segments: a DICOM series folder (as `read_series` reads it) or a NIfTI file.

    Raises:
        DataError: Naming both files: not a SEG, another geometry (rows/columns, orientation, spacing),
            frames that reference no slice of the image.
    """
    from cnnkit.data.medical.nifti import is_nifti

    segmentation = read_segmentation(path)
    image = Path(image)
    if image.is_dir():
        data, affine = _on_series(segmentation, image)
    elif is_nifti(image):
        data, affine = _on_nifti(segmentation, image)
    else:
        raise DataError(f"the image of SEG {path} must be a DICOM series folder or a NIfTI file, not {image}")
    meta = {"source": str(path), "image": str(image), "segment_labels": dict(sorted(segmentation.labels.items()))}
    return canonical(Volume(data, affine, meta))


def _paint(target: numpy.ndarray, frame: numpy.ndarray, number: int) -> None:
    """Write segment `number` where `frame` is set; a higher number already there stays (overlaps)."""
    target[frame] = numpy.maximum(target[frame], number)


def _on_series(segmentation: Segmentation, folder: Path) -> tuple[numpy.ndarray, numpy.ndarray]:
    """(cols, rows, slices) labels in `series_layout`'s order and its affine (what read_series transposes)."""
    seg = segmentation.path
    headers, affine = series_layout([read_dicom(file, pixels=False) for file in dicom_files(folder)])
    first = headers[0]
    rows, columns = first.extra["rows"], first.extra["columns"]
    if segmentation.frames.shape[1:] != (rows, columns):
        raise DataError(f"SEG {seg} has frames of {segmentation.frames.shape[1]}x{segmentation.frames.shape[2]} "
                        f"pixels but the series {folder} has {rows}x{columns}: it was made on another image grid; "
                        "export the SEG on this series (or resample it with highdicom) first")
    if segmentation.orientation and first.orientation and \
            numpy.abs(numpy.subtract(segmentation.orientation, first.orientation)).max() > 1e-3:
        raise DataError(f"SEG {seg} has orientation {segmentation.orientation} but the series {folder} has "
                        f"{first.orientation}: frames are placed pixel for pixel, so they must share the orientation")
    if segmentation.pixel_spacing and first.pixel_spacing and \
            not numpy.allclose(segmentation.pixel_spacing, first.pixel_spacing, rtol=1e-3):
        raise DataError(f"SEG {seg} has pixel spacing {segmentation.pixel_spacing} mm but the series {folder} has "
                        f"{first.pixel_spacing} mm: it was made on another image grid")
    row_dir, col_dir = numpy.array(first.orientation or (1, 0, 0, 0, 1, 0), dtype=float).reshape(2, 3)
    normal = numpy.cross(row_dir, col_dir)
    row_spacing, col_spacing = first.pixel_spacing or (1.0, 1.0)
    by_uid = {header.extra["sop_instance_uid"]: z for z, header in enumerate(headers)}
    located = all(header.position is not None for header in headers)
    heights = numpy.array([numpy.dot(header.position, normal) for header in headers]) if located else None
    tolerance = float(numpy.linalg.norm(affine[:3, 2])) / 2  # half the slice spacing
    labels = numpy.zeros((len(headers), rows, columns), dtype=numpy.int64)  # (Z, rows, cols) as read_series stacks
    unplaced = []
    for index, (frame, number) in enumerate(zip(segmentation.frames, segmentation.segments)):
        position = segmentation.positions[index]
        z = next((by_uid[uid] for uid in segmentation.references[index] if uid in by_uid), None)
        if z is None and position is not None and heights is not None:
            nearest = int(numpy.argmin(numpy.abs(heights - numpy.dot(position, normal))))
            z = nearest if abs(heights[nearest] - numpy.dot(position, normal)) < tolerance else None
        if z is None:
            unplaced.append(index)
            continue
        if position is not None and headers[z].position is not None:
            shift = numpy.asarray(position) - numpy.asarray(headers[z].position)
            pixels = (numpy.dot(shift, col_dir) / row_spacing, numpy.dot(shift, row_dir) / col_spacing)
            if max(abs(pixels[0]), abs(pixels[1])) >= 0.5:
                raise DataError(f"SEG {seg}: frame {index + 1} is shifted by ({pixels[0]:.2f}, {pixels[1]:.2f}) pixels "
                                f"(rows, columns) from its slice {headers[z].path.name} of {folder}; it was made on "
                                "another image grid")
        _paint(labels[z], frame, number)
    _check_placed(segmentation, unplaced, folder, "slice of the series (by referenced SOPInstanceUID or by position "
                  f"along the slice normal within {tolerance:.3g} mm)")
    return numpy.ascontiguousarray(labels.transpose(2, 1, 0)), affine  # (Z, rows, cols) -> (cols, rows, Z)


def _check_placed(segmentation: Segmentation, unplaced: list[int], image: Path, what: str) -> None:
    if not unplaced:
        return
    total = len(segmentation.frames)
    example = unplaced[0]
    found = segmentation.references[example][:1] or ["none"]
    position = segmentation.positions[example]
    detail = (f"frame {example + 1} references {found[0]}, position "
              f"{'none' if position is None else tuple(round(float(v), 3) for v in position)}")
    if len(unplaced) == total:
        raise DataError(f"SEG {segmentation.path} matches no {what} of {image} ({detail}): it segments another "
                        "image; pair it with the series it was made on")
    raise DataError(f"SEG {segmentation.path}: {len(unplaced)} of its {total} frames match no {what} of {image} "
                    f"({detail}); is the series complete? Pair the SEG with the full series it was made on")


def _on_nifti(segmentation: Segmentation, path: Path) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Labels on the NIfTI file's own voxel array and its affine (what read_nifti passes to canonical)."""
    nibabel = nibabel_module()
    seg = segmentation.path
    try:
        header = nibabel.load(str(path))
    except Exception as error:  # noqa: BLE001 - nibabel raises ImageFileError, EOFError, zlib errors ...
        raise DataError(f"cannot read NIfTI file {path}: {error}; it may be truncated or not NIfTI") from None
    shape = header.shape[:3] if len(header.shape) == 3 or (len(header.shape) == 4 and header.shape[3] == 1) else None
    if shape is None:
        raise DataError(f"NIfTI file {path} has shape {header.shape}; cnnkit reads 3-D volumes (one per file)")
    affine = numpy.asarray(header.affine, dtype=numpy.float64)
    if segmentation.orientation is None or segmentation.pixel_spacing is None or \
            any(position is None for position in segmentation.positions):
        raise DataError(f"SEG {seg} lacks the frame positions, orientation or pixel spacing that place it on the NIfTI "
                        f"{path}; pair it with its DICOM series folder instead")
    inverse = numpy.linalg.inv(affine)
    row_dir, col_dir = numpy.array(segmentation.orientation).reshape(2, 3)
    row_spacing, col_spacing = segmentation.pixel_spacing
    rows, columns = segmentation.frames.shape[1:]
    # One pixel step along a row (next column) and down a column (next row), in voxel index units.
    column_step = inverse[:3, :3] @ (LPS_TO_RAS @ row_dir * col_spacing)
    row_step = inverse[:3, :3] @ (LPS_TO_RAS @ col_dir * row_spacing)
    column_axis, row_axis = int(numpy.argmax(numpy.abs(column_step))), int(numpy.argmax(numpy.abs(row_step)))
    column_sign, row_sign = numpy.sign(column_step[column_axis]), numpy.sign(row_step[row_axis])
    aligned = column_axis != row_axis and \
        numpy.abs(column_step - column_sign * numpy.eye(3)[column_axis]).max() * columns < 0.5 and \
        numpy.abs(row_step - row_sign * numpy.eye(3)[row_axis]).max() * rows < 0.5
    if not aligned:
        raise DataError(f"SEG {seg}: its pixel grid (orientation {segmentation.orientation}, spacing "
                        f"{segmentation.pixel_spacing} mm) does not follow the voxel axes of the NIfTI {path}; pair it "
                        "with the DICOM series it was made on, or export the mask as a NIfTI on this grid")
    slice_axis = 3 - column_axis - row_axis
    labels = numpy.zeros(shape, dtype=numpy.int64)
    unplaced = []
    for index, (frame, number) in enumerate(zip(segmentation.frames, segmentation.segments)):
        start = inverse[:3, :3] @ (LPS_TO_RAS @ segmentation.positions[index]) + inverse[:3, 3]
        corner = numpy.rint(start).astype(int)
        if abs(start[slice_axis] - corner[slice_axis]) >= 0.5 or not 0 <= corner[slice_axis] < shape[slice_axis]:
            unplaced.append(index)
            continue
        column_index = corner[column_axis] + int(column_sign) * numpy.arange(columns)
        row_index = corner[row_axis] + int(row_sign) * numpy.arange(rows)
        if min(column_index.min(), row_index.min()) < 0 or column_index.max() >= shape[column_axis] or \
                row_index.max() >= shape[row_axis]:
            raise DataError(f"SEG {seg}: frame {index + 1} ({rows}x{columns} pixels) reaches outside the NIfTI {path} "
                            f"of shape {tuple(shape)}: it was made on another image grid")
        where: list = [None, None, None]
        where[slice_axis], where[column_axis], where[row_axis] = corner[slice_axis], column_index[None, :], \
            row_index[:, None]
        view = labels[tuple(where)]  # (rows, cols), a copy (fancy indexing)
        _paint(view, frame, number)
        labels[tuple(where)] = view
    _check_placed(segmentation, unplaced, path, "voxel slice (by position, within half a voxel)")
    return labels, affine
