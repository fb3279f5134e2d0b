"""Detection data: the scenes benchmark, COCO/VOC/YOLO readers and writers, validation, dataset, augmentation.

The scenes fixture is a tiny benchmark (8 + 4 + 4 canvases of 64x64) made once per session.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy
import pytest
import torch
from PIL import Image

from cnnkit.cli import main
from cnnkit.data.detection import (
    AnnotationSet,
    DetectionAugment,
    DetectionDataset,
    ImageAnnotation,
    collate_detection,
    convert_dataset,
    detect_layout,
    detection_transforms,
    read_split,
    validate_annotations,
    write_split,
)
from cnnkit.data.fashion_mnist import FASHION_MNIST_CLASSES
from cnnkit.data.scenes import ScenesConfig, make_scenes
from cnnkit.errors import ConfigError, DataError
from conftest import FASHION_MNIST_DIR, run_cli

TINY = dict(train=8, val=4, test=4, size=64)


@pytest.fixture(scope="session")
def scenes(tmp_path_factory) -> Path:
    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST is not installed in {FASHION_MNIST_DIR}")
    out = tmp_path_factory.mktemp("scenes") / "scenes"
    make_scenes(out, ScenesConfig(**TINY), fashion_mnist_root=FASHION_MNIST_DIR, progress=False)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def _same_objects(first: AnnotationSet, second: AnnotationSet, masks: bool = False) -> None:
    assert first.classes == second.classes
    assert [image.file.name for image in first.images] == [image.file.name for image in second.images]
    for a, b in zip(first.images, second.images):
        assert (a.width, a.height) == (b.width, b.height)
        numpy.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)  # YOLO keeps six decimals of the size
        numpy.testing.assert_array_equal(a.labels, b.labels)
        if masks:
            numpy.testing.assert_array_equal(a.instance_masks(), b.instance_masks())


# --------------------------------------------------------------------------------------- scenes benchmark


def test_scenes_layout_follows_the_contract(scenes):
    assert (scenes / "classes.txt").read_text().splitlines() == list(FASHION_MNIST_CLASSES)
    assert "--seed 0" in (scenes / "README.txt").read_text()
    for split, count in (("train", 8), ("val", 4), ("test", 4)):
        stems = [f"{index:06d}" for index in range(count)]
        for folder, suffix in (("images", "png"), ("labels", "txt"), ("annotations", "xml"), ("masks", "png"),
                               ("instances", "png")):
            assert sorted(path.stem for path in (scenes / split / folder).glob(f"*.{suffix}")) == stems, (split, folder)
        coco = json.loads((scenes / "annotations" / f"instances_{split}.json").read_text())
        assert [category["id"] for category in coco["categories"]] == list(range(1, 11))
        assert [image["file_name"] for image in coco["images"]] == [f"{stem}.png" for stem in stems]
    annotations = read_split(scenes, "train")
    assert annotations.num_objects >= 8
    for image in annotations.images:
        with Image.open(image.file) as picture:
            assert (picture.mode, picture.size) == ("RGB", (64, 64))
        instances = numpy.asarray(Image.open(image.instance_file))
        semantic = numpy.asarray(Image.open(image.semantic_file))
        assert set(numpy.unique(instances)) == set(range(len(image.labels) + 1))
        for number, (box, label) in enumerate(zip(image.boxes, image.labels), start=1):
            rows, columns = numpy.nonzero(instances == number)
            # The box is the tight box of the visible mask (right/bottom edges exclusive).
            assert box.tolist() == [columns.min(), rows.min(), columns.max() + 1, rows.max() + 1]
            assert (semantic[instances == number] == label + 1).all()
        assert (semantic[instances == 0] == 0).all()


def test_scenes_formats_agree(scenes):
    coco, voc, yolo = (read_split(scenes, "val", format=name) for name in ("coco", "voc", "yolo"))
    _same_objects(coco, voc)
    _same_objects(coco, yolo)
    # COCO's RLE masks are the instance PNGs.
    for image in coco.images:
        reference = numpy.asarray(Image.open(image.instance_file))
        masks = image.instance_masks()
        numpy.testing.assert_array_equal((masks * numpy.arange(1, len(masks) + 1)[:, None, None]).sum(0), reference)


def test_scenes_same_seed_same_bytes_and_canvases_do_not_depend_on_counts(scenes, tmp_path):
    make_scenes(tmp_path / "again", ScenesConfig(**TINY), fashion_mnist_root=FASHION_MNIST_DIR, progress=False)
    assert _files(tmp_path / "again") == _files(scenes)
    make_scenes(tmp_path / "fewer", ScenesConfig(train=2, val=0, test=0, size=64),
                fashion_mnist_root=FASHION_MNIST_DIR, progress=False)
    assert (tmp_path / "fewer/train/images/000001.png").read_bytes() == (scenes / "train/images/000001.png").read_bytes()
    assert not (tmp_path / "fewer" / "val").exists()
    make_scenes(tmp_path / "other", ScenesConfig(train=2, val=0, test=0, size=64, seed=1),
                fashion_mnist_root=FASHION_MNIST_DIR, progress=False)
    assert (tmp_path / "other/train/images/000000.png").read_bytes() != (scenes / "train/images/000000.png").read_bytes()


def test_scenes_refuses_a_used_folder_and_bad_settings(scenes, tmp_path):
    with pytest.raises(DataError, match="not an empty folder"):
        make_scenes(scenes, ScenesConfig(**TINY), progress=False)
    with pytest.raises(DataError, match="min .5. <= max .2."):
        make_scenes(tmp_path / "x", ScenesConfig(min_objects=5, max_objects=2), progress=False)


def test_cli_help_shows_the_generator_defaults_without_importing_it():
    import dataclasses

    from cnnkit.cli import _scenes_defaults

    assert _scenes_defaults() == {field.name: field.default for field in dataclasses.fields(ScenesConfig)}


# ----------------------------------------------------------------------------------- readers and writers


@pytest.mark.parametrize("format", ["coco", "voc", "yolo"])
def test_write_then_read_round_trip(scenes, tmp_path, format):
    original = read_split(scenes, "train")
    write_split(original, tmp_path, "train", format)
    again = read_split(tmp_path, "train")
    assert detect_layout(tmp_path).formats == (format,)
    _same_objects(original, again, masks=True)


def test_convert_chain_coco_voc_yolo_coco(scenes, tmp_path):
    convert_dataset(scenes, tmp_path / "voc", "voc", source_format="coco")
    convert_dataset(tmp_path / "voc", tmp_path / "yolo", "yolo")
    written = convert_dataset(tmp_path / "yolo", tmp_path / "coco", "coco")
    assert written == {"train": (8, read_split(scenes, "train").num_objects), "val": written["val"], "test": written["test"]}
    for split in ("train", "val", "test"):
        _same_objects(read_split(scenes, split), read_split(tmp_path / "coco", split), masks=True)


def test_convert_cli(scenes, tmp_path, capsys):
    result = run_cli("data", "convert", scenes, tmp_path / "out", "--to", "yolo")  # through a real process once
    assert result.returncode == 0, result.stderr
    assert "wrote YOLO annotations" in result.stdout
    assert (tmp_path / "out/train/labels/000000.txt").read_text() == (scenes / "train/labels/000000.txt").read_text()
    assert main(["data", "convert", str(scenes), str(tmp_path / "out"), "--to", "voc"]) == 2
    error = capsys.readouterr().err
    assert "cnnkit data: error:" in error and "not an empty folder" in error and "Traceback" not in error


def test_make_scenes_cli(tmp_path, capsys):
    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST is not installed")
    arguments = ["data", "make-scenes", str(tmp_path / "s"), "--train", "2", "--val", "1", "--test", "1", "--size", "48",
                 "--max-objects", "2", "--quiet", "--fashion-mnist", str(FASHION_MNIST_DIR)]
    assert main(arguments) == 0
    assert "train: 2 canvases" in capsys.readouterr().out
    annotations = read_split(tmp_path / "s", "train")
    assert all(1 <= len(image.labels) <= 2 and image.width == 48 for image in annotations.images)


def test_reads_standard_voc_yolo_and_coco_layouts(scenes, tmp_path):
    original = read_split(scenes, "val")
    # Pascal VOC: Annotations/, JPEGImages/, ImageSets/Main/SPLIT.txt (per-class lists ignored).
    voc = tmp_path / "VOC2012"
    shutil.copytree(scenes / "val" / "annotations", voc / "Annotations")
    shutil.copytree(scenes / "val" / "images", voc / "JPEGImages")
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets/Main/val.txt").write_text("000000\n000001\n000002\n000003\n")
    (voc / "ImageSets/Main/cat_val.txt").write_text("000000 1\n")
    shutil.copy(scenes / "classes.txt", voc / "classes.txt")
    layout = detect_layout(voc)
    assert (layout.layout, list(layout.splits)) == ("voc", ["val"])
    _same_objects(original, layout.read("val"))
    # Ultralytics YOLO: images/SPLIT, labels/SPLIT, data.yaml with names as a dict.
    yolo = tmp_path / "yolo"
    shutil.copytree(scenes / "val" / "images", yolo / "images" / "val")
    shutil.copytree(scenes / "val" / "labels", yolo / "labels" / "val")
    (yolo / "data.yaml").write_text("names:\n" + "".join(f"  {k}: {name!r}\n" for k, name in enumerate(FASHION_MNIST_CLASSES)))
    _same_objects(original, read_split(yolo, "val"))
    # A single COCO file, images found next to it.
    coco = tmp_path / "coco"
    shutil.copytree(scenes / "val" / "images", coco)
    shutil.copy(scenes / "annotations/instances_val.json", coco / "val.json")
    _same_objects(original, read_split(coco / "val.json", "train"), masks=True)
    # A folder of COCO files (one per split) and an images/ folder.
    folder = tmp_path / "coco-folder"
    shutil.copytree(scenes / "val" / "images", folder / "images")
    shutil.copy(scenes / "annotations/instances_val.json", folder / "instances_val.json")
    layout = detect_layout(folder)
    assert (layout.layout, list(layout.splits)) == ("coco", ["val"])
    _same_objects(original, layout.read("val"), masks=True)


def test_unrecognised_folder_lists_the_layouts(tmp_path):
    with pytest.raises(DataError, match="Accepted detection dataset layouts"):
        detect_layout(tmp_path)
    with pytest.raises(DataError, match="no such file or folder"):
        detect_layout(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------- validation


def _yolo_dataset(tmp_path: Path, lines: str, classes=("a", "b")) -> Path:
    root = tmp_path / "yolo"
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "labels").mkdir()
    Image.new("RGB", (40, 20)).save(root / "train/images/x.png")
    (root / "train/labels/x.txt").write_text(lines)
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in classes))
    return root


def test_boxes_outside_are_clipped_and_empty_ones_dropped_with_their_file(tmp_path):
    # On a 40x20 image: one box spilling over the right edge, one fine, one of zero width, one entirely outside.
    root = _yolo_dataset(tmp_path, "0 0.9 0.5 0.4 0.5\n1 0.25 0.5 0.25 0.5\n1 0.5 0.5 0 0.5\n0 1.5 0.5 0.2 0.2\n")
    annotations, report = validate_annotations(read_split(root, "train"), name="train")
    boxes = annotations.images[0].boxes
    numpy.testing.assert_allclose(boxes, [[28, 5, 40, 15], [5, 5, 15, 15]], atol=1e-4)
    assert annotations.images[0].labels.tolist() == [0, 1]
    assert len(report.clipped) == 2 and len(report.dropped) == 2
    assert (report.images, report.objects) == (1, 2)
    text = report.summary()
    assert "clipped 2 boxes" in text and "dropped 2 boxes" in text
    assert str(root / "train/images/x.png") in text and "object 2" in text


def test_clipping_keeps_masks_with_their_boxes(scenes):
    annotations = read_split(scenes, "train")
    image = annotations.images[0]
    image.boxes[0] = [-5, -5, 0, 10]  # zero width after clipping: dropped, with its mask
    cleaned, report = validate_annotations(annotations)
    assert len(report.dropped) == 1 and report.dropped[0][1] == 0
    assert len(cleaned.images[0].labels) == len(image.labels) - 1
    numpy.testing.assert_array_equal(cleaned.images[0].instance_masks(), image.instance_masks()[1:])


@pytest.mark.parametrize("lines, message", [
    ("0 0.5 0.5 0.2\n", r"x.txt line 1: 4 values"),
    ("0 0.5 0.5 0.2 0.2\n0 0.5 zero 0.2 0.2\n", r"x.txt line 2: .* is not five numbers"),
    ("2 0.5 0.5 0.2 0.2\n", r"x.txt line 1: class 2 is not a class index 0..1"),
])
def test_malformed_yolo_lines_name_file_and_line(tmp_path, lines, message):
    with pytest.raises(DataError, match=message):
        read_split(_yolo_dataset(tmp_path, lines), "train")


def test_yolo_label_without_image_is_named(tmp_path):
    root = _yolo_dataset(tmp_path, "0 0.5 0.5 0.2 0.2\n")
    (root / "train/labels/ghost.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match=r"ghost.txt has no image ghost\.\*"):
        read_split(root, "train")


def _coco_dataset(tmp_path: Path, edit) -> Path:
    root = tmp_path / "coco"
    (root / "train" / "images").mkdir(parents=True)
    Image.new("RGB", (40, 20)).save(root / "train/images/x.png")
    data = {"images": [{"id": 7, "file_name": "x.png", "width": 40, "height": 20}],
            "categories": [{"id": 1, "name": "a"}, {"id": 5, "name": "b"}],
            "annotations": [{"id": 3, "image_id": 7, "category_id": 5, "bbox": [1, 2, 10, 5], "iscrowd": 0}]}
    edit(data)
    (root / "annotations").mkdir()
    (root / "annotations/instances_train.json").write_text(json.dumps(data))
    return root


def test_coco_sparse_category_ids_become_zero_based(tmp_path):
    annotations = read_split(_coco_dataset(tmp_path, lambda data: None), "train")
    assert annotations.classes == ["a", "b"]
    assert annotations.images[0].labels.tolist() == [1]
    assert annotations.images[0].boxes.tolist() == [[1, 2, 11, 7]]
    assert annotations.images[0].image_id == 7


@pytest.mark.parametrize("edit, message", [
    (lambda data: data["annotations"][0].update(category_id=9),
     r"instances_train.json: annotations\[0\] \(id 3\) has category_id 9, which is not among the categories \(1, 5\)"),
    (lambda data: data["annotations"][0].update(image_id=8), r"annotations\[0\] \(id 3\) has image_id 8"),
    (lambda data: data["annotations"][0].update(bbox=[1, 2, 3]), r"annotations\[0\] \(id 3\) has bbox \[1, 2, 3\]"),
    (lambda data: data["images"][0].update(file_name="gone.png"), r"instances_train.json: image id 7 names 'gone.png', but .*gone.png does not exist"),
    (lambda data: data.pop("categories"), r"not a COCO annotation file"),
])
def test_bad_coco_entries_name_file_and_entry(tmp_path, edit, message):
    with pytest.raises(DataError, match=message):
        read_split(_coco_dataset(tmp_path, edit), "train")


def test_coco_missing_image_and_invalid_json(tmp_path):
    root = _coco_dataset(tmp_path, lambda data: data["images"].append({"id": 8, "file_name": "y.png", "width": 4, "height": 4}))
    with pytest.raises(DataError, match=r"image id 8 names 'y.png', but .*y.png does not exist"):
        read_split(root, "train")
    (root / "annotations/instances_train.json").write_text('{"images": [')
    with pytest.raises(DataError, match=r"instances_train.json: not valid JSON \(line 1"):
        read_split(root, "train")


def _voc_dataset(tmp_path: Path, objects: str, header: str = "<annotation><filename>x.png</filename>") -> Path:
    root = tmp_path / "voc"
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "annotations").mkdir()
    Image.new("RGB", (40, 20)).save(root / "train/images/x.png")
    (root / "train/annotations/x.xml").write_text(header + objects + "</annotation>")
    (root / "classes.txt").write_text("a\nb\n")
    return root


def _voc_object(name="a", box="<xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>15</ymax>"):
    return f"<object><name>{name}</name><bndbox>{box}</bndbox></object>"


@pytest.mark.parametrize("objects, header, message", [
    (_voc_object() + _voc_object("zebra"), None, r"x.xml: object 1 is named 'zebra', which is not a known class \(a, b\)"),
    (_voc_object(box="<xmin>1</xmin><ymin>2</ymin><xmax>wide</xmax><ymax>15</ymax>"), None,
     r"x.xml: object 0 \(a\) has <xmax>wide</xmax>; expected a number"),
    ("<object><name>a</name></object>", None, r"x.xml: object 0 \(a\) has no <bndbox>"),
    (_voc_object() + "<object>", None, r"x.xml: not well-formed XML"),
    (_voc_object(), "<annotation><filename>missing.png</filename>",
     r"x.xml names <filename>missing.png</filename>, but there is no such image"),
    (_voc_object(), '<!DOCTYPE a [<!ENTITY lol "lol">]><annotation><filename>x.png</filename>',
     r"x.xml: refused to parse XML with entity declarations"),
])
def test_bad_voc_files_name_file_and_object(tmp_path, objects, header, message):
    root = _voc_dataset(tmp_path, objects, *(() if header is None else (header,)))
    with pytest.raises(DataError, match=message):
        read_split(root, "train")


def test_voc_size_from_image_when_absent(tmp_path):
    annotations = read_split(_voc_dataset(tmp_path, _voc_object("b")), "train")
    image = annotations.images[0]
    assert (image.width, image.height, image.labels.tolist(), image.boxes.tolist()) == (40, 20, [1], [[1, 2, 30, 15]])


def test_validation_rejects_unknown_class_index_and_missing_image(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    bad_label = ImageAnnotation(tmp_path / "a.png", 8, 8, boxes=[[0, 0, 4, 4]], labels=[3])
    with pytest.raises(DataError, match=r"a.png: object 0 has class index 3, but there are 2 classes"):
        validate_annotations(AnnotationSet(["x", "y"], [bad_label]))
    missing = ImageAnnotation(tmp_path / "b.png", 8, 8)
    with pytest.raises(DataError, match=r"image .*b.png is missing"):
        validate_annotations(AnnotationSet(["x", "y"], [missing], source="labels.json"))
    not_finite = ImageAnnotation(tmp_path / "a.png", 8, 8, boxes=[[0, 0, float("nan"), 4]], labels=[0])
    with pytest.raises(DataError, match="not finite"):
        validate_annotations(AnnotationSet(["x", "y"], [not_finite]))


# ------------------------------------------------------------------------------- dataset and augmentation


def test_dataset_yields_the_contract_and_collates_lists(scenes):
    annotations = read_split(scenes, "train")
    dataset = DetectionDataset(annotations, masks=True)
    assert dataset.in_memory
    image, target = dataset[0]
    assert (image.dtype, tuple(image.shape)) == (torch.uint8, (3, 64, 64))
    assert (target["boxes"].dtype, target["labels"].dtype, target["masks"].dtype) == (torch.float32, torch.int64, torch.uint8)
    assert target["image_id"] == 1
    numpy.testing.assert_array_equal(target["masks"].numpy(), annotations.images[0].instance_masks())
    streamed = DetectionDataset(annotations, in_memory=False)
    assert torch.equal(streamed[3][0], dataset[3][0])
    images, targets = collate_detection([dataset[0], dataset[1]])
    assert isinstance(images, list) and len(targets) == 2 and targets[1]["image_id"] == 2


def _tight_box(mask: torch.Tensor) -> list[float]:
    rows, columns = torch.nonzero(mask, as_tuple=True)
    return [columns.min().item(), rows.min().item(), columns.max().item() + 1, rows.max().item() + 1]


def test_flip_moves_boxes_with_the_image(scenes):
    annotations = read_split(scenes, "val")
    plain = DetectionDataset(annotations)
    flipped = DetectionDataset(annotations, transforms=detection_transforms(
        DetectionAugment(hflip=1.0, scale=(1.0, 1.0), translate=0.0, colour=0.0)))
    image, target = plain[0]
    flipped_image, flipped_target = flipped[0]
    assert torch.equal(flipped_image, image.flip(-1))
    expected = target["boxes"].clone()
    expected[:, [0, 2]] = 64 - target["boxes"][:, [2, 0]]
    assert torch.allclose(flipped_target["boxes"], expected)


def test_strong_augmentation_keeps_boxes_on_their_masks(scenes):
    annotations = read_split(scenes, "train")
    dataset = DetectionDataset(annotations, masks=True, transforms=detection_transforms("strong", size=64))
    torch.manual_seed(0)
    checked = 0
    for _ in range(3):
        for index in range(len(dataset)):
            image, target = dataset[index]
            assert (image.dtype, tuple(image.shape)) == (torch.uint8, (3, 64, 64))
            assert len(target["boxes"]) == len(target["labels"]) == len(target["masks"])
            for box, mask in zip(target["boxes"], target["masks"]):
                if mask.sum() < 20:  # a sliver cut by the crop: its box and mask round differently
                    continue
                tight = torch.tensor(_tight_box(mask), dtype=torch.float32)
                # The mask always lies inside its box (boxes move exactly, masks by nearest-neighbour: 2 px slack).
                assert (tight[:2] >= box[:2] - 2).all() and (tight[2:] <= box[2:] + 2).all(), (index, box, tight)
                if box.min() > 0 and box.max() < 64:
                    # Not cut by the border: the box is still tight. (A cut object's clipped box is not
                    # re-tightened to what is left of it; torchvision does the same.)
                    assert torch.allclose(box, tight, atol=2.0), (index, box, tight)
                    checked += 1
    assert checked > 30


def test_augmentation_settings_are_checked():
    assert detection_transforms("none") is None
    assert detection_transforms({"preset": "light", "colour": 0.0}) is not None
    with pytest.raises(ConfigError, match="not one of none, light, default, strong"):
        detection_transforms("wild")
    with pytest.raises(ConfigError, match="unknown setting.*rotate"):
        detection_transforms({"rotate": 10})
    with pytest.raises(ConfigError, match="crop needs the image size"):
        detection_transforms({"crop": 0.5})
    with pytest.raises(ConfigError, match="hflip must be a probability"):
        detection_transforms({"hflip": 2})


def test_coco_image_without_objects_has_zero_masks(tmp_path):
    def edit(data):
        data["annotations"][0]["segmentation"] = [[1, 2, 11, 2, 11, 7, 1, 7]]  # a polygon: the box itself
        data["images"].append({"id": 8, "file_name": "x.png", "width": 40, "height": 20})  # no objects
    annotations = read_split(_coco_dataset(tmp_path, edit), "train")
    dataset = DetectionDataset(annotations, masks=True)
    assert tuple(dataset[1][1]["masks"].shape) == (0, 20, 40)
    mask = dataset[0][1]["masks"][0]
    assert _tight_box(mask) == [1, 2, 11, 7]  # pycocotools rasterises a polygon's interior


def test_coco_crowd_regions_are_skipped(tmp_path):
    def edit(data):
        data["annotations"].append({"id": 4, "image_id": 7, "category_id": 1, "bbox": [0, 0, 20, 10], "iscrowd": 1})
    assert read_split(_coco_dataset(tmp_path, edit), "train").images[0].labels.tolist() == [1]


def test_instance_png_with_more_ids_than_objects_is_refused(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    ids = numpy.zeros((8, 8), dtype=numpy.uint8)
    ids[:2, :2], ids[4:, 4:] = 1, 2
    Image.fromarray(ids, mode="L").save(tmp_path / "a-instances.png")
    image = ImageAnnotation(tmp_path / "a.png", 8, 8, boxes=[[0, 0, 2, 2]], labels=[0],
                            instance_file=tmp_path / "a-instances.png")
    with pytest.raises(DataError, match=r"a-instances.png: holds instance id 2 but .*a.png has only 1 annotated objects"):
        image.instance_masks()
