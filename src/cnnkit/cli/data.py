"""`cnnkit data convert|make-scenes|check`: dataset tools."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from cnnkit.scenes_config import ScenesConfig


def add_data(commands) -> None:
    """`cnnkit data ACTION`: dataset tools. To add an action, write `_add_data_NAME(actions)` (which sets
    `handler=run_data_NAME` on its parser) and `run_data_NAME(args)`, and list the former in DATA_ACTIONS."""
    parser = commands.add_parser(
        "data", help="dataset tools: make the scenes benchmark, convert detection annotations, check for duplicates",
        usage="cnnkit data ACTION ...",
        description="Dataset tools. `cnnkit data ACTION --help` explains each action.",
        epilog="examples:\n  cnnkit data make-scenes data/scenes\n"
               "  cnnkit data convert data/scenes data/scenes-yolo --to yolo",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="data_action", metavar="ACTION", required=True)
    for add in DATA_ACTIONS:
        add(actions)


def run_data(args) -> int:
    return args.handler(args)


def _add_data_convert(actions) -> None:
    from_help = "(default: detected; COCO, then VOC, then YOLO when a dataset carries several)"
    parser = actions.add_parser(
        "convert", prog="cnnkit data convert", help="convert detection annotations between COCO, Pascal VOC and YOLO",
        description="Read a detection dataset in any layout cnnkit knows and write it, split by split, as\n"
                    "DST/SPLIT/images/ plus the annotations in the --to format: COCO DST/annotations/instances_SPLIT.json,\n"
                    "VOC DST/SPLIT/annotations/*.xml or YOLO DST/SPLIT/labels/*.txt, and DST/classes.txt. Images are\n"
                    "hard-linked (copied across disks); instance masks go along (COCO RLE, or SPLIT/instances/*.png).\n"
                    "Boxes are carried over as they are: out-of-image boxes are clipped when training reads them.\n\n"
                    "Box conventions: COCO [x, y, width, height] in pixels; VOC xmin ymin xmax ymax in pixels;\n"
                    "YOLO 'class cx cy w h' as fractions of the image size, classes 0-based in classes.txt order.\n\n"
                    "SRC layouts: split folders as above (what `make-scenes` and `convert` write); Pascal VOC\n"
                    "(Annotations/, JPEGImages/, ImageSets/Main/SPLIT.txt); YOLO (images/[SPLIT/], labels/[SPLIT/]\n"
                    "with classes.txt or data.yaml); COCO (annotations/*.json or *.json beside the images, or one .json file).",
        epilog="examples:\n  cnnkit data convert data/scenes data/scenes-yolo --to yolo\n"
               "  cnnkit data convert VOCdevkit/VOC2012 voc-as-coco --to coco\n"
               "  cnnkit data convert instances_val.json coco-val-voc --to voc",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", metavar="SRC", help="dataset folder, or a COCO .json file")
    parser.add_argument("destination", metavar="DST", help="new (empty) folder to write")
    parser.add_argument("--to", required=True, choices=("coco", "voc", "yolo"), help="format to write")
    parser.add_argument("--from", dest="source_format", choices=("coco", "voc", "yolo"), help="format to read " + from_help)
    parser.set_defaults(handler=run_data_convert)


def run_data_convert(args) -> int:
    from cnnkit.data.detection import convert_dataset

    written = convert_dataset(args.source, args.destination, args.to, args.source_format)
    for split, (images, objects) in written.items():
        print(f"{split}: {images} images, {objects} objects")
    print(f"wrote {args.to.upper()} annotations to {args.destination}")
    return 0


def _scenes_defaults() -> dict:
    """ScenesConfig's defaults (from cnnkit.scenes_config: importing cnnkit.data would load torch for `--help`)."""
    return {setting.name: setting.default for setting in dataclasses.fields(ScenesConfig)}


def _add_data_make_scenes(actions) -> None:
    defaults = argparse.Namespace(**_scenes_defaults())
    parser = actions.add_parser(
        "make-scenes", prog="cnnkit data make-scenes", help="write the scenes benchmark (Fashion-MNIST items on cluttered canvases)",
        description="Compose Fashion-MNIST garments onto cluttered RGB canvases (gradient, stripes, semi-transparent\n"
                    "distractor shapes) at random sizes, colours and positions, with occlusion, and write train/val/test\n"
                    "splits with every annotation cnnkit reads: YOLO labels, VOC XML, COCO JSON (boxes + RLE masks),\n"
                    "semantic masks and instance-id masks. Boxes are tight around each object's visible pixels. The\n"
                    "same --seed writes byte-identical files. OUT/README.txt records the settings and counts.\n\n"
                    "Train and val canvases draw from disjoint pools of Fashion-MNIST training items, test canvases\n"
                    "from its test items (found as for `cnnkit train`, see --fashion-mnist).",
        epilog="examples:\n  cnnkit data make-scenes data/scenes                          # the benchmark defaults\n"
               "  cnnkit data make-scenes /tmp/tiny --train 8 --val 4 --test 4 --size 64\n"
               "  cnnkit train --task detect --data data/scenes ...",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", metavar="OUT", help="new (empty) folder to write")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"random seed (default {defaults.seed})")
    for split in ("train", "val", "test"):
        parser.add_argument(f"--{split}", type=int, default=getattr(defaults, split), metavar="N",
                            help=f"{split} canvases (default {getattr(defaults, split)})")
    parser.add_argument("--size", type=int, default=defaults.size, help=f"canvas side in pixels (default {defaults.size})")
    parser.add_argument("--min-objects", type=int, default=defaults.min_objects, metavar="N",
                        help=f"fewest objects per canvas (default {defaults.min_objects})")
    parser.add_argument("--max-objects", type=int, default=defaults.max_objects, metavar="N",
                        help=f"most objects per canvas (default {defaults.max_objects})")
    parser.add_argument("--min-scale", type=float, default=defaults.min_scale, metavar="F",
                        help=f"smallest item size as a fraction of the canvas side (default {defaults.min_scale})")
    parser.add_argument("--max-scale", type=float, default=defaults.max_scale, metavar="F",
                        help=f"largest item size as a fraction of the canvas side (default {defaults.max_scale})")
    parser.add_argument("--fashion-mnist", metavar="DIR", help="folder holding the Fashion-MNIST files "
                        "(default: $CNNKIT_DATA, /usr/share/datasets/fashion-mnist, ~/.cache/cnnkit, or download)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run_data_make_scenes)


def run_data_make_scenes(args) -> int:
    import time

    from cnnkit.data.scenes import make_scenes, scenes_config

    config = scenes_config(seed=args.seed, train=args.train, val=args.val, test=args.test, size=args.size,
                           min_objects=args.min_objects, max_objects=args.max_objects, min_scale=args.min_scale,
                           max_scale=args.max_scale)
    start = time.perf_counter()
    counts = make_scenes(args.out, config, fashion_mnist_root=args.fashion_mnist, progress=not args.quiet)
    for split, (images, objects) in counts.items():
        print(f"{split}: {images} canvases, {objects} objects")
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s (settings and counts: {Path(args.out) / 'README.txt'})")
    return 0


def _add_data_check(actions) -> None:
    parser = actions.add_parser(
        "check", prog="cnnkit data check", help="find exact and near-duplicate images within and across train/val/test (leakage)",
        usage="cnnkit data check DATASET [--threshold T] [--size PX] [--exact-only] [--val-fraction F] [--seed S]\n"
              "                         [--out FILE.json] [--plot FILE.png]",
        description="Look for duplicate images in a dataset, within each split and across train, val and test.\n"
                    "A test image that is also in the training data measures memory, not generalisation; a val\n"
                    "split overlapping train makes early stopping and tuning optimistic.\n\n"
                    "exact: identical decoded pixels (any file format). near: the Pearson correlation of the two\n"
                    "images' grayscale thumbnails (--size x --size pixels) is at least --threshold: the same\n"
                    "picture re-encoded, resized, brightened or slightly edited. Crops, flips and colour-only\n"
                    "changes are not caught. Near pairs are candidates for a person to judge: look at --plot.\n\n"
                    "val is the split `cnnkit train` would carve with the same val_fraction and seed. Every pair of\n"
                    "images is compared (matrix products, bfloat16 screen then float32): Fashion-MNIST's 70 000\n"
                    "images take seconds to tens of seconds on a CPU.",
        epilog="examples:\n  cnnkit data check fashion-mnist --plot dups.png\n"
               "  cnnkit data check ~/photos/ --threshold 0.995 --out check.json\n"
               "  cnnkit data check labels.csv --exact-only --val-fraction 0.2 --seed 1",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", metavar="DATASET", help="fashion-mnist, a folder (class subfolders, or train/ "
                        "and test/), or a CSV, as `cnnkit train --data` takes it")
    parser.add_argument("--threshold", type=float, default=0.99, help="near duplicates: minimum thumbnail "
                        "correlation, in (0, 1] (default 0.99; 0.995 is stricter)")
    parser.add_argument("--size", type=int, default=32, metavar="PX", help="thumbnail side (default 32; "
                        "in-memory data of smaller images, e.g. Fashion-MNIST, keeps its size)")
    parser.add_argument("--exact-only", action="store_true", help="skip near duplicates (the O(N^2) part)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="as `cnnkit train` val_fraction (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="as `cnnkit train` seed (default 0)")
    parser.add_argument("--out", metavar="FILE.json", help="write the full report (counts, examples) as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="draw example pairs (exact first, then near)")
    parser.set_defaults(handler=run_data_check)


def run_data_check(args) -> int:
    from cnnkit.data.check import check_dataset, format_report, plot_pairs
    from cnnkit.data.medical.studies import format_patient_report, patient_report
    from cnnkit.files import atomic_write_text

    patients = patient_report(args.dataset, args.val_fraction, args.seed)  # study layouts, slices from studies
    if patients is not None:
        print(format_patient_report(patients))  # volumes / slices by patient: the image-duplicate check does not apply
        if args.out:
            atomic_write_text(Path(args.out), json.dumps(patients, indent=2) + "\n")
        return 0
    report = check_dataset(args.dataset, threshold=args.threshold, size=args.size, val_fraction=args.val_fraction,
                           seed=args.seed, near=not args.exact_only)
    print(format_report(report))
    if args.plot:
        print(f"example pairs: {plot_pairs(report, args.plot)}")
    if args.out:
        atomic_write_text(Path(args.out), json.dumps({k: v for k, v in report.items() if not k.startswith("_")},
                                                     indent=2) + "\n")
        print(f"report: {args.out}")
    return 0


def _add_data_make_glyphs(actions) -> None:
    parser = actions.add_parser(
        "make-glyphs", help="write the glyph identity benchmark (face-recognition style, from installed fonts)",
        usage="cnnkit data make-glyphs OUT [--characters SET] [--distinct-pictures] [--min-fonts N] [--size PX]\n"
              "                               [--variants N] [--test-fraction F] [--seed S]",
        description="An open-set identity benchmark for --task embed: an identity is a character, its images\n"
                    "that character in every installed font that has it (DejaVu, Liberation, Noto ...), each with\n"
                    "seeded small distortions. Test identities (OUT/test/) are never in OUT/train/. Look-alike\n"
                    "characters (Latin A, Greek Alpha, Cyrillic A ...) are kept once. More fonts, more images:\n"
                    "e.g. `apt-get install fonts-noto-core fonts-freefont-ttf`. OUT/README.txt lists the fonts.\n\n"
                    "More identities: --characters cjk takes ~3,300 Han characters and Hangul syllables, drawn by\n"
                    "Debian's CJK fonts (apt-get install fonts-noto-cjk fonts-arphic-ukai fonts-arphic-uming\n"
                    "fonts-wqy-microhei fonts-wqy-zenhei fonts-ipafont-gothic fonts-ipafont-mincho fonts-nanum):\n"
                    "~10 distinct fonts each. Their collections' faces (Noto Sans CJK JP, KR, SC ...) often draw\n"
                    "a character the same way: add --distinct-pictures to keep one of each identical picture.",
        epilog="examples:\n  cnnkit data make-glyphs data/glyphs\n"
               "  cnnkit data make-glyphs data/glyphs-cjk --characters cjk --distinct-pictures --variants 3\n"
               "  cnnkit train --task embed --data data/glyphs embed_loss=arcface",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", metavar="OUT", help="new (empty) folder to write")
    parser.add_argument("--characters", choices=("default", "cjk", "all"), default="default",
                        help="default: Latin, Greek, Cyrillic, digits, symbols and some more scripts; cjk: Han "
                             "characters and Hangul syllables; all: both")
    parser.add_argument("--distinct-pictures", action="store_true",
                        help="keep a font's picture of a character only if no earlier font drew the same picture")
    parser.add_argument("--min-fonts", type=int, default=8, metavar="N",
                        help="leave out characters drawn by fewer fonts (default 8)")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    parser.add_argument("--variants", type=int, default=2, metavar="N", help="distorted copies per font (default 2)")
    parser.add_argument("--test-fraction", type=float, default=0.3, metavar="F",
                        help="share of the identities held out for test (default 0.3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run_data_make_glyphs)


def run_data_make_glyphs(args) -> int:
    from cnnkit.data.glyphs import CHARACTER_SETS, GlyphsConfig, make_glyphs
    from cnnkit.errors import CnnkitError

    if args.size < 8 or args.variants < 1 or not 0 < args.test_fraction < 1 or args.min_fonts < 2:
        raise CnnkitError("--size must be 8 or more, --variants 1 or more, --test-fraction in (0, 1), "
                          "--min-fonts 2 or more")
    config = GlyphsConfig(size=args.size, variants=args.variants, test_fraction=args.test_fraction, seed=args.seed,
                          min_fonts=args.min_fonts, distinct_pictures=args.distinct_pictures)
    made = make_glyphs(args.out, config, characters=CHARACTER_SETS[args.characters], progress=not args.quiet)
    for split, (identities, images) in made.items():
        print(f"{split}: {identities} identities, {images} images")
    print(f"wrote {args.out} (fonts and settings: {Path(args.out) / 'README.txt'})")
    return 0


DATA_ACTIONS = (_add_data_convert, _add_data_make_scenes, _add_data_check, _add_data_make_glyphs)
