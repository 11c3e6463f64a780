"""RSNA tables and their validation, folds (and, from other modules, study index, synthetic data,
cache)."""

from spinegrade.data.folds import make_folds
from spinegrade.data.tables import (
    Problem,
    RsnaTables,
    ValidationReport,
    labels_long,
    load_tables,
    validate_tables,
)

__all__ = [
    "Problem",
    "RsnaTables",
    "ValidationReport",
    "labels_long",
    "load_tables",
    "make_folds",
    "validate_tables",
]
