"""Synthetic RSNA-format lumbar spine studies with visible severity, real label statistics and a
known best possible score (the Bayes oracle). Entry point: :func:`generate`."""

from spinegrade.data.synthetic.generate import SynthSummary, find_labels_root, generate
from spinegrade.data.synthetic.labels import (
    READER_NOISE,
    LabelRows,
    ReaderModel,
    oracle_independent,
    oracle_joint,
)
from spinegrade.data.synthetic.phantom import Phantom, Tissue, make_phantom

__all__ = [
    "READER_NOISE",
    "LabelRows",
    "Phantom",
    "ReaderModel",
    "SynthSummary",
    "Tissue",
    "find_labels_root",
    "generate",
    "make_phantom",
    "oracle_independent",
    "oracle_joint",
]
