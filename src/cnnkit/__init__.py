"""cnnkit: convolutional neural networks from parts to production.

    import cnnkit
    run = cnnkit.train(epochs=3)                 # fastnet on Fashion-MNIST
    classifier = cnnkit.load(run.run_dir)
    classifier.predict(["shoe.png"], top_k=3)
    cnnkit.create_model("resnet20", num_classes=10, in_chans=1)
"""

__version__ = "0.1.0"

from cnnkit.api import Classifier, Run, load, train  # noqa: E402
from cnnkit.config import TrainConfig  # noqa: E402
from cnnkit.inspect import summary  # noqa: E402
from cnnkit.registry import create_model, list_models  # noqa: E402

__all__ = ["Classifier", "Run", "TrainConfig", "create_model", "list_models", "load", "summary", "train"]
