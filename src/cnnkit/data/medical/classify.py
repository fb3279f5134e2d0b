"""DICOM class folders -> the image folder the classify task trains on: windowed 8-bit PNGs split by patient.

    ROOT/<class>/**/*.dcm                        split by patient here (PatientID; test_fraction of patients)
    ROOT/train/<class>/**/*.dcm, ROOT/test/...    your split, kept (patients in both are reported)
    LIST.csv with header path,label              DICOM paths (relative to the CSV) and class names: split by
                                                 patient like the first layout; the slices go beside the CSV

Each file is read through the modality LUT (HU for CT), windowed (`window=`: a CT preset, C,W, the file's
own "dicom" window, percentile or minmax per image), MONOCHROME1 inverted, and written as an 8-bit grey PNG
at its own size (multi-frame files: the middle frame) to ROOT/.cnnkit-slices/HASH/{train,test}/<class>/,
with patients.csv (file,patient,split) and medical.json, cached by a hash of the settings and files. The
window goes into the checkpoint's preprocessing, and `predict` on a raw .dcm goes through
`dicom_picture`: the same window and rounding, then the same decoding as the PNGs.

The classify task carves its validation split from the training images by patient too
(`patient_val_split`: whole patients, `val_fraction` of them), so early stopping never sees a training
patient's other images; the test split is by patient.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy
import torch

from cnnkit.data.medical.dicom import DICOM_SUFFIXES, read_dicom
from cnnkit.data.medical.slices import CACHE_FOLDER, to_uint8
from cnnkit.data.medical.studies import PatientOverlapWarning, Study, patient_overlap, patient_split
from cnnkit.data.medical.windowing import parse_window
from cnnkit.data.preprocess import Preprocessing
from cnnkit.errors import DataError

TEST_FRACTION = 0.2


def _dicoms(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in DICOM_SUFFIXES)


def is_dicom_class_folder(spec) -> bool:
    """Whether `spec` is a folder of class folders (or train/test of class folders) holding DICOM files, or a
    path,label CSV listing DICOM files (its first row decides)."""
    root = Path(str(spec)).expanduser()
    if root.is_file() and root.suffix.lower() == ".csv":
        return _csv_lists_dicom(root)
    if not root.is_dir():
        return False
    base = root / "train" if (root / "train").is_dir() else root
    classes = [child for child in base.iterdir() if child.is_dir() and not child.name.startswith(".")]
    # The first file of each class folder decides (an image folder of a million files is not walked).
    return bool(classes) and all(_first_file(child).suffix.lower() in DICOM_SUFFIXES for child in classes)


def _first_file(folder: Path) -> Path:
    return next((p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")), Path(""))


def dicom_picture(path: str | Path, window: str | None) -> numpy.ndarray:
    """uint8 (H, W): one DICOM file windowed as the training PNGs were (middle frame of a multi-frame file)."""
    frames = read_dicom(path).windowed(window)
    return to_uint8(frames[len(frames) // 2])


def _csv_lists_dicom(path: Path) -> bool:
    import csv

    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        columns = [name.strip().lower() for name in next(reader, [])]
        if "path" not in columns:
            return False
        first = next((row for row in reader if row and any(field.strip() for field in row)), None)
    return first is not None and Path(first[columns.index("path")].strip()).suffix.lower() in DICOM_SUFFIXES


def _layout(spec) -> tuple[Path, dict[str, dict[str, list[Path]]]]:
    """(the folder the slices go under, {split or "": {class: files}}) of class folders or a DICOM CSV."""
    path = Path(str(spec)).expanduser()
    if path.is_file():
        from cnnkit.data.listing import read_csv_index

        paths, labels, classes = read_csv_index(path)
        files: dict[str, list[Path]] = {name: [] for name in classes}
        for file, label in zip(paths, labels):
            files[classes[label]].append(Path(file))
        return path.parent, {"": files}
    return path, _class_files(path)


def _class_files(root: Path) -> dict[str, dict[str, list[Path]]]:
    """{split or "": {class: files}}."""
    splits = ("train", "test") if (root / "train").is_dir() else ("",)
    result = {}
    for split in splits:
        base = root / split if split else root
        result[split] = {child.name: _dicoms(child) for child in sorted(base.iterdir())
                         if child.is_dir() and not child.name.startswith(".")}
    return result


def split_entries(root: Path, layout: dict, seed: int, test_fraction: float = TEST_FRACTION) -> list[tuple]:
    """(split, class, file, patient) of every DICOM file, split by patient where the folder has no train/test."""
    entries = []
    for split, classes in layout.items():
        for name, files in classes.items():
            for path in files:
                patient = read_dicom(path, pixels=False).patient_id or (
                    str(path.relative_to(root)) if path.is_relative_to(root) else str(path))
                entries.append((split, name, path, patient))
    if not entries:
        raise DataError(f"{root} holds no DICOM files in class folders")
    if "" in layout:  # no split given: hold out whole patients for test
        studies = [Study(patient, path, None) for _, _, path, patient in entries]
        chosen = patient_split(studies, 0.0, seed, test_fraction)
        test_patients = {study.patient for study in chosen["test"]}
        entries = [("test" if patient in test_patients else "train", name, path, patient)
                   for _, name, path, patient in entries]
    return entries


def dicom_patients(spec, seed: int = 0, val_fraction: float = 0.0) -> dict[str, list[str]]:
    """{split: patients} of a DICOM class folder or CSV, split as training would split it (headers only;
    validation patients drawn from the training patients as `patient_val_split` draws them)."""
    root, layout = _layout(spec)
    entries = split_entries(root, layout, seed)
    patients = {split: sorted({p for s, _, _, p in entries if s == split}) for split in ("train", "val", "test")}
    if val_fraction > 0 and patients["train"]:
        val = _val_patients(patients["train"], val_fraction, seed)
        patients["train"] = [p for p in patients["train"] if p not in val]
        patients["val"] = sorted(val)
    return patients


def prepare_dicom_classes(spec, window: str | None, seed: int, test_fraction: float = TEST_FRACTION) -> Path:
    """The PNG image folder of a DICOM class folder, written once into ROOT/.cnnkit-slices/HASH and reused."""
    from PIL import Image

    root, layout = _layout(spec)
    digest = hashlib.sha256(json.dumps({"window": parse_window(window).spec, "seed": seed, "test": test_fraction,
                                        "kind": "classify"}).encode())
    for split, classes in layout.items():
        for name, files in classes.items():
            for path in files:
                stat = path.stat()
                digest.update(f"{split}|{name}|{path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    out = root / CACHE_FOLDER / digest.hexdigest()[:16]
    if (out / "medical.json").is_file():
        return out
    entries = split_entries(root, layout, seed, test_fraction)
    overlap = patient_overlap({split: [patient for s, _, _, patient in entries if s == split] for split in ("train", "test")})
    if overlap:
        warnings.warn(f"{root}: patients in both train and test: {', '.join(list(overlap)[:5])}; the test score then "
                      "measures memory of those patients", PatientOverlapWarning, stacklevel=2)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    rows = []
    for index, (split, name, path, patient) in enumerate(entries):
        folder = staging / split / name
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{index:06d}_{path.stem}.png"
        Image.fromarray(dicom_picture(path, window), mode="L").save(target)
        rows.append(f"{target.relative_to(staging)},{patient},{split}")
    (staging / "patients.csv").write_text("file,patient,split\n" + "\n".join(rows) + "\n", encoding="utf-8")
    info = {"window": parse_window(window).spec, "kind": "classify", "patient_overlap": overlap,
            "images": len(entries)}
    (staging / "medical.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    if out.exists():
        shutil.rmtree(staging, ignore_errors=True)
    else:
        staging.rename(out)
    return out


def _val_patients(patients, val_fraction: float, seed: int) -> set[str]:
    """The validation patients drawn from `patients` (whole patients, `patient_split`'s seeded recipe): one
    function, so training and `cnnkit data check` draw the same ones."""
    studies = [Study(patient, Path(patient), None) for patient in sorted(set(patients))]
    return {study.patient for study in patient_split(studies, val_fraction, seed)["val"]}


def patient_val_split(root: str | Path, train_paths: list[Path], val_fraction: float,
                      seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, val indices) into `train_paths` (PNGs written by `prepare_dicom_classes` under `root`),
    validation drawn as whole patients (patients.csv) with `patient_split`'s seeded recipe.

    Raises:
        DataError: If a PNG is not in patients.csv (a folder edited by hand), or too few patients remain."""
    import csv

    root = Path(root)
    with open(root / "patients.csv", newline="", encoding="utf-8") as handle:
        patient_of = {row["file"]: row["patient"] for row in csv.DictReader(handle)}
    patients = []
    for path in train_paths:
        key = Path(path).relative_to(root).as_posix()
        if key not in patient_of:
            raise DataError(f"{path} is not listed in {root / 'patients.csv'}: delete {root} so cnnkit writes the "
                            "slices again")
        patients.append(patient_of[key])
    if val_fraction <= 0:
        return torch.arange(len(patients)), torch.zeros(0, dtype=torch.int64)
    val_patients = _val_patients(patients, val_fraction, seed)
    chosen = torch.tensor([patient in val_patients for patient in patients])
    return chosen.logical_not().nonzero().flatten(), chosen.nonzero().flatten()


@dataclass(frozen=True)
class WindowedPreprocessing(Preprocessing):
    """A classify run's Preprocessing that also takes raw DICOM files: each is windowed as the training PNGs
    were (`dicom_picture`) before the usual decoding, wherever the run's images are loaded (predict, explain)."""

    window: str | None = None

    def load(self, sources) -> torch.Tensor:
        from cnnkit.data.medical.slices import is_medical_file

        return super().load([dicom_picture(s, self.window) if is_medical_file(s) else s for s in sources])

    @classmethod
    def wrap(cls, preprocessing: Preprocessing, window: str | None) -> WindowedPreprocessing:
        return cls(preprocessing.channels, tuple(preprocessing.image_size), tuple(preprocessing.mean),
                   tuple(preprocessing.std), window)
