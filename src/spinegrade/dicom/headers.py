"""Reading single DICOM files: the geometry header of a slice, and its decoded pixels.

Every expected failure (missing folder, not DICOM, truncated, missing tags, no decoder) raises
`DicomError(path, reason)` naming the file.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import UID, ExplicitVRLittleEndian

from spinegrade.errors import DicomError

#: What to install for each family of compressed transfer syntaxes (by UID prefix).
_DECODER_HINTS = (
    ("1.2.840.10008.1.2.4.8", "pyjpegls (or pylibjpeg + pylibjpeg-libjpeg)"),  # JPEG-LS
    ("1.2.840.10008.1.2.4.9", "pylibjpeg + pylibjpeg-openjpeg"),  # JPEG 2000
    ("1.2.840.10008.1.2.4.20", "pylibjpeg + pylibjpeg-openjpeg"),  # HTJ2K
    ("1.2.840.10008.1.2.4.", "pylibjpeg + pylibjpeg-libjpeg"),  # JPEG baseline/extended/lossless
    ("1.2.840.10008.1.2.5", "pylibjpeg + pylibjpeg-rle"),  # RLE (pydicom decodes it natively)
)


@dataclass(frozen=True, eq=False)
class SliceHeader:
    """Geometry and identity of one DICOM slice (no pixels).

    `position` (3,) is ImagePositionPatient in LPS mm, `orientation` (6,) is ImageOrientationPatient
    (r then c), `pixel_spacing` is (dy between rows, dx between columns) exactly as the tag.
    """

    path: Path
    instance_number: int | None
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    rows: int
    cols: int
    slice_thickness: float | None
    rescale_slope: float
    rescale_intercept: float
    study_uid: str
    series_uid: str
    description: str
    manufacturer: str | None
    transfer_syntax: str
    echo_time: float | None = None
    repetition_time: float | None = None
    inversion_time: float | None = None

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal n = r x c, shape (3,)."""
        n = np.cross(self.orientation[:3], self.orientation[3:])
        return n / np.linalg.norm(n)


def list_dicom_files(series_dir: str | Path) -> list[Path]:
    """The `*.dcm` files of a series folder, sorted by name (not a spatial order)."""
    folder = Path(series_dir)
    if not folder.is_dir():
        raise DicomError(folder, "series folder does not exist" if not folder.exists() else "not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".dcm" and p.is_file())
    if not files:
        raise DicomError(folder, "no .dcm files in the series folder")
    return files


def read_dataset(path: str | Path, *, stop_before_pixels: bool = False) -> Dataset:
    """`pydicom.dcmread` that turns unreadable files into `DicomError`."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DicomError(path, f"not a readable DICOM file ({reason})") from None


def parse_header(ds: Dataset, path: str | Path) -> SliceHeader:
    """The `SliceHeader` of dataset `ds` read from `path`; missing geometry tags raise DicomError."""
    missing = [t for t in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
               if ds.get(t) is None or ds.get(t) == ""]
    if missing:
        raise DicomError(path, f"missing geometry tag(s) {', '.join(missing)}")
    try:
        position = np.array([float(v) for v in ds.ImagePositionPatient], dtype=np.float64)
        orientation = np.array([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)
        spacing = tuple(float(v) for v in ds.PixelSpacing)
    except (TypeError, ValueError) as exc:
        raise DicomError(path, f"malformed geometry tag ({exc})") from None
    if position.shape != (3,) or orientation.shape != (6,) or len(spacing) != 2:
        raise DicomError(path, "ImagePositionPatient/ImageOrientationPatient/PixelSpacing have wrong lengths")
    if min(spacing) <= 0 or np.linalg.norm(np.cross(orientation[:3], orientation[3:])) < 0.5:
        raise DicomError(path, "degenerate PixelSpacing or ImageOrientationPatient")
    meta = getattr(ds, "file_meta", None)
    return SliceHeader(
        path=Path(path),
        instance_number=_opt_int(ds.get("InstanceNumber")),
        position=position,
        orientation=orientation,
        pixel_spacing=(spacing[0], spacing[1]),
        rows=int(ds.Rows),
        cols=int(ds.Columns),
        slice_thickness=_opt_float(ds.get("SliceThickness")),
        rescale_slope=_opt_float(ds.get("RescaleSlope")) or 1.0,
        rescale_intercept=_opt_float(ds.get("RescaleIntercept")) or 0.0,
        study_uid=str(ds.get("StudyInstanceUID", "")),
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        description=str(ds.get("SeriesDescription", "")),
        manufacturer=str(ds.Manufacturer) if ds.get("Manufacturer") else None,
        transfer_syntax=str(meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)) if meta else ExplicitVRLittleEndian,
        echo_time=_opt_float(ds.get("EchoTime")),
        repetition_time=_opt_float(ds.get("RepetitionTime")),
        inversion_time=_opt_float(ds.get("InversionTime")),
    )


def decode_pixels(ds: Dataset, path: str | Path) -> np.ndarray:
    """Stored pixel values of a single-frame dataset, shape (rows, cols), before rescale."""
    if "PixelData" not in ds:
        raise DicomError(path, "no pixel data")
    ts = UID(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian))
    if ts.is_compressed:
        decoder = get_decoder(ts)
        if decoder is None or not decoder.is_available:
            raise DicomError(path, f"pixel data is compressed as {ts.name} ({ts}) and no decoder is "
                                   f"installed: pip install {_decoder_hint(ts)}")
    try:
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file for us
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DicomError(path, f"cannot decode pixel data ({ts.name}: {reason})") from None
    if arr.ndim != 2:
        raise DicomError(path, f"expected one monochrome frame, got pixel array of shape {arr.shape}")
    return arr


def read_slice(path: str | Path) -> tuple[SliceHeader, np.ndarray]:
    """Header and stored pixels (rows, cols) of one file, read in one pass."""
    ds = read_dataset(path)
    header = parse_header(ds, path)
    return header, decode_pixels(ds, path)


def read_header(path: str | Path) -> SliceHeader:
    """Header of one file, without reading its pixel data."""
    return parse_header(read_dataset(path, stop_before_pixels=True), path)


def read_series_headers(series_dir: str | Path, *, workers: int = 0) -> list[SliceHeader]:
    """Headers of every `.dcm` file of a series (file-name order), pixels not read.

    `workers > 0` reads the files in a process pool of that size.
    """
    files = list_dicom_files(series_dir)
    return map_files(read_header, files, workers)


def map_files(fn, files: list[Path], workers: int) -> list:  # type: ignore[no-untyped-def]
    """`[fn(f) for f in files]`, in a process pool when `workers > 0` (order kept)."""
    if workers <= 0 or len(files) < 2:
        return [fn(f) for f in files]
    n = min(workers, len(files), os.cpu_count() or 1)
    with ProcessPoolExecutor(max_workers=n) as pool:
        return list(pool.map(fn, files, chunksize=max(1, len(files) // (4 * n))))


def _decoder_hint(ts: UID) -> str:
    return next((hint for prefix, hint in _DECODER_HINTS if str(ts).startswith(prefix)), "pylibjpeg or gdcm")


def _opt_float(value: object) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _opt_int(value: object) -> int | None:
    f = _opt_float(value)
    return None if f is None else int(round(f))
