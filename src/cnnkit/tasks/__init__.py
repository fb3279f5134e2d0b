from cnnkit.tasks.classification import ClassificationTask

__all__ = ["ClassificationTask"]
