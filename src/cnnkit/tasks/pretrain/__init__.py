"""Self-supervised pretraining: a backbone from unlabeled images (`cnnkit train --task pretrain`).

    cnnkit train --task pretrain --data fashion-mnist method=simclr       # or moco; --model names the backbone
    cnnkit train --task pretrain --data ~/photos --model vit_mini method=mae    # an unlabeled folder works
    cnnkit evaluate RUN_DIR                       # kNN (k=200, cosine) and linear-probe accuracy on the test split
    cnnkit train --data fashion-mnist pretrained=RUN_DIR finetune=full   # fine-tune with the labels you have

    task.py       PretrainTask: the loss of each method (SimCLR, MoCo v2, MAE, BEiT with HOG targets), kNN monitor
    data.py       read_pretrain_data (labelled or not), ViewLoader (augmented views), KNNLoader (bank + queries)
    setup.py      setup: settings check, the method's network around a zoo backbone, record
    predictor.py  Encoder: what `cnnkit.load` returns (embed, evaluate: kNN + linear probe)
    output.py     what `cnnkit evaluate` / `predict` print
    report.py     the run report's part: kNN/probe facts, a 2-D projection by class, MAE reconstructions
"""

from cnnkit.tasks.base import TaskInfo
from cnnkit.tasks.pretrain.data import KNNLoader, PretrainData, ViewLoader, read_pretrain_data
from cnnkit.tasks.pretrain.output import evaluation_text, predict_images, prediction_text
from cnnkit.tasks.pretrain.predictor import Encoder
from cnnkit.tasks.pretrain.report import report_sections
from cnnkit.tasks.pretrain.setup import setup
from cnnkit.tasks.pretrain.task import METHODS, PretrainTask

TASK = TaskInfo(name="pretrain", setup=setup, predictor=Encoder, evaluation_text=evaluation_text,
                evaluation_saved="kNN and linear-probe accuracy", predict=predict_images,
                prediction_text=prediction_text, report_sections=report_sections)

__all__ = ["TASK", "METHODS", "Encoder", "KNNLoader", "PretrainData", "PretrainTask", "ViewLoader",
           "read_pretrain_data", "setup"]
