"""`cnnkit embed`, `cnnkit verify` and `cnnkit gallery`: what an embedding run (--task embed) is for."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cnnkit.errors import CnnkitError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
FACE_CROP_HELP = ("crop each photo to its one face first (OpenCV's face detector; pip install 'cnnkit[faces]'); "
                  "a photo with no face or several is an error naming it")


def add_embed(commands) -> None:
    parser = commands.add_parser(
        "embed", help="the embeddings of images from an embedding run (--task embed)",
        description="Print each image's embedding (unit length; compare two with their dot product, the cosine\n"
                    "similarity), as JSON with --json, or write them all to a .npy file with --npy.",
        epilog="examples:\n  cnnkit embed RUN_DIR a.jpg b.jpg --json\n  cnnkit embed RUN_DIR photos/*.jpg --npy faces.npy",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--json", action="store_true", help="print JSON: one entry per image with its embedding")
    parser.add_argument("--npy", metavar="FILE.npy", help="write the (N, D) float32 embeddings, in argument order")
    parser.add_argument("--face-crop", action="store_true", help=FACE_CROP_HELP)
    parser.add_argument("--device", default="auto")


def run_embed(args) -> int:
    from cnnkit.api import load

    embedder = _embedder(load(args.run_dir, device=args.device), args.run_dir)
    _check_files(args.images)
    embeddings = embedder.embed(_faces(args.images, args.face_crop))
    if args.npy:
        import numpy

        numpy.save(args.npy, embeddings.numpy().astype("float32"))
        print(f"wrote {len(embeddings)} embeddings of {embeddings.shape[1]} values to {args.npy}")
    if args.json:
        print(json.dumps([{"image": image, "embedding": [round(v, 6) for v in row]}
                          for image, row in zip(args.images, embeddings.tolist())], indent=2))
    elif not args.npy:
        for image, row in zip(args.images, embeddings.tolist()):
            print(f"{image}: [{', '.join(f'{v:.3f}' for v in row[:6])}, ...] ({len(row)} values)")
    return 0


def add_verify(commands) -> None:
    parser = commands.add_parser(
        "verify", help="same identity or not: two images, or a list of pairs (LFW pairs.txt, CSV)",
        description="Compare two images with an embedding run: their cosine similarity against the run's threshold\n"
                    "(chosen on its validation identities: the 10-fold best-accuracy threshold of the best epoch).\n"
                    "With --pairs, run the verification protocol on listed pairs instead: LFW's pairs.txt (images\n"
                    "under --images-root, default the lfw/ folder beside it) or a CSV with first,second,same.",
        epilog="examples:\n  cnnkit verify RUN_DIR alice1.jpg alice2.jpg\n"
               "  cnnkit verify RUN_DIR --pairs lfw/pairs.txt --images-root lfw/lfw --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="two images")
    parser.add_argument("--pairs", metavar="FILE", help="LFW pairs.txt or a pairs .csv")
    parser.add_argument("--images-root", metavar="DIR", help="LFW: the folder of person folders")
    parser.add_argument("--threshold", type=float, help="cosine similarity from which two images match "
                        "(default: the run's)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--face-crop", action="store_true", help=FACE_CROP_HELP)
    parser.add_argument("--device", default="auto")


def run_verify(args) -> int:
    from cnnkit.api import load

    if bool(args.pairs) == (len(args.images) == 2) or (not args.pairs and len(args.images) != 2):
        raise CnnkitError("give two images, or --pairs FILE (and no images)")
    if args.pairs and args.face_crop:
        raise CnnkitError("--face-crop applies to two images, not to --pairs (crop the pairs' images beforehand)")
    if not args.pairs:
        _check_files(args.images)
    embedder = _embedder(load(args.run_dir, device=args.device), args.run_dir)
    if args.threshold is not None:
        embedder.threshold = args.threshold
    if args.pairs:
        from cnnkit.data.pairs import read_pairs

        result = embedder.verify_pairs(read_pairs(args.pairs, args.images_root))
        text = (f"{result['pairs']} pairs ({result['genuine_pairs']} genuine): 10-fold accuracy "
                f"{result['verification_accuracy']:.4f} +- {result['verification_accuracy_std']:.4f}, AUC "
                f"{result['auc']:.4f}, EER {result['eer']:.4f}, TAR@FAR=1e-3 {result['tar_at_far_0.001']:.4f}")
    else:
        result = embedder.verify(*_faces(args.images, args.face_crop))
        text = (f"{'same' if result['same'] else 'different'}: similarity {result['score']:.4f} "
                f"(threshold {result['threshold']:.4f})")
    print(json.dumps(result, indent=2) if args.json else text)
    return 0 if args.pairs or result["same"] else 1


def add_gallery(commands) -> None:
    parser = commands.add_parser(
        "gallery", help="enrol identities from an embedding run and search them",
        description="A gallery file holds enrolled embeddings with their names (safetensors + JSON, no pickles).\n"
                    "add: every image under DIR, named by its folder (DIR/alice/1.jpg -> alice) or by --name;\n"
                    "search: the most similar enrolled entries for each image; remove: drop a name.\n"
                    "From 100,000 entries `add` also writes FILE.faiss, an approximate (HNSW) index that search uses\n"
                    "(pip install 'cnnkit[gallery]' for FAISS; without it search stays exact, only slower).",
        epilog="examples:\n  cnnkit gallery add RUN_DIR --gallery people.gallery photos/\n"
               "  cnnkit gallery search RUN_DIR --gallery people.gallery visitor.jpg --top-k 5\n"
               "  cnnkit gallery remove RUN_DIR --gallery people.gallery alice",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("add", "search", "remove"))
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("items", nargs="+", metavar="PATH_OR_NAME", help="add: folders or images; search: images; "
                        "remove: names")
    parser.add_argument("--gallery", required=True, metavar="FILE", help="the gallery file (created by add)")
    parser.add_argument("--name", help="add: one name for all the images given")
    parser.add_argument("--top-k", type=int, default=5, metavar="K")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--exact", action="store_true", help="search: exact cosine search even where the gallery "
                        "has an approximate index")
    parser.add_argument("--index", choices=("auto", "always", "never"), default="auto",
                        help="add/remove: write the approximate index from 100,000 entries (auto), always, or never")
    parser.add_argument("--face-crop", action="store_true", help=FACE_CROP_HELP)
    parser.add_argument("--device", default="auto")


def run_gallery(args) -> int:
    from cnnkit.api import load
    from cnnkit.tasks.embed import Gallery

    gallery = Gallery.open(args.gallery)
    if args.action == "remove":
        removed = sum(gallery.remove(name) for name in args.items)
        gallery.save(args.gallery, _approximate(args.index))
        print(f"removed {removed} entries; {len(gallery.names)} left in {args.gallery}")
        return 0
    if args.top_k < 1:
        raise CnnkitError(f"--top-k must be 1 or more, got {args.top_k}")
    files = _collect(args.items) if args.action == "add" else args.items
    _check_files(files)
    embedder = _embedder(load(args.run_dir, device=args.device), args.run_dir)
    embeddings = embedder.embed(_faces(files, args.face_crop))
    if args.action == "add":
        gallery.run = gallery.run or str(args.run_dir)
        gallery.add([args.name or Path(file).parent.name for file in files], embeddings)
        gallery.save(args.gallery, _approximate(args.index))
        print(f"added {len(files)} images; {len(gallery.names)} entries of {len(set(gallery.names))} names in "
              f"{args.gallery}" + (" (+ approximate index .faiss)" if gallery.index is not None else ""))
        return 0
    results = [{"image": file, "matches": [{"name": n, "similarity": s} for n, s in matches]}
               for file, matches in zip(files, gallery.search(embeddings, args.top_k, exact=args.exact))]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            shown = ", ".join(f"{m['name']} {m['similarity']:.3f}" for m in result["matches"])
            print(f"{result['image']}: {shown}")
    return 0


def _approximate(choice: str) -> bool | None:
    return {"auto": None, "always": True, "never": False}[choice]


def _embedder(predictor, run_dir):
    if getattr(predictor, "record", {}).get("task") != "embed":
        raise CnnkitError(f"{run_dir} is a {predictor.record.get('task')} run; this command needs an embedding run "
                          "(cnnkit train --task embed)")
    return predictor


def _faces(files: list[str], face_crop: bool) -> list:
    """The files as given, or (--face-crop) each one's face as a PIL image, for the run's preprocessing to resize."""
    if not face_crop:
        return files
    from cnnkit.data.faces import crop_face

    return [crop_face(file) for file in files]


def _check_files(files: list[str]) -> None:
    from cnnkit.files import require_files

    require_files(files)


def _collect(items: list[str]) -> list[str]:
    """Image files of `items`: files as given, folders searched recursively, sorted."""
    files = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files += sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        else:
            files.append(item)
    if not files:
        raise CnnkitError(f"no images under {', '.join(items)}")
    return files
