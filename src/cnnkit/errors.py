"""Errors a user can hit. The CLI prints these as one clear message (no traceback unless --debug).

Every message says what was wrong, where (file, field) and what to do about it.
"""


class CnnkitError(Exception):
    """Base class of every error cnnkit raises on purpose."""


class ConfigError(CnnkitError):
    """A configuration value, file or command-line override is invalid."""


class DataError(CnnkitError):
    """A dataset is missing, unreadable or malformed."""


class DatasetNotFoundError(DataError):
    """A dataset could not be found locally and could not be downloaded."""


class ModelError(CnnkitError):
    """An unknown architecture, bad model arguments, or weights that do not fit."""


class CheckpointError(CnnkitError):
    """A run directory or checkpoint file is missing, corrupt or from an incompatible version."""
