"""The task table: task name -> the package that implements it. The one place a new task is added.

    cnnkit train --task NAME  ->  TASKS[NAME]  ->  cnnkit/tasks/<package>/  (its TASK: a cnnkit.tasks.TaskInfo)

The config validates `task` against this table, the CLI offers its names, and `cnnkit.tasks.task_info`
imports a package only when it is used. Ground floor: plain data, no imports, so `cnnkit --help` and the
config stay light. See docs/ARCHITECTURE.md, "Adding a task".
"""

# name -> (package, one line for --help)
TASKS: dict[str, tuple[str, str]] = {
    "classify": ("cnnkit.tasks.classification", "a class per image"),
    "detect": ("cnnkit.tasks.detection", "boxes"),
    "segment": ("cnnkit.tasks.segmentation", "a class per pixel"),
    "instance": ("cnnkit.tasks.instance", "a mask per object"),
    "embed": ("cnnkit.tasks.embed", "an embedding per image: face recognition, metric learning"),
    "pretrain": ("cnnkit.tasks.pretrain", "a backbone from unlabeled images: SimCLR, MoCo, MAE, BEiT"),
}

# Names that runs were written with before tasks were named ("classification" before config.task existed).
# Read once, where records are read (cnnkit.engine.checkpoint.upgrade_record).
ALIASES: dict[str, str] = {"classification": "classify"}

DEFAULT_TASK = "classify"  # records that name no task are classification runs


def canonical_task(name: str | None) -> str:
    """The table's name for a recorded task name (None and legacy aliases included)."""
    if name is None:
        return DEFAULT_TASK
    return ALIASES.get(name, name)
