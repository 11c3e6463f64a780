"""Write a stack of slices as one valid MR Image Storage DICOM file per slice (RSNA layout).

Used by the synthetic study generator and by tests. Output bytes are deterministic for
deterministic inputs: no dates or times, and every UID is given or derived by hashing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
)
from pydicom.valuerep import DSfloat

from spinegrade.io import write_with

#: Root of the deterministic UIDs made by :func:`make_uid` (the pydicom root:
#: 1.2.826.0.1.3680043.8.498.).
UID_ROOT = "1.2.826.0.1.3680043.8.498."
_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def make_uid(*parts: object) -> str:
    """A valid, deterministic DICOM UID derived from `parts` (e.g. `make_uid("study", 42)`)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return UID_ROOT + str(int.from_bytes(digest[:16], "big"))[: 64 - len(UID_ROOT)]


def write_series(
    out_dir: str | Path,
    pixels: npt.ArrayLike,
    *,
    origin: Sequence[float] | np.ndarray,
    row_dir: Sequence[float] | np.ndarray,
    col_dir: Sequence[float] | np.ndarray,
    pixel_spacing: tuple[float, float],
    slice_positions: npt.ArrayLike | None = None,
    slice_step: float | Sequence[float] | np.ndarray | None = None,
    slice_thickness: float,
    series_description: str,
    study_uid: str,
    series_uid: str,
    series_number: int,
    instance_numbers: Sequence[int] | None = None,
    patient_id: str = "anon",
    study_id: str | None = None,
    modality: str = "MR",
    manufacturer: str | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    file_names: Sequence[str] | None = None,
    rescale_slope: float | None = None,
    rescale_intercept: float | None = None,
) -> list[Path]:
    """Write `pixels` (slices, rows, cols) uint16/int16 as one DICOM file per slice in `out_dir`.

    Geometry (DICOM/LPS): `row_dir` r is the direction of increasing column index, `col_dir` c
    that of increasing row index (IOP = r + c); `pixel_spacing = (dy, dx)` as the PixelSpacing tag.
    Slice k sits at `slice_positions[k]` (slices, 3) if given, else at `origin + k * step`, where
    `slice_step` is a 3-vector or a distance along the normal n = r x c (default `slice_thickness`).
    Files are `<instance_number>.dcm` unless `file_names` is given; instance numbers default to
    1..slices. `transfer_syntax` may be a compressed one pydicom can encode (RLE Lossless natively,
    JPEG-LS Lossless with pyjpegls, JPEG 2000 Lossless with pylibjpeg-openjpeg).
    Returns the written paths in slice order.
    """
    arr = _as_pixels(pixels)
    n_slices = arr.shape[0]
    r, c = _unit(row_dir, "row_dir"), _unit(col_dir, "col_dir")
    if abs(float(r @ c)) > 1e-4:
        raise ValueError(f"row_dir and col_dir must be orthogonal (dot = {float(r @ c):.2g})")
    normal = np.cross(r, c)
    positions = _positions(origin, normal, n_slices, slice_positions, slice_step, slice_thickness)
    numbers = (
        list(range(1, n_slices + 1))
        if instance_numbers is None
        else [int(i) for i in instance_numbers]
    )
    names = [f"{i}.dcm" for i in numbers] if file_names is None else list(file_names)
    if len(numbers) != n_slices or len(names) != n_slices:
        raise ValueError(
            f"need {n_slices} instance_numbers and file_names, got {len(numbers)}, {len(names)}"
        )
    steps = np.diff(positions @ normal)
    spacing_between = float(np.median(np.abs(steps))) if len(steps) else float(slice_thickness)

    common = _series_dataset(
        arr,
        r,
        c,
        pixel_spacing,
        slice_thickness,
        spacing_between,
        series_description,
        study_uid,
        series_uid,
        series_number,
        patient_id,
        study_id,
        modality,
        manufacturer,
        rescale_slope,
        rescale_intercept,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n_slices):
        ds = _slice_dataset(
            common, arr[k], positions[k], normal, numbers[k], series_uid, UID(transfer_syntax)
        )
        path = out / names[k]
        write_with(path, lambda p, ds=ds: ds.save_as(p, enforce_file_format=True))
        paths.append(path)
    return paths


def _as_pixels(pixels: npt.ArrayLike) -> np.ndarray:
    """Check and cast to a (slices, rows, cols) uint16 or int16 array."""
    arr = np.asarray(pixels)
    if arr.ndim != 3 or min(arr.shape) == 0:
        raise ValueError(
            f"pixels must be a non-empty (slices, rows, cols) array, got shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"pixels must be integers (uint16 or int16), got {arr.dtype}")
    if arr.dtype not in (np.uint16, np.int16):
        lo, hi = int(arr.min()), int(arr.max())
        target = np.uint16 if lo >= 0 else np.int16
        info = np.iinfo(target)
        if lo < info.min or hi > info.max:
            raise ValueError(f"pixel values {lo}..{hi} do not fit uint16 or int16")
        arr = arr.astype(target)
    return np.ascontiguousarray(arr)


def _unit(v: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    vec = np.asarray(v, dtype=np.float64).reshape(3)
    norm = float(np.linalg.norm(vec))
    if norm < 1e-6:
        raise ValueError(f"{name} must be a non-zero 3-vector")
    return vec / norm


def _positions(
    origin: Sequence[float] | np.ndarray,
    normal: np.ndarray,
    n_slices: int,
    slice_positions: npt.ArrayLike | None,
    slice_step: float | Sequence[float] | np.ndarray | None,
    slice_thickness: float,
) -> np.ndarray:
    """Per-slice ImagePositionPatient, shape (slices, 3)."""
    if slice_positions is not None:
        pos = np.asarray(slice_positions, dtype=np.float64)
        if pos.shape != (n_slices, 3):
            raise ValueError(f"slice_positions must have shape ({n_slices}, 3), got {pos.shape}")
        return pos
    step = np.asarray(slice_thickness if slice_step is None else slice_step, dtype=np.float64)
    step_vec = step * normal if step.ndim == 0 else step.reshape(3)
    o = np.asarray(origin, dtype=np.float64).reshape(3)
    return o + np.arange(n_slices)[:, None] * step_vec


def _ds(values: Sequence[float] | np.ndarray) -> list[DSfloat]:
    """Floats as DICOM decimal strings (at most 16 characters each)."""
    return [
        DSfloat(float(v), auto_format=True) for v in np.asarray(values, dtype=np.float64).ravel()
    ]


def _series_dataset(
    arr: np.ndarray,
    r: np.ndarray,
    c: np.ndarray,
    pixel_spacing: tuple[float, float],
    slice_thickness: float,
    spacing_between: float,
    description: str,
    study_uid: str,
    series_uid: str,
    series_number: int,
    patient_id: str,
    study_id: str | None,
    modality: str,
    manufacturer: str | None,
    slope: float | None,
    intercept: float | None,
) -> Dataset:
    """The attributes every slice of the series shares."""
    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.Modality = modality
    if manufacturer is not None:
        ds.Manufacturer = manufacturer
    ds.PatientID = patient_id
    ds.PatientName = patient_id
    ds.StudyID = "" if study_id is None else str(study_id)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = make_uid("frame-of-reference", study_uid)
    ds.SeriesNumber = int(series_number)
    ds.SeriesDescription = description
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.ImageOrientationPatient = _ds(np.concatenate([r, c]))
    ds.PixelSpacing = _ds(pixel_spacing)
    ds.SliceThickness = DSfloat(float(slice_thickness), auto_format=True)
    ds.SpacingBetweenSlices = DSfloat(spacing_between, auto_format=True)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(arr.shape[1]), int(arr.shape[2])
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if arr.dtype == np.int16 else 0
    if slope is not None or intercept is not None:
        ds.RescaleSlope = DSfloat(1.0 if slope is None else float(slope), auto_format=True)
        ds.RescaleIntercept = DSfloat(
            0.0 if intercept is None else float(intercept), auto_format=True
        )
        ds.RescaleType = "US"
    return ds


def _slice_dataset(
    common: Dataset,
    image: np.ndarray,
    position: np.ndarray,
    normal: np.ndarray,
    instance_number: int,
    series_uid: str,
    transfer_syntax: UID,
) -> Dataset:
    """One slice's dataset with file meta, pixel data and (if asked) compression."""
    ds = Dataset()
    ds.update(common)
    ds.SOPInstanceUID = make_uid("instance", series_uid, instance_number)
    ds.InstanceNumber = int(instance_number)
    ds.ImagePositionPatient = _ds(position)
    ds.SliceLocation = DSfloat(float(position @ normal), auto_format=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    if transfer_syntax in _UNCOMPRESSED:
        meta.TransferSyntaxUID = transfer_syntax
        ds.add_new(0x7FE00010, "OW", image.astype(image.dtype.newbyteorder("<")).tobytes())
    else:
        ds.compress(transfer_syntax, image, generate_instance_uid=False)
    return ds
