"""Synthetic RSNA-format lumbar spine studies with visible severity, real label statistics and a
known best possible score (the Bayes oracle). Entry point: :func:`generate`."""

from spinegrade.data.synthetic.generate import SynthSummary, generate
from spinegrade.data.synthetic.label_model import LabelModel, fit_label_model
from spinegrade.data.synthetic.labels import (
    READER_NOISE,
    LabelRows,
    ReaderModel,
    oracle_independent,
    oracle_joint,
)
from spinegrade.data.synthetic.phantom import Phantom, Tissue, make_phantom
from spinegrade.data.synthetic.source import LabelSource, RealLabels, find_labels_root, label_source

__all__ = [
    "READER_NOISE",
    "LabelModel",
    "LabelRows",
    "LabelSource",
    "Phantom",
    "ReaderModel",
    "RealLabels",
    "SynthSummary",
    "Tissue",
    "find_labels_root",
    "fit_label_model",
    "generate",
    "label_source",
    "make_phantom",
    "oracle_independent",
    "oracle_joint",
]
