"""A trained instance segmentation run: `cnnkit.load(run_dir)` gives an InstanceSegmenter."""

from __future__ import annotations

from typing import Any

import numpy

from cnnkit.tasks.detection import Detector
from cnnkit.tasks.instance.task import MASK_THRESHOLD, InstanceTask, read_instance_data


class InstanceSegmenter(Detector):
    """A trained instance segmentation run (`cnnkit.load` of a task "instance" run)."""

    # evaluate (Detector's): masks in the targets, the mask mAP meter, fp32 as the runs were measured
    task_class = InstanceTask
    read_data = staticmethod(read_instance_data)
    masks, eval_batch_size, autocast = True, 16, False

    def predict(self, images, score_threshold: float = 0.25) -> list[list[dict[str, Any]]]:
        """Per image, its objects as JSON-ready dicts: {"class", "label", "score", "box": [x1, y1, x2, y2],
        "mask": COCO RLE {"size": [H, W], "counts": str}, "area": mask pixels}, best first."""
        from pycocotools import mask as mask_utils

        results = []
        for detection in self.detect(images, score_threshold):
            objects = []
            masks = (detection["masks"] >= MASK_THRESHOLD).numpy().astype(numpy.uint8)  # (N, H, W)
            for box, score, label, mask in zip(detection["boxes"], detection["scores"], detection["labels"], masks):
                rle = mask_utils.encode(numpy.asfortranarray(mask))
                objects.append({"class": self.classes[int(label)], "label": int(label), "score": round(float(score), 4),
                                "box": [round(float(v), 2) for v in box], "area": int(mask.sum()),
                                "mask": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}})
            results.append(objects)
        return results
