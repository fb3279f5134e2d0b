from cnnkit.tasks.base import TASK_MODULES, Task, TaskSetup, task_module
from cnnkit.tasks.classification import ClassificationTask

__all__ = ["ClassificationTask", "TASK_MODULES", "Task", "TaskSetup", "task_module"]
