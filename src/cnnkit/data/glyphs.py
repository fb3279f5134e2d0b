"""An open-set identity benchmark from real material that installs offline: glyphs of the system's fonts.

An identity is one character; its images are that character drawn in every installed font that has it
(Debian's font packages: DejaVu, Liberation, Noto, FreeFont ...), each with a few seeded small
distortions (rotation, scale, shift). Like faces, an identity looks different in every "photo" (bold,
italic, serif, monospace), and the test identities (characters) are never seen in training: the
Omniglot-style setting of face verification. Characters that look alike in a reference font (Latin "A",
Greek "Alpha", Cyrillic "A"; "O" and "0" ...) are kept once, so no two identities are the same picture.

    make_glyphs("data/glyphs")   # train/<identity>/*.png, test/<identity>/*.png, README.txt
    make_glyphs("data/glyphs-cjk", GlyphsConfig(distinct_pictures=True), characters=CJK_CHARACTERS)

The same settings and fonts give byte-identical files. Identities are named U+XXXX (their code point).

CJK (`CJK_CHARACTERS`): with Debian's CJK fonts (fonts-noto-cjk, fonts-arphic-ukai/-uming, fonts-wqy-microhei/
-zenhei, fonts-ipafont-gothic/-mincho, fonts-nanum) thousands of Han characters and Hangul syllables become
identities, each drawn by ~10 distinct fonts: many identities, few "photos" each, as in face sets. Font
collections (.ttc) count face by face (Noto Sans CJK JP, KR, SC ...); their faces often draw a character the
same way, so `distinct_pictures` keeps one of each identical picture.

Which fonts draw a character is read from each face's character map (fontTools, via matplotlib) before
anything is drawn: drawing every character in every font was the slow part.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy
from PIL import Image, ImageDraw, ImageFont

from cnnkit.errors import DataError

FONT_ROOTS = ("/usr/share/fonts", "/usr/local/share/fonts")
SKIPPED_FONTS = ("Math", "Symbol", "Emoji", "Dingbat", "Wingding")  # fonts whose letters are not letters
REFERENCE_FONT = "DejaVuSans.ttf"
# Latin, digits, Greek and Cyrillic letters, and symbols: look-alikes are removed at run time.
CHARACTERS = ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
              + "".join(chr(c) for c in range(0x391, 0x3AA) if c != 0x3A2)
              + "".join(chr(c) for c in range(0x3B1, 0x3CA))
              + "".join(chr(c) for c in range(0x410, 0x450))
              + "!?#$%&@*+=<>()[]{}/\\|~^§¶€£¥©®ßæøðþłđħŋ"
              # More scripts, where the installed fonts draw them (Noto has most): more identities
              + "".join(chr(c) for c in [*range(0x531, 0x557), *range(0x561, 0x587)])  # Armenian
              + "".join(chr(c) for c in range(0x10D0, 0x10FB))  # Georgian
              + "".join(chr(c) for c in range(0x5D0, 0x5EB))  # Hebrew
              + "".join(chr(c) for c in range(0x905, 0x93A))  # Devanagari
              + "".join(chr(c) for c in range(0xE01, 0xE2F))  # Thai
              + "".join(chr(c) for c in range(0x13A0, 0x13F5)))  # Cherokee
# Every 8th CJK unified ideograph (the block is ordered by radical and strokes, so this spreads over it) and
# every 16th Hangul syllable: ~3,300 candidates; those drawn by too few fonts are left out at run time.
CJK_CHARACTERS = ("".join(chr(c) for c in range(0x4E00, 0x9FA6, 8))
                  + "".join(chr(c) for c in range(0xAC00, 0xD7A4, 16)))
CHARACTER_SETS = {"default": CHARACTERS, "cjk": CJK_CHARACTERS, "all": CHARACTERS + CJK_CHARACTERS}


@dataclass(frozen=True)
class GlyphsConfig:
    """Settings of the glyph benchmark.

    Attributes:
        size: Image side in pixels.
        variants: Distorted copies per (character, font).
        test_fraction: Share of the identities held out as test identities.
        min_fonts: Characters drawn by fewer fonts are left out.
        similarity: Characters whose reference rendering correlates above this with an earlier kept one are
            left out (look-alikes).
        seed: Fixes the identity split and the distortions.
        distinct_pictures: Keep a font's picture of a character only when no earlier font drew the very same
            picture (font collections' faces, and fonts sharing glyphs); min_fonts then counts distinct pictures.
    """

    size: int = 32
    variants: int = 2
    test_fraction: float = 0.3
    min_fonts: int = 8
    similarity: float = 0.9
    seed: int = 0
    distinct_pictures: bool = False


@dataclass(frozen=True)
class FontFace:
    """One face of a font file: a .ttf/.otf has one (index 0), a .ttc collection several."""

    path: Path
    index: int = 0

    @property
    def name(self) -> str:
        return f"{self.path.stem}-{self.index}{self.path.suffix}" if self.is_collection else self.path.name

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    @property
    def is_collection(self) -> bool:
        return self.path.suffix.lower() == ".ttc"

    def stat(self):
        return self.path.stat()

    def __str__(self) -> str:
        return str(self.path) + (f"#{self.index}" if self.is_collection else "")


def _face(font: "FontFace | Path | str") -> FontFace:
    return font if isinstance(font, FontFace) else FontFace(Path(font))


def _collection_size(path: Path) -> int:
    from fontTools.ttLib import TTCollection

    try:
        return len(TTCollection(str(path), lazy=True).fonts)
    except Exception:  # noqa: BLE001 - a damaged collection is skipped, like a font without glyphs
        return 0


def _code_points(face: FontFace) -> set[int]:
    """The code points `face`'s character map covers (empty if the file cannot be read)."""
    from fontTools.ttLib import TTFont

    try:
        with TTFont(str(face.path), fontNumber=face.index if face.is_collection else -1, lazy=True) as font:
            return set(font.getBestCmap() or {})
    except Exception:  # noqa: BLE001 - unreadable: draw-checked instead (see make_glyphs)
        return set()


def find_fonts(roots=FONT_ROOTS) -> list[FontFace]:
    """The TrueType/OpenType faces under `roots` (each face of a .ttc collection), sorted by name, without symbol
    and maths fonts, and without links to fonts found anyway."""
    faces, roots = [], [Path(root).resolve() for root in roots if Path(root).is_dir()]
    for root in roots:
        for path in sorted(root.rglob("*")):
            if any(word in path.name for word in SKIPPED_FONTS):
                continue
            if path.is_symlink() and any(path.resolve().is_relative_to(other) for other in roots):
                continue  # another name of a font found anyway (Debian's fonts-japanese-gothic.ttf -> ipag.ttf)
            if path.suffix.lower() in (".ttf", ".otf"):
                faces.append(FontFace(path))
            elif path.suffix.lower() == ".ttc":
                faces += [FontFace(path, index) for index in range(_collection_size(path))]
    return sorted(faces, key=lambda face: face.name)


def _draw(font: ImageFont.FreeTypeFont, character: str, size: int, angle=0.0, scale=1.0, shift=(0, 0)):
    """The character centred on a black size x size canvas, white, as float32 in [0, 1]."""
    canvas = size * 3
    image = Image.new("L", (canvas, canvas))
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), character, font=font)
    draw.text(((canvas - (right - left)) / 2 - left, (canvas - (bottom - top)) / 2 - top), character, fill=255,
              font=font)
    box = image.getbbox()
    if box is None:
        return None
    glyph = image.crop(box).rotate(angle, resample=Image.BILINEAR, expand=True)
    side = max(glyph.size)
    fitted = max(1, round(size * 0.8 * scale))
    glyph = glyph.resize((max(1, round(glyph.size[0] * fitted / side)), max(1, round(glyph.size[1] * fitted / side))),
                         Image.LANCZOS)
    out = Image.new("L", (size, size))
    out.paste(glyph, ((size - glyph.size[0]) // 2 + shift[0], (size - glyph.size[1]) // 2 + shift[1]))
    return numpy.asarray(out, dtype=numpy.float32) / 255


def _has_glyph(font: ImageFont.FreeTypeFont, character: str, missing: numpy.ndarray | None, size: int) -> bool:
    """Whether `font` draws `character` itself (not its "missing glyph" box)."""
    drawn = _draw(font, character, size)
    return drawn is not None and (missing is None or not numpy.array_equal(drawn, missing))


def distinct_characters(characters: str, reference, size: int, threshold: float) -> list[str]:
    """The characters whose reference rendering correlates at most `threshold` with every earlier kept one.

    `reference` is one font, or a function from a character to the font that draws it (None: left out).
    """
    kept, vectors = [], numpy.zeros((len(characters), size * size), dtype=numpy.float32)
    for character in characters:
        font = reference(character) if callable(reference) else reference
        drawn = None if font is None else _draw(font, character, size)
        if drawn is None:
            continue
        vector = drawn.flatten() - drawn.mean()
        vector /= numpy.linalg.norm(vector) + 1e-9
        if kept and float(numpy.max(vectors[:len(kept)] @ vector)) > threshold:
            continue
        vectors[len(kept)] = vector
        kept.append(character)
    return kept


def _pictures(loaded: list, coverage: list[set[int]], missing: list, characters: list[str], size: int,
              distinct: bool, progress: bool) -> dict[str, list[int]]:
    """For each character, the indices of the fonts that draw it (not a "missing glyph" box); with `distinct`,
    only the first font of each identical picture."""
    from tqdm import tqdm

    drawn_by = {}
    for character in tqdm(characters, desc="fonts per character", disable=not progress, leave=False):
        fonts, seen = [], set()
        for index, font in enumerate(loaded):
            if coverage[index] and ord(character) not in coverage[index]:
                continue  # not in the font's character map: nothing to draw
            drawn = _draw(font, character, size)
            if drawn is None or (missing[index] is not None and numpy.array_equal(drawn, missing[index])):
                continue
            if distinct:
                key = drawn.tobytes()
                if key in seen:
                    continue
                seen.add(key)
            fonts.append(index)
        drawn_by[character] = fonts
    return drawn_by


def make_glyphs(out: str | Path, config: GlyphsConfig = GlyphsConfig(), fonts: list[FontFace | Path] | None = None,
                characters: str = CHARACTERS, progress: bool = True) -> dict[str, tuple[int, int]]:
    """Write the benchmark to `out` (a new or empty folder); returns {split: (identities, images)}."""
    from tqdm import tqdm

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out} is not empty; choose a new folder for the glyph benchmark")
    fonts = [_face(font) for font in (fonts if fonts is not None else find_fonts())]
    if not fonts:
        raise DataError("no fonts found under " + ", ".join(FONT_ROOTS) + "; install some, e.g. "
                        "`apt-get install fonts-dejavu-core fonts-liberation fonts-noto-core`")
    size = config.size
    loaded = [ImageFont.truetype(str(face.path), size * 2, index=face.index) for face in fonts]
    coverage = [_code_points(face) for face in fonts]
    missing = [_draw(font, "\U0010FFFD", size) for font in loaded]  # each font's "missing glyph" picture
    reference = next((i for i, face in enumerate(fonts) if face.name == REFERENCE_FONT), 0)
    font_order = [reference] + [i for i in range(len(fonts)) if i != reference]

    def reference_for(character: str):  # the reference font, else the first font whose map has the character
        return next((loaded[i] for i in font_order if not coverage[i] or ord(character) in coverage[i]), None)

    kept = distinct_characters(characters, reference_for, size, config.similarity)
    drawn_by = _pictures(loaded, coverage, missing, kept, size, config.distinct_pictures, progress)
    identities = [c for c in kept if len(drawn_by[c]) >= config.min_fonts]
    if len(identities) < 4:
        raise DataError(f"only {len(identities)} characters are drawn by at least {config.min_fonts} of the "
                        f"{len(fonts)} fonts found; install more fonts or lower min_fonts")
    order = random.Random(config.seed).sample(identities, len(identities))
    test_count = max(2, round(len(order) * config.test_fraction))
    splits = {"test": sorted(order[:test_count]), "train": sorted(order[test_count:])}
    counts = {}
    for split, members in splits.items():
        images = 0
        for character in tqdm(members, desc=f"glyphs {split}", disable=not progress, leave=False):
            folder = out / split / f"U+{ord(character):04X}"
            folder.mkdir(parents=True)
            rng = random.Random(f"{config.seed}-{ord(character)}")
            for index in drawn_by[character]:
                for variant in range(config.variants):
                    angle = rng.uniform(-8, 8) if variant else 0.0
                    scale = rng.uniform(0.8, 1.0) if variant else 1.0
                    shift = (rng.randint(-2, 2), rng.randint(-2, 2)) if variant else (0, 0)
                    pixels = _draw(loaded[index], character, size, angle, scale, shift)
                    name = f"{fonts[index].stem}-{variant}.png"
                    Image.fromarray((pixels * 255).round().astype(numpy.uint8)).save(folder / name)
                    images += 1
        counts[split] = (len(members), images)
    lines = [f"cnnkit glyph benchmark: {sum(c[0] for c in counts.values())} identities (characters) from "
             f"{len(fonts)} fonts", f"settings: {asdict(config)}"]
    lines += [f"{split}: {identities_} identities, {images} images" for split, (identities_, images) in counts.items()]
    lines.append(f"fonts digest: {fonts_hash(fonts)}")
    lines.append("fonts: " + ", ".join(path.name for path in fonts))
    (out / "README.txt").write_text("\n".join(lines) + "\n")
    return counts


def fonts_hash(fonts: list[FontFace | Path]) -> str:
    """A short digest of the font files' names and sizes (which fonts a benchmark was made with)."""
    import hashlib

    digest = hashlib.sha256("".join(f"{p.name}:{p.stat().st_size};" for p in fonts).encode())
    return digest.hexdigest()[:12]


__all__ = ["CHARACTERS", "CHARACTER_SETS", "CJK_CHARACTERS", "FontFace", "GlyphsConfig", "distinct_characters",
           "find_fonts", "fonts_hash", "make_glyphs"]
