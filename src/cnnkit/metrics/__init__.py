from cnnkit.metrics.classification import ClassificationMeter

__all__ = ["ClassificationMeter"]
