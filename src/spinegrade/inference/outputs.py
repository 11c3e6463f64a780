"""What `spinegrade predict` writes: submission.csv, errors.csv, per-study predictions.json,
overlays and report.html, and the batch's index.html. Every file is written atomically.

Layout of OUT_DIR::

    submission.csv                      row_id,normal_mild,moderate,severe (25 rows per study,
    always)
    errors.csv                          study_id,path,reason (one row per study that could not be
    read;
                                        files that are not DICOM in a loose folder: study_id empty)
    index.html                          the batch: one row per study, linked to its report
    studies/<study_id>/predictions.json probabilities, where the model looked, flags (see
    prediction_record)
    studies/<study_id>/report.html      findings grid, overlays, series, flags (self-contained)
    studies/<study_id>/<overlay>.png    sagittal_t2.png, sagittal_t1.png, axial_t2.png (when there
    is something to show)
    studies/<study_id>/cam/<row_id>.png `--cam`: each graded target's crop beside its Grad-CAM map
    studies/<study_id>/dicom/           `--dicom-out` (and `--dicomweb`; see `inference.dicom_out`):
      sr.dcm                            the DICOM SR (TID 1500): 25 findings, in a new series
      overlay_<overlay>.dcm             each overlay PNG as a Secondary Capture, in a 2nd new series
                                        (a failed study gets neither: predictions.json says why)
    .fetch/<StudyUID>/<SeriesUID>/      `--dicomweb`: the instances fetched (WADO-RS), predicted

`predictions.json` then also holds `dicom`: `files` (path under the study folder -> SOP Instance
UID), `sr_series_uid` and `overlay_series_uid`, or `reason` when no SR was written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from spinegrade.constants import SEVERITIES, SUBMISSION_COLUMNS
from spinegrade.dicom import Study
from spinegrade.io import write_json, write_with
from spinegrade.report.cams import CamImage, save_cam
from spinegrade.report.overlays import OVERLAY_TITLES, Panel, save_overlay
from spinegrade.report.study_report import write_study_report

if TYPE_CHECKING:  # keeps torch out of the worker processes that import this module
    from spinegrade.cv.ensemble import StudyPrediction

ERROR_COLUMNS = ("study_id", "path", "reason")
CAM_DIR = "cam"  #: the Grad-CAM PNGs' folder in a study's folder


def study_dir(out_dir: str | Path, study_id: int) -> Path:
    """`OUT_DIR/studies/<study_id>`."""
    return Path(out_dir) / "studies" / str(int(study_id))


def prediction_record(
    pred: StudyPrediction,
    path: str | Path,
    study: Study | None,
    model: Mapping[str, Any],
    error: str = "",
) -> dict[str, Any]:
    """The JSON-ready record of one study (the content of its `predictions.json`).

    Keys: `study_id`, `path`, `status` ("ok" | "failed"), `error`, `model` (run folder, folds, tta),
    `series` (id, type, description, stacks, slices, how the type was decided), `skipped` (series
    that could not be read), `targets`: 25 dicts with `row_id, condition, level, probabilities
    {normal_mild, moderate, severe}, most_likely, series_id, series_type, stack_index, slice_index,
    instance_number, pixel {x, y}, world_lps_mm [x, y, z], confidence, method, spread_mm,
    folds_graded, reason, flags, cam, cam_peak_mm`: `cam` is the Grad-CAM PNG's path under the
    study folder (`cam/<row_id>.png`, of the `most_likely` severity) and `cam_peak_mm` the map's
    maximum's distance from the point, both None when `pred` has no map of the target.
    """
    targets = []
    for r in pred.targets.to_dict("records"):
        probs = {s: float(r[s]) for s in SEVERITIES}
        located = r["series_id"] is not None and not pd.isna(r["series_id"])
        targets.append(
            {
                "row_id": r["row_id"],
                "condition": r["condition"],
                "level": r["level"],
                "probabilities": probs,
                "most_likely": max(probs, key=probs.__getitem__),
                **{
                    k: (_int(r[k]) if located else None)
                    for k in ("series_id", "stack_index", "slice_index", "instance_number")
                },
                "series_type": r["series_type"],
                "pixel": {"x": float(r["x"]), "y": float(r["y"])} if located else None,
                "world_lps_mm": [float(r[k]) for k in ("world_x", "world_y", "world_z")]
                if located
                else None,
                "confidence": _float(r["confidence"]),
                "method": r["method"] or "",
                "spread_mm": _float(r["spread_mm"]),
                "folds_graded": int(r["folds_graded"]),
                "reason": r["reason"] or "",
                "flags": list(r["flags"]),
                **_cam_fields(pred.cams.get(r["row_id"]), r["row_id"]),
            }
        )
    series = (
        []
        if study is None
        else [
            {
                "series_id": s.series_id,
                "series_type": s.series_type,
                "description": s.description,
                "stacks": len(s.stacks),
                "slices": sum(v.shape[0] for v in s.stacks),
                "note": s.note,
            }
            for s in study.series
        ]
    )
    return {
        "study_id": int(pred.study_id),
        "path": str(path),
        "status": "failed" if error else "ok",
        "error": error,
        "model": dict(model),
        "series": series,
        "skipped": [] if study is None else list(study.skipped),
        "targets": targets,
    }


def render_study(
    out_dir: str | Path,
    record: Mapping[str, Any],
    panels: Mapping[str, list[Panel]],
    cams: Mapping[str, CamImage] | None = None,
) -> Path:
    """Write a study's predictions.json, overlay PNGs, Grad-CAM PNGs (`cams`: row_id -> map, at
    the records' `cam` paths) and report.html; returns the report's path."""
    folder = study_dir(out_dir, record["study_id"])
    write_json(folder / "predictions.json", record)
    pngs = {}
    for name, ps in panels.items():
        if ps:
            pngs[name] = save_overlay(ps, folder / f"{name}.png", OVERLAY_TITLES[name])
    cam_pngs = {
        t["row_id"]: save_cam(cams[t["row_id"]], folder / t["cam"])
        for t in record["targets"]
        if cams and t.get("cam") and t["row_id"] in cams
    }
    return write_study_report(folder / "report.html", record, pngs, cam_pngs)


def write_submission(path: str | Path, preds: Sequence[StudyPrediction]) -> Path:
    """The challenge submission: 25 rows per study in `TARGETS` order, study order kept."""
    frames = [
        pd.DataFrame(
            {"row_id": p.targets["row_id"], **{s: p.probs[:, i] for i, s in enumerate(SEVERITIES)}}
        )
        for p in preds
    ]
    sub = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=list(SUBMISSION_COLUMNS))
    )
    return write_with(
        path,
        lambda tmp: sub[list(SUBMISSION_COLUMNS)].to_csv(tmp, index=False, float_format="%.6g"),
    )


def write_errors(path: str | Path, rows: Sequence[tuple[int | None, str, str]]) -> Path:
    """`errors.csv` (study_id, path, reason); written even when empty (header only)."""
    frame = errors_frame(rows)
    return write_with(path, lambda tmp: frame.to_csv(tmp, index=False))


def errors_frame(rows: Sequence[tuple[int | None, str, str]]) -> pd.DataFrame:
    """The rows of errors.csv as a DataFrame (study_id nullable integer)."""
    frame = pd.DataFrame(list(rows), columns=list(ERROR_COLUMNS))
    frame["study_id"] = frame["study_id"].astype("Int64")
    return frame


def _cam_fields(cam: CamImage | None, row: str) -> dict[str, Any]:
    """A target's `cam` and `cam_peak_mm` in predictions.json."""
    if cam is None:
        return {"cam": None, "cam_peak_mm": None}
    return {"cam": f"{CAM_DIR}/{row}.png", "cam_peak_mm": round(cam.peak_mm, 2)}


def _int(v: Any) -> int | None:
    return None if v is None or pd.isna(v) else int(v)


def _float(v: Any) -> float | None:
    return None if v is None or pd.isna(v) or not np.isfinite(float(v)) else float(v)
