"""The study -> slices -> segment task -> volume path (issue 22): patient-level split, window in the checkpoint,
`predict` on a raw DICOM windowed as in training, volume prediction written with the input's affine, Dice per
structure + HD95, `cnnkit data check` patient overlap, and the errors of a bad study."""

from __future__ import annotations

from pathlib import Path

import numpy
import pytest
import torch

pydicom = pytest.importorskip("pydicom")
nibabel = pytest.importorskip("nibabel")

from cnnkit.data.medical.slices import to_uint8, write_slice_dataset  # noqa: E402
from cnnkit.data.medical.studies import read_studies  # noqa: E402
from cnnkit.data.medical.windowing import linear_window  # noqa: E402
from cnnkit.errors import DataError  # noqa: E402

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
LAS = numpy.array([[-1.5, 0, 0, 40], [0, 1.5, 0, -30], [0, 0, 2.0, -10], [0, 0, 0, 1]])  # not RAS: flipped x
TINY_UNET = {"base_width": 4, "decoder_channels": [16, 16, 8, 8, 4]}


def _study(folder: Path, seed: int, shape=(32, 32, 12)) -> tuple[Path, Path]:
    """A bright ellipsoid in noise (HU-like values) and its mask, as NIfTI files in LAS orientation."""
    rng = numpy.random.default_rng(seed)
    x, y, z = numpy.meshgrid(*(numpy.arange(n) for n in shape), indexing="ij")
    centre = numpy.array(shape) / 2 + rng.uniform(-2, 2, 3)
    mask = (((x - centre[0]) / 9) ** 2 + ((y - centre[1]) / 7) ** 2 + ((z - centre[2]) / 4) ** 2 <= 1).astype(numpy.uint8)
    image = rng.normal(0, 15, shape) + 60 * mask - 20  # "HU": tissue 40, background -20
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in (("image.nii.gz", image.astype(numpy.float32)), ("mask.nii.gz", mask)):
        volume = nibabel.Nifti1Image(data, LAS)
        nibabel.save(volume, str(folder / name))
    return folder / "image.nii.gz", folder / "mask.nii.gz"


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("studies")
    rows = ["patient,image,mask,split"]
    for index in range(5):
        _study(root / f"p{index}", index)
        rows.append(f"p{index},p{index}/image.nii.gz,p{index}/mask.nii.gz,{'test' if index == 4 else ''}")
    (root / "studies.csv").write_text("\n".join(rows) + "\n")
    (root / "classes.txt").write_text("background\nlesion\n")
    return root


def test_slices_split_by_patient_and_restack(studies, tmp_path):
    info = write_slice_dataset(read_studies(studies / "studies.csv"), tmp_path / "slices", window="0,100", stack=3,
                               val_fraction=0.25, seed=0, classes_root=studies)
    splits = {record["patient"]: record["split"] for record in info["studies"]}
    assert splits["p4"] == "test" and list(splits.values()).count("val") == 1 and info["patient_overlap"] == {}
    rows = (tmp_path / "slices" / "patients.csv").read_text().splitlines()[1:]
    by_patient = {}
    for row in rows:
        file, patient, split = row.split(",")
        by_patient.setdefault(patient, set()).add(split)
        assert file.startswith(f"{split}/images/{patient}_z")
    assert all(len(s) == 1 for s in by_patient.values()) and len(rows) == 5 * 12
    # The test patient's slices, read back and restacked, are the windowed volume (8-bit rounded).
    from PIL import Image

    from cnnkit.data.medical.nifti import read_nifti
    from cnnkit.data.medical.volumes import restack

    volume = read_nifti(studies / "p4" / "image.nii.gz")
    pictures = numpy.stack([numpy.asarray(Image.open(tmp_path / "slices" / "test" / "images" / f"p4_z{z:03d}.png"))
                            for z in range(12)])  # (Z, H, W, 3)
    numpy.testing.assert_array_equal(restack(pictures[..., 1]), to_uint8(linear_window(volume.data, 0, 100)))
    assert (tmp_path / "slices" / "classes.txt").read_text().split() == ["background", "lesion"]


def test_bad_studies_give_clear_errors(studies, tmp_path):
    bad = tmp_path / "bad"
    image, _ = _study(bad / "a", 0)
    _, other_mask = _study(bad / "b", 1, shape=(32, 30, 12))
    (bad / "studies.csv").write_text(f"patient,image,mask\na,{image},{other_mask}\nb,{image},{bad / 'b/mask.nii.gz'}\n")
    with pytest.raises(DataError, match=r"b/mask\.nii\.gz has shape .* a mask must be on its image's grid"):
        write_slice_dataset(read_studies(bad / "studies.csv"), tmp_path / "out", val_fraction=0.0)
    (bad / "studies.csv").write_text("patient,image,mask\na,missing.nii.gz,\n")
    with pytest.raises(DataError, match=r"studies\.csv, line 2: .*missing\.nii\.gz does not exist"):
        read_studies(bad / "studies.csv")


def test_data_check_reports_patient_overlap(studies, tmp_path, capsys):
    from cnnkit.cli import main

    assert main(["data", "check", str(studies), "--val-fraction", "0.25"]) == 0
    assert "patient overlap across splits: none" in capsys.readouterr().out
    slab = tmp_path / "slab.csv"
    slab.write_text("patient,image,mask,split,slices\n"
                    f"p0,{studies}/p0/image.nii.gz,{studies}/p0/mask.nii.gz,train,0:8\n"
                    f"p0,{studies}/p0/image.nii.gz,{studies}/p0/mask.nii.gz,test,8:12\n")
    assert main(["data", "check", str(slab), "--val-fraction", "0"]) == 0
    out = capsys.readouterr().out
    assert "1 patient(s) in several splits: p0 (train/test)" in out and "not generalisation" in out
    from cnnkit.data.medical.slices import prepare_slices
    from cnnkit.data.medical.studies import PatientOverlapWarning

    with pytest.warns(PatientOverlapWarning, match="p0 \\(train/test\\)"):
        prepare_slices(slab, "0,100", 1, 0.0, 0)


def test_train_on_studies_predict_dicom_and_volume(studies, tmp_path):
    import cnnkit
    from cnnkit.tasks.segmentation.volume import evaluate_volume, predict_volume, write_volume_prediction

    run = cnnkit.train(task="segment", data=str(studies / "studies.csv"), window="0,100", slice_stack=3,
                       model="unet", model_args=TINY_UNET, epochs=1, batch_size=8, lr=3e-3, optimizer="adamw",
                       val_fraction=0.25, translate=0, hflip=False, precision="fp32", channels_last=False,
                       num_workers=0, progress=False, report=False, out=str(tmp_path / "runs"), seg_loss="ce+tversky")
    segmenter = cnnkit.load(run.run_dir)
    medical = segmenter.record["preprocessing"]["medical"]
    assert medical["window"] == "0,100" and medical["stack"] == 3
    assert (studies / ".cnnkit-slices").is_dir()
    # predict on a raw DICOM applies the stored window: CT_small's HU through C 0 / W 100, canonical orientation.
    ct = TEST_FILES / "CT_small.dcm"
    dataset = pydicom.dcmread(ct)
    hu = dataset.pixel_array.astype(numpy.float64) - 1024
    expected = to_uint8(linear_window(numpy.fliplr(hu), 0, 100)) / 255.0  # LPS columns -> RAS x
    image = segmenter.read(ct)
    assert image.shape == (3, 128, 128)
    numpy.testing.assert_allclose(image[1].numpy(), expected, atol=1e-6)
    assert segmenter.predict([ct])[0].shape == (128, 128)
    from cnnkit.cli import main

    assert main(["predict", str(run.run_dir), str(ct), "--out", str(tmp_path / "predicted")]) == 0
    assert (tmp_path / "predicted" / "CT_small-mask.png").is_file()
    assert (tmp_path / "predicted" / "CT_small-overlay.png").is_file()
    # A whole volume: slice by slice, written back with the input's own (LAS) affine.
    volume, labels = predict_volume(segmenter, studies / "p4" / "image.nii.gz")
    assert labels.shape == (32, 32, 12) and labels.dtype == numpy.int64
    out = write_volume_prediction(labels, volume, tmp_path / "p4-mask.nii.gz")
    written = nibabel.load(str(out))
    numpy.testing.assert_allclose(written.affine, LAS)
    assert written.shape == (32, 32, 12)
    metrics = evaluate_volume(segmenter, labels, volume, studies / "p4" / "mask.nii.gz")
    lesion = metrics["per_structure"]["lesion"]
    assert set(lesion) >= {"dice", "hd95_mm", "assd_mm", "true_voxels"} and lesion["true_voxels"] > 100
    truth = numpy.asarray(nibabel.load(str(studies / "p4" / "mask.nii.gz")).dataobj)
    mine = numpy.asarray(written.dataobj)
    assert lesion["dice"] == pytest.approx(2 * ((mine == 1) & (truth == 1)).sum() / ((mine == 1).sum() + truth.sum()))
    # `evaluate` adds each test study's volume in 3-D (the same numbers), and its text shows them.
    result = segmenter.evaluate("test")
    assert [v["patient"] for v in result["volumes"]] == ["p4"]
    assert result["volumes"][0]["per_structure"]["lesion"]["dice"] == pytest.approx(lesion["dice"])
    assert result["volumes"][0]["per_structure"]["lesion"]["hd95_mm"] == pytest.approx(lesion["hd95_mm"])
    from cnnkit.tasks.segmentation.output import evaluation_text

    assert "volume p4 slices 0:12 (3-D, mm)" in evaluation_text(result, "test")


def _dicom_classes(root: Path) -> Path:
    """ROOT/{bright,dark}/PATIENT_N.dcm: CT_small with a +/-300 HU offset, 6 patients x 2 images per class."""
    import copy

    source = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    for label, offset in (("bright", 300), ("dark", -300)):
        (root / label).mkdir(parents=True, exist_ok=True)
        for patient in range(6):
            for image in range(2):
                dataset = copy.deepcopy(source)
                dataset.PatientID = f"{label}-{patient}"
                stored = source.pixel_array.astype(numpy.int32) + offset + 7 * image
                dataset.PixelData = stored.astype(source.pixel_array.dtype).tobytes()
                dataset.save_as(root / label / f"{patient}_{image}.dcm")
    return root


def test_classify_dicom_folders_by_patient_and_predict_raw_dicom(tmp_path, capsys):
    import cnnkit
    from cnnkit.cli import main

    root = _dicom_classes(tmp_path / "xray")
    run = cnnkit.train(data=str(root), window="40,400", model="simple_cnn", image_size=32, epochs=1, batch_size=4,
                       val_fraction=0.2, translate=0, hflip=False, precision="fp32", channels_last=False,
                       num_workers=0, progress=False, report=False, out=str(tmp_path / "runs"))
    classifier = cnnkit.load(run.run_dir)
    assert classifier.record["preprocessing"]["medical"]["window"] == "40,400"
    cache = next((root / ".cnnkit-slices").iterdir())
    rows = [line.split(",") for line in (cache / "patients.csv").read_text().splitlines()[1:]]
    splits = {}
    for file, patient, split in rows:
        splits.setdefault(patient, set()).add(split)
    assert all(len(s) == 1 for s in splits.values()) and {"train", "test"} <= {s for v in splits.values() for s in v}
    assert main(["data", "check", str(cache)]) == 0
    capsys.readouterr()
    assert main(["data", "check", str(root)]) == 0  # the DICOM folder itself: PatientIDs, split as training does
    out = capsys.readouterr().out
    assert "(from DICOM PatientID)" in out and "patient overlap across splits: none" in out
    # predict on a raw .dcm = predict on the PNG it became in training
    file, _, _ = rows[0]
    index, stem = Path(file).stem.split("_", 1)
    label = Path(file).parent.name
    raw = root / label / f"{stem}.dcm"
    direct = classifier.predict_proba([str(raw)])
    via_png = classifier.predict_proba([str(cache / file)])
    assert torch.equal(direct, via_png) and direct.shape == (1, 2)
    assert main(["explain", str(run.run_dir), str(raw), "--out", str(tmp_path / "cam")]) == 0  # Grad-CAM on a .dcm
    assert any((tmp_path / "cam").iterdir())
    # The run as a diagnostic test: sensitivity, specificity, AUROC per class, calibration, reliability diagram.
    from cnnkit.tasks.classification.diagnostic import diagnose

    result = diagnose(classifier, "test", bins=5, plot=tmp_path / "reliability.png")
    assert set(result["per_class"]) == {"bright", "dark"} and result["count"] == sum(
        1 for _, _, split in rows if split == "test")
    assert 0 <= result["calibration"]["ece"] <= 1 and (tmp_path / "reliability.png").is_file()
    assert main(["diagnose", str(run.run_dir), "--bins", "5"]) == 0


def test_classify_validation_of_dicom_folders_is_split_by_patient(tmp_path):
    """Validation is carved from the training PNGs as whole patients: no patient has images in both train and
    val, in the streamed and the in-memory paths alike."""
    import csv

    from cnnkit.config import TrainConfig
    from cnnkit.data.medical.classify import prepare_dicom_classes
    from cnnkit.tasks.classification.data import prepare_data

    root = _dicom_classes(tmp_path / "xray")
    cache = prepare_dicom_classes(root, "40,400", seed=0)
    with open(cache / "patients.csv", newline="") as handle:
        patient_of = {(cache / row["file"]).resolve(): row["patient"] for row in csv.DictReader(handle)}
    config = TrainConfig(data=str(root), window="40,400", val_fraction=0.3, data_mode="stream")
    data = prepare_data(config)
    train = {patient_of[Path(p).resolve()] for p in data.train.paths}
    val = {patient_of[Path(p).resolve()] for p in data.val.paths}
    assert val and train and not train & val
    assert len(data.train.paths) == 2 * len(train) and len(data.val.paths) == 2 * len(val)  # 2 images each
    in_memory = prepare_data(TrainConfig(data=str(root), window="40,400", val_fraction=0.3, data_mode="memory"))
    assert len(in_memory.val.labels) == len(data.val.paths)
    assert torch.equal(in_memory.val.labels, data.val.labels)


def test_classify_from_a_csv_of_dicom_files(tmp_path):
    """A path,label CSV of DICOM files trains like class folders: windowed PNGs beside the CSV, test and
    validation by patient; `dicom_patients` reports the same validation patients training used."""
    import csv

    import cnnkit
    from cnnkit.data.medical.classify import dicom_patients, is_dicom_class_folder

    root = _dicom_classes(tmp_path / "xray")
    listing = tmp_path / "list.csv"
    rows = [f"xray/{path.parent.name}/{path.name},{path.parent.name}" for path in sorted(root.rglob("*.dcm"))]
    listing.write_text("path,label\n" + "\n".join(rows) + "\n")
    assert is_dicom_class_folder(listing) and not is_dicom_class_folder(tmp_path / "missing.csv")
    run = cnnkit.train(data=str(listing), window="40,400", model="simple_cnn", image_size=32, epochs=1, batch_size=4,
                       val_fraction=0.3, translate=0, hflip=False, precision="fp32", channels_last=False,
                       num_workers=0, progress=False, report=False, out=str(tmp_path / "runs"))
    cache = next((tmp_path / ".cnnkit-slices").iterdir())
    with open(cache / "patients.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert len(written) == 24 and {row["split"] for row in written} == {"train", "test"}
    patients = dicom_patients(listing, seed=0, val_fraction=0.3)
    assert patients["val"] and not set(patients["val"]) & set(patients["train"])
    assert not set(patients["test"]) & (set(patients["train"]) | set(patients["val"]))
    assert cnnkit.load(run.run_dir).classes == ["bright", "dark"]


def test_voxel_spacing_resamples_slices_and_predictions_return_to_the_scan_grid(studies, tmp_path):
    from PIL import Image

    from cnnkit.registry import create_model
    from cnnkit.tasks.segmentation.predictor import Segmenter
    from cnnkit.tasks.segmentation.volume import predict_volume

    only = [s for s in read_studies(studies / "studies.csv") if s.patient in ("p0", "p4")]
    info = write_slice_dataset(only, tmp_path / "slices", window="0,100", val_fraction=0.0, spacing=3.0)
    assert info["spacing"] == 3.0
    train = sorted((tmp_path / "slices" / "train" / "images").glob("p0_z*.png"))
    assert len(train) == 8 and Image.open(train[0]).size == (16, 16)  # 32 x 1.5 mm / 3, 12 x 2 mm / 3
    model = create_model("unet", num_classes=2, in_chans=1, input_size=16, **TINY_UNET).eval()
    record = {"classes": ["background", "lesion"], "config": {},
              "preprocessing": {"channels": 1, "image_size": [16, 16], "mean": [0.5], "std": [0.25],
                                "medical": {"window": "0,100", "stack": 1, "spacing": 3.0}}}
    segmenter = Segmenter(model, record, None, torch.device("cpu"))
    volume, labels = predict_volume(segmenter, studies / "p4" / "image.nii.gz")
    assert labels.shape == volume.shape == (32, 32, 12)


def test_empty_slice_fraction_thins_only_empty_training_slices(studies, tmp_path):
    import nibabel as nib

    chosen = [s for s in read_studies(studies / "studies.csv") if s.patient in ("p0", "p4")]
    write_slice_dataset(chosen, tmp_path / "s", window="0,100", val_fraction=0.0, empty_fraction=0.01, seed=0)
    mask = numpy.asarray(nib.load(str(studies / "p0" / "mask.nii.gz")).dataobj)
    with_foreground = int(mask.any(axis=(0, 1)).sum())
    assert 0 < with_foreground < 12
    kept = list((tmp_path / "s" / "train" / "masks").glob("p0_z*.png"))
    assert with_foreground <= len(kept) < 12  # every foreground slice, hardly any empty one
    assert len(list((tmp_path / "s" / "test" / "masks").glob("p4_z*.png"))) == 12  # evaluation keeps all
