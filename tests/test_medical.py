"""Medical imaging readers (issue 22): HU and windows against pydicom's own LUT functions and hand
computation, MONOCHROME1, multi-frame, DICOM errors naming the file, NIfTI orientation round trip,
slice stacking/restacking, resampling, patient-level splits, surface distances, the Tversky loss."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy
import pytest
import torch

pydicom = pytest.importorskip("pydicom")
nibabel = pytest.importorskip("nibabel")

from cnnkit.data.medical import (Study, apply_window, canonical, linear_window, parse_window,  # noqa: E402
                                 patient_overlap, patient_split, resample, restack, stack_slices, volume_slices)
from cnnkit.data.medical.dicom import read_dicom, read_dicom_seg, read_series  # noqa: E402
from cnnkit.data.medical.nifti import read_nifti, write_like, write_nifti  # noqa: E402
from cnnkit.data.medical.volumes import Volume  # noqa: E402
from cnnkit.errors import ConfigError, DataError  # noqa: E402

# The files pydicom ships in its wheel (get_testdata_file would try to download the others).
TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def dicom_file(name: str) -> Path:
    path = TEST_FILES / name
    if not path.is_file():
        pytest.skip(f"pydicom's bundled {name} is not installed")
    return path


# ----------------------------------------------------------------------------------------------- windowing
def test_window_specs_and_hand_computed_values():
    assert (parse_window("brain").center, parse_window("brain").width) == (40.0, 80.0)
    assert parse_window("Soft_Tissue").spec == "soft-tissue"
    assert (parse_window("-600, 1500").center, parse_window("-600, 1500").width) == (-600.0, 1500.0)
    assert (parse_window("percentile:1,99").low, parse_window("percentile:1,99").high) == (1.0, 99.0)
    for bad in ("brian", "40", "40,0", "percentile:90,10"):
        with pytest.raises(ConfigError, match="window"):
            parse_window(bad)
    # C 40, W 81: x <= -0.5 -> 0; x > 79.5 -> 1; between: (x - 39.5) / 80 + 0.5
    values = numpy.array([-1000.0, -0.5, 0.0, 39.5, 79.0, 79.5, 80.0, 3000.0])
    expected = numpy.array([0, 0, 0.00625, 0.5, 0.99375, 1.0, 1, 1])
    numpy.testing.assert_allclose(linear_window(values, 40, 81), expected, atol=1e-6)
    # Percentile clipping of an MRI-like volume: the 0.5/99.5 percentiles map to 0 and 1.
    volume = numpy.arange(1000, dtype=numpy.float32)
    scaled = apply_window(volume, "percentile")
    assert scaled.min() == 0 and scaled.max() == 1
    assert scaled[500] == pytest.approx((500 - 4.995) / (994.005 - 4.995), abs=1e-5)


def test_hounsfield_units_and_window_match_pydicom():
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    path = dicom_file("CT_small.dcm")
    dataset = pydicom.dcmread(path)
    image = read_dicom(path)
    hu = apply_modality_lut(dataset.pixel_array, dataset)
    numpy.testing.assert_array_equal(image.values[0], hu)
    assert float(dataset.RescaleIntercept) == -1024
    assert image.values[0, 0, 0] == dataset.pixel_array[0, 0] - 1024  # slope 1, intercept -1024, by hand
    # Our [0, 1] window, scaled to pydicom's output range, equals pydicom's VOI LUT (MR_small: C 600, W 1600).
    for name in ("MR_small.dcm", "CT_small.dcm"):
        dataset = pydicom.dcmread(dicom_file(name))
        if "WindowCenter" not in dataset:
            dataset.WindowCenter, dataset.WindowWidth = 40, 400
        values = apply_modality_lut(dataset.pixel_array, dataset)
        theirs = apply_voi_lut(values, dataset)
        bits = dataset.BitsStored
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if dataset.PixelRepresentation else (0, 2 ** bits - 1)
        if "RescaleSlope" in dataset:
            low, high = (v * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept) for v in (low, high))
        ours = linear_window(values, float(dataset.WindowCenter), float(dataset.WindowWidth))
        numpy.testing.assert_allclose(ours * (high - low) + low, theirs, rtol=1e-6, atol=1e-3 * (high - low))
        assert 0 < ours.mean() < 1


def test_monochrome1_is_inverted_after_windowing(tmp_path):
    dataset = pydicom.dcmread(dicom_file("MR_small.dcm"))
    normal = read_dicom(dicom_file("MR_small.dcm")).windowed("dicom")
    dataset.PhotometricInterpretation = "MONOCHROME1"
    dataset.save_as(tmp_path / "inverted.dcm")
    inverted = read_dicom(tmp_path / "inverted.dcm").windowed("dicom")
    numpy.testing.assert_allclose(inverted, 1 - normal, atol=1e-6)
    assert normal.std() > 0.05


def test_multi_frame_and_seg():
    image = read_dicom(dicom_file("rtdose.dcm"))
    dataset = pydicom.dcmread(dicom_file("rtdose.dcm"))
    assert image.values.shape == (15, 10, 10)
    numpy.testing.assert_array_equal(image.values, dataset.pixel_array.astype(numpy.float32))
    frames, numbers, labels = read_dicom_seg(dicom_file("liver_1frame.dcm"))
    assert frames.shape == (1, 512, 512) and numbers == [1] and labels == {1: "Liver"}
    assert frames.sum() == 36233


def test_enhanced_multi_frame_applies_each_frames_own_rescale(tmp_path):
    """Functional groups: frame f's PixelValueTransformationSequence (slope 1 + f, intercept -10 f) wins, the
    shared group's (slope 3, intercept 5) covers frames without their own; pydicom's apply_modality_lut would
    leave the stored values unscaled."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    dataset = pydicom.dcmread(dicom_file("rtdose.dcm"))
    stored = dataset.pixel_array.astype(numpy.float32)
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        if keyword in dataset:
            delattr(dataset, keyword)

    def group(slope, intercept):
        transformation = Dataset()
        transformation.RescaleSlope, transformation.RescaleIntercept = str(slope), str(intercept)
        item = Dataset()
        item.PixelValueTransformationSequence = Sequence([transformation])
        return item

    dataset.PerFrameFunctionalGroupsSequence = Sequence(
        [group(1 + frame, -10 * frame) if frame < 10 else Dataset() for frame in range(15)])
    dataset.SharedFunctionalGroupsSequence = Sequence([group(3, 5)])
    dataset.save_as(tmp_path / "enhanced.dcm")
    values = read_dicom(tmp_path / "enhanced.dcm").values
    expected = numpy.stack([stored[f] * (1 + f) - 10 * f if f < 10 else stored[f] * 3 + 5 for f in range(15)])
    numpy.testing.assert_allclose(values, expected)


def test_dicom_errors_name_the_file(tmp_path):
    plan = dicom_file("rtplan.dcm")
    with pytest.raises(DataError, match=r"rtplan\.dcm has no pixel data"):
        read_dicom(plan)
    with pytest.raises(DataError, match=r"MR_truncated\.dcm is truncated"):
        read_dicom(dicom_file("MR_truncated.dcm"))
    text = tmp_path / "notes.dcm"
    text.write_text("not an image")
    with pytest.raises(DataError, match="notes.dcm is not a DICOM file"):
        read_dicom(text)
    # A truncated copy of a good file (cut inside the pixel data).
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(dicom_file("CT_small.dcm").read_bytes()[:-5000])
    with pytest.raises(DataError, match="cut.dcm"):
        read_dicom(cut)
    compressed = dicom_file("MR_small_jpeg_ls_lossless.dcm")
    try:
        pydicom.dcmread(compressed).pixel_array
    except Exception:  # noqa: BLE001 - no JPEG-LS decoder here: cnnkit must name the one to install
        with pytest.raises(DataError, match=r"MR_small_jpeg_ls_lossless\.dcm is compressed as JPEG-LS.*pylibjpeg-libjpeg"):
            read_dicom(compressed)
    else:
        assert read_dicom(compressed).values.shape == (1, 64, 64)


def test_series_sorted_along_the_normal(tmp_path):
    source = pydicom.dcmread(dicom_file("CT_small.dcm"))
    folder = tmp_path / "series"
    folder.mkdir()
    for order, z in enumerate([10.0, 0.0, 5.0]):  # written out of order
        dataset = copy.deepcopy(source)
        dataset.ImagePositionPatient = [0.0, 0.0, z]
        dataset.InstanceNumber = order + 1
        stored = source.pixel_array + int(z)  # each slice offset by its z, to see the order
        dataset.PixelData = stored.astype(source.pixel_array.dtype).tobytes()
        dataset.save_as(folder / f"slice{order}.dcm")
    volume = read_series(folder)
    assert volume.shape == (128, 128, 3)
    assert volume.spacing == pytest.approx((0.661468, 0.661468, 5.0), abs=1e-5)
    hu = source.pixel_array.astype(numpy.float32) - 1024
    for k, z in enumerate([0.0, 5.0, 10.0]):  # inferior -> superior in RAS
        numpy.testing.assert_array_equal(numpy.sort(volume.data[:, :, k].ravel()), numpy.sort((hu + z).ravel()))


# ----------------------------------------------------------------------------------------------- NIfTI, volumes
def test_nifti_orientation_round_trip(tmp_path):
    rng = numpy.random.default_rng(0)
    data = rng.integers(0, 1000, size=(5, 6, 7)).astype(numpy.int16)
    affine = numpy.array([[-2.0, 0, 0, 10], [0, 0, 3.0, -20], [0, -1.0, 0, 30], [0, 0, 0, 1]])  # L, S, P-ish
    path = write_nifti(data, affine, tmp_path / "image.nii.gz")
    volume = read_nifti(path)
    assert nibabel.aff2axcodes(volume.affine) == ("R", "A", "S")
    assert sorted(volume.spacing) == pytest.approx([1.0, 2.0, 3.0])
    reference = nibabel.as_closest_canonical(nibabel.load(str(path)))
    numpy.testing.assert_array_equal(volume.data, reference.get_fdata())
    numpy.testing.assert_allclose(volume.affine, reference.affine)
    # A prediction on the canonical grid, written back: same affine and voxels as the input file.
    out = write_like(volume.data.astype(numpy.int16), volume, tmp_path / "prediction.nii.gz")
    written = nibabel.load(str(out))
    numpy.testing.assert_allclose(written.affine, affine)
    numpy.testing.assert_array_equal(numpy.asarray(written.dataobj), data)


def test_slices_stacks_and_restack_round_trip():
    data = numpy.arange(4 * 5 * 6).reshape(4, 5, 6)  # (X, Y, Z)
    images = volume_slices(data)
    assert images.shape == (6, 5, 4)
    numpy.testing.assert_array_equal(images[2], numpy.flipud(data[:, :, 2].T))  # anterior at the top
    numpy.testing.assert_array_equal(restack(images), data)
    stacks = stack_slices(images, 3)
    assert stacks.shape == (6, 3, 5, 4)
    numpy.testing.assert_array_equal(stacks[0], images[[0, 0, 1]])  # the edge slice repeated
    numpy.testing.assert_array_equal(stacks[3], images[[2, 3, 4]])
    numpy.testing.assert_array_equal(restack(stacks[:, 1]), data)  # the centre channel is the volume
    with pytest.raises(DataError, match="odd"):
        stack_slices(images, 2)


def test_resample_keeps_voxel_centres():
    data = numpy.zeros((4, 4, 4), dtype=numpy.int64)
    data[1:3, 1:3, 1:3] = 1
    affine = numpy.diag([2.0, 2.0, 2.0, 1.0])
    volume = canonical(Volume(data, affine, {}))
    fine = resample(volume, 1.0, mask=True)
    assert fine.shape == (8, 8, 8) and fine.spacing == pytest.approx((1, 1, 1))
    assert fine.data.dtype == numpy.int64 and set(numpy.unique(fine.data)) == {0, 1}
    assert fine.data.sum() == 8 * data.sum()  # 2x in each axis
    # Old voxel 0 spans -1..1 mm around 0; the new first voxel's centre is at -0.5 mm.
    numpy.testing.assert_allclose(fine.affine @ [0, 0, 0, 1], [-0.5, -0.5, -0.5, 1])
    smooth = resample(Volume(data.astype(numpy.float32), affine, {}), (1.0, 2.0, 2.0))
    assert smooth.shape == (8, 4, 4) and smooth.data.dtype == numpy.float32


def test_sixteen_bit_png_and_tiff_keep_their_levels(tmp_path):
    from PIL import Image

    from cnnkit.data.images import decode_image_float

    values = numpy.array([[0, 1000], [3000, 4095]], dtype=numpy.uint16)  # a 12-bit CT stored in 16 bits
    for name in ("slice.png", "slice.tif"):
        Image.fromarray(values).save(tmp_path / name)
        decoded = decode_image_float(tmp_path / name, 1)
        numpy.testing.assert_allclose(decoded[0].numpy(), values / 4095.0, atol=1e-6)


# ----------------------------------------------------------------------------------------------- patients
def test_patient_split_never_shares_a_patient():
    studies = [Study(f"p{i % 7}", Path(f"p{i}.nii.gz"), None) for i in range(20)]  # 7 patients, several studies
    studies.append(Study("fixed", Path("f.nii.gz"), None, split="test"))
    for seed in range(5):
        splits = patient_split(studies, 0.3, seed)
        assert patient_overlap(splits) == {}
        assert sum(len(v) for v in splits.values()) == len(studies)
        assert {s.patient for s in splits["val"]} and {s.patient for s in splits["train"]}
        assert [s.patient for s in splits["test"]] == ["fixed"]
    assert patient_split(studies, 0.3, 1) == patient_split(studies, 0.3, 1)  # seeded
    shared = {"train": [Study("a", Path("x"), None)], "test": [Study("a", Path("y"), None)]}
    assert patient_overlap(shared) == {"a": ["train", "test"]}
    with pytest.raises(DataError, match="patient"):
        patient_split([Study("only", Path("x"), None)], 0.2, 0)


# ----------------------------------------------------------------------------------------------- metrics, losses
def _brute_force_distances(prediction, truth, spacing):
    from cnnkit.metrics.surface import surface

    a = numpy.argwhere(surface(prediction)) * spacing
    b = numpy.argwhere(surface(truth)) * spacing
    pairwise = numpy.linalg.norm(a[:, None] - b[None], axis=-1)
    return pairwise.min(axis=1), pairwise.min(axis=0)


def test_surface_distances_against_brute_force():
    from cnnkit.metrics.surface import average_surface_distance, dice, hausdorff, volume_metrics

    rng = numpy.random.default_rng(1)
    spacing = numpy.array([2.0, 1.0, 0.5])
    prediction = rng.random((6, 7, 8)) > 0.6
    truth = rng.random((6, 7, 8)) > 0.5
    forward, backward = _brute_force_distances(prediction, truth, spacing)
    expected = max(numpy.percentile(forward, 95), numpy.percentile(backward, 95))
    assert hausdorff(prediction, truth, spacing) == pytest.approx(expected)
    assert hausdorff(prediction, truth, spacing, 100) == pytest.approx(max(forward.max(), backward.max()))
    assert average_surface_distance(prediction, truth, spacing) == pytest.approx(
        numpy.concatenate([forward, backward]).mean())
    one = numpy.zeros((5, 5, 5), bool)
    one[0, 0, 0] = True
    other = numpy.zeros((5, 5, 5), bool)
    other[3, 4, 0] = True
    assert hausdorff(one, other, (1, 1, 1)) == pytest.approx(5.0)  # 3-4-5
    assert hausdorff(one, numpy.zeros_like(one)) == math.inf
    assert hausdorff(numpy.zeros_like(one), numpy.zeros_like(one)) is None
    assert dice(one, one | other) == pytest.approx(2 / 3)
    labels = numpy.zeros((4, 4, 4), int)
    labels[:2] = 1
    labels[2:, :2] = 2
    result = volume_metrics(labels, labels, ["background", "a", "b", "c"], (1, 1, 1))
    assert result["per_structure"]["a"]["dice"] == 1.0 and result["per_structure"]["a"]["hd95_mm"] == 0.0
    assert result["per_structure"]["c"]["dice"] is None and result["structures"] == 2


def test_tversky_loss_is_dice_at_one_half_and_weighs_misses():
    from cnnkit.losses.segmentation import SegmentationLoss, dice_loss, tversky_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 5)
    targets = torch.randint(0, 3, (2, 5, 5))
    targets[0, 0, 0] = 255
    # (TP + s/2) / (TP + FP/2 + FN/2 + s/2) = (2 TP + s) / (P + T + s): Dice with smoothing s.
    assert tversky_loss(logits, targets, alpha=0.5, beta=0.5, smooth=0.5) == pytest.approx(float(dice_loss(logits, targets)))
    # By hand, one class, no smoothing: p = [1, 1, 0, 0] for class 1, t = [1, 0, 1, 1]: TP 1, FP 1, FN 2.
    big = 50.0
    logits = torch.tensor([[big, big, -big, -big], [-big, -big, big, big]]).view(1, 2, 1, 4)  # classes 0/1
    targets = torch.tensor([[[0, 1, 0, 0]]])
    # class 0: p = [1, 1, 0, 0], t = [1, 0, 1, 1]: TP 1, FP 1, FN 2 -> 1 / (1 + 0.3 + 1.4)
    # class 1: p = [0, 0, 1, 1], t = [0, 1, 0, 0]: TP 0 -> index 0
    expected = 1 - (1 / (1 + 0.3 * 1 + 0.7 * 2) + 0.0) / 2
    assert tversky_loss(logits, targets, smooth=0.0) == pytest.approx(expected, abs=1e-5)
    loss = SegmentationLoss("ce+tversky", tversky=(0.3, 0.7))
    assert float(loss(logits, targets)) > expected  # the ce term adds
