"""Inference: a trained run folder and DICOM studies in; submission, predictions and reports out.

- `predict(run_dir, studies, out_dir, *, workers=2, tta=False, fail_on_error=False, ...) ->
  PredictResult`
- `discover_studies(folder)`: which studies a folder holds (RSNA images folder, one study, loose
  files)
- the predictor itself is `spinegrade.cv.ensemble.Ensemble` (every fold's localiser + grader,
  averaged)

Names are imported lazily so that worker processes importing `spinegrade.inference.worker` do not
pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "predict": "run",
    "PredictResult": "run",
    "discover_studies": "discover",
    "Discovery": "discover",
    "StudySource": "discover",
    "uid_to_id": "discover",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"spinegrade.inference.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'spinegrade.inference' has no attribute {name!r}")
