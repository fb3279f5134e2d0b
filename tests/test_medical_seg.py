"""DICOM SEG masks (issue 22): frames placed on the slices of the series they segment (by referenced
SOPInstanceUID, else by position), voxel for voxel on the image volume's canonical grid, fractional
thresholds, overlaps, the errors, pydicom's own SEG file, a studies CSV with a SEG mask through
prepare_slices to the slice PNGs, and a SEG as the truth of `cnnkit predict-volume` and of a run's 3-D evaluation."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy
import pytest

pydicom = pytest.importorskip("pydicom")
nibabel = pytest.importorskip("nibabel")

from pydicom.dataset import Dataset, FileDataset, FileMetaDataset  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # noqa: E402

from cnnkit.data.medical.dicom import read_series  # noqa: E402
from cnnkit.data.medical.seg import SEG_SOP_CLASS_UID, is_dicom_seg, read_seg_volume  # noqa: E402
from cnnkit.errors import DataError  # noqa: E402

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
ROWS, COLUMNS = 16, 12  # not square: a swapped row/column axis cannot pass
SPACING = (0.8, 0.7)  # (row, column) mm
HEIGHTS = [0.0, 2.5, 5.0, 7.5, 10.0, 12.5]  # slice g's position along the normal (mm)
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # normal (0, 1, 0): slices along y, rows going down in z
LABELS = {1: "Liver", 2: "Tumour"}


def _segment_pixels(number: int, g: int) -> numpy.ndarray | None:
    """(ROWS, COLUMNS) bool of segment `number` on slice g, None where it has no frame. 2 overlaps 1 on slice 2."""
    r, c = numpy.meshgrid(numpy.arange(ROWS), numpy.arange(COLUMNS), indexing="ij")
    if number == 1 and g in (1, 2, 4):
        return ((r + c + g) % 3 == 0) & (r < 10)
    if number == 2 and g in (2, 3):
        return (r >= 6) & (c >= 4) & (c < 10 - g)
    return None


def _labels(g: int) -> numpy.ndarray:
    """(ROWS, COLUMNS) int of slice g: the higher segment wins where they overlap."""
    out = numpy.zeros((ROWS, COLUMNS), dtype=numpy.int64)
    for number in (1, 2):
        pixels = _segment_pixels(number, g)
        if pixels is not None:
            out[pixels] = number
    return out


def _position(g: int, orientation) -> numpy.ndarray:
    row_dir, col_dir = numpy.array(orientation).reshape(2, 3)
    return numpy.array([-10.0, -20.0, 30.0]) + HEIGHTS[g] * numpy.cross(row_dir, col_dir)


def _uid(g: int) -> str:
    return generate_uid(entropy_srcs=[f"cnnkit test slice {g}"])


def _file_meta(sop_class: str, uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _common(dataset: Dataset) -> None:
    dataset.PatientID, dataset.StudyInstanceUID = "p1", generate_uid(entropy_srcs=["study"])
    dataset.FrameOfReferenceUID = generate_uid(entropy_srcs=["frame of reference"])
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.Rows, dataset.Columns = ROWS, COLUMNS


def write_series(folder: Path, orientation=AXIAL) -> Path:
    """6 CT slices written in shuffled file order; stored value g * 256 + r * 16 + c encodes (slice, row, col)."""
    folder.mkdir(parents=True, exist_ok=True)
    order = list(range(len(HEIGHTS)))
    random.Random(0).shuffle(order)
    r, c = numpy.meshgrid(numpy.arange(ROWS), numpy.arange(COLUMNS), indexing="ij")
    for name, g in enumerate(order):
        dataset = FileDataset(str(folder / f"f{name}.dcm"), {}, file_meta=_file_meta(CTImageStorage, _uid(g)),
                              preamble=b"\0" * 128)
        _common(dataset)
        dataset.SOPClassUID, dataset.SOPInstanceUID, dataset.Modality = CTImageStorage, _uid(g), "CT"
        dataset.SeriesInstanceUID = generate_uid(entropy_srcs=["series"])
        dataset.InstanceNumber = len(HEIGHTS) - g  # against the geometry: the reader must sort by position
        dataset.ImagePositionPatient = [float(v) for v in _position(g, orientation)]
        dataset.ImageOrientationPatient = list(orientation)
        dataset.PixelSpacing, dataset.SliceThickness = list(SPACING), 2.5
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 1
        dataset.RescaleIntercept, dataset.RescaleSlope = -1024, 1
        dataset.PixelData = (g * 256 + r * 16 + c).astype("<i2").tobytes()
        dataset.save_as(folder / f"f{name}.dcm", enforce_file_format=True)
    return folder


def write_seg(path: Path, orientation=AXIAL, uids: bool = True, positions: bool = True, fractional: bool = False,
              rows: int = ROWS, columns: int = COLUMNS, frames: list | None = None, labels: dict = LABELS) -> Path:
    """A SEG of segments 1 and 2 over slices 1-4, one frame per (segment, slice), frames in shuffled order.

    `frames` (segment, g, pixels) replaces the default frames (fractional: uint8 values, max 200)."""
    frames = frames if frames is not None else [(n, g, _segment_pixels(n, g)) for n in (1, 2) for g in range(6)
                                                if _segment_pixels(n, g) is not None]
    frames = list(frames)
    random.Random(1).shuffle(frames)
    uid = generate_uid(entropy_srcs=[str(path)])
    dataset = FileDataset(str(path), {}, file_meta=_file_meta(SEG_SOP_CLASS_UID, uid), preamble=b"\0" * 128)
    _common(dataset)
    dataset.Rows, dataset.Columns = rows, columns
    dataset.SOPClassUID, dataset.SOPInstanceUID, dataset.Modality = SEG_SOP_CLASS_UID, uid, "SEG"
    dataset.SeriesInstanceUID = generate_uid(entropy_srcs=[f"seg series {path}"])
    dataset.NumberOfFrames = len(frames)
    segments = []
    for number, label in labels.items():
        item = Dataset()
        item.SegmentNumber, item.SegmentLabel = number, label
        segments.append(item)
    dataset.SegmentSequence = segments
    shared, orient, measures = Dataset(), Dataset(), Dataset()
    orient.ImageOrientationPatient = list(orientation)
    measures.PixelSpacing, measures.SliceThickness = list(SPACING), 2.5
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = [orient], [measures]
    dataset.SharedFunctionalGroupsSequence = [shared]
    groups = []
    for number, g, _ in frames:
        group, identification = Dataset(), Dataset()
        identification.ReferencedSegmentNumber = number
        group.SegmentIdentificationSequence = [identification]
        if uids:
            source, derivation = Dataset(), Dataset()
            source.ReferencedSOPClassUID, source.ReferencedSOPInstanceUID = CTImageStorage, _uid(g)
            derivation.SourceImageSequence = [source]
            group.DerivationImageSequence = [derivation]
        if positions:
            plane = Dataset()
            plane.ImagePositionPatient = [float(v) for v in _position(g, orientation)]
            group.PlanePositionSequence = [plane]
        groups.append(group)
    dataset.PerFrameFunctionalGroupsSequence = groups
    stack = numpy.stack([pixels for _, _, pixels in frames])  # (F, rows, cols)
    if fractional:
        dataset.SegmentationType, dataset.MaximumFractionalValue = "FRACTIONAL", 200
        dataset.SegmentationFractionalType = "PROBABILITY"
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7
        dataset.PixelData = stack.astype(numpy.uint8).tobytes()
    else:
        from pydicom.pixels import pack_bits

        dataset.SegmentationType = "BINARY"
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 1, 1, 0
        dataset.PixelData = pack_bits(stack.astype(numpy.uint8))
    dataset.PixelRepresentation = 0
    dataset.save_as(path, enforce_file_format=True)
    return path


def expected_from_image(image_data: numpy.ndarray) -> numpy.ndarray:
    """The labels each image voxel should carry, read off its encoded (slice, row, col): alignment by content."""
    stored = numpy.rint(image_data).astype(numpy.int64) + 1024
    g, r, c = stored // 256, (stored % 256) // 16, stored % 16
    table = numpy.stack([_labels(k) for k in range(len(HEIGHTS))])  # (G, ROWS, COLUMNS)
    return table[g, r, c]


# ----------------------------------------------------------------------------------------------- placement
@pytest.mark.parametrize("orientation", [AXIAL, CORONAL], ids=["axial", "coronal"])
def test_frames_land_on_their_slices_voxel_for_voxel(tmp_path, orientation):
    series = write_series(tmp_path / "ct", orientation)
    seg = write_seg(tmp_path / "seg.dcm", orientation)
    image = read_series(series)
    mask = read_seg_volume(seg, series)
    assert mask.shape == image.shape and mask.data.dtype == numpy.int64
    numpy.testing.assert_allclose(mask.affine, image.affine)
    numpy.testing.assert_array_equal(mask.data, expected_from_image(image.data))  # same voxels as the image's
    assert mask.meta["segment_labels"] == LABELS and (mask.data == 2).any() and (mask.data == 1).any()
    if orientation == AXIAL:  # by hand: LPS axial -> RAS flips columns (x) and rows (y); slices already inferior first
        expected = numpy.stack([_labels(g).T[::-1, ::-1] for g in range(len(HEIGHTS))], axis=2)
        assert image.shape == (COLUMNS, ROWS, len(HEIGHTS))
        numpy.testing.assert_array_equal(mask.data, expected)
        # The affine's origin is slice 0's (not the first file's, slice 4): voxel (r 0, c 0, slice 0) in RAS.
        numpy.testing.assert_allclose(image.affine @ [COLUMNS - 1, ROWS - 1, 0, 1], [10.0, 20.0, 30.0, 1])


def test_position_only_and_unknown_references_fall_back_to_position(tmp_path):
    series = write_series(tmp_path / "ct")
    image = read_series(series)
    by_position = read_seg_volume(write_seg(tmp_path / "positions.dcm", uids=False), series)
    numpy.testing.assert_array_equal(by_position.data, expected_from_image(image.data))
    # Positions off by 1 mm (< half the 2.5 mm spacing) still match; the frames reference no UID of the series.
    frames = [(1, 1, _segment_pixels(1, 1)), (2, 3, _segment_pixels(2, 3))]
    seg = write_seg(tmp_path / "shifted.dcm", uids=False, frames=frames)
    dataset = pydicom.dcmread(seg)
    for group in dataset.PerFrameFunctionalGroupsSequence:
        position = group.PlanePositionSequence[0].ImagePositionPatient
        group.PlanePositionSequence[0].ImagePositionPatient = [position[0], position[1], float(position[2]) + 1.0]
    dataset.save_as(seg)
    expected = numpy.zeros((len(HEIGHTS), ROWS, COLUMNS), dtype=numpy.int64)
    expected[1][_segment_pixels(1, 1)] = 1
    expected[3][_segment_pixels(2, 3)] = 2
    numpy.testing.assert_array_equal(read_seg_volume(seg, series).data, expected.transpose(2, 1, 0)[::-1, ::-1])


def test_fractional_threshold_at_half_the_maximum(tmp_path):
    series = write_series(tmp_path / "ct")
    values = numpy.zeros((ROWS, COLUMNS), dtype=numpy.uint8)
    values[0, 0], values[0, 1], values[0, 2], values[0, 3] = 99, 100, 101, 200  # max 200: 100 and up count
    mask = read_seg_volume(write_seg(tmp_path / "fractional.dcm", fractional=True, frames=[(1, 0, values)]), series)
    # Slice 0 is the most inferior (z index 0); row 0, columns 0..3 are RAS x = COLUMNS-1-c, y = ROWS-1.
    assert mask.data[COLUMNS - 1 - numpy.arange(4), ROWS - 1, 0].tolist() == [0, 1, 1, 1]
    assert int(mask.data.sum()) == 3


def test_seg_on_a_nifti_of_the_series_matches_the_series(tmp_path):
    from cnnkit.data.medical.nifti import read_nifti, write_like, write_nifti

    series = write_series(tmp_path / "ct", CORONAL)
    seg = write_seg(tmp_path / "seg.dcm", CORONAL)
    image = read_series(series)
    expected = read_seg_volume(seg, series).data
    own = write_like(image.data, image, tmp_path / "own.nii.gz")  # the series' own voxel order and affine
    canonical = write_nifti(image.data, image.affine, tmp_path / "ras.nii.gz")  # permuted and flipped
    for nifti in (own, canonical):
        assert read_nifti(nifti).shape == image.shape
        numpy.testing.assert_array_equal(read_seg_volume(seg, nifti).data, expected)
    with pytest.raises(DataError, match=r"seg\.dcm: its pixel grid .* does not follow the voxel axes of the NIfTI"):
        read_seg_volume(seg, write_nifti(image.data, image.affine * [[1], [1], [1.5], [1]], tmp_path / "x.nii.gz"))


def test_pydicom_liver_seg_lands_on_the_slice_it_references(tmp_path):
    """pydicom's liver_1frame.dcm (one 512x512 frame; its CT is not shipped): a stand-in series of three
    512x512 slices with the UIDs and positions its frames reference (z -128.69, -127.69, -126.69)."""
    path = TEST_FILES / "liver_1frame.dcm"
    if not path.is_file():
        pytest.skip("pydicom's bundled liver_1frame.dcm is not installed")
    source = pydicom.dcmread(path)
    assert is_dicom_seg(path)
    folder = tmp_path / "liver-ct"
    folder.mkdir()
    for index, group in enumerate(source.PerFrameFunctionalGroupsSequence):
        uid = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        dataset = FileDataset(str(folder / f"{index}.dcm"), {}, file_meta=_file_meta(CTImageStorage, uid),
                              preamble=b"\0" * 128)
        dataset.SOPClassUID, dataset.SOPInstanceUID, dataset.Modality = CTImageStorage, uid, "CT"
        dataset.PatientID = "99000"
        dataset.ImagePositionPatient = group.PlanePositionSequence[0].ImagePositionPatient
        dataset.ImageOrientationPatient, dataset.PixelSpacing = [1, 0, 0, 0, 1, 0], [0.810547, 0.810547]
        dataset.Rows = dataset.Columns = 512
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 0
        dataset.PixelData = numpy.zeros((512, 512), "<u2").tobytes()
        dataset.save_as(folder / f"{index}.dcm", enforce_file_format=True)
    mask = read_seg_volume(path, folder)
    assert mask.shape == (512, 512, 3) and mask.meta["segment_labels"] == {1: "Liver"}
    assert int(mask.data.sum()) == 36233 and int(mask.data[:, :, 0].sum()) == 36233  # the frame's z -128.69: inferior
    numpy.testing.assert_array_equal(mask.data[:, :, 0], source.pixel_array.T[::-1, ::-1])
    # Against a series of another size: a clear error, not a wrong mask.
    with pytest.raises(DataError, match=r"liver_1frame\.dcm has frames of 512x512 pixels but the series .* has 16x12"):
        read_seg_volume(path, write_series(tmp_path / "small"))


# ----------------------------------------------------------------------------------------------- errors
def test_errors_name_the_file_and_what_to_do(tmp_path):
    from cnnkit.data.medical.slices import read_volume
    from cnnkit.data.medical.studies import read_studies

    series = write_series(tmp_path / "ct")
    ct_file = next(series.iterdir())
    assert not is_dicom_seg(ct_file) and not is_dicom_seg(series)
    with pytest.raises(DataError, match=rf"{ct_file.name} is not a DICOM SEG \(Modality CT, SOP class CT Image "
                                        r"Storage\): a study's mask is a NIfTI label volume .* or a DICOM SEG"):
        read_seg_volume(ct_file, series)
    small = write_seg(tmp_path / "small.dcm", rows=8, columns=8, frames=[(1, 1, numpy.ones((8, 8), bool))])
    with pytest.raises(DataError, match=r"small\.dcm has frames of 8x8 pixels but the series .*ct has 16x12: "
                                        r"it was made on another image grid"):
        read_seg_volume(small, series)
    other = write_series(tmp_path / "other", CORONAL)
    elsewhere = write_seg(tmp_path / "elsewhere.dcm", uids=False)  # an axial SEG on a coronal series
    with pytest.raises(DataError, match=r"elsewhere\.dcm has orientation"):
        read_seg_volume(elsewhere, other)
    far = write_seg(tmp_path / "far.dcm", uids=False, frames=[(1, 1, _segment_pixels(1, 1))])
    dataset = pydicom.dcmread(far)
    dataset.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0].ImagePositionPatient = [-10, -20, 300]
    dataset.save_as(far)
    with pytest.raises(DataError, match=r"far\.dcm matches no slice of the series .* of .*ct \(frame 1 references "
                                        r"none, position \(-10\.0, -20\.0, 300\.0\)\): it segments another image"):
        read_seg_volume(far, series)
    partial = write_seg(tmp_path / "partial.dcm", uids=False, frames=[(1, 1, _segment_pixels(1, 1)),
                                                                       (1, 2, _segment_pixels(1, 2))])
    dataset = pydicom.dcmread(partial)
    dataset.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence[0].ImagePositionPatient = [-10, -20, 300]
    dataset.save_as(partial)
    with pytest.raises(DataError, match=r"partial\.dcm: 1 of its 2 frames match no slice .* is the series complete"):
        read_seg_volume(partial, series)
    seg = write_seg(tmp_path / "seg.dcm")
    with pytest.raises(DataError, match=r"seg\.dcm is a DICOM SEG: .* give that image too"):
        read_volume(seg, mask=True)
    (tmp_path / "studies.csv").write_text(f"patient,image,mask\np1,ct,{ct_file.relative_to(tmp_path)}\n")
    with pytest.raises(DataError, match=rf"study p1: mask .*{ct_file.name} is neither a NIfTI file .* nor a DICOM SEG"):
        read_studies(tmp_path / "studies.csv")


# ----------------------------------------------------------------------------------------------- studies
def test_studies_with_seg_masks_give_the_right_mask_slices(tmp_path, capsys):
    from PIL import Image

    from cnnkit.cli import main
    from cnnkit.data.medical.slices import prepare_slices, read_mask, write_slice_dataset
    from cnnkit.data.medical.studies import read_studies
    from cnnkit.data.medical.volumes import volume_slices

    root = tmp_path / "studies"
    for patient in ("p1", "p2"):
        write_series(root / patient / "image")
        write_seg(root / patient / "seg.dcm")
    (root / "studies.csv").write_text("patient,image,mask,split\np1,p1/image,p1/seg.dcm,train\n"
                                      "p2,p2/image,p2/seg.dcm,test\n")
    studies = read_studies(root / "studies.csv")
    assert [study.mask.name for study in studies] == ["seg.dcm", "seg.dcm"]
    out = prepare_slices(root / "studies.csv", "minmax", 1, 0.0, 0)
    assert prepare_slices(root / "studies.csv", "minmax", 1, 0.0, 0) == out  # cached
    assert (out / "classes.txt").read_text().split() == ["background", "Liver", "Tumour"]  # the SEG's labels
    expected = volume_slices(expected_from_image(read_series(root / "p2" / "image").data))  # (Z, H, W)
    for z in range(len(HEIGHTS)):
        png = numpy.asarray(Image.open(out / "test" / "masks" / f"p2_z{z:03d}.png"))
        numpy.testing.assert_array_equal(png, expected[z])
    assert len(list((out / "train" / "masks").iterdir())) == len(HEIGHTS)
    record = next(r for r in json.loads((out / "medical.json").read_text())["studies"] if r["patient"] == "p2")
    assert record["mask"] == str(root / "p2" / "seg.dcm") and not (out / "seg-masks").exists()  # read by 3-D evaluation
    numpy.testing.assert_array_equal(volume_slices(read_mask(record["mask"], record["image"]).data), expected)
    # The folder layout finds seg.dcm like mask.nii.gz, and `cnnkit data check` reads it.
    (root / "studies.csv").unlink()
    assert [(s.patient, s.mask.name) for s in read_studies(root)] == [("p1", "seg.dcm"), ("p2", "seg.dcm")]
    assert main(["data", "check", str(root), "--val-fraction", "0.5"]) == 0
    assert "patients 1 train / 1 val / 0 test (from studies)" in capsys.readouterr().out
    # Segment labels that disagree between studies are an error unless classes.txt names the classes.
    write_seg(root / "p2" / "seg.dcm", labels={1: "Spleen", 2: "Tumour"})
    with pytest.raises(DataError, match=r"segment 1 is 'Liver' in .*p1/seg\.dcm but 'Spleen' in .*p2/seg\.dcm: .*"
                                        r"classes\.txt"):
        write_slice_dataset(read_studies(root), tmp_path / "conflict", val_fraction=0.0)
    (root / "classes.txt").write_text("background\norgan\ntumour\n")
    info = write_slice_dataset(read_studies(root), tmp_path / "named", val_fraction=0.0, classes_root=root)
    assert (tmp_path / "named" / "classes.txt").read_text().split() == ["background", "organ", "tumour"]
    assert len(info["studies"]) == 2
    (root / "p3").mkdir()
    (root / "p3" / "image").symlink_to(root / "p1" / "image")
    (root / "p3" / "mask.dcm").write_bytes(next((root / "p1" / "image").iterdir()).read_bytes())  # a CT slice
    assert main(["data", "check", str(root)]) == 2
    assert "study p3: mask" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- scoring
TINY_UNET = {"base_width": 4, "decoder_channels": [16, 16, 8, 8, 4]}  # as tests/test_medical_training.py


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory) -> tuple[Path, Path]:
    """(studies root, run dir): a tiny U-Net trained one epoch on three series whose masks are SEGs."""
    import cnnkit

    root = tmp_path_factory.mktemp("seg-studies")
    for patient in ("p1", "p2", "p3"):
        write_series(root / patient / "image")
        write_seg(root / patient / "seg.dcm")
    (root / "studies.csv").write_text("patient,image,mask,split\np1,p1/image,p1/seg.dcm,train\n"
                                      "p2,p2/image,p2/seg.dcm,test\np3,p3/image,p3/seg.dcm,val\n")
    run = cnnkit.train(task="segment", data=str(root / "studies.csv"), window="minmax", image_size=32,
                       model="unet", model_args=TINY_UNET, epochs=1, batch_size=4, lr=3e-3, translate=0, hflip=False,
                       precision="fp32", channels_last=False, num_workers=0, progress=False, report=False,
                       out=str(tmp_path_factory.mktemp("seg-runs")))
    return root, Path(run.run_dir)


def _predict_volume(run: Path, image: Path, truth: Path, out: Path, capsys) -> dict:
    from cnnkit.cli import main

    assert main(["predict-volume", str(run), str(image), "--truth", str(truth), "--out", str(out), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_predict_volume_scores_a_seg_truth_as_its_nifti(seg_run, tmp_path, capsys):
    import cnnkit
    from cnnkit.data.medical.nifti import write_like
    from cnnkit.tasks.segmentation.volume import evaluate_volume

    root, run = seg_run
    series, seg = root / "p2" / "image", root / "p2" / "seg.dcm"
    image = read_series(series)
    expected = expected_from_image(image.data)  # the SEG's labels, read off the image's content
    nifti_truth = write_like(expected.astype(numpy.uint8), image, tmp_path / "truth.nii.gz")  # the same, as NIfTI
    by_seg = _predict_volume(run, series, seg, tmp_path / "a.nii.gz", capsys)
    by_nifti = _predict_volume(run, series, nifti_truth, tmp_path / "b.nii.gz", capsys)
    structures = by_seg["metrics"]["per_structure"]  # the run's classes, named by the SEG labels
    assert {name: entry["true_voxels"] for name, entry in structures.items()} == \
        {"Liver": int((expected == 1).sum()), "Tumour": int((expected == 2).sum())}
    assert by_seg["metrics"] == by_nifti["metrics"]  # (this one-epoch run may predict background everywhere)
    # The series as a NIfTI input: the SEG is placed on its voxels by geometry, and scores the same prediction.
    image_nifti = write_like(image.data, image, tmp_path / "p2.nii.gz")
    assert _predict_volume(run, image_nifti, seg, tmp_path / "c.nii.gz", capsys)["metrics"] == by_seg["metrics"]
    # The run's own 3-D evaluation reads the test study's SEG with its series (no NIfTI copy in the cache).
    segmenter = cnnkit.load(run)
    volumes = segmenter.evaluate("test")["volumes"]
    assert [v["patient"] for v in volumes] == ["p2"]
    assert {k: volumes[0][k] for k in by_seg["metrics"]} == by_seg["metrics"]
    assert not list((root / ".cnnkit-slices").glob("*/seg-masks"))
    # Scores that a misplaced SEG could not match: the truth less its slice 2 (both segments), scored both ways.
    partial = expected.copy()
    partial[:, :, 2] = 0
    scores = [evaluate_volume(segmenter, partial, image, truth, image=series) for truth in (seg, nifti_truth)]
    assert scores[0] == scores[1]
    for entry in scores[0]["per_structure"].values():
        assert 0 < entry["dice"] < 1 and 0 < entry["hd95_mm"] < 10 and entry["true_voxels"] > 0


def test_predict_volume_with_a_seg_of_another_image_is_a_clear_error(seg_run, tmp_path, capsys):
    from cnnkit.cli import main

    root, run = seg_run
    small = write_seg(tmp_path / "small.dcm", rows=8, columns=8, frames=[(1, 1, numpy.ones((8, 8), bool))])
    assert main(["predict-volume", str(run), str(root / "p2" / "image"), "--truth", str(small),
                 "--out", str(tmp_path / "mask.nii.gz")]) == 2
    assert re.search(r"small\.dcm has frames of 8x8 pixels but the series .*p2/image has 16x12",
                     capsys.readouterr().err)
    coronal = write_seg(tmp_path / "coronal.dcm", CORONAL, uids=False)  # made on a coronal series
    assert main(["predict-volume", str(run), str(root / "p2" / "image"), "--truth", str(coronal),
                 "--out", str(tmp_path / "mask.nii.gz")]) == 2
    assert "coronal.dcm has orientation" in capsys.readouterr().err
