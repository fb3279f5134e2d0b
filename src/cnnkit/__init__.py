"""cnnkit: convolutional neural networks from parts to production."""

__version__ = "0.1.0"
