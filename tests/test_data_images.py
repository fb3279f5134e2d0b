"""Data contracts for users' own images: decode_image's modes, class folders, CSV files, FileDataset."""

from __future__ import annotations

from pathlib import Path

import numpy
import pytest
import torch
import torch.utils.data
from PIL import Image

from cnnkit.data import (
    FileDataset,
    SkippedImagesWarning,
    collate_skip_bad,
    decode_image,
    fits_in_memory,
    load_csv,
    load_image_folder,
)
from cnnkit.errors import DataError, DatasetNotFoundError

torch.set_num_threads(1)


# --- decode_image ---------------------------------------------------------------------------


def test_decode_gray_and_rgb():
    gray = Image.fromarray(numpy.array([[0, 100], [200, 255]], dtype=numpy.uint8), mode="L")
    tensor = decode_image(gray, channels=1)
    assert tensor.dtype == torch.uint8 and tensor.shape == (1, 2, 2) and tensor.is_contiguous()
    assert tensor.flatten().tolist() == [0, 100, 200, 255]
    assert decode_image(gray, channels=3).tolist() == [[[0, 100], [200, 255]]] * 3
    rgb = Image.new("RGB", (3, 2), (255, 0, 0))
    assert decode_image(rgb, channels=3)[:, 0, 0].tolist() == [255, 0, 0]
    assert decode_image(rgb, channels=1).flatten().tolist() == [76] * 6  # Pillow's L: 0.299 * 255 rounded


def test_decode_alpha_is_composited_onto_black():
    rgba = Image.new("RGBA", (1, 1), (200, 100, 50, 128))
    assert decode_image(rgba, channels=3).flatten().tolist() == [100, 50, 25]  # value * 128 / 255, rounded
    assert decode_image(Image.new("RGBA", (1, 1), (255, 255, 255, 0)), channels=1).item() == 0
    gray_alpha = Image.new("LA", (1, 1), (255, 255))
    assert decode_image(gray_alpha, channels=1).item() == 255


def test_decode_palette_with_and_without_transparency():
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 255, 255, 0, 0] + [0] * 762)
    palette.putpixel((1, 0), 1)
    assert decode_image(palette, channels=3).tolist() == [[[0, 255]], [[0, 0]], [[255, 0]]]
    palette.info["transparency"] = 0  # entry 0 (blue) transparent -> black
    assert decode_image(palette, channels=3).tolist() == [[[0, 255]], [[0, 0]], [[0, 0]]]


def test_decode_sixteen_bit_scales_by_full_range(tmp_path):
    values = numpy.array([[0, 257, 32896, 65535]], dtype=numpy.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    assert decode_image(image, channels=1).flatten().tolist() == [0, 1, 128, 255]
    path = tmp_path / "deep.png"  # through a real 16-bit PNG file
    image.save(path)
    assert decode_image(path, channels=1).flatten().tolist() == [0, 1, 128, 255]
    big_endian = Image.new("I;16B", (2, 1), 65535)
    assert decode_image(big_endian, channels=3).flatten().tolist() == [255] * 6
    assert decode_image(Image.fromarray(numpy.array([[0, 65535]], dtype=numpy.int32)), channels=1).flatten().tolist() == [0, 255]


def test_decode_bilevel_float_and_cmyk():
    bilevel = Image.new("1", (2, 1))
    bilevel.putpixel((1, 0), 1)
    assert decode_image(bilevel, channels=1).flatten().tolist() == [0, 255]
    floats = Image.fromarray(numpy.array([[-1.0, 0.0, 1.0]], dtype=numpy.float32))
    assert decode_image(floats, channels=1).flatten().tolist() == [0, 128, 255]  # min-max scaled
    cmyk = Image.new("CMYK", (1, 1), (0, 255, 255, 0))  # no cyan, full magenta and yellow: red
    assert decode_image(cmyk, channels=3).flatten().tolist() == [255, 0, 0]


def test_decode_applies_exif_orientation(tmp_path):
    image = Image.new("L", (4, 2), 0)  # wide
    image.putpixel((0, 0), 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to display
    image.save(tmp_path / "phone.png", exif=exif)
    tensor = decode_image(tmp_path / "phone.png", channels=1)
    assert tensor.shape == (1, 4, 2)  # displayed tall
    assert tensor[0, 0, 1].item() == 255  # top-left pixel moved to the top-right


def test_decode_resizes_with_antialiasing():
    # 1-pixel stripes shrunk 10x: an antialiasing filter averages them to mid-gray,
    # point sampling would give pure black or white.
    stripes = numpy.zeros((60, 100), dtype=numpy.uint8)
    stripes[:, ::2] = 255
    tensor = decode_image(Image.fromarray(stripes), channels=3, size=(6, 10))
    assert tensor.shape == (3, 6, 10)
    assert 110 <= int(tensor.min()) and int(tensor.max()) <= 145


def test_decode_unreadable_file_names_it(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"this is not a png")
    with pytest.raises(DataError, match="cannot read image") as error:
        decode_image(path, channels=1)
    assert str(path) in str(error.value)
    with pytest.raises(DataError, match="not found"):
        decode_image(tmp_path / "missing.png", channels=1)
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(good)
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:60])
    with pytest.raises(DataError, match="cut.png"):
        decode_image(tmp_path / "cut.png", channels=3)


# --- class folders ---------------------------------------------------------------------------


def write_image(path: Path, mode: str, size: tuple[int, int], color) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_load_image_folder_orders_classes_and_files(tmp_path):
    write_image(tmp_path / "zebra" / "b.png", "L", (5, 4), 30)
    write_image(tmp_path / "zebra" / "a.png", "L", (5, 4), 20)
    write_image(tmp_path / "ant" / "sub" / "c.png", "L", (5, 4), 10)
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    write_image(tmp_path / ".hidden" / "d.png", "L", (5, 4), 99)
    dataset = load_image_folder(tmp_path)
    assert dataset.classes == ["ant", "zebra"]
    assert dataset.labels.tolist() == [0, 1, 1]
    assert dataset.images.shape == (3, 1, 4, 5)
    assert dataset.images[:, 0, 0, 0].tolist() == [10, 20, 30]


def test_load_image_folder_chooses_channels_from_pixels(tmp_path):
    write_image(tmp_path / "gray" / "a.png", "L", (4, 4), 50)
    write_image(tmp_path / "rgb-but-gray" / "b.png", "RGB", (4, 4), (70, 70, 70))
    assert load_image_folder(tmp_path).images.shape == (2, 1, 4, 4)
    write_image(tmp_path / "colour" / "c.png", "RGB", (4, 4), (255, 0, 0))
    dataset = load_image_folder(tmp_path)
    assert dataset.images.shape == (3, 3, 4, 4)
    assert dataset.images[1, :, 0, 0].tolist() == [50, 50, 50]
    assert load_image_folder(tmp_path, channels=1, size=(2, 3)).images.shape == (3, 1, 2, 3)


def test_load_image_folder_mixed_sizes_use_the_median(tmp_path):
    for index, (width, height) in enumerate([(10, 20), (12, 30), (40, 24)]):
        write_image(tmp_path / "c" / f"{index}.png", "L", (width, height), 0)
    assert load_image_folder(tmp_path).image_size == (24, 12)


def test_corrupt_image_is_skipped_with_a_warning_naming_it(tmp_path):
    for index in range(3):
        write_image(tmp_path / "shirt" / f"{index}.png", "L", (6, 6), 100 + index)
    (tmp_path / "shirt" / "x.png").write_bytes(b"\x00garbage bytes, not an image")
    with pytest.warns(SkippedImagesWarning, match=r"skipped 1 unreadable image of 4: .*x\.png") as record:
        dataset = load_image_folder(tmp_path)
    assert len(dataset) == 3 and dataset.images[:, 0, 0, 0].tolist() == [100, 101, 102]
    assert [path.name for path, _ in record[0].message.skipped] == ["x.png"]


def test_too_many_corrupt_images_raise(tmp_path):
    write_image(tmp_path / "shirt" / "good.png", "L", (6, 6), 1)
    for name in ("x.png", "y.png"):
        (tmp_path / "shirt" / name).write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"2 unreadable images of 3, more than the 1 allowed") as error:
        load_image_folder(tmp_path)
    assert "x.png" in str(error.value) and "y.png" in str(error.value)
    write_image(tmp_path / "shirt" / "y.png", "L", (6, 6), 1)
    with pytest.raises(DataError, match="more than the 0 allowed"):
        load_image_folder(tmp_path, max_bad_fraction=0)


def test_wrong_folder_layouts_explain_the_expected_one(tmp_path):
    with pytest.raises(DatasetNotFoundError):
        load_image_folder(tmp_path / "missing")
    write_image(tmp_path / "flat" / "a.png", "L", (2, 2), 0)
    with pytest.raises(DataError, match="1 images directly but no class folders") as error:
        load_image_folder(tmp_path / "flat")
    assert "one subfolder per class" in str(error.value)
    write_image(tmp_path / "tree" / "cat" / "a.png", "L", (2, 2), 0)
    (tmp_path / "tree" / "dog").mkdir()
    with pytest.raises(DataError, match="class folder\\(s\\) dog contain no image files"):
        load_image_folder(tmp_path / "tree")


# --- CSV -------------------------------------------------------------------------------------


def test_load_csv_relative_and_absolute_paths(tmp_path):
    write_image(tmp_path / "images" / "a.png", "L", (3, 3), 10)
    write_image(tmp_path / "elsewhere" / "b.png", "L", (3, 3), 20)
    (tmp_path / "labels.csv").write_text(
        f"path,label\nimages/a.png,10\n{tmp_path / 'elsewhere' / 'b.png'},2\n\nimages/a.png,2\n"
    )
    dataset = load_csv(tmp_path / "labels.csv")
    assert dataset.classes == ["2", "10"]  # integer labels sort numerically
    assert dataset.labels.tolist() == [1, 0, 0]
    assert dataset.images[:, 0, 0, 0].tolist() == [10, 20, 10]


def test_load_csv_malformed_row_gives_file_and_line(tmp_path):
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("path,label\na.png,cat\nb.png\n")
    with pytest.raises(DataError, match=r"bad\.csv, line 3: expected 2 fields") as error:
        load_csv(csv_path)
    assert str(csv_path) in str(error.value)
    csv_path.write_text("file,class\na.png,cat\n")
    with pytest.raises(DataError, match=r"line 1: header must name the columns 'path' and 'label'"):
        load_csv(csv_path)
    csv_path.write_text("path,label\na.png,cat\nb.png,\n")
    with pytest.raises(DataError, match=r"line 3: empty label"):
        load_csv(csv_path)


def test_load_csv_missing_image_counts_as_unreadable(tmp_path):
    write_image(tmp_path / "a.png", "L", (3, 3), 10)
    (tmp_path / "list.csv").write_text("path,label\na.png,cat\ngone.png,dog\n")
    with pytest.warns(SkippedImagesWarning, match="gone.png"):
        dataset = load_csv(tmp_path / "list.csv")
    assert dataset.labels.tolist() == [0] and dataset.classes == ["cat", "dog"]


# --- streaming -------------------------------------------------------------------------------


def test_file_dataset_streams_and_drops_unreadable_files(tmp_path):
    write_image(tmp_path / "a" / "0.png", "RGB", (8, 6), (10, 20, 30))
    write_image(tmp_path / "b" / "1.png", "L", (3, 3), 40)
    (tmp_path / "b" / "2.png").write_bytes(b"garbage")
    dataset = FileDataset.from_folder(tmp_path, channels=3, size=(4, 4), transform=lambda image: image.float() / 255)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, collate_fn=collate_skip_bad)
    batches = list(loader)
    assert len(batches) == 1
    images, labels = batches[0]
    assert images.shape == (2, 3, 4, 4) and images.dtype == torch.float32
    assert labels.tolist() == [0, 1] and dataset.num_bad == 1
    assert images[0, :, 0, 0].mul(255).round().tolist() == [10, 20, 30]
    assert collate_skip_bad([None, None]) is None


def test_fits_in_memory():
    assert fits_in_memory(60000, 1, (28, 28))
    assert not fits_in_memory(1_000_000, 3, (224, 224))
    assert fits_in_memory(10, 3, (10, 10), budget_bytes=3000) and not fits_in_memory(10, 3, (10, 10), budget_bytes=2999)
