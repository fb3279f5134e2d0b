"""The glyph identity benchmark's font handling: font collections face by face, distinct pictures, references."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import ImageFont

from cnnkit.data.glyphs import FontFace, GlyphsConfig, distinct_characters, find_fonts, fonts_hash, make_glyphs


def _dejavu(name: str) -> Path:
    found = [face.path for face in find_fonts() if face.name == name]
    if not found:
        pytest.skip(f"{name} is not installed (fonts-dejavu-core)")
    return found[0]


@pytest.fixture(scope="module")
def fonts(tmp_path_factory) -> Path:
    """A folder with DejaVuSans.ttf and a collection holding DejaVuSans twice and DejaVuSerif once."""
    from fontTools.ttLib import TTCollection, TTFont

    sans, serif = _dejavu("DejaVuSans.ttf"), _dejavu("DejaVuSerif.ttf")
    root = tmp_path_factory.mktemp("fonts")
    shutil.copy(sans, root / "DejaVuSans.ttf")
    collection = TTCollection()
    collection.fonts = [TTFont(str(path), lazy=True) for path in (sans, sans, serif)]  # lazy: tables copied, fast
    collection.save(str(root / "Pair.ttc"))
    return root


def test_find_fonts_lists_each_face_of_a_collection(fonts):
    faces = find_fonts([fonts])
    assert [face.name for face in faces] == ["DejaVuSans.ttf", "Pair-0.ttc", "Pair-1.ttc", "Pair-2.ttc"]
    assert [face.index for face in faces] == [0, 0, 1, 2] and faces[3].stem == "Pair-2"
    assert str(faces[2]).endswith("Pair.ttc#1") and FontFace(fonts / "DejaVuSans.ttf").name == "DejaVuSans.ttf"
    assert fonts_hash(faces) != fonts_hash(faces[:1]) and fonts_hash(faces) == fonts_hash(find_fonts([fonts]))


def test_distinct_pictures_keep_one_of_each_identical_rendering(fonts, tmp_path):
    characters = "ABCDEFGH"
    every = make_glyphs(tmp_path / "every", GlyphsConfig(variants=1, min_fonts=2, test_fraction=0.25),
                        fonts=find_fonts([fonts]), characters=characters, progress=False)
    distinct = make_glyphs(tmp_path / "distinct", GlyphsConfig(variants=1, min_fonts=2, test_fraction=0.25,
                                                               distinct_pictures=True),
                           fonts=find_fonts([fonts]), characters=characters, progress=False)
    assert every == {"test": (2, 8), "train": (6, 24)}  # 4 faces draw each character
    assert distinct == {"test": (2, 4), "train": (6, 12)}  # ... but only Sans and Serif differ
    names = sorted(path.name for path in (tmp_path / "distinct" / "train" / "U+0041").iterdir())
    assert names == ["DejaVuSans-0.png", "Pair-2-0.png"]  # the first of the identical Sans pictures, and Serif
    with pytest.raises(Exception, match="at least 3"):  # min_fonts counts distinct pictures
        make_glyphs(tmp_path / "three", GlyphsConfig(variants=1, min_fonts=3, distinct_pictures=True),
                    fonts=find_fonts([fonts]), characters=characters, progress=False)


def test_distinct_characters_takes_each_characters_own_reference(fonts):
    font = ImageFont.truetype(str(fonts / "DejaVuSans.ttf"), 64)
    drawn_by = {"A": font, "B": font, "Z": None}  # "Z": no font draws it
    assert distinct_characters("AZB", drawn_by.get, 32, 0.9) == ["A", "B"]
    assert distinct_characters("AAB", font, 32, 0.9) == ["A", "B"]  # a repeat is a look-alike of itself


def test_find_fonts_skips_links_to_fonts_it_finds_anyway(fonts, tmp_path):
    root = tmp_path / "fonts"
    shutil.copytree(fonts, root)
    (root / "alternative.ttf").symlink_to(root / "DejaVuSans.ttf")
    assert [face.name for face in find_fonts([root])] == ["DejaVuSans.ttf", "Pair-0.ttc", "Pair-1.ttc", "Pair-2.ttc"]
