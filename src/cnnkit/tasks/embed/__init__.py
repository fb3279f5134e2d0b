"""Face recognition and metric learning: an embedding per image (`cnnkit train --task embed`).

    cnnkit train --task embed --data IDENTITIES_DIR --model resnet18 embed_loss=arcface
    cnnkit evaluate RUN_DIR                     # identities never trained on: rank-1, CMC, TAR@FAR, EER ...
    cnnkit embed RUN_DIR a.jpg b.jpg --json     # the embeddings
    cnnkit verify RUN_DIR a.jpg b.jpg           # same identity or not, with the run's threshold
    cnnkit gallery add RUN_DIR --gallery people.gallery PHOTOS_DIR; cnnkit gallery search ... photo.jpg

    task.py       EmbedTask (margin, triplet or contrastive loss), EmbeddingMeter (verification + identification)
    data.py       read_identities (open-set splits), PKLoader (P identities x K images), make_loader
    setup.py      setup: settings check, the embedder (a zoo CNN trunk + embedding head), record
    predictor.py  Embedder: what `cnnkit.load` returns (embed, verify, evaluate)
    gallery.py    Gallery: enrolled embeddings, exact cosine search, stored as safetensors + JSON
    output.py     what `cnnkit evaluate` / `predict` print
    report.py     the run report's part: ROC, CMC, score histograms, PCA, hardest false matches
"""

from cnnkit.tasks.base import TaskInfo
from cnnkit.tasks.embed.data import IdentityData, PKLoader, make_loader, read_identities
from cnnkit.tasks.embed.gallery import Gallery
from cnnkit.tasks.embed.output import evaluation_text, predict_images, prediction_text
from cnnkit.tasks.embed.predictor import Embedder
from cnnkit.tasks.embed.report import report_sections
from cnnkit.tasks.embed.setup import setup
from cnnkit.tasks.embed.task import EmbeddingMeter, EmbedTask

TASK = TaskInfo(name="embed", setup=setup, predictor=Embedder, evaluation_text=evaluation_text,
                evaluation_saved="verification and identification metrics", predict=predict_images,
                prediction_text=prediction_text, exportable=True, serve_as="embedder",
                report_sections=report_sections)

__all__ = ["TASK", "EmbedTask", "Embedder", "EmbeddingMeter", "Gallery", "IdentityData", "PKLoader", "make_loader",
           "read_identities", "setup"]
