"""Studies -> a slice dataset the segment task trains on: windowed 2-D / 2.5-D slice PNGs and index masks.

`write_slice_dataset` reads each study's image and mask volume (canonical RAS), windows the whole image
volume once (so percentile/minmax scale every slice of a study alike), cuts it into axial slices or
2.5-D stacks of K neighbouring slices, and writes the scenes layout the segment task reads:

    OUT/{train,val,test}/images/PATIENT_z042.png    K = 1: 8-bit grey; K = 3: RGB, one slice per channel
    OUT/{train,val,test}/masks/PATIENT_z042.png     class indices (mode L)
    OUT/classes.txt  OUT/patients.csv (file,patient,split)  OUT/medical.json (window, stack, studies)

The window maps the band of interest onto [0, 1] before the 8-bit quantisation, so 256 levels cover
the window (a brain window of 80 HU keeps steps of 0.3 HU), not the scanner's whole range. K is 1 or 3:
the models take 1- or 3-channel images, and 3 fits ImageNet-pretrained encoders.

Class-balanced slice sampling for tiny foregrounds: `empty_fraction` < 1 keeps only that (seeded) share
of the *training* slices whose mask is all background; validation and test keep every slice, so their
scores stay those of whole volumes.

Resampling (`spacing`, the `voxel_spacing=` setting): image and mask are resampled to that isotropic
spacing (trilinear / nearest) before slicing, so every study's slices have the same millimetres per pixel;
slabs ("START:STOP") stay in the scan's own slice indices and are converted. `predict_volume` resamples
the same way and brings its labels back to the scan's grid (nearest neighbour).

A DICOM SEG mask (cnnkit.data.medical.seg) is placed on its image's canonical grid and its segment labels name
the classes when the layout has no classes.txt. `read_mask` is the one reader of a study's mask (NIfTI, or
SEG on its image) that the slices, the run's 3-D evaluation and `predict-volume --truth` share. (Caches
written before it also hold OUT/seg-masks/*.nii.gz, the SEG's label volume, and name it in medical.json;
those NIfTI files are still read.)

`prepare_slices` is what the segment task calls for a study layout: it writes the dataset once into a
cache folder next to the studies, named by a hash of the settings and the files' sizes and times, and
reuses it while nothing changed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy
import torch

from cnnkit.data.medical.nifti import is_nifti, read_nifti
from cnnkit.data.medical.studies import (SPLITS, PatientOverlapWarning, Study, patient_overlap, patient_split,
                                         read_studies)
from cnnkit.data.medical.volumes import Volume, resample, stack_slices, volume_slices
from cnnkit.data.medical.windowing import apply_window, parse_window
from cnnkit.errors import DataError

CACHE_FOLDER = ".cnnkit-slices"
FORMAT_VERSION = 1


def read_volume(path: str | Path, mask: bool = False, image: str | Path | None = None) -> Volume:
    """A NIfTI file or a DICOM series folder as a canonical RAS Volume; with mask=True also a DICOM SEG,
    placed on the grid of `image` (its series folder or NIfTI: cnnkit.data.medical.seg)."""
    path = Path(path)
    if is_nifti(path):
        return read_nifti(path, mask=mask)
    if path.is_dir():
        from cnnkit.data.medical.dicom import read_series

        volume = read_series(path)
        if mask:
            volume.data = numpy.rint(volume.data).astype(numpy.int64)
        return volume
    from cnnkit.data.medical.seg import is_dicom_seg, read_seg_volume

    if is_dicom_seg(path):
        if not mask:
            raise DataError(f"{path} is a DICOM SEG (a mask), not an image: give the image series it segments")
        if image is None:
            raise DataError(f"{path} is a DICOM SEG: its frames are placed on the slices of the image it segments; "
                            "give that image too (read_seg_volume(seg, image) in cnnkit.data.medical.seg, or a "
                            "studies CSV row patient,image,mask)")
        return read_seg_volume(path, image)
    raise DataError(f"{path} is neither a NIfTI file (.nii, .nii.gz), a DICOM series folder nor a DICOM SEG file")


def read_mask(mask: str | Path, image: str | Path | None, shape: tuple[int, ...] | None = None) -> Volume:
    """The mask of `image` as int64 class indices on its canonical grid: a NIfTI label volume (or a DICOM
    series folder of labels), or a DICOM SEG placed on `image` (cnnkit.data.medical.seg).

    Args:
        mask: The mask file (or folder).
        image: The image it labels: a NIfTI file or a DICOM series folder (None: a SEG is refused).
        shape: The image volume's canonical shape, where the caller has it: a mask of another shape is refused.

    Raises:
        DataError: Naming the files: an unreadable mask, a SEG that does not fit `image`, another shape.
    """
    volume = read_volume(mask, mask=True, image=image)
    if shape is not None and volume.shape != tuple(shape):
        named = f" {image}" if image is not None else ""
        raise DataError(f"mask {mask} has shape {volume.shape} but its image{named} has {tuple(shape)} (after "
                        "reorientation to RAS); a mask must be on its image's grid")
    return volume


def windowed_stacks(volume: Volume, window: str | None, stack: int) -> numpy.ndarray:
    """(Z, K, H, W) float32 in [0, 1]: the volume windowed as a whole, cut into K-slice stacks."""
    scaled = apply_window(volume.data, parse_window(window), volume.meta.get("dicom_window"))
    return stack_slices(volume_slices(scaled), stack)


def to_uint8(images: numpy.ndarray) -> numpy.ndarray:
    """float [0, 1] -> uint8, rounded (what the PNG slices hold)."""
    return numpy.clip(numpy.rint(images * 255.0), 0, 255).astype(numpy.uint8)


def _class_names(root: Path, max_label: int, segments: list[tuple[int, str, str]] = ()) -> list[str]:
    """classes.txt under `root`; without one, the DICOM SEG segment labels (`segments`: number, label, file),
    then structure_K (or foreground for one class)."""
    file = root / "classes.txt"
    if file.is_file():
        names = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        names = names if names[0].lower() == "background" else ["background", *names]
        if len(names) <= max_label:
            raise DataError(f"{file} names {len(names)} classes but the masks hold label {max_label}; add the names")
        return names
    names = ["background", *(f"structure_{k}" for k in range(1, max_label + 1))] if max_label > 1 else \
        ["background", "foreground"]
    seen: dict[int, tuple[str, str]] = {}
    for number, label, source in segments:
        label = " ".join(label.split())  # one line per class in classes.txt
        if number < 1:  # segment numbers start at 1; 0 stays background
            continue
        if number in seen and seen[number][0].strip().lower() != label.strip().lower():
            raise DataError(f"segment {number} is {seen[number][0]!r} in {seen[number][1]} but {label!r} in {source}: "
                            "one class number must mean one structure in every study; renumber the segments, or "
                            f"write {file} to name the classes (one per line, background first)")
        seen.setdefault(number, (label, source))
        names[number] = label or names[number]
    return names


def write_slice_dataset(studies: list[Study], out: str | Path, window: str | None = "minmax", stack: int = 1,
                        val_fraction: float = 0.1, seed: int = 0, empty_fraction: float = 1.0,
                        classes_root: Path | None = None, test_fraction: float = 0.0,
                        spacing: float | None = None) -> dict:
    """Write the slice dataset of `studies` to `out` (see the module docstring); returns medical.json's content.

    A DICOM SEG mask is placed on its image's grid (`read_mask`); medical.json names the SEG itself, which
    the run's 3-D evaluation reads the same way.

    Raises:
        DataError: Naming the study: an image and mask of different shapes, a slab outside the volume,
            a stack other than 1 or 3, no training study.
    """
    from PIL import Image

    if stack not in (1, 3):
        raise DataError(f"slice_stack={stack}: 1 (2-D) or 3 (2.5-D, one slice per RGB channel) slices per image")
    parse_window(window)
    out = Path(out)
    splits = patient_split(studies, val_fraction, seed, test_fraction)
    if not splits["train"]:
        raise DataError("no study is left for training: give some studies split=train or fewer to val/test")
    overlap = patient_overlap(splits)
    generator = numpy.random.default_rng(seed)
    records, max_label, files, segments = [], 0, [], []
    for split in SPLITS:
        for study in splits[split]:
            if study.mask is None:
                raise DataError(f"study {study.patient} ({study.image}) has no mask; segmentation needs one per study")
            image = read_volume(study.image)
            mask = read_mask(study.mask, study.image, image.shape)
            if "segment_labels" in mask.meta:  # a DICOM SEG: its segments are classes, named by their labels
                segments += [(number, label, str(study.mask)) for number, label in mask.meta["segment_labels"].items()]
                max_label = max([max_label, *mask.meta["segment_labels"]])
            if not numpy.allclose(image.affine, mask.affine, atol=1e-3):
                warnings.warn(f"mask {study.mask} and image {study.image} have different affines; they are paired "
                              "voxel by voxel", stacklevel=2)
            if mask.data.min() < 0:
                raise DataError(f"mask {study.mask} has negative labels; labels are 0 (background), 1, 2 ...")
            max_label = max(max_label, int(mask.data.max()))
            first, last = study.slices or (0, image.shape[2])
            if last > image.shape[2]:
                raise DataError(f"study {study.patient}: slices {first}:{last} lie outside its {image.shape[2]} "
                                "axial slices")
            if spacing:
                scale = image.shape[2]
                image, mask = resample(image, spacing), resample(mask, spacing, mask=True)
                first, last = (round(index * image.shape[2] / scale) for index in (first, last))
            stacks = windowed_stacks(image, window, stack)  # (Z, K, H, W)
            masks = volume_slices(mask.data)  # (Z, H, W)
            (out / split / "images").mkdir(parents=True, exist_ok=True)
            (out / split / "masks").mkdir(parents=True, exist_ok=True)
            for z in range(first, last):
                empty = split == "train" and empty_fraction < 1 and not masks[z].any()
                if empty and generator.random() >= empty_fraction:
                    continue
                name = f"{study.name}_z{z:03d}.png"
                picture = to_uint8(stacks[z])  # (K, H, W)
                mode = "L" if stack == 1 else "RGB"
                pixels = picture[0] if stack == 1 else picture.transpose(1, 2, 0)
                Image.fromarray(numpy.ascontiguousarray(pixels), mode=mode).save(out / split / "images" / name)
                Image.fromarray(masks[z].astype(numpy.uint8), mode="L").save(out / split / "masks" / name)
                files.append((f"{split}/images/{name}", study.patient, split))
            records.append({"patient": study.patient, "image": str(study.image), "mask": str(study.mask),
                            "split": split, "slices": list(study.slices) if study.slices else None,
                            "shape": list(image.shape), "spacing": list(image.spacing)})
    if max_label > 254:
        raise DataError(f"masks hold label {max_label}: at most 254 structures fit the 8-bit mask PNGs")
    classes = _class_names(classes_root or out, max_label, segments)
    (out / "classes.txt").write_text("\n".join(classes) + "\n", encoding="utf-8")
    with open(out / "patients.csv", "w", newline="", encoding="utf-8") as handle:
        handle.write("file,patient,split\n" + "".join(f"{f},{p},{s}\n" for f, p, s in files))
    info = {"format": FORMAT_VERSION, "window": parse_window(window).spec, "stack": stack, "axis": "axial (RAS z)",
            "slice_image": "flipud(volume[:, :, z].T)", "empty_fraction": empty_fraction, "spacing": spacing,
            "studies": records, "patient_overlap": overlap}
    (out / "medical.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    return info


def _fingerprint(studies: list[Study], settings: dict) -> str:
    digest = hashlib.sha256(json.dumps({**settings, "version": FORMAT_VERSION}, sort_keys=True).encode())
    for study in studies:
        for path in (study.image, study.mask):
            if path is None:
                continue
            items = sorted(path.iterdir()) if path.is_dir() else [path]
            for item in items:
                stat = item.stat()
                key = f"{study.patient}|{study.split}|{study.slices}|{item}|{stat.st_size}|{stat.st_mtime_ns}"
                digest.update(key.encode())
    return digest.hexdigest()[:16]


def prepare_slices(spec: str | Path, window: str | None, stack: int, val_fraction: float, seed: int,
                   empty_fraction: float = 1.0, spacing: float | None = None) -> Path:
    """The slice dataset of a study layout, written once into SPEC's folder/.cnnkit-slices/HASH and reused.

    A patient found in more than one split (a fixed split column, or slabs of one subject) is reported as a
    warning: the scores then measure fit to that patient, not generalisation.
    """
    spec = Path(spec).expanduser()
    studies = read_studies(spec)
    root = spec if spec.is_dir() else spec.parent
    settings = {"window": parse_window(window).spec, "stack": stack, "val_fraction": val_fraction, "seed": seed,
                "empty_fraction": empty_fraction, **({"spacing": spacing} if spacing else {})}
    out = root / CACHE_FOLDER / _fingerprint(studies, settings)
    done = out / "medical.json"
    if not done.is_file():
        staging = out.with_name(out.name + f".partial-{torch.randint(0, 10**9, ()).item()}")
        write_slice_dataset(studies, staging, window, stack, val_fraction, seed, empty_fraction, classes_root=root,
                            spacing=spacing)
        if out.exists():  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
        else:
            staging.rename(out)
    info = json.loads(done.read_text(encoding="utf-8"))
    if info.get("patient_overlap"):
        shown = ", ".join(f"{p} ({'/'.join(s)})" for p, s in list(info["patient_overlap"].items())[:5])
        warnings.warn(f"{spec}: patients in more than one split: {shown}; scores measure fit to these patients, "
                      "not generalisation to new ones", PatientOverlapWarning, stacklevel=2)
    return out


def is_medical_file(source) -> bool:
    """Whether `source` is a path to a DICOM or NIfTI file (what `read_medical_image` reads)."""
    if not isinstance(source, (str, Path)):
        return False
    from cnnkit.data.medical.dicom import DICOM_SUFFIXES

    return Path(source).suffix.lower() in DICOM_SUFFIXES or is_nifti(source)


def model_inputs(volume: Volume, window: str | None, stack: int) -> torch.Tensor:
    """float32 (Z, K, H, W) in [0, 1]: exactly what training saw (windowed, stacked, 8-bit rounded)."""
    return torch.from_numpy(to_uint8(windowed_stacks(volume, window, stack))).float().div_(255)


def read_medical_image(source: str | Path, medical: dict) -> torch.Tensor:
    """A DICOM file (one slice, or a multi-frame volume's middle frame) or a one-slice NIfTI as the float
    (K, H, W) image the model was trained on: the checkpoint's window and stack (`medical`), the slice in the
    training orientation (canonical RAS, anterior up), 8-bit rounded like the training slices.

    Raises:
        DataError: For a NIfTI with several slices (use `cnnkit predict-volume`), or an unreadable file.
    """
    from cnnkit.data.medical.dicom import read_series

    path = Path(source)
    volume = read_nifti(path) if is_nifti(path) else read_series([path])
    if medical.get("spacing"):  # in-plane only for one slice: its thickness is not a grid to resample
        z_spacing = volume.spacing[2] if volume.shape[2] == 1 else medical["spacing"]
        volume = resample(volume, (medical["spacing"], medical["spacing"], z_spacing))
    if volume.shape[2] > 1 and is_nifti(path):
        raise DataError(f"{path} is a volume of {volume.shape[2]} slices: predict it with `cnnkit predict-volume RUN "
                        f"{path}` (writes a NIfTI mask), or pass single slices")
    inputs = model_inputs(volume, medical.get("window"), int(medical.get("stack", 1)))
    return inputs[len(inputs) // 2]
