"""DICOM files and series -> scanner values (HU for CT), windowed [0, 1] images, and RAS volumes.

Reading uses pydicom (`pip install 'cnnkit[medical]'`); what it adds is the order of operations and the
errors. A file's stored integers become model input in three steps, each DICOM's own:

1. Modality LUT (PS3.3 C.11.1): `RescaleSlope * stored + RescaleIntercept` (or a Modality LUT Sequence),
   by `pydicom.pixels.apply_modality_lut`. For CT this gives Hounsfield units (CT_small: intercept -1024,
   so stored 0 is air at -1024 HU). Enhanced multi-frame files keep the rescale in functional groups
   (PixelValueTransformationSequence, per frame or shared), where pydicom 3.0's function does not look:
   cnnkit applies each frame's own slope and intercept (`_modality_values`).
2. VOI / window (PS3.3 C.11.2): `cnnkit.data.medical.windowing` (a preset, C,W, the file's own window,
   percentile clipping), giving float32 in [0, 1].
3. MONOCHROME1 (bright = low values, common in X-ray): inverted after windowing, 1 - x, so bone is bright
   whatever the file's photometric interpretation (forgetting this is the classic "my X-ray is a negative").

Multi-frame files give (frames, H, W). A series (one folder of single-frame files) is sorted along the slice
normal (ImagePositionPatient . (row x column direction)), falling back to InstanceNumber, and becomes a
`Volume` in RAS orientation with its spacing (`read_series`); `series_layout` (that order and affine) is
shared with the DICOM SEG reader (cnnkit.data.medical.seg), so a SEG's label volume lines up with the series.

Errors name the file and what to do: not a DICOM file, no pixel data (RT plans, structured reports),
truncated pixel data, and compressed transfer syntaxes whose decoder is not installed (the message names
the pip packages that decode it, e.g. JPEG-LS -> pylibjpeg pylibjpeg-libjpeg).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy

from cnnkit.data.medical.windowing import Window, apply_window, parse_window
from cnnkit.errors import DataError

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")

# Transfer syntax UID -> (name, what decodes it). pydicom decodes the uncompressed and RLE ones itself.
DECODERS = {
    "1.2.840.10008.1.2.4.50": ("JPEG Baseline", "pillow (installed with cnnkit) or pylibjpeg pylibjpeg-libjpeg"),
    "1.2.840.10008.1.2.4.51": ("JPEG Extended (12-bit)", "pylibjpeg pylibjpeg-libjpeg"),
    "1.2.840.10008.1.2.4.57": ("JPEG Lossless", "pylibjpeg pylibjpeg-libjpeg"),
    "1.2.840.10008.1.2.4.70": ("JPEG Lossless SV1", "pylibjpeg pylibjpeg-libjpeg"),
    "1.2.840.10008.1.2.4.80": ("JPEG-LS Lossless", "pylibjpeg pylibjpeg-libjpeg (or pyjpegls)"),
    "1.2.840.10008.1.2.4.81": ("JPEG-LS Near-Lossless", "pylibjpeg pylibjpeg-libjpeg (or pyjpegls)"),
    "1.2.840.10008.1.2.4.90": ("JPEG 2000 Lossless", "pylibjpeg pylibjpeg-openjpeg (or pillow with OpenJPEG)"),
    "1.2.840.10008.1.2.4.91": ("JPEG 2000", "pylibjpeg pylibjpeg-openjpeg (or pillow with OpenJPEG)"),
    "1.2.840.10008.1.2.4.201": ("HTJ2K Lossless", "pylibjpeg pylibjpeg-openjpeg"),
    "1.2.840.10008.1.2.4.202": ("HTJ2K Lossless RPCL", "pylibjpeg pylibjpeg-openjpeg"),
    "1.2.840.10008.1.2.4.203": ("HTJ2K", "pylibjpeg pylibjpeg-openjpeg"),
    "1.2.840.10008.1.2.5": ("RLE Lossless", "pydicom itself (or pylibjpeg-rle, faster)"),
}


def pydicom_module():
    """pydicom, or a DataError saying how to install it."""
    try:
        import pydicom
    except ImportError:
        raise DataError("reading DICOM needs pydicom: pip install 'cnnkit[medical]' (or pip install pydicom)") from None
    return pydicom


@dataclass
class DicomImage:
    """One DICOM file's pixels and the tags cnnkit uses.

    Attributes:
        path: The file.
        values: float32 (frames, H, W) after the modality LUT (HU for CT); (frames, H, W, 3) for colour.
        photometric: PhotometricInterpretation (MONOCHROME1, MONOCHROME2, RGB ...).
        window: The file's first (Window Center, Window Width), or None.
        pixel_spacing: (row spacing, column spacing) in mm, or None.
        position: ImagePositionPatient (x, y, z) in mm (LPS), or None.
        orientation: ImageOrientationPatient (row direction, column direction), 6 numbers, or None.
        patient_id, study_uid, series_uid, modality: Identifying tags ("" when absent).
        instance_number: InstanceNumber, or 0.
    """

    path: Path
    values: numpy.ndarray
    photometric: str
    window: tuple[float, float] | None
    pixel_spacing: tuple[float, float] | None
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    patient_id: str = ""
    study_uid: str = ""
    series_uid: str = ""
    modality: str = ""
    instance_number: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def is_color(self) -> bool:
        return self.values.ndim == 4

    def windowed(self, window: Window | str | None = "dicom") -> numpy.ndarray:
        """float32 (frames, H, W) in [0, 1]: the window applied, MONOCHROME1 inverted; colour -> luma / 255."""
        if self.is_color:
            luma = self.values @ numpy.array([0.299, 0.587, 0.114], dtype=numpy.float32)
            return numpy.clip(luma / 255.0, 0, 1).astype(numpy.float32)
        scaled = apply_window(self.values, parse_window(window) if not isinstance(window, Window) else window,
                              self.window)
        return 1.0 - scaled if self.photometric == "MONOCHROME1" else scaled


def _first(value) -> float:
    """A DS tag that may hold several values (alternative windows): the first, as float."""
    try:
        return float(value[0]) if isinstance(value, (list, tuple)) or getattr(value, "VM", 1) > 1 else float(value)
    except TypeError:
        return float(value)


def _decode_error(path: Path, dataset, error: Exception) -> DataError:
    """The DataError for pixel data pydicom could not decode: missing decoder, truncated, or other."""
    syntax = str(getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", "") or "")
    text = str(error)
    if "less than expected" in text or "truncated" in text.lower() or "end of file" in text.lower():
        return DataError(f"DICOM file {path} is truncated: its pixel data is shorter than its rows x columns x "
                         f"frames say ({text.splitlines()[0]}); copy the file again or remove it")
    if syntax in DECODERS and ("missing" in text or "plugin" in text or "decod" in text.lower()):
        name, packages = DECODERS[syntax]
        return DataError(f"DICOM file {path} is compressed as {name} ({syntax}) and no installed decoder reads it; "
                         f"install one: pip install {packages.split(' (')[0]}  (alternatives: {packages})")
    return DataError(f"cannot decode the pixel data of DICOM file {path}: {text.splitlines()[0] if text else error!r}")


def read_dataset(path: str | Path, pixels: bool = True):
    """pydicom's Dataset of one file (pixel data not decoded yet), or a DataError naming the file.

    Args:
        path: A DICOM Part 10 file.
        pixels: False stops before the pixel data (a header read).

    Raises:
        DataError: The file is missing, a folder, not DICOM, or unreadable.
    """
    pydicom = pydicom_module()
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except FileNotFoundError:
        raise DataError(f"DICOM file not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder: read a series with read_series (cnnkit.data.medical)") from None
    except InvalidDicomError as error:
        raise DataError(f"{path} is not a DICOM file ({error}); a DICOM file has 'DICM' at byte 128") from None
    except Exception as error:  # noqa: BLE001 - pydicom raises struct.error, EOFError, ValueError on bad files
        raise DataError(f"cannot read DICOM file {path}: {error}; it may be truncated or corrupt") from None


def _frame_rescale(dataset, frame: int) -> tuple[float, float] | None:
    """(slope, intercept) of one frame of an enhanced multi-frame file: its own functional group first, then
    the shared one; None when neither holds a PixelValueTransformationSequence."""
    groups = []
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        groups.append(per_frame[frame])
    shared = dataset.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    for group in groups:
        transformation = group.get("PixelValueTransformationSequence")
        if transformation and "RescaleSlope" in transformation[0]:
            item = transformation[0]
            return float(item.RescaleSlope), float(item.get("RescaleIntercept", 0.0))
    return None


def _modality_values(stored: numpy.ndarray, dataset, frames: int) -> numpy.ndarray:
    """float32 (frames, H, W) after the modality LUT: pydicom's apply_modality_lut, or each frame's own
    rescale from the functional groups of an enhanced multi-frame file without a top-level one."""
    from pydicom.pixels import apply_modality_lut

    if "RescaleSlope" not in dataset and "ModalityLUTSequence" not in dataset:
        rescales = [_frame_rescale(dataset, frame) for frame in range(frames)]
        if any(rescale is not None for rescale in rescales):
            values = stored.astype(numpy.float32)  # a copy: the file's array is left as decoded
            for frame, rescale in enumerate(rescales):
                if rescale is not None:
                    values[frame] = values[frame] * rescale[0] + rescale[1]
            return values
    return apply_modality_lut(stored, dataset).astype(numpy.float32)


def read_dicom(path: str | Path, pixels: bool = True) -> DicomImage:
    """Read one DICOM file: pixel values after the modality LUT and the tags cnnkit uses.

    Args:
        path: A .dcm (or any DICOM Part 10) file.
        pixels: False reads the header only (values is an empty array): for sorting and splitting.

    Raises:
        DataError: Naming the file: missing, not DICOM, no pixel data, truncated, no decoder installed.
    """
    path = Path(path)
    dataset = read_dataset(path, pixels)
    if pixels and not any(tag in dataset for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        kind = dataset.get("Modality", "") or dataset.get("SOPClassUID", "")
        raise DataError(f"DICOM file {path} has no pixel data (Modality {kind or 'unknown'}: an RT plan, structured "
                        "report or similar); only image files can be read as images, remove it from the image list")
    values = numpy.empty((0, 0, 0), dtype=numpy.float32)
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2"))
    if pixels:
        try:
            stored = dataset.pixel_array
        except Exception as error:  # noqa: BLE001 - decoder plugins raise RuntimeError, ValueError, NotImplementedError
            raise _decode_error(path, dataset, error) from None
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        color = int(dataset.get("SamplesPerPixel", 1) or 1) > 1
        if frames == 1:
            stored = stored[None]  # (H, W[, 3]) -> (1, H, W[, 3])
        if color:
            values = stored.astype(numpy.float32)
        else:
            values = _modality_values(stored, dataset, frames)
    window = None
    if "WindowCenter" in dataset and "WindowWidth" in dataset:
        window = (_first(dataset.WindowCenter), _first(dataset.WindowWidth))
    spacing = dataset.get("PixelSpacing")
    position = dataset.get("ImagePositionPatient")
    orientation = dataset.get("ImageOrientationPatient")
    return DicomImage(
        path=path, values=values, photometric=photometric, window=window,
        pixel_spacing=tuple(float(v) for v in spacing) if spacing else None,
        position=tuple(float(v) for v in position) if position else None,
        orientation=tuple(float(v) for v in orientation) if orientation else None,
        patient_id=str(dataset.get("PatientID", "") or ""), study_uid=str(dataset.get("StudyInstanceUID", "") or ""),
        series_uid=str(dataset.get("SeriesInstanceUID", "") or ""), modality=str(dataset.get("Modality", "") or ""),
        instance_number=int(dataset.get("InstanceNumber", 0) or 0),
        extra={"slice_thickness": float(dataset.get("SliceThickness", 0) or 0),
               "sop_instance_uid": str(dataset.get("SOPInstanceUID", "") or ""),
               "rows": int(dataset.get("Rows", 0) or 0), "columns": int(dataset.get("Columns", 0) or 0)})


def dicom_files(folder: str | Path) -> list[Path]:
    """The DICOM files of a folder (by suffix, or files without a suffix that start like DICOM)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"DICOM series folder {folder} not found")
    files = []
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        if path.suffix.lower() in DICOM_SUFFIXES:
            files.append(path)
        elif not path.suffix:
            with open(path, "rb") as handle:
                if handle.read(132)[128:132] == b"DICM":
                    files.append(path)
    if not files:
        raise DataError(f"{folder} holds no DICOM files (.dcm, .dicom, .ima or DICM-tagged files)")
    return files


def series_layout(images: list[DicomImage]) -> tuple[list[DicomImage], numpy.ndarray]:
    """A series' images in slice order and the RAS affine of their (cols, rows, slices) voxel array.

    The order is along the slice normal (ImagePositionPatient . (row x column direction)), InstanceNumber
    when a position is missing; the slice spacing is the median gap between positions. `read_series` and
    the SEG reader (cnnkit.data.medical.seg) both use it, so an image and its mask share one grid.
    """
    first = images[0]
    row_dir = numpy.array(first.orientation[:3]) if first.orientation else numpy.array([1.0, 0, 0])
    col_dir = numpy.array(first.orientation[3:]) if first.orientation else numpy.array([0, 1.0, 0])
    normal = numpy.cross(row_dir, col_dir)
    if all(image.position is not None for image in images):
        images = sorted(images, key=lambda image: float(numpy.dot(image.position, normal)))
    else:
        images = sorted(images, key=lambda image: image.instance_number)
    first = images[0]
    row_spacing, col_spacing = first.pixel_spacing or (1.0, 1.0)
    if len(images) > 1 and images[0].position is not None:
        gaps = numpy.diff([numpy.dot(image.position, normal) for image in images])
        slice_spacing = float(numpy.median(gaps)) or 1.0
    else:
        slice_spacing = first.extra.get("slice_thickness") or 1.0
    origin = numpy.array(first.position if first.position is not None else (0.0, 0.0, 0.0))
    affine_lps = numpy.eye(4)
    # Voxel (column j, row i, slice k): array index order (j, i, k) after read_series' transpose.
    affine_lps[:3, 0] = row_dir * col_spacing
    affine_lps[:3, 1] = col_dir * row_spacing
    affine_lps[:3, 2] = normal * slice_spacing
    affine_lps[:3, 3] = origin
    return images, numpy.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps  # LPS -> RAS


def read_series(source: str | Path | list, window: Window | str | None = None):
    """Read a series (a folder or a list of single-frame files) as a RAS `Volume` of scanner values.

    Slices are sorted along the slice normal; the affine comes from ImagePositionPatient,
    ImageOrientationPatient and PixelSpacing (LPS, turned into RAS), and the volume is reoriented to the
    closest canonical RAS like a NIfTI. The volume keeps values in scanner units (HU); `window` is only
    recorded (meta["window"]); the file's own window goes to meta["dicom_window"].

    Raises:
        DataError: For files of different sizes, a series mixing patients, or any unreadable file.
    """
    from cnnkit.data.medical.volumes import Volume, canonical

    files = dicom_files(source) if not isinstance(source, (list, tuple)) else [Path(p) for p in source]
    images = [read_dicom(path) for path in files]
    shapes = {image.values.shape[1:] for image in images}
    if len(shapes) > 1:
        raise DataError(f"the series {source} mixes image sizes {sorted(shapes)}: one series per folder")
    patients = {image.patient_id for image in images}
    if len(patients) > 1:
        raise DataError(f"the series {source} mixes patients {sorted(patients)}: one series per folder")
    images, affine = series_layout(images)
    first = images[0]
    stack = numpy.concatenate([image.values for image in images])  # (Z, rows, cols)
    data = stack.transpose(2, 1, 0)  # (Z, rows, cols) -> (cols, rows, Z)
    meta = {"source": str(source), "patient": first.patient_id, "modality": first.modality,
            "dicom_window": first.window, "photometric": first.photometric,
            "window": None if window is None else parse_window(window).spec}
    return canonical(Volume(numpy.ascontiguousarray(data), affine, meta))


def read_dicom_seg(path: str | Path) -> tuple[numpy.ndarray, list[int], dict[int, str]]:
    """A DICOM SEG file: its binary frames (F, H, W) uint8, the segment number of each frame, and the
    segment labels {number: label}; `read_dicom_seg(...)[0] * segment number` gives index masks per frame.
    `cnnkit.data.medical.seg.read_seg_volume` places the frames on the slices of the image they segment.

    Raises:
        DataError: If the file is not a SEG (Modality SEG) or cannot be read.
    """
    pydicom = pydicom_module()
    path = Path(path)
    image = read_dicom(path)
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    if image.modality != "SEG" or "SegmentSequence" not in dataset:
        raise DataError(f"{path} is not a DICOM SEG file (Modality {image.modality!r}, no Segment Sequence)")
    labels = {int(item.SegmentNumber): str(item.get("SegmentLabel", item.SegmentNumber))
              for item in dataset.SegmentSequence}
    numbers = []
    for item in dataset.get("PerFrameFunctionalGroupsSequence", []):
        identification = item.get("SegmentIdentificationSequence")
        numbers.append(int(identification[0].ReferencedSegmentNumber) if identification else 1)
    frames = image.values.astype(numpy.uint8)
    numbers = (numbers or [1] * len(frames))[:len(frames)]  # trimmed files may keep every frame's group
    return frames, numbers, labels
