"""The work done in `predict`'s worker processes: reading a study, writing its outputs.

This module imports no torch, so the forkserver's workers start quickly.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from spinegrade.dicom import Study
from spinegrade.errors import DicomError, SpinegradeError
from spinegrade.inference.discover import StudySource, load_source
from spinegrade.inference.outputs import render_study, study_dir
from spinegrade.report.cams import CamImage
from spinegrade.report.overlays import Panel
from spinegrade.timing import Timing

if TYPE_CHECKING:  # highdicom is imported only when a DICOM job comes
    from spinegrade.inference.dicom_out import DicomJob


def read_study(
    source: StudySource, series_descriptions: pd.DataFrame | None
) -> tuple[Study | str, Timing]:
    """`(study, timing)`, or `(reason, timing)` when the study cannot be used (stage "read")."""
    timing = Timing()
    with timing.measure("read"):
        out = _read(source, series_descriptions)
    return out, timing


def _read(source: StudySource, series_descriptions: pd.DataFrame | None) -> Study | str:
    try:
        out: Study | str = load_source(source, series_descriptions)
    except DicomError as exc:
        out = exc.reason if exc.path == source.path else str(exc)
    except SpinegradeError as exc:
        out = str(exc)
    except Exception as exc:  # noqa: BLE001 - malformed data breaks any reader; batch goes on
        first = str(exc).splitlines()[0] if str(exc) else ""
        out = f"unexpected error while reading: {type(exc).__name__}: {first}"
    return out


def render_job(
    out_dir: str | Path,
    record: Mapping[str, Any],
    panels: Mapping[str, list[Panel]],
    dicom: DicomJob | None = None,
    cams: Mapping[str, CamImage] | None = None,
) -> Timing:
    """Write the study's predictions.json, overlays, Grad-CAM maps (`cams`: row_id -> map) and
    report.html, then (given a `dicom` job) its SR and overlay images (stage "write"); DICOM
    failures raise `DicomOutputError`."""
    timing = Timing()
    with timing.measure("write"):
        render_study(out_dir, record, panels, cams)
        if dicom is not None:
            from spinegrade.inference.dicom_out import write_study_dicom

            write_study_dicom(study_dir(out_dir, record["study_id"]), record, dicom)
    return timing
