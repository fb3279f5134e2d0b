"""An open-set identity benchmark from real material that installs offline: glyphs of the system's fonts.

An identity is one character; its images are that character drawn in every installed font that has it
(Debian's font packages: DejaVu, Liberation, Noto, FreeFont ...), each with a few seeded small
distortions (rotation, scale, shift). Like faces, an identity looks different in every "photo" (bold,
italic, serif, monospace), and the test identities (characters) are never seen in training: the
Omniglot-style setting of face verification. Characters that look alike in a reference font (Latin "A",
Greek "Alpha", Cyrillic "A"; "O" and "0" ...) are kept once, so no two identities are the same picture.

    make_glyphs("data/glyphs")   # train/<identity>/*.png, test/<identity>/*.png, README.txt

The same settings and fonts give byte-identical files. Identities are named U+XXXX (their code point).
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
    """

    size: int = 32
    variants: int = 2
    test_fraction: float = 0.3
    min_fonts: int = 8
    similarity: float = 0.9
    seed: int = 0


def find_fonts(roots=FONT_ROOTS) -> list[Path]:
    """The TrueType/OpenType fonts under `roots`, sorted, without symbol and maths fonts."""
    fonts = [path for root in roots if Path(root).is_dir() for path in Path(root).rglob("*")
             if path.suffix.lower() in (".ttf", ".otf") and not any(word in path.name for word in SKIPPED_FONTS)]
    return sorted(fonts, key=lambda path: path.name)


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


def distinct_characters(characters: str, reference: ImageFont.FreeTypeFont, size: int, threshold: float) -> list[str]:
    """The characters whose reference rendering correlates at most `threshold` with every earlier kept one."""
    kept, vectors = [], []
    for character in characters:
        drawn = _draw(reference, character, size)
        if drawn is None:
            continue
        vector = drawn.flatten() - drawn.mean()
        vector /= numpy.linalg.norm(vector) + 1e-9
        if vectors and float(numpy.max(numpy.stack(vectors) @ vector)) > threshold:
            continue
        kept.append(character)
        vectors.append(vector)
    return kept


def make_glyphs(out: str | Path, config: GlyphsConfig = GlyphsConfig(), fonts: list[Path] | None = None,
                characters: str = CHARACTERS, progress: bool = True) -> dict[str, tuple[int, int]]:
    """Write the benchmark to `out` (a new or empty folder); returns {split: (identities, images)}."""
    from tqdm import tqdm

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out} is not empty; choose a new folder for the glyph benchmark")
    fonts = fonts if fonts is not None else find_fonts()
    reference = next((path for path in fonts if path.name == REFERENCE_FONT), fonts[0] if fonts else None)
    if reference is None:
        raise DataError("no fonts found under " + ", ".join(FONT_ROOTS) + "; install some, e.g. "
                        "`apt-get install fonts-dejavu-core fonts-liberation fonts-noto-core`")
    size = config.size
    loaded = [ImageFont.truetype(str(path), size * 2) for path in fonts]
    kept = distinct_characters(characters, ImageFont.truetype(str(reference), size * 2), size, config.similarity)
    missing = [_draw(font, "\U0010FFFD", size) for font in loaded]  # each font's "missing glyph" picture
    drawn_by = {c: [i for i, font in enumerate(loaded) if _has_glyph(font, c, missing[i], size)] for c in kept}
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
    lines.append("fonts: " + ", ".join(path.name for path in fonts))
    (out / "README.txt").write_text("\n".join(lines) + "\n")
    return counts


def fonts_hash(fonts: list[Path]) -> str:
    """A short digest of the font files' names and sizes (which fonts a benchmark was made with)."""
    import hashlib

    digest = hashlib.sha256("".join(f"{p.name}:{p.stat().st_size};" for p in fonts).encode())
    return digest.hexdigest()[:12]


__all__ = ["CHARACTERS", "GlyphsConfig", "distinct_characters", "find_fonts", "fonts_hash", "make_glyphs"]
