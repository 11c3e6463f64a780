"""Reading single files: headers without pixels, and every bad input as a one-line DicomError."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.pixels import get_decoder
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, MRImageStorage, RLELossless

from spinegrade.dicom import headers, load_series, read_series_headers
from spinegrade.errors import DicomError

from .conftest import ramp


def test_headers_hold_geometry_and_identity(write):
    folder = write(
        "s",
        ramp(3, 4, 5),
        origin=(1, 2, 3),
        pixel_spacing=(0.5, 0.8),
        instance_numbers=[3, 1, 2],
        manufacturer="ACME",
    )
    headers = read_series_headers(folder)
    assert [h.path.name for h in headers] == ["1.dcm", "2.dcm", "3.dcm"]
    h = headers[0]  # 1.dcm is the second slice written: z = 3 + 3
    assert h.instance_number == 1 and h.pixel_spacing == (0.5, 0.8) and (h.rows, h.cols) == (4, 5)
    np.testing.assert_allclose(h.position, [1, 2, 6])
    np.testing.assert_allclose(h.normal, [0, 0, 1])
    assert (h.description, h.manufacturer, h.slice_thickness) == ("AX T2", "ACME", 3.0)
    assert h.sop_instance_uid == pydicom.dcmread(h.path).SOPInstanceUID
    assert h.sop_instance_uid != headers[1].sop_instance_uid
    assert h.sop_class_uid == MRImageStorage
    pooled = read_series_headers(folder, workers=2)
    assert [(p.path, p.instance_number) for p in pooled] == [
        (h.path, h.instance_number) for h in headers
    ]
    np.testing.assert_array_equal([p.position for p in pooled], [h.position for h in headers])


def _edit(path, fn):
    ds = pydicom.dcmread(path)
    fn(ds)
    ds.save_as(path)


def _one_error(folder) -> DicomError:
    with pytest.raises(DicomError) as info:
        load_series(folder)
    msg = str(info.value)
    assert "\n" not in msg
    return info.value


def test_missing_and_empty_folders(tmp_path):
    err = _one_error(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err) and "does not exist" in str(err)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    assert "no .dcm files" in str(_one_error(tmp_path / "empty"))


@pytest.mark.parametrize(
    "case, expect",
    [
        ("garbage", "not a readable DICOM file"),
        (
            "truncated_header",
            "no data elements read",
        ),  # cut in the first element: pydicom reads none
        ("truncated_elements", "missing geometry tag"),  # pydicom keeps the elements before the cut
        ("truncated_pixels", "pixel data"),
        ("no_pixels", "no pixel data"),
        ("no_ipp", "ImagePositionPatient"),
        ("no_iop", "ImageOrientationPatient"),
        ("no_spacing", "PixelSpacing"),
    ],
)
def test_bad_file_names_the_file_and_reason(write, case, expect):
    folder = write("s", ramp(3, 16, 16))
    bad = folder / "2.dcm"
    data = bad.read_bytes()
    if case == "garbage":
        bad.write_bytes(b"this is not dicom at all" * 20)
    elif case.startswith("truncated_"):
        bad.write_bytes(
            {
                "truncated_header": data[:300],
                "truncated_elements": data[:600],
                "truncated_pixels": data[:-100],
            }[case]
        )
    else:
        tag = {
            "no_pixels": "PixelData",
            "no_ipp": "ImagePositionPatient",
            "no_iop": "ImageOrientationPatient",
            "no_spacing": "PixelSpacing",
        }[case]
        _edit(bad, lambda ds: delattr(ds, tag))
    err = _one_error(folder)
    assert err.path == bad and str(bad) in str(err) and expect in str(err)


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_compressed_files_are_decoded(write, syntax):
    px = ramp(3, 32, 32)
    vol = load_series(write("s", px, transfer_syntax=syntax))
    np.testing.assert_array_equal(vol.pixels, px)


@pytest.mark.parametrize(
    "syntax, name, package",
    [
        (JPEGLSLossless, "JPEG-LS Lossless", "pip install pyjpegls"),
        (JPEG2000Lossless, "JPEG 2000", "pip install pylibjpeg + pylibjpeg-openjpeg"),
    ],
)
def test_missing_decoder_names_syntax_and_package(write, monkeypatch, syntax, name, package):
    folder = write("s", ramp(2, 32, 32), transfer_syntax=syntax)
    monkeypatch.setattr(get_decoder(syntax), "_available", {})
    err = _one_error(folder)
    assert err.path.parent == folder
    assert name in str(err) and "no decoder is installed" in str(err) and package in str(err)


def test_header_only_read_reports_missing_geometry(write):
    folder = write("s", ramp(2, 4, 4))
    _edit(folder / "1.dcm", lambda ds: delattr(ds, "ImageOrientationPatient"))
    with pytest.raises(
        DicomError, match=r"1\.dcm: missing geometry tag\(s\) ImageOrientationPatient$"
    ):
        read_series_headers(folder)


@pytest.mark.parametrize(
    "signed, bits_stored, syntax",
    [
        (False, 16, "1.2.840.10008.1.2.1"),
        (False, 12, "1.2.840.10008.1.2.1"),
        (True, 12, "1.2.840.10008.1.2.1"),
        (True, 16, "1.2.840.10008.1.2"),
        (False, 12, "1.2.840.10008.1.2"),
    ],
)
def test_fast_native_decoding_equals_pydicom(write, signed, bits_stored, syntax):
    # raw words with bits above BitsStored set: pydicom masks (unsigned) or sign-extends (signed)
    words = np.array(
        [0x0000, 0x0FFF, 0x0800, 0x3005, 0xF7FF, 0xFFFF, 0x1234, 0x8000, 0x7FFF], dtype=np.uint16
    )
    px = words.view(np.int16 if signed else np.uint16).reshape(1, 3, 3)
    folder = write("s", px, transfer_syntax=syntax)
    _edit(
        folder / "1.dcm",
        lambda ds: (
            setattr(ds, "BitsStored", bits_stored),
            setattr(ds, "HighBit", bits_stored - 1),
        ),
    )
    expected = pydicom.dcmread(folder / "1.dcm").pixel_array
    got = load_series(folder).pixels[0]
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_uid_that_is_no_transfer_syntax_is_a_clean_error(write):
    # the same UID length keeps the meta group length right; pydicom reads the dataset, not pixels
    folder = write("s", ramp(2, 4, 4))
    bad = folder / "1.dcm"
    explicit, verification = b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.1\x00\x00\x00"
    bad.write_bytes(bad.read_bytes().replace(explicit, verification))
    assert read_series_headers(folder)[0].transfer_syntax == "1.2.840.10008.1.1"
    err = _one_error(folder)
    assert err.path == bad
    assert "TransferSyntaxUID '1.2.840.10008.1.1' is not a transfer syntax" in str(err)


def test_pydicom_warnings_become_one_log_line(write, monkeypatch, caplog):
    monkeypatch.setattr(headers, "_LOGGED", set())  # notes are logged once per process
    folder = write("s", ramp(2, 8, 8))
    _edit(folder / "1.dcm", lambda ds: setattr(ds, "NumberOfFrames", 0))  # "assuming 1 frame"
    with warnings.catch_warnings(record=True) as seen, caplog.at_level(logging.DEBUG):
        warnings.simplefilter("always")
        first, again = load_series(folder), load_series(folder)
    assert first.shape == again.shape == (2, 8, 8)
    assert [str(w.message) for w in seen] == []  # no raw warning reaches the caller
    # pydicom's own log records are held back; ours comes once, for two reads
    assert [r.name for r in caplog.records] == ["spinegrade.dicom.headers"]
    msg = caplog.records[0].getMessage()
    assert msg.startswith(f"{folder / '1.dcm'}: pydicom: ") and "Number of Frames" in msg
    assert "\n" not in msg


def test_failing_file_carries_pydicom_note_in_its_error(write):
    folder = write("s", ramp(2, 8, 8))
    _edit(
        folder / "1.dcm",
        lambda ds: (setattr(ds, "NumberOfFrames", 0), setattr(ds, "BitsAllocated", 7)),
    )
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        err = _one_error(folder)
    assert seen == [] and err.path == folder / "1.dcm"
    assert "cannot decode pixel data" in err.reason and "pydicom: A value of '0'" in err.reason
