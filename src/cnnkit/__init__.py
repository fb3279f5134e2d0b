"""cnnkit: convolutional neural networks from parts to production.

    import cnnkit
    run = cnnkit.train(epochs=3)                 # fastnet on Fashion-MNIST
    classifier = cnnkit.load(run.run_dir)
    classifier.predict(["shoe.png"], top_k=3)
    cnnkit.create_model("resnet20", num_classes=10, in_chans=1)
    print(cnnkit.summary(cnnkit.create_model("fastnet"), input_size=(1, 28, 28)))
"""

__version__ = "0.1.0"

# The public names are imported on first use (PEP 562), so `cnnkit --help` and `import cnnkit.errors`
# do not pay for importing torch, torchvision and timm.
_EXPORTS = {
    "Classifier": "cnnkit.api", "Run": "cnnkit.api", "load": "cnnkit.api", "train": "cnnkit.api",
    "TrainConfig": "cnnkit.config", "create_model": "cnnkit.registry", "list_models": "cnnkit.registry",
    "summary": "cnnkit.inspect",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cnnkit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
