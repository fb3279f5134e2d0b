"""Object detection: `cnnkit train --task detect`, and trained detectors loaded for predict and evaluate.

    cnnkit train --task detect --model yolo_fastnet --data SCENES_DIR epochs=30
    cnnkit evaluate RUN_DIR                     # COCO mAP@[.5:.95], mAP@.5, per-class AP on the test split
    cnnkit predict RUN_DIR scene.png --out out/ # JSON + the image with its boxes drawn

    task.py       DetectionTask: the detector's own losses; COCO mAP (pycocotools) as the metric
    data.py       read_detection_data (validated splits), image_statistics, make_detection_loader
    setup.py      setup / detector_setup (shared with instance segmentation)
    predictor.py  Detector: what `cnnkit.load` returns (detect, predict, evaluate)
    output.py     drawings and JSON per image, what `cnnkit evaluate` / `predict` print
    report.py     the run report's part: test mAP, per-class AP, PR curves, predictions beside the truth

Validation after every epoch reports COCO mAP; the best checkpoint is the one with the highest val_map50.
"""

from cnnkit.tasks.base import TaskInfo
from cnnkit.tasks.detection.data import (DetectionData, common_size, image_statistics, make_detection_loader,
                                         read_detection_data)
from cnnkit.tasks.detection.output import (PALETTE, draw_detections, evaluation_text, predict_images,
                                           prediction_text, write_predictions)
from cnnkit.tasks.detection.predictor import Detector
from cnnkit.tasks.detection.report import report_sections
from cnnkit.tasks.detection.setup import keep_freed_memory, resolve_detection_architecture, setup
from cnnkit.tasks.detection.task import DetectionTask

TASK = TaskInfo(name="detect", setup=setup, predictor=Detector, evaluation_text=evaluation_text,
                evaluation_saved="per-class AP", predict=predict_images, prediction_text=prediction_text,
                report_sections=report_sections)

__all__ = ["PALETTE", "TASK", "DetectionData", "DetectionTask", "Detector", "common_size", "draw_detections",
           "image_statistics", "keep_freed_memory", "make_detection_loader", "read_detection_data",
           "resolve_detection_architecture", "setup", "write_predictions"]
