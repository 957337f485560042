"""vggunet's exceptions: one family under `VggUnetError`.

Every error vggunet raises on purpose derives from `VggUnetError`, so `except VggUnetError`
catches all of them (the CLI does, to print its one-line message). Each also derives from the
built-in class it derived from before the family existed (`ValueError` or `OSError`), so existing
`except ValueError:` clauses keep working. Messages name the offending file, layer, value or
argument, and what would be valid where that helps.

This module imports nothing heavy: the CLI and `import vggunet` use it without loading Keras.
"""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "CheckpointError",
    "CliError",
    "DataError",
    "ExportError",
    "ImagenetWeightsUnavailable",
    "MissingFileError",
    "ModelFileError",
    "OutputError",
    "PredictionError",
    "RunLockedError",
    "SettingsMismatchError",
    "UnexpectedArgumentError",
    "UnsafeModelError",
    "VggUnetError",
    "WeightsError",
    "WriteError",
]


class VggUnetError(Exception):
    """Base class of every error vggunet raises on purpose."""


class ArgumentError(VggUnetError, ValueError):
    """An argument value vggunet cannot use (wrong type, out of range, unknown option)."""


class UnexpectedArgumentError(ArgumentError, TypeError):
    """A keyword argument the called function does not take (a `TypeError` too, like Python's)."""


class DataError(VggUnetError, ValueError):
    """A data file or folder is missing, unreadable or inconsistent (message names it)."""


class MissingFileError(VggUnetError, FileNotFoundError):
    """A file or folder vggunet was asked to read does not exist (message names it)."""


class WeightsError(VggUnetError, ValueError):
    """A weights file is missing, unreadable, or does not fit the backbone."""


class ImagenetWeightsUnavailable(VggUnetError, OSError):
    """ImageNet weights are neither in the Keras cache nor downloadable (e.g. offline)."""


class ModelFileError(VggUnetError, ValueError):
    """A `.keras` file is corrupt, truncated, or not a Keras model archive (message names it)."""


class UnsafeModelError(VggUnetError, ValueError):
    """A model file only loads with Keras safe mode off (it contains a Lambda layer or similar)."""


class PredictionError(VggUnetError, ValueError):
    """An image or argument that prediction cannot use (NaN pixels, wrong channels, ...)."""


class WriteError(VggUnetError, OSError):
    """A file vggunet was asked to write could not be written; the previous file is kept."""


class OutputError(PredictionError, WriteError):
    """An output file or folder that cannot be written (a `PredictionError` and an `OSError`)."""


class CheckpointError(WriteError):
    """A checkpoint or run file that cannot be written; the previous one is kept."""


class ExportError(VggUnetError, ValueError):
    """An export that cannot be done as asked (bad format, path, size, or missing converter)."""


class RunLockedError(VggUnetError, RuntimeError):
    """A run folder is held by another live training process (its lock file names it)."""


class SettingsMismatchError(VggUnetError, ValueError):
    """A resume asked for settings that differ from the run's in a way that cannot be applied."""


class CliError(VggUnetError, ValueError):
    """A user error detected by the CLI itself (bad flag value or combination)."""
