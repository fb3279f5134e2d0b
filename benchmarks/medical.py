"""Medical imaging (issue 22): brain-mask segmentation of the ch2 T1 volume, and reading speed.

SINGLE SUBJECT: every figure here comes from one brain (Debian's mricron-data: the Colin27 "ch2" T1,
181x217x181 at 1 mm, RAS, and its brain-extracted ch2bet on the same grid). Training and test slices are
different slabs of the same head, so the scores measure the pipeline and the model's fit, not
generalisation to new patients (`cnnkit data check` on the studies CSV says so too).

brain   mask = ch2bet > 0. A studies CSV with fixed slabs of axial slices (RAS z): train z 0-79 and 140-180,
        val z 85-94, test z 100-134, with 5-slice gaps so the held-out slab's neighbours are not in
        training (a contiguous slab, not interleaved slices). Percentile window (0.5-99.5, MRI), 2.5-D
        stacks of 3 slices, a U-Net (base width 16, slim decoder) at 128x128, AdamW, ce+dice, trained with
        budget= MINUTES (default 8). Then `predict_volume` on the whole ch2 volume (the same path as
        `cnnkit predict-volume`), scored on the test slab in 3-D: Dice, HD95 and ASSD in mm; plus the run's
        own pixel Dice on the test slices (`Segmenter.evaluate`). Goal: Dice >= 0.97 in <= 10 min of training.
aal     the AAL atlas's 116 regions on the same grid and split (heavily imbalanced, 117 classes with background),
        one run of AAL_MINUTES each (default 3) per variant: plain cross-entropy; ce+dice; ce+dice with class
        weights ("effective" numbers, Cui et al. 2019: loss-level class balancing); ce+dice with class-balanced
        slice sampling (sampler=oversample: each slice weighted by its rarest structure). Mean Dice over the
        structures of the test slab, and over those that also occur in the training slabs (a slab split of
        one head leaves some structures unseen), plus the per-structure Dice, epochs and best val mIoU.
bone    CT bone (Debian's invesalius-examples: a head CT, int16 HU, 108 slices of 256x256 at 0.96x0.96x1.5 mm,
        with InVesalius's bone mask, which is exactly HU in [226, 3071]): the bone window (C 400, W 1800),
        3-slice stacks, the same U-Net for BONE_MINUTES (default 3); slabs train z 0-59, val z 65-74, test
        z 80-107; Dice / HD95 / ASSD on the test slab. Also single subject.
read    slices per second: a DICOM file (CT_small, 128x128) through read_dicom + window, against pydicom's
        dcmread + pixel_array + apply_modality_lut; the ch2 NIfTI (.nii.gz) through read_nifti (canonical
        RAS) and through the whole model-input path (window, 3-slice stacks, 8-bit). HU of CT_small against
        pydicom's own apply_modality_lut.

    apt-get install mricron-data; pip install 'cnnkit[medical]'
    flock /tmp/cnnkit-heavy.lock .venv/bin/python benchmarks/medical.py --threads 2
    .venv/bin/python benchmarks/medical.py --quick     # smoke test: a small crop, 1 epoch

Writes benchmarks/results/medical.json and .md (medical-quick.* for --quick; medical-TAG.* with --tag).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

NAME = "medical"
TEMPLATES = Path("/usr/share/mricron/templates")
SLABS = {"train": [(0, 80), (140, 181)], "val": [(85, 95)], "test": [(100, 135)]}
SINGLE_SUBJECT = ("single subject (ch2): held-out slab of the same head; measures the pipeline and the fit, "
                  "not generalisation across patients")
MODEL_ARGS = {"base_width": 16, "decoder_channels": [128, 64, 32, 16, 16]}


def write_studies(work: Path, quick: bool) -> tuple[Path, Path, Path]:
    """ch2 image, ch2bet > 0 mask (NIfTI, ch2's affine) and the slab studies CSV in `work`."""
    import nibabel

    image = nibabel.load(str(TEMPLATES / "ch2.nii.gz"))
    brain = numpy.asarray(nibabel.load(str(TEMPLATES / "ch2bet.nii.gz")).dataobj)
    data, mask = numpy.asarray(image.dataobj), (brain > 0).astype(numpy.uint8)
    if quick:  # a 64x64 in-plane crop around the centre, every slice
        data, mask = data[58:122, 76:140], mask[58:122, 76:140]
    work.mkdir(parents=True, exist_ok=True)
    image_path, mask_path = work / "ch2.nii.gz", work / "ch2-brain-mask.nii.gz"
    nibabel.save(nibabel.Nifti1Image(data, image.affine), str(image_path))
    nibabel.save(nibabel.Nifti1Image(mask, image.affine), str(mask_path))
    rows = ["patient,image,mask,split,slices"]
    for split, slabs in SLABS.items():
        rows += [f"ch2,{image_path.name},{mask_path.name},{split},{start}:{stop}" for start, stop in slabs]
    (work / "studies.csv").write_text("\n".join(rows) + "\n")
    (work / "classes.txt").write_text("background\nbrain\n")
    return work / "studies.csv", image_path, mask_path


def brain_mask(work: Path, minutes: float, threads: int, quick: bool) -> dict:
    import warnings

    import cnnkit
    from cnnkit.data.medical.slices import prepare_slices, read_volume
    from cnnkit.metrics.surface import volume_metrics
    from cnnkit.tasks.segmentation.volume import predict_volume

    studies, image_path, mask_path = write_studies(work, quick)
    settings = {"task": "segment", "data": str(studies), "window": "percentile", "slice_stack": 3,
                "model": "unet", "model_args": MODEL_ARGS, "image_size": 64 if quick else 128, "batch_size": 16,
                "optimizer": "adamw", "lr": 3e-3, "weight_decay": 1e-4, "schedule": "onecycle",
                "seg_loss": "ce+dice", "hflip": True, "translate": 0, "scale": 0.1, "num_threads": threads,
                "num_workers": 0, "progress": False, "report": False, "out": str(work / "runs"), "seed": 0}
    if quick:
        settings["epochs"] = 1
    else:
        settings["budget"] = f"{minutes:g}m"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the slab split's patient-overlap warning: single subject, said above
        started = time.perf_counter()
        prepare_slices(studies, settings["window"], settings["slice_stack"], 0.1, settings["seed"])
        slicing_seconds = time.perf_counter() - started
        started = time.perf_counter()
        run = cnnkit.train(**settings)
        train_seconds = time.perf_counter() - started
    segmenter = cnnkit.load(run.run_dir)
    pixel = segmenter.evaluate("test")
    started = time.perf_counter()
    volume, labels = predict_volume(segmenter, image_path)
    predict_seconds = time.perf_counter() - started
    truth = read_volume(mask_path, mask=True).data
    first, last = SLABS["test"][0]
    slab = volume_metrics(labels[:, :, first:last], truth[:, :, first:last], segmenter.classes, volume.spacing)
    whole = volume_metrics(labels, truth, segmenter.classes, volume.spacing, distances=False)
    brain = slab["per_structure"]["brain"]
    return {
        "note": SINGLE_SUBJECT, "settings": settings, "slabs": SLABS, "run_dir": str(run.run_dir),
        "slices_prepared_seconds": round(slicing_seconds, 1), "train_seconds": round(train_seconds, 1),
        "best_epoch": run.best, "test_slab_dice": brain["dice"], "test_slab_hd95_mm": brain["hd95_mm"],
        "test_slab_assd_mm": brain["assd_mm"], "test_slab_true_voxels": brain["true_voxels"],
        "test_pixel_dice_brain": pixel["per_class"]["brain"]["dice"], "test_miou": pixel["miou"],
        "whole_volume_dice_incl_training_slices": whole["per_structure"]["brain"]["dice"],
        "predict_volume_seconds": round(predict_seconds, 2), "volume_slices": int(labels.shape[2]),
        "goal": "Dice >= 0.97 in <= 10 min of training", "goal_met": bool(brain["dice"] >= 0.97 and train_seconds <= 600),
    }


AAL_VARIANTS = {"ce": {"seg_loss": "ce"}, "ce+dice": {"seg_loss": "ce+dice"},
                "ce+dice+class-weights": {"seg_loss": "ce+dice", "class_weights": "effective"},
                "ce+dice+oversample": {"seg_loss": "ce+dice", "sampler": "oversample"}}


def aal_regions(work: Path, minutes: float, threads: int, quick: bool, variants: list[str]) -> dict:
    import warnings

    import nibabel

    import cnnkit
    from cnnkit.data.medical.slices import read_volume
    from cnnkit.metrics.surface import volume_metrics
    from cnnkit.tasks.segmentation.volume import predict_volume

    studies, image_path, _ = write_studies(work, quick)
    atlas = nibabel.load(str(TEMPLATES / "aal.nii.gz"))
    labels_volume = numpy.asarray(atlas.dataobj).astype(numpy.uint8)
    if quick:
        labels_volume = labels_volume[58:122, 76:140]
    nibabel.save(nibabel.Nifti1Image(labels_volume, atlas.affine), str(work / "aal.nii.gz"))
    names = {int(line.split()[0]): line.split()[1]
             for line in (TEMPLATES / "aal.nii.txt").read_text().splitlines() if line.strip()}
    (work / "classes.txt").write_text("background\n" + "\n".join(names[k] for k in range(1, 117)) + "\n")
    text = studies.read_text().replace("ch2-brain-mask.nii.gz", "aal.nii.gz")
    studies = work / "aal-studies.csv"
    studies.write_text(text)
    truth = read_volume(work / "aal.nii.gz", mask=True).data
    first, last = SLABS["test"][0]
    train_slices = numpy.concatenate([truth[:, :, a:b].ravel() for a, b in SLABS["train"]])
    seen = set(numpy.unique(train_slices).tolist())
    results = {}
    for variant in variants:
        extra = AAL_VARIANTS[variant]
        settings = {"task": "segment", "data": str(studies), "window": "percentile", "slice_stack": 3,
                    "model": "unet", "model_args": MODEL_ARGS, "image_size": 64 if quick else 128, "batch_size": 16,
                    "optimizer": "adamw", "lr": 3e-3, "weight_decay": 1e-4, "schedule": "onecycle", "hflip": False,
                    "translate": 0, "scale": 0.1, "num_threads": threads, "num_workers": 0, "progress": False,
                    "report": False, "out": str(work / "runs"), "seed": 0, **extra}
        settings.update({"epochs": 1} if quick else {"budget": f"{minutes:g}m"})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            started = time.perf_counter()
            run = cnnkit.train(**settings)
            seconds = time.perf_counter() - started
        history = [json.loads(line) for line in (Path(run.run_dir) / "metrics.jsonl").read_text().splitlines()
                   if line.strip()]
        segmenter = cnnkit.load(run.run_dir)
        volume, predicted = predict_volume(segmenter, image_path)
        metrics = volume_metrics(predicted[:, :, first:last], truth[:, :, first:last], segmenter.classes,
                                 volume.spacing, distances=False)
        in_test = {name: entry["dice"] for name, entry in metrics["per_structure"].items() if entry["true_voxels"]}
        index = {name: k for k, name in enumerate(segmenter.classes)}
        in_both = [dice for name, dice in in_test.items() if index[name] in seen]
        results[variant] = {
            "settings": settings, "train_seconds": round(seconds, 1), "epochs": history[-1].get("epoch"),
            "best_val_miou": max((line.get("val_miou") or 0.0) for line in history),
            "mean_dice_test_structures": float(numpy.mean(list(in_test.values()))),
            "mean_dice_structures_also_in_training": float(numpy.mean(in_both)),
            "structures_in_test": len(in_test), "structures_also_in_training": len(in_both),
            "per_structure_dice": {name: round(dice, 4) for name, dice in in_test.items()}}
    return {"note": SINGLE_SUBJECT, "slabs": SLABS, "runs": results}


INVESALIUS = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")
BONE_SLABS = {"train": [(0, 60)], "val": [(65, 75)], "test": [(80, 108)]}


def ct_bone(work: Path, minutes: float, threads: int, quick: bool) -> dict:
    """The InVesalius head CT and its bone mask as NIfTI, trained and scored like the brain mask."""
    import plistlib
    import tarfile
    import warnings

    import nibabel

    import cnnkit
    from cnnkit.data.medical.slices import read_volume
    from cnnkit.metrics.surface import volume_metrics
    from cnnkit.tasks.segmentation.volume import predict_volume

    work.mkdir(parents=True, exist_ok=True)
    with tarfile.open(INVESALIUS) as archive:
        members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
        def read(name):
            return archive.extractfile(members[name]).read()
        main = plistlib.loads(read("main.plist"))
        shape = tuple(main["matrix"]["shape"])  # (Z, Y, X)
        hu = numpy.frombuffer(read(main["matrix"]["filename"]), dtype=main["matrix"]["dtype"]).reshape(shape)
        mask_info = plistlib.loads(read("mask_0.plist"))
        stored = numpy.frombuffer(read(mask_info["mask_file"]), dtype=numpy.uint8).reshape(mask_info["mask_shape"])
    bone = (stored[1:, 1:, 1:] == 255).astype(numpy.uint8)  # InVesalius keeps a flag row/column first
    low, high = mask_info["threshold_range"]
    spacing = main["spacing"]
    affine = numpy.diag([*spacing, 1.0])
    data, labels = hu.transpose(2, 1, 0), bone.transpose(2, 1, 0)  # (Z, Y, X) -> (X, Y, Z)
    if quick:
        data, labels = data[64:192, 64:192], labels[64:192, 64:192]
    nibabel.save(nibabel.Nifti1Image(numpy.ascontiguousarray(data), affine), str(work / "ct.nii.gz"))
    nibabel.save(nibabel.Nifti1Image(numpy.ascontiguousarray(labels), affine), str(work / "bone.nii.gz"))
    rows = ["patient,image,mask,split,slices"]
    rows += [f"ct,ct.nii.gz,bone.nii.gz,{split},{a}:{b}" for split, slabs in BONE_SLABS.items() for a, b in slabs]
    (work / "studies.csv").write_text("\n".join(rows) + "\n")
    (work / "classes.txt").write_text("background\nbone\n")
    settings = {"task": "segment", "data": str(work / "studies.csv"), "window": "bone", "slice_stack": 3,
                "model": "unet", "model_args": MODEL_ARGS, "image_size": 64 if quick else 128, "batch_size": 16,
                "optimizer": "adamw", "lr": 3e-3, "weight_decay": 1e-4, "schedule": "onecycle", "seg_loss": "ce+dice",
                "hflip": True, "translate": 0, "scale": 0.1, "num_threads": threads, "num_workers": 0,
                "progress": False, "report": False, "out": str(work / "runs"), "seed": 0}
    settings.update({"epochs": 1} if quick else {"budget": f"{minutes:g}m"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        run = cnnkit.train(**settings)
        seconds = time.perf_counter() - started
    segmenter = cnnkit.load(run.run_dir)
    volume, predicted = predict_volume(segmenter, work / "ct.nii.gz")
    truth = read_volume(work / "bone.nii.gz", mask=True).data
    first, last = BONE_SLABS["test"][0]
    metrics = volume_metrics(predicted[:, :, first:last], truth[:, :, first:last], segmenter.classes, volume.spacing)
    entry = metrics["per_structure"]["bone"]
    return {"note": SINGLE_SUBJECT.replace("ch2", "InVesalius Cranium CT"), "settings": settings,
            "slabs": BONE_SLABS, "shipped_mask_threshold_hu": [low, high],
            "shipped_mask_equals_threshold": bool(numpy.array_equal(bone, ((hu >= low) & (hu <= high)).astype(numpy.uint8))),
            "train_seconds": round(seconds, 1), "test_slab_dice": entry["dice"], "test_slab_hd95_mm": entry["hd95_mm"],
            "test_slab_assd_mm": entry["assd_mm"], "test_slab_true_voxels": entry["true_voxels"],
            "spacing_mm": list(volume.spacing)}


def reading(repeats: int) -> dict:
    import pydicom
    from pydicom.pixels import apply_modality_lut

    from cnnkit.data.medical.dicom import read_dicom
    from cnnkit.data.medical.nifti import read_nifti
    from cnnkit.data.medical.slices import model_inputs

    ct = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"
    dataset = pydicom.dcmread(ct)
    theirs = apply_modality_lut(dataset.pixel_array, dataset)
    ours = read_dicom(ct).values[0]
    result = {"ct_small": {"hu_max_abs_difference_vs_pydicom": float(numpy.abs(ours - theirs).max()),
                           "hu_min": float(ours.min()), "hu_max": float(ours.max()),
                           "hu_mean": round(float(ours.mean()), 3), "rescale_intercept": float(dataset.RescaleIntercept)}}

    def rate(function, count: int, slices_each: int) -> float:
        function()  # warm-up (imports, file cache)
        started = time.perf_counter()
        for _ in range(count):
            function()
        return round(count * slices_each / (time.perf_counter() - started), 1)

    result["dicom_slices_per_second"] = {
        "cnnkit read_dicom + brain window": rate(lambda: read_dicom(ct).windowed("brain"), repeats * 20, 1),
        "pydicom dcmread + pixel_array + apply_modality_lut": rate(
            lambda: apply_modality_lut((d := pydicom.dcmread(ct)).pixel_array, d), repeats * 20, 1)}
    ch2 = TEMPLATES / "ch2.nii.gz"
    volume = read_nifti(ch2)
    slices = volume.shape[2]
    result["nifti_slices_per_second"] = {
        "cnnkit read_nifti (ch2.nii.gz, canonical RAS)": rate(lambda: read_nifti(ch2), repeats, slices),
        "+ percentile window, 3-slice stacks, 8-bit": rate(
            lambda: model_inputs(read_nifti(ch2), "percentile", 3), repeats, slices),
    }
    result["nifti_volume"] = {"shape": list(volume.shape), "spacing_mm": list(volume.spacing)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget of the brain-mask run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--aal-minutes", type=float, default=3.0, help="training budget of each AAL run")
    parser.add_argument("--aal-variants", nargs="+", default=list(AAL_VARIANTS), choices=list(AAL_VARIANTS),
                        help="AAL runs: loss / class-balancing variants (default: all)")
    parser.add_argument("--bone-minutes", type=float, default=3.0, help="training budget of the CT bone run")
    parser.add_argument("--parts", nargs="+", default=["brain", "read"], choices=["brain", "aal", "bone", "read"])
    parser.add_argument("--work", help="folder for the studies, slices and run (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--results-dir")
    parser.add_argument("--tag", help="results go to medical-TAG.json/.md (several invocations, one file each)")
    args = parser.parse_args()
    if not (TEMPLATES / "ch2.nii.gz").is_file():
        raise SystemExit(f"{TEMPLATES}/ch2.nii.gz not found: apt-get install mricron-data")
    _common.set_threads(args.threads)
    header = _common.run_header(args.quick)
    payload: dict = {"single_subject": SINGLE_SUBJECT}
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(args.work) if args.work else Path(temporary)
        if "read" in args.parts:
            payload["read"] = reading(1 if args.quick else 5)
        if "brain" in args.parts:
            payload["brain"] = brain_mask(work / "brain", args.minutes, args.threads, args.quick)
        if "aal" in args.parts:
            payload["aal"] = aal_regions(work / "aal", args.aal_minutes, args.threads, args.quick, args.aal_variants)
        if "bone" in args.parts:
            payload["bone"] = ct_bone(work / "bone", args.bone_minutes, args.threads, args.quick)
    lines = ["**Single subjects: each part trains and tests on slabs of one head (ch2 T1; the InVesalius CT); the "
             "scores measure the pipeline and the fit, not generalisation across patients.**", ""]
    if "brain" in payload:
        b = payload["brain"]
        lines += ["## Brain mask, ch2 T1 (ch2bet > 0), held-out slab z 100-134", "",
                  _common.markdown_table(
                      ["test-slab Dice (3-D)", "HD95 mm", "ASSD mm", "pixel Dice (evaluate)", "train s", "goal met"],
                      [[f"{b['test_slab_dice']:.4f}", f"{b['test_slab_hd95_mm']:.2f}", f"{b['test_slab_assd_mm']:.2f}",
                        f"{b['test_pixel_dice_brain']:.4f}", b["train_seconds"], b["goal_met"]]]),
                  "", f"Settings: {b['settings']}; slabs {b['slabs']}. Slices written in {b['slices_prepared_seconds']} s; "
                  f"predict_volume of all {b['volume_slices']} slices {b['predict_volume_seconds']} s. "
                  f"Goal: {b['goal']}. ({SINGLE_SUBJECT}.)", ""]
    if "aal" in payload:
        runs = payload["aal"]["runs"]
        lines += ["## AAL atlas, 116 regions, same slabs (test z 100-134)", "", _common.markdown_table(
            ["variant", "mean Dice (test structures)", "mean Dice (also in training)", "structures", "train s",
             "epochs", "best val mIoU"],
            [[name, f"{r['mean_dice_test_structures']:.4f}", f"{r['mean_dice_structures_also_in_training']:.4f}",
              f"{r['structures_in_test']} / {r['structures_also_in_training']}", r["train_seconds"],
              r.get("epochs"), f"{r.get('best_val_miou', 0.0):.4f}"]
             for name, r in runs.items()]), "", "Per-structure Dice (test slab):", "",
            _common.markdown_table(["structure", *runs], [[s, *(runs[v]["per_structure_dice"][s] for v in runs)]
                                                          for s in next(iter(runs.values()))["per_structure_dice"]]),
            "", f"({SINGLE_SUBJECT}.)", ""]
    if "bone" in payload:
        b = payload["bone"]
        lines += ["## CT bone, InVesalius Cranium (bone window), held-out slab z 80-107", "", _common.markdown_table(
            ["test-slab Dice (3-D)", "HD95 mm", "ASSD mm", "train s"],
            [[f"{b['test_slab_dice']:.4f}", f"{b['test_slab_hd95_mm']:.2f}", f"{b['test_slab_assd_mm']:.2f}",
              b["train_seconds"]]]), "",
            f"The shipped mask is HU in {b['shipped_mask_threshold_hu']} (equal to the threshold: "
            f"{b['shipped_mask_equals_threshold']}); the model sees the bone window in 8 bits. ({b['note']}.)", ""]
    if "read" in payload:
        r = payload["read"]
        rows = [[k, v] for k, v in {**r["dicom_slices_per_second"], **r["nifti_slices_per_second"]}.items()]
        lines += ["## Reading speed (slices/s)", "", _common.markdown_table(["reader", "slices/s"], rows), "",
                  f"CT_small HU vs pydicom apply_modality_lut: max |difference| {r['ct_small']['hu_max_abs_difference_vs_pydicom']}"
                  f" (HU {r['ct_small']['hu_min']} .. {r['ct_small']['hu_max']}, mean {r['ct_small']['hu_mean']}, "
                  f"RescaleIntercept {r['ct_small']['rescale_intercept']}).", ""]
    lines.append("The load averages at the start and end are in the header; heavy runs were serialised by a lock.")
    _common.finish(f"{NAME}-{args.tag}" if args.tag else NAME, "Medical imaging (issue 22): single-subject segmentation and reading speed", header, payload, "\n".join(lines),
                   args.results_dir)


if __name__ == "__main__":
    main()
