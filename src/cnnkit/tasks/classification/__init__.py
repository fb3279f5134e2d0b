"""Image classification: a class per image (`cnnkit train --task classify`, the default task).

    task.py       ClassificationTask (model + cross-entropy / focal loss), predict_logits (flip TTA)
    data.py       prepare_data (read, split, normalise), make_loader (in-memory or streamed)
    setup.py      setup: model, pretrained weights, transfer-learning schedule, loss, record
    predictor.py  Classifier: what `cnnkit.load` returns (predict, predict_proba, evaluate)
    output.py     what `cnnkit evaluate` and `cnnkit predict` print
    preview.py    `cnnkit augment preview`: training images as the model sees them
"""

from cnnkit.tasks.base import TaskInfo
from cnnkit.tasks.classification.data import PreparedData, make_loader, prepare_data
from cnnkit.tasks.classification.output import evaluation_text, predict_images, prediction_text
from cnnkit.tasks.classification.predictor import Classifier
from cnnkit.tasks.classification.setup import setup
from cnnkit.tasks.classification.task import ClassificationTask, predict_logits

TASK = TaskInfo(name="classify", setup=setup, predictor=Classifier, evaluation_text=evaluation_text,
                evaluation_saved="per-class metrics and confusion matrix", predict=predict_images,
                prediction_text=prediction_text, exportable=True, serve_as="classifier", report_details=True)

__all__ = ["TASK", "ClassificationTask", "Classifier", "PreparedData", "make_loader", "predict_logits",
           "prepare_data", "setup"]
