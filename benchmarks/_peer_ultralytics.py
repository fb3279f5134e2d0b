"""The peer side of benchmarks/peers.py: train an ultralytics YOLO11 model from its YAML (no pretrained weights),
then write its test-split predictions as plain JSON for cnnkit's side to score with the same evaluator.

Runs in the PEER's own environment (ultralytics is AGPL-3.0 and never a dependency of cnnkit):

    PEER_PYTHON benchmarks/_peer_ultralytics.py '{"task": "detect", "data": ..., "minutes": 15, ...}'

Imports nothing from cnnkit. Settings are ultralytics' defaults except: device cpu, the image size, the time
budget (`time=`, hours), one torch thread, plots off (they download a font), and a fixed seed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main() -> None:
    settings = json.loads(sys.argv[1])
    import torch

    torch.set_num_threads(settings["threads"])
    from ultralytics import YOLO

    task, out = settings["task"], Path(settings["out"])
    yaml = {"classify": "yolo11n-cls.yaml", "detect": "yolo11n.yaml", "instance": "yolo11n-seg.yaml"}[task]
    model = YOLO(yaml)
    started = time.perf_counter()
    train_args = dict(data=settings["data"], imgsz=settings["imgsz"], device="cpu", plots=False, seed=0,
                      project=str(out), name="train", exist_ok=True, verbose=False)
    if settings.get("epochs"):
        train_args["epochs"] = settings["epochs"]
    else:
        train_args["time"] = settings["minutes"] / 60
    model.train(**train_args)
    train_seconds = time.perf_counter() - started
    best = out / "train" / "weights" / "best.pt"
    model = YOLO(str(best if best.is_file() else out / "train" / "weights" / "last.pt"))
    predictions = []
    if task == "classify":
        for image in sorted(Path(settings["test_images"]).rglob("*.png")):
            result = model.predict(str(image), imgsz=settings["imgsz"], device="cpu", verbose=False)[0]
            predictions.append({"file": str(image), "class": result.names[int(result.probs.top1)]})
    else:
        from pycocotools import mask as mask_utils
        import numpy

        for image in sorted(Path(settings["test_images"]).glob("*.png")):
            result = model.predict(str(image), imgsz=settings["imgsz"], device="cpu", conf=0.001, iou=0.7,
                                   max_det=100, retina_masks=True, verbose=False)[0]
            boxes = result.boxes
            masks = result.masks.data.numpy() if task == "instance" and result.masks is not None else None
            for index in range(len(boxes)):
                x1, y1, x2, y2 = (float(v) for v in boxes.xyxy[index])
                entry = {"file": image.name, "label": int(boxes.cls[index]), "score": float(boxes.conf[index]),
                         "box": [x1, y1, x2, y2]}
                if masks is not None:
                    rle = mask_utils.encode(numpy.asfortranarray((masks[index] > 0.5).astype(numpy.uint8)))
                    entry["mask"] = {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
                predictions.append(entry)
    epochs = None
    results_csv = out / "train" / "results.csv"
    if results_csv.is_file():
        epochs = max(0, len(results_csv.read_text().strip().splitlines()) - 1)
    (out / "peer.json").write_text(json.dumps({
        "predictions": predictions, "train_seconds": train_seconds, "epochs": epochs,
        "parameters": sum(p.numel() for p in model.model.parameters()), "model": yaml,
        "ultralytics": __import__("ultralytics").__version__}))


if __name__ == "__main__":
    main()
