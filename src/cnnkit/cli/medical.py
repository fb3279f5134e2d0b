"""`cnnkit predict-volume` (a segmentation run trained on studies, applied to a whole volume) and
`cnnkit diagnose` (a classification run read as a diagnostic test).

    cnnkit predict-volume RUN_DIR VOLUME [--out MASK.nii.gz] [--truth MASK.nii.gz|SEG.dcm] [--no-distances] [--json]
    cnnkit diagnose RUN_DIR [--split test|val] [--bins N] [--plot FILE.png] [--json]

VOLUME is a NIfTI file or a DICOM series folder; the run's window and slice stack are applied as in its
training. The mask is written as a NIfTI in the input's orientation and affine; with --truth (a NIfTI on the
input's grid, or a DICOM SEG made on it, placed on VOLUME's slices), Dice per structure, HD95 and ASSD (mm)
are printed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_predict_volume(commands) -> None:
    parser = commands.add_parser(
        "predict-volume", help="segment a NIfTI / DICOM series volume slice by slice into a NIfTI mask",
        description="Segment a volume with a run trained on studies (--data a studies CSV or patient folders):\n"
                    "every axial slice (or 2.5-D stack) windowed as in training, the predicted classes stacked back\n"
                    "into a NIfTI with the input's own affine. --truth (a NIfTI, or a DICOM SEG made on VOLUME)\n"
                    "scores it: Dice per structure, Hausdorff-95 and average symmetric surface distance in mm.",
        epilog="example:\n  cnnkit predict-volume runs/brain ch2.nii.gz --out brain-mask.nii.gz --truth ch2bet-mask.nii.gz",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("volume", metavar="VOLUME", help="a .nii/.nii.gz file or a folder of one DICOM series")
    parser.add_argument("--out", metavar="MASK.nii.gz", help="default: RUN_DIR/predictions/NAME-mask.nii.gz")
    parser.add_argument("--truth", metavar="MASK", help="the mask to score the prediction against: a NIfTI on "
                        "VOLUME's grid, or a DICOM SEG made on VOLUME")
    parser.add_argument("--no-distances", action="store_true", help="with --truth: Dice only (skip HD95/ASSD)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--device", default="auto")


def run_predict_volume(args) -> int:
    from cnnkit.api import load
    from cnnkit.errors import ConfigError
    from cnnkit.tasks.segmentation.volume import (evaluate_volume, predict_volume, volume_metrics_text,
                                                  write_volume_prediction)

    segmenter = load(args.run_dir, device=args.device)
    if segmenter.record.get("task") != "segment":
        raise ConfigError(f"{args.run_dir} is a {segmenter.record.get('task')} run; predict-volume needs a segment run")
    volume, labels = predict_volume(segmenter, args.volume)
    name = Path(args.volume).name.removesuffix(".gz").removesuffix(".nii") or "volume"
    out = Path(args.out) if args.out else Path(segmenter.run_dir or ".") / "predictions" / f"{name}-mask.nii.gz"
    written = write_volume_prediction(labels, volume, out)
    result = {"volume": str(args.volume), "mask": str(written), "shape": list(labels.shape),
              "spacing_mm": list(volume.spacing),
              "voxels": {c: int((labels == k).sum()) for k, c in enumerate(segmenter.classes)}}
    if args.truth:
        result["metrics"] = evaluate_volume(segmenter, labels, volume, args.truth, distances=not args.no_distances,
                                            image=args.volume)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.volume} -> {written} ({'x'.join(map(str, labels.shape))} voxels)")
        if args.truth:
            print(volume_metrics_text(result["metrics"]))
    return 0


def add_diagnose(commands) -> None:
    parser = commands.add_parser(
        "diagnose", help="a classification run as a diagnostic test: sensitivity, specificity, AUROC, calibration",
        description="Per class, one against the rest: sensitivity (recall), specificity and AUROC of the run's\n"
                    "probabilities on its test (or val) split, and their calibration: the expected calibration\n"
                    "error over equal-width confidence bins, and with --plot the reliability diagram.",
        epilog="example:\n  cnnkit diagnose runs/xray --plot reliability.png",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--split", choices=["test", "val"], default="test")
    parser.add_argument("--bins", type=int, default=10, help="calibration bins on [0, 1] (default 10)")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the reliability diagram")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--device", default="auto")


def run_diagnose(args) -> int:
    from cnnkit.errors import ConfigError

    if args.bins < 1:
        raise ConfigError(f"--bins must be 1 or more, got {args.bins}")
    from cnnkit.api import load
    from cnnkit.tasks.classification.diagnostic import diagnose, diagnosis_text

    classifier = load(args.run_dir, device=args.device)
    if classifier.record.get("task") not in ("classify", "classification"):
        raise ConfigError(f"{args.run_dir} is a {classifier.record.get('task')} run; diagnose needs a classify run")
    result = diagnose(classifier, args.split, args.bins, args.plot)
    print(json.dumps(result, indent=2) if args.json else diagnosis_text(result))
    return 0
