"""The one family of user-facing errors.

Everything a user can cause — a bad suite, an unknown name, a config key of the wrong
type, missing data, a model path that does not import, a run directory that is not one —
raises a `SeqbenchError` whose message names the problem and the fix. The CLI catches
this one type and prints the message on one line (exit 2); anything else is a bug and
keeps its traceback.

models/ and tasks/ import from here (never from bench/ and never from each other).
"""

from __future__ import annotations


class SeqbenchError(Exception):
    """A user-caused problem; the message says what is wrong and how to fix it."""


class ConfigError(SeqbenchError, ValueError):
    """An unknown name or config key, or a value of the wrong type or out of range."""


class ImportPathError(ConfigError):
    """A `package.module:Name` reference that does not import or names the wrong kind of object."""


class MissingDataError(ConfigError):
    """Real data, or the optional package that ships it, is not available; the message says how to get it."""


class SettingsError(ConfigError):
    """A measure's settings are invalid for the cell it runs on."""


class SuiteError(SeqbenchError, ValueError):
    """A suite file (or an override) is malformed; the message says where (file:line: key) and how to fix it."""


class RunDirError(SeqbenchError, ValueError):
    """A run directory is missing, not a run, owned by another live run, or not writable."""


class StorageError(SeqbenchError, OSError):
    """Results could not be written (disk full, read-only); nothing written before is damaged.

    Not the user's input: the CLI exits 1, and the message gives the resume command."""

    exit_code = 1


class ResultsError(SeqbenchError, ValueError):
    """A path given as a run directory is missing, is not a run, or holds unreadable results."""


class ReportInputError(SeqbenchError, ValueError):
    """The paths given to the report are not run directories (or hold unreadable results)."""


class CompareInputError(SeqbenchError, ValueError):
    """The inputs of compare cannot be compared (missing, unreadable, nothing in common)."""


class FindingsError(SeqbenchError, ValueError):
    """A findings run is missing the rows its analysis needs."""


class UnavailableError(SeqbenchError, RuntimeError):
    """An optional component (Ray, CUDA, a kernel package) is not available here; the message says how to get it."""


__all__ = [
    "CompareInputError", "ConfigError", "FindingsError", "ImportPathError", "MissingDataError",
    "ReportInputError", "ResultsError", "RunDirError", "SeqbenchError", "SettingsError", "StorageError", "SuiteError",
    "UnavailableError",
]
