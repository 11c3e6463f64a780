"""write_series: valid files, exact tags, deterministic bytes, compressed transfer syntaxes."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, MRImageStorage, RLELossless

from spinegrade.dicom import make_uid, write_series

from .conftest import ramp


def test_tags_and_pixels_round_trip(write):
    px = ramp(3, 4, 5)
    folder = write(
        "s",
        px,
        origin=(1, 2, 3),
        row_dir=(0, 1, 0),
        col_dir=(0, 0, -1),
        pixel_spacing=(0.5, 0.8),
        slice_step=2.5,
        series_number=7,
        instance_numbers=[10, 11, 12],
        patient_id="p1",
        study_id="42",
        manufacturer="ACME",
    )
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == ["10.dcm", "11.dcm", "12.dcm"]
    ds = pydicom.dcmread(folder / "12.dcm")
    # n = r x c = (0,1,0) x (0,0,-1) = (-1,0,0): third slice at x = 1 - 2 * 2.5
    assert [float(v) for v in ds.ImagePositionPatient] == [-4.0, 2.0, 3.0]
    assert [float(v) for v in ds.ImageOrientationPatient] == [0, 1, 0, 0, 0, -1]
    assert [float(v) for v in ds.PixelSpacing] == [0.5, 0.8]
    assert (ds.Rows, ds.Columns, ds.BitsAllocated, ds.PixelRepresentation) == (4, 5, 16, 0)
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    assert float(ds.SliceThickness) == 3.0 and float(ds.SpacingBetweenSlices) == 2.5
    assert (ds.InstanceNumber, ds.SeriesNumber, ds.PatientID, ds.StudyID, ds.Manufacturer) == (
        12,
        7,
        "p1",
        "42",
        "ACME",
    )
    assert ds.SOPClassUID == MRImageStorage == ds.file_meta.MediaStorageSOPClassUID
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    assert "RescaleSlope" not in ds
    np.testing.assert_array_equal(ds.pixel_array, px[2])


def test_uids_unique_and_bytes_deterministic(write):
    a = write("a", ramp(3, 4, 5), series_uid=make_uid("same"))
    b = write("b", ramp(3, 4, 5), series_uid=make_uid("same"))
    for name in ("1.dcm", "2.dcm", "3.dcm"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    uids = {pydicom.dcmread(a / n).SOPInstanceUID for n in ("1.dcm", "2.dcm", "3.dcm")}
    assert len(uids) == 3 and all(len(u) <= 64 for u in uids)
    assert not any(p.name.endswith(".tmp") for p in a.iterdir())


def test_slice_positions_signed_pixels_rescale_and_names(write):
    px = (ramp(2, 3, 3).astype(np.int32) - 500).astype(np.int16)
    pos = np.array([[0, 0, 5.0], [0, 0, -5.0]])
    folder = write(
        "s",
        px,
        slice_positions=pos,
        file_names=["b.dcm", "a.dcm"],
        rescale_slope=2,
        rescale_intercept=-7,
    )
    ds = pydicom.dcmread(folder / "a.dcm")
    assert [float(v) for v in ds.ImagePositionPatient] == [0, 0, -5.0]
    assert ds.PixelRepresentation == 1 and (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (
        2.0,
        -7.0,
    )
    np.testing.assert_array_equal(ds.pixel_array, px[1])


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_compressed_syntaxes_are_lossless(write, syntax):
    px = ramp(2, 32, 32)
    folder = write("c", px, transfer_syntax=syntax)
    ds = pydicom.dcmread(folder / "2.dcm")
    assert ds.file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(ds.pixel_array, px[1])


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(pixels=np.zeros((2, 3, 3), np.float32)), "integers"),
        (dict(pixels=np.zeros((3, 3), np.uint16)), "shape"),
        (dict(pixels=np.full((1, 2, 2), 70000)), "fit"),
        (dict(col_dir=(1, 1, 0)), "orthogonal"),
        (dict(slice_positions=np.zeros((3, 3))), "slice_positions"),
        (dict(instance_numbers=[1]), "instance_numbers"),
    ],
)
def test_bad_arguments_raise_value_error(tmp_path, bad, match):
    kw = dict(
        pixels=np.zeros((2, 3, 3), np.uint16),
        origin=(0, 0, 0),
        row_dir=(1, 0, 0),
        col_dir=(0, 1, 0),
        pixel_spacing=(1, 1),
        slice_thickness=1,
        series_description="x",
        study_uid="1.2",
        series_uid="1.3",
        series_number=1,
    )
    kw.update(bad)
    with pytest.raises(ValueError, match=match):
        write_series(tmp_path / "x", kw.pop("pixels"), **kw)


def test_other_integer_dtypes_are_cast(write):
    folder = write("s", np.full((1, 2, 2), 300, dtype=np.int64))
    ds = pydicom.dcmread(folder / "1.dcm")
    assert (
        ds.PixelRepresentation == 0
        and ds.pixel_array.dtype == np.uint16
        and int(ds.pixel_array[0, 0]) == 300
    )
