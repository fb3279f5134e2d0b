"""Labelled studies (one image volume + one mask volume per patient/study) and splits by patient.

Two layouts:

    CSV (studies.csv, or any .csv with a "patient" column)     folder
    patient,image,mask[,split][,slices]                          ROOT/classes.txt            (optional)
    p001,p001/t1.nii.gz,p001/mask.nii.gz                         ROOT/p001/image.nii.gz      (or image/: a DICOM series)
    p002,p002/ct/,p002/seg.nii.gz,test                           ROOT/p001/mask.nii.gz       (or seg.dcm, mask.dcm)
    p003,p003/ct/,p003/liver-seg.dcm                             ROOT/p002/...

Paths in a CSV are relative to the CSV's folder. `image` is a NIfTI file or a folder of one DICOM series;
`mask` a NIfTI of class indices on the same grid (0 background), or a DICOM SEG file (found by its SOP class
or Modality SEG) made on the image: its frames are placed on the image's slices and segment k becomes
class k, named by its SegmentLabel where there is no classes.txt (cnnkit.data.medical.seg). `split`
(train, val or test) fixes a study's split; `slices` ("START:STOP", axial indices of the canonical volume)
uses only a slab of it, for single-subject experiments (a held-out slab is not a held-out patient:
`cnnkit data check` says so).

Splits are by patient: every study of a patient goes to the same split, so no patient's slices are in
both training and evaluation (slice-level splits leak: neighbouring slices are near copies, and the test
score measures memory of the patient, not generalisation). `patient_split` draws whole patients with a
seeded torch.Generator (the project's one split recipe, cnnkit.data.splits, applied to patients);
`patient_overlap` lists patients found in more than one split.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnkit.data.medical.nifti import is_nifti
from cnnkit.data.medical.seg import SEG_SOP_CLASS_UID, is_dicom_seg
from cnnkit.errors import DataError, DatasetNotFoundError

SPLITS = ("train", "val", "test")
CSV_NAME = "studies.csv"
MASK_NAMES = ("mask.nii.gz", "mask.nii", "seg.dcm", "mask.dcm")  # a patient folder's mask, first found


class PatientOverlapWarning(UserWarning):
    """A patient's images are in more than one split: the scores measure fit to that patient."""


@dataclass(frozen=True)
class Study:
    """One image volume, its mask, its patient, and (optionally) its fixed split and slab of slices."""

    patient: str
    image: Path
    mask: Path | None
    split: str | None = None
    slices: tuple[int, int] | None = None

    @property
    def name(self) -> str:
        """A file-name-safe name: patient, plus the slab when there is one."""
        base = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.patient)
        return base if self.slices is None else f"{base}_z{self.slices[0]}-{self.slices[1]}"


def is_study_layout(spec: str | Path) -> bool:
    """Whether `spec` is a studies CSV or a folder with studies.csv or patient folders holding image volumes."""
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
        return "patient" in [name.strip().lower() for name in header] and "image" in [n.strip().lower() for n in header]
    if not path.is_dir():
        return False
    if (path / CSV_NAME).is_file():
        return True
    return any(_folder_image(child) is not None for child in path.iterdir() if child.is_dir())


def _folder_image(folder: Path) -> Path | None:
    for name in ("image.nii.gz", "image.nii", "image"):
        if (folder / name).exists():
            return folder / name
    return None


def _slab(text: str, where: str) -> tuple[int, int] | None:
    if not text.strip():
        return None
    start, separator, stop = text.strip().partition(":")
    try:
        slab = (int(start), int(stop))
    except ValueError:
        slab = None
    if not separator or slab is None or not 0 <= slab[0] < slab[1]:
        raise DataError(f"{where}: slices={text!r} must be START:STOP with 0 <= START < STOP (axial slice indices)")
    return slab


def read_studies(spec: str | Path) -> list[Study]:
    """The studies of a CSV or folder layout (see the module docstring), files checked to exist.

    Raises:
        DatasetNotFoundError: If `spec` does not exist.
        DataError: Naming the file and line: a missing column or file, an unknown split, a bad slab.
    """
    path = Path(spec).expanduser()
    if not path.exists():
        raise DatasetNotFoundError(f"studies {path} not found: pass a studies CSV or a folder of patient folders")
    if path.is_dir() and (path / CSV_NAME).is_file():
        path = path / CSV_NAME
    studies = []
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        for line, row in enumerate(rows, 2):
            row = {(key or "").strip().lower(): (value or "").strip() for key, value in row.items()}
            where = f"{path}, line {line}"
            for column in ("patient", "image"):
                if not row.get(column):
                    raise DataError(f"{where}: the {column!r} column is empty; each row needs patient and image")
            split = row.get("split") or None
            if split is not None and split not in SPLITS:
                raise DataError(f"{where}: split={split!r} is not one of {', '.join(SPLITS)}")
            image = path.parent / row["image"]
            mask = path.parent / row["mask"] if row.get("mask") else None
            for file in (image, mask):
                if file is not None and not file.exists():
                    raise DataError(f"{where}: {file} does not exist; fix the path (relative to the CSV's folder)")
            studies.append(Study(row["patient"], image, mask, split, _slab(row.get("slices", ""), where)))
    else:
        for folder in sorted(child for child in path.iterdir() if child.is_dir()):
            image = _folder_image(folder)
            if image is None:
                continue
            mask = next((folder / n for n in MASK_NAMES if (folder / n).is_file()), None)
            studies.append(Study(folder.name, image, mask))
    if not studies:
        raise DataError(f"{spec} lists no studies")
    for study in studies:
        if not (is_nifti(study.image) or study.image.is_dir()):
            raise DataError(f"study {study.patient}: image {study.image} is neither a NIfTI file nor a DICOM folder")
        if study.mask is not None and study.mask.is_file() and not is_nifti(study.mask) and \
                not is_dicom_seg(study.mask):
            raise DataError(f"study {study.patient}: mask {study.mask} is neither a NIfTI file (.nii, .nii.gz) nor a "
                            f"DICOM SEG (SOP class {SEG_SOP_CLASS_UID} or Modality SEG); give a label volume on the "
                            "image's grid or the SEG made on its series")
    return studies


def patient_split(studies: list[Study], val_fraction: float, seed: int,
                  test_fraction: float = 0.0) -> dict[str, list[Study]]:
    """{"train", "val", "test"}: studies with a split keep it; the others are split by patient, drawn
    whole (round(fraction x patients) each, at least one for a non-zero fraction when patients remain).

    Raises:
        DataError: If a fraction is out of range, or a split is asked for with too few patients.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) and "
                        "leave patients for training")
    splits: dict[str, list[Study]] = {name: [s for s in studies if s.split == name] for name in SPLITS}
    free = [s for s in studies if s.split is None]
    patients = sorted({s.patient for s in free})
    wanted = {}
    for name, fraction in (("val", val_fraction), ("test", test_fraction)):
        wanted[name] = 0 if fraction == 0 or splits[name] else max(1, round(fraction * len(patients)))
    if patients and wanted["val"] + wanted["test"] >= len(patients):
        raise DataError(f"{len(patients)} patient(s) without a split column cannot give {wanted['val']} validation and "
                        f"{wanted['test']} test patient(s) and still train: add patients, give studies a split "
                        "column, or set val_fraction=0")
    order = torch.randperm(len(patients), generator=torch.Generator().manual_seed(seed)).tolist()
    chosen = {"val": set(patients[i] for i in order[:wanted["val"]]),
              "test": set(patients[i] for i in order[wanted["val"]:wanted["val"] + wanted["test"]])}
    for study in free:
        name = "val" if study.patient in chosen["val"] else "test" if study.patient in chosen["test"] else "train"
        splits[name].append(study)
    return splits


def patient_overlap(splits: dict[str, list]) -> dict[str, list[str]]:
    """{patient: [splits]} for every patient found in more than one split (empty when none is shared).

    `splits` maps split names to studies (anything with a .patient) or to patient ids.
    """
    where: dict[str, set[str]] = {}
    for name, items in splits.items():
        for item in items:
            where.setdefault(getattr(item, "patient", item), set()).add(name)
    return {patient: sorted(names, key=list(SPLITS).index if set(names) <= set(SPLITS) else str)
            for patient, names in sorted(where.items()) if len(names) > 1}


def patient_report(spec: str | Path, val_fraction: float = 0.1, seed: int = 0) -> dict | None:
    """Patients per split and the patients found in more than one, for `cnnkit data check`; None when
    `spec` is neither a study layout nor a slice folder with a patients.csv (file,patient,split).

    A study layout is split as `cnnkit train` would (fixed split column, then whole patients drawn with
    val_fraction and seed); a slice folder written from studies is read from its patients.csv.
    """
    path = Path(spec).expanduser()
    if is_study_layout(path):
        splits = patient_split(read_studies(path), val_fraction, seed)
        patients = {name: sorted({s.patient for s in studies}) for name, studies in splits.items()}
        source = "studies"
    elif _is_dicom_classes(path):
        from cnnkit.data.medical.classify import dicom_patients

        patients = dicom_patients(path, seed, val_fraction)
        source = "DICOM PatientID"
    elif path.is_dir() and (path / "patients.csv").is_file():
        with open(path / "patients.csv", newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        patients = {name: sorted({row["patient"] for row in rows if row["split"] == name}) for name in SPLITS}
        source = "patients.csv"
    else:
        return None
    overlap = patient_overlap(patients)
    return {"dataset": str(spec), "source": source, "patients": {k: len(v) for k, v in patients.items()},
            "patients_in_several_splits": overlap}


def _is_dicom_classes(path: Path) -> bool:
    from cnnkit.data.medical.classify import is_dicom_class_folder

    return is_dicom_class_folder(path)


def format_patient_report(report: dict) -> str:
    """The lines `cnnkit data check` prints for a patient report."""
    counts = report["patients"]
    lines = [f"{report['dataset']}: patients {counts['train']} train / {counts['val']} val / {counts['test']} test "
             f"(from {report['source']})"]
    overlap = report["patients_in_several_splits"]
    if not overlap:
        lines.append("patient overlap across splits: none (every patient's slices are in one split)")
    else:
        shown = ", ".join(f"{p} ({'/'.join(s)})" for p, s in list(overlap.items())[:10])
        lines.append(f"patient overlap across splits: {len(overlap)} patient(s) in several splits: {shown}"
                     + (" ..." if len(overlap) > 10 else ""))
        lines.append("  a held-out slab or study of a patient seen in training measures fit to that patient, not "
                     "generalisation to new patients; split by patient")
    return "\n".join(lines)
