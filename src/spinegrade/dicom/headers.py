"""Reading single DICOM files: the geometry header of a slice, and its decoded pixels.

Every expected failure (missing folder, not DICOM, truncated, malformed or missing tags, no
decoder) raises `DicomError(path, reason)` naming the file: whatever pydicom raises on a file's
bytes becomes one. What pydicom warns or logs while reading a file is held back: a failing file's
DicomError carries the first note, and a file that loads logs each new note once, as one line
naming the file, on the `spinegrade.dicom.headers` logger (not thread-safe: spinegrade reads files
in processes, never threads).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from spinegrade.errors import DicomError

#: What to install for each family of compressed transfer syntaxes (by UID prefix).
_DECODER_HINTS = (
    ("1.2.840.10008.1.2.4.8", "pyjpegls (or pylibjpeg + pylibjpeg-libjpeg)"),  # JPEG-LS
    ("1.2.840.10008.1.2.4.9", "pylibjpeg + pylibjpeg-openjpeg"),  # JPEG 2000
    ("1.2.840.10008.1.2.4.20", "pylibjpeg + pylibjpeg-openjpeg"),  # HTJ2K
    ("1.2.840.10008.1.2.4.", "pylibjpeg + pylibjpeg-libjpeg"),  # JPEG baseline/extended/lossless
    ("1.2.840.10008.1.2.5", "pylibjpeg + pylibjpeg-rle"),  # RLE (pydicom decodes it natively)
)

_GEOMETRY = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
_RESCALE = ("RescaleSlope", "RescaleIntercept")
_OTHER = (
    "InstanceNumber",
    "SliceThickness",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SeriesDescription",
    "Manufacturer",
    "EchoTime",
    "RepetitionTime",
    "InversionTime",
    "ScanningSequence",
    "SequenceName",
    "SOPInstanceUID",
    "SOPClassUID",
)
_TAGS = {kw: tag_for_keyword(kw) for kw in _GEOMETRY + _RESCALE + _OTHER}
_PIXEL_TAGS = {
    kw: tag_for_keyword(kw)
    for kw in (
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "SamplesPerPixel",
        "PixelRepresentation",
        "NumberOfFrames",
    )
}
_TEXT_VRS = frozenset({"DS", "IS", "CS", "LO", "SH", "UI"})
_NATIVE_LE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


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
    scanning_sequence: str | None = None  #: e.g. 'SE', 'IR', 'GR', 'SE\\IR' (multi-valued)
    sequence_name: str | None = None  #: the vendor's sequence name, e.g. '*tse2d1_15'
    sop_instance_uid: str = ""  #: SOPInstanceUID ("" when absent): what an SR refers to
    sop_class_uid: str = ""  #: SOPClassUID, else the file meta's MediaStorageSOPClassUID, else ""
    bits_stored: int | None = None  #: BitsStored (e.g. 12 in the RSNA files), None when absent

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal n = r x c, shape (3,)."""
        n = np.cross(self.orientation[:3], self.orientation[3:])
        return n / np.linalg.norm(n)


def list_dicom_files(series_dir: str | Path) -> list[Path]:
    """The `*.dcm` files of a series folder, sorted by name (not a spatial order)."""
    folder = Path(series_dir)
    if not folder.is_dir():
        raise DicomError(
            folder, "series folder does not exist" if not folder.exists() else "not a folder"
        )
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".dcm" and p.is_file())
    if not files:
        raise DicomError(folder, "no .dcm files in the series folder")
    return files


def read_dataset(path: str | Path, *, stop_before_pixels: bool = False) -> Dataset:
    """`pydicom.dcmread` that turns unreadable files into `DicomError`."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on hostile bytes
        raise DicomError(path, f"not a readable DICOM file ({_first_line(exc)})") from None
    if len(ds) == 0:  # what pydicom returns for a file cut inside an undefined-length element
        raise DicomError(path, "not a readable DICOM file (no data elements read: truncated?)")
    return ds


def parse_header(ds: Dataset, path: str | Path) -> SliceHeader:
    """The `SliceHeader` of dataset `ds` read from `path`.

    Missing, malformed or degenerate geometry (non-finite, zero spacing or size, parallel
    orientation vectors) and malformed rescale tags raise DicomError; other unreadable tags count
    as absent, with a note.
    """
    v = {kw: _value_or_note(ds, kw, path) for kw in _TAGS}
    missing = [kw for kw in _GEOMETRY if v[kw] is None]
    if missing:
        raise DicomError(path, f"missing geometry tag(s) {', '.join(missing)}")
    try:
        position = np.array(_floats(v["ImagePositionPatient"]), dtype=np.float64)
        orientation = np.array(_floats(v["ImageOrientationPatient"]), dtype=np.float64)
        spacing = _floats(v["PixelSpacing"])
        rows, cols = int(v["Rows"]), int(v["Columns"])  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise DicomError(path, f"malformed geometry tag ({exc})") from None
    if position.shape != (3,) or orientation.shape != (6,) or len(spacing) != 2:
        raise DicomError(
            path, "ImagePositionPatient/ImageOrientationPatient/PixelSpacing have wrong lengths"
        )
    if not (
        np.all(np.isfinite(position))
        and np.all(np.isfinite(orientation))
        and all(map(math.isfinite, spacing))
    ):
        raise DicomError(
            path, "non-finite ImagePositionPatient, ImageOrientationPatient or PixelSpacing"
        )
    if min(spacing) <= 0 or np.linalg.norm(np.cross(orientation[:3], orientation[3:])) < 0.5:
        raise DicomError(path, "degenerate PixelSpacing or ImageOrientationPatient")
    if rows < 1 or cols < 1:
        raise DicomError(path, f"degenerate image size Rows {rows} x Columns {cols}")
    meta = getattr(ds, "file_meta", None)
    number = _opt_float(v["InstanceNumber"])
    return SliceHeader(
        path=Path(path),
        instance_number=None if number is None else int(round(number)),
        position=position,
        orientation=orientation,
        pixel_spacing=(spacing[0], spacing[1]),
        rows=rows,
        cols=cols,
        slice_thickness=_opt_float(v["SliceThickness"]),
        rescale_slope=_rescale_value(v, "RescaleSlope", 1.0, path),
        rescale_intercept=_rescale_value(v, "RescaleIntercept", 0.0, path),
        study_uid=str(v["StudyInstanceUID"] or ""),
        series_uid=str(v["SeriesInstanceUID"] or ""),
        description=str(v["SeriesDescription"] or ""),
        manufacturer=_opt_str(v["Manufacturer"]),
        transfer_syntax=str(meta.get("TransferSyntaxUID", ExplicitVRLittleEndian))
        if meta
        else ExplicitVRLittleEndian,
        echo_time=_opt_float(v["EchoTime"]),
        repetition_time=_opt_float(v["RepetitionTime"]),
        inversion_time=_opt_float(v["InversionTime"]),
        scanning_sequence=_opt_str(v["ScanningSequence"]),
        sequence_name=_opt_str(v["SequenceName"]),
        sop_instance_uid=str(v["SOPInstanceUID"] or ""),
        sop_class_uid=str(v["SOPClassUID"] or _meta_sop_class(meta)),
        bits_stored=_opt_int(_value(ds, _PIXEL_TAGS["BitsStored"])),
    )


def decode_pixels(ds: Dataset, path: str | Path) -> np.ndarray:
    """Stored pixel values of a single-frame dataset, shape (rows, cols), before rescale (maybe
    read-only)."""
    if "PixelData" not in ds:
        raise DicomError(path, "no pixel data")
    ts = UID(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian))
    if not ts.is_transfer_syntax:
        raise DicomError(path, f"TransferSyntaxUID {str(ts)!r} is not a transfer syntax")
    if ts in _NATIVE_LE and (arr := _native_pixels(ds)) is not None:
        return arr
    if ts.is_compressed:
        decoder = get_decoder(ts)
        if decoder is None or not decoder.is_available:
            raise DicomError(
                path,
                f"pixel data is compressed as {ts.name} ({ts}) and no decoder is "
                f"installed: pip install {_decoder_hint(ts)}",
            )
    if ts == RLELossless:  # pydicom's own RLE decoder: pylibjpeg-rle 2.2 panics on corrupt frames
        ds.pixel_array_options(decoding_plugin="pydicom")
    try:
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file for us
        reason = _first_line(exc)
        raise DicomError(path, f"cannot decode pixel data ({ts.name}: {reason})") from None
    if arr.ndim != 2:
        raise DicomError(
            path, f"expected one monochrome frame, got pixel array of shape {arr.shape}"
        )
    return arr


def _native_pixels(ds: Dataset) -> np.ndarray | None:
    """Fast path for the common case, uncompressed little-endian 16-bit single-frame monochrome.

    Gives exactly what `ds.pixel_array` gives (bits above BitsStored masked, signed values
    sign-extended) at about a fifth of its cost (see benchmarks/bench_load_series.py); returns
    None for anything else, which then goes through pydicom. The array may be a read-only view.
    """
    v = {kw: _value(ds, tag) for kw, tag in _PIXEL_TAGS.items()}
    if (v["BitsAllocated"], v["SamplesPerPixel"]) != (16, 1) or v["NumberOfFrames"] not in (
        None,
        "1",
        1,
    ):
        return None
    rows, cols, stored = v["Rows"], v["Columns"], v["BitsStored"] or 16
    data = ds.PixelData
    if (
        not isinstance(rows, int)
        or not isinstance(cols, int)
        or len(data) not in (2 * rows * cols, 2 * rows * cols + 1)
    ):
        return None
    signed = v["PixelRepresentation"] == 1
    arr = np.frombuffer(data, dtype="<i2" if signed else "<u2", count=rows * cols).reshape(
        rows, cols
    )
    if isinstance(stored, int) and stored < 16:
        shift = 16 - stored
        arr = (arr << shift) >> shift if signed else arr & ((1 << stored) - 1)
    return arr


def read_slice(path: str | Path) -> tuple[SliceHeader, np.ndarray]:
    """Header and stored pixels (rows, cols) of one file, read in one pass."""
    with pydicom_notes(path):
        ds = read_dataset(path)
        header = parse_header(ds, path)
        pixels = decode_pixels(ds, path)
    if pixels.shape != (header.rows, header.cols):
        raise DicomError(
            path,
            f"pixel array of shape {pixels.shape} for Rows {header.rows} x Columns {header.cols}",
        )
    return header, pixels


def read_header(path: str | Path) -> SliceHeader:
    """Header of one file, without reading its pixel data."""
    with pydicom_notes(path):
        return parse_header(read_dataset(path, stop_before_pixels=True), path)


class _Notes(logging.Handler):
    """Collects the messages of pydicom's log records (one line each, no tracebacks)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.messages.append(record.getMessage())


_LOG = logging.getLogger(__name__)
_PYDICOM_LOG = logging.getLogger("pydicom")
#: The one collector of pydicom's log records (a process reads one file at a time).
_HELD = _Notes()
#: Notes already logged in this process (each is logged once, for the first file that shows it).
_LOGGED: set[str] = set()


@contextmanager
def pydicom_notes(path: str | Path) -> Iterator[None]:
    """Hold back pydicom's warnings and log records while reading the file `path`.

    A DicomError raised inside gets the first note appended to its reason; after a successful
    read each note not logged before in this process is logged once, as one line naming `path`.
    """
    _HELD.messages = []
    propagate = _PYDICOM_LOG.propagate
    _PYDICOM_LOG.addHandler(_HELD)
    _PYDICOM_LOG.propagate = False
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                messages = _HELD.messages + [str(w.message) for w in seen]
    except DicomError as exc:
        first = _note(messages[0], path) if messages else ""
        if first and first not in exc.reason:
            raise DicomError(exc.path, f"{exc.reason}; pydicom: {first}") from None
        raise
    finally:
        _PYDICOM_LOG.removeHandler(_HELD)
        _PYDICOM_LOG.propagate = propagate
    new = [n for n in dict.fromkeys(_note(m, path) for m in messages) if n not in _LOGGED]
    if new:
        _LOGGED.update(new)
        more = f" (and {len(new) - 1} more)" if len(new) > 1 else ""
        _LOG.warning("%s: pydicom: %s%s", path, new[0], more)


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


def _value(ds: Dataset, tag: int) -> object | None:
    """Value of element `tag`, None when absent or empty.

    Text (DS, IS, CS, LO, SH, UI) and US elements still in raw form are read straight from their
    bytes: pydicom's generic conversion costs ~25 us per element, as much as the file read for a
    slice; everything else goes through pydicom.
    """
    elem = ds.get_item(tag)
    if elem is None:
        return None
    raw = elem.value
    if isinstance(elem, RawDataElement) and isinstance(raw, bytes):
        vr = elem.VR or dictionary_VR(tag)
        if vr in _TEXT_VRS:
            return raw.decode("latin-1").strip(" \x00") or None
        if vr == "US" and len(raw) == 2:
            return int.from_bytes(raw, "little" if elem.is_little_endian else "big")
    value = ds[tag].value
    return None if value is None or value == "" else value


def _value_or_note(ds: Dataset, keyword: str, path: str | Path) -> object | None:
    """`_value` of `keyword`; a tag pydicom cannot convert raises DicomError for the geometry and
    rescale tags, and otherwise counts as absent (with a warning, held back by pydicom_notes)."""
    try:
        return _value(ds, _TAGS[keyword])
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on hostile bytes
        if keyword in _GEOMETRY + _RESCALE:
            raise DicomError(path, f"malformed {keyword} ({_first_line(exc)})") from None
        warnings.warn(f"unreadable {keyword} ignored ({_first_line(exc)})", stacklevel=2)
        return None


def _rescale_value(
    v: dict[str, object | None], keyword: str, default: float, path: str | Path
) -> float:
    """RescaleSlope / RescaleIntercept as a finite number (`default` when absent); a slope of 0,
    or a value that is not a finite number, raises DicomError."""
    if v[keyword] is None:
        return default
    value = _opt_float(v[keyword])
    if value is None or (keyword == "RescaleSlope" and value == 0):
        raise DicomError(path, f"malformed {keyword} {v[keyword]!r}")
    return value


def _floats(value: object) -> list[float]:
    """'1.5\\-2\\3' or a pydicom multi-value or a number -> list of floats."""
    if isinstance(value, str):
        return [float(x) for x in value.split("\\")]
    if isinstance(value, (list, tuple, MultiValue)):
        return [float(x) for x in value]
    return [float(value)]  # type: ignore[arg-type]


def _decoder_hint(ts: UID) -> str:
    return next(
        (hint for prefix, hint in _DECODER_HINTS if str(ts).startswith(prefix)), "pylibjpeg or gdcm"
    )


def _opt_float(value: object) -> float | None:
    """First number of a DS/IS value, None when absent or not a finite number."""
    if value is None or value == "":
        return None
    try:
        number = _floats(value)[0]
    except (TypeError, ValueError, IndexError):
        return None
    return number if math.isfinite(number) else None


def _meta_sop_class(meta: Dataset | None) -> str:
    """The file meta's MediaStorageSOPClassUID, "" when absent or unreadable (a damaged meta)."""
    try:
        return str((meta or {}).get("MediaStorageSOPClassUID", "") or "")
    except (NotImplementedError, ValueError, KeyError, TypeError):
        return ""


def _opt_int(value: object) -> int | None:
    """An integer tag value, None when absent or not a number."""
    number = _opt_float(value)
    return None if number is None else int(number)


def _opt_str(value: object) -> str | None:
    """A text value (multi-values joined by backslashes), None when absent."""
    if value is None:
        return None
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(x) for x in value)
    return str(value)


def _first_line(exc: BaseException) -> str:
    """An exception's message on one line (its first line, and the next when the first ends with a
    colon), or its type name when it has none."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]


def _note(message: str, path: str | Path) -> str:
    """One line of a pydicom message, without the file name (the caller names the file)."""
    lines = str(message).replace(f" in file {path}", "").replace(str(path), "<file>").splitlines()
    return lines[0] if lines else ""
