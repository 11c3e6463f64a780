"""Exceptions for expected failures: the CLI prints their message as one line and exits non-zero."""

from __future__ import annotations

from pathlib import Path


class SpinegradeError(Exception):
    """Base class of every expected failure (bad input, missing file, wrong config)."""


class DicomError(SpinegradeError):
    """A DICOM file or series that cannot be used; the message names the file and the reason."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:
        """Pickle by (path, reason) so the error survives a process pool."""
        return (type(self), (self.path, self.reason))


class DataError(SpinegradeError):
    """A table or data folder that is missing or malformed."""


class ConfigError(SpinegradeError):
    """A config file or override that does not fit the typed config."""


class SubmissionError(SpinegradeError):
    """A submission that cannot be scored (missing rows, NaN, negative values, unknown row ids)."""
