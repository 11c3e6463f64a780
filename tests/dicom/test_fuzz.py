"""Hostile files: seeded mutations of a real RSNA file either load or raise a DicomError naming it.

The cases are copies, in tmp_path, of one file of the real test study's axial series (RLE
Lossless, 256x256, the smallest frames of the three real studies), mutated by a generator with a
fixed seed: truncations, flipped header bytes, flipped pixel bytes, broken tags, garbage transfer
syntax UIDs. Each case goes through `read_header`, `read_slice` and `load_stacks` (its folder also
holds an intact file); whatever pydicom warns about must not reach the caller as a raw warning.
"""

from __future__ import annotations

import io
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from spinegrade.dicom import load_stacks, read_header, read_slice
from spinegrade.errors import DicomError

SEED = 20240503
SERIES = "test_images/44036939/3481971518"
#: How many cases of each random kind; with the tag edits and their pairs they make >= 300.
N_TRUNCATED, N_HEADER_FLIPS, N_PIXEL_FLIPS, N_EDIT_PAIRS = 80, 90, 60, 40
RLE_UID = b"1.2.840.10008.1.2.5\x00"  #: the transfer syntax UID as written in the real files

Edit = Callable[[Dataset], None]


def _set(keyword: str, value: object) -> Edit:
    return lambda ds: setattr(ds, keyword, value)


def _delete(keyword: str) -> Edit:
    return lambda ds: delattr(ds, keyword)


def _short_pixels(ds: Dataset) -> None:
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]


#: Broken tags written through pydicom (structure and binary values).
EDITS: dict[str, Edit] = {
    "ipp_missing": _delete("ImagePositionPatient"),
    "iop_missing": _delete("ImageOrientationPatient"),
    "rows_zero": _set("Rows", 0),
    "cols_zero": _set("Columns", 0),
    "rows_huge": _set("Rows", 65535),
    "bits_allocated_7": _set("BitsAllocated", 7),
    "bits_allocated_0": _set("BitsAllocated", 0),
    "bits_stored_0": _set("BitsStored", 0),
    "bits_stored_17": _set("BitsStored", 17),
    "high_bit_20": _set("HighBit", 20),
    "samples_3": _set("SamplesPerPixel", 3),
    "samples_0": _set("SamplesPerPixel", 0),
    "photometric_rgb": _set("PhotometricInterpretation", "RGB"),
    "frames_2": _set("NumberOfFrames", 2),
    "frames_0": _set("NumberOfFrames", 0),
    "signed": _set("PixelRepresentation", 1),
    "pixels_missing": _delete("PixelData"),
    "pixels_short": _short_pixels,
    "pixels_no_fragments": _set("PixelData", b"\xfe\xff\x00\xe0\x00\x00\x00\x00"),
}

#: Broken text values, written straight into the element's bytes (pydicom would refuse them).
VALUES: dict[str, tuple[str, bytes]] = {
    "spacing_text": ("PixelSpacing", b"abc\\0.6"),
    "spacing_one": ("PixelSpacing", b"0.6"),
    "spacing_zero": ("PixelSpacing", b"0\\0"),
    "spacing_nan": ("PixelSpacing", b"nan\\0.6"),
    "iop_three": ("ImageOrientationPatient", b"1\\0\\0"),
    "iop_zero": ("ImageOrientationPatient", b"0\\0\\0\\0\\0\\0"),
    "iop_text": ("ImageOrientationPatient", b"a\\b\\c\\d\\e\\f"),
    "iop_parallel": ("ImageOrientationPatient", b"1\\0\\0\\1\\0\\0"),
    "ipp_two": ("ImagePositionPatient", b"1\\2"),
    "ipp_nan": ("ImagePositionPatient", b"nan\\0\\0"),
    "ipp_inf": ("ImagePositionPatient", b"1e999\\0\\0"),
    "ipp_empty": ("ImagePositionPatient", b""),
    "instance_text": ("InstanceNumber", b"abc"),
    "slope_text": ("RescaleSlope", b"abc"),
    "slope_inf": ("RescaleSlope", b"inf"),
    "intercept_nan": ("RescaleIntercept", b"nan"),
    "photometric_empty": ("PhotometricInterpretation", b""),
    "description_bytes": ("SeriesDescription", b"T2\xff\xfe\x00"),
}


#: Same-length replacements of the transfer syntax UID (so the meta group length still fits).
SYNTAXES = {
    "ts_garbage": b"not-a-transfer-syntx",
    "ts_digits": b"1.2.3.4.5.6.7.8.9.10",
    "ts_sop_class": b"1.2.840.10008.1.1\x00\x00\x00",
    "ts_jpeg_prefix": b"1.2.840.10008.1.2.4\x00",
    "ts_implicit": b"1.2.840.10008.1.2\x00\x00\x00",
    "ts_explicit": b"1.2.840.10008.1.2.1\x00",
    "ts_big_endian": b"1.2.840.10008.1.2.2\x00",
    "ts_empty": b"\x00" * 20,
}


def _edited(data: bytes, edits: list[Edit]) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    out = io.BytesIO()
    for edit in edits:
        edit(ds)
    ds.save_as(out)
    return out.getvalue()


def _with_value(data: bytes, keyword: str, value: bytes) -> bytes:
    """`data` with the (explicit VR, short header) element `keyword` holding the bytes `value`."""
    raw = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).get_item(keyword)
    start, end = raw.value_tell - 8, raw.value_tell + raw.length
    value += b" " * (len(value) % 2)
    return data[: start + 6] + len(value).to_bytes(2, "little") + value + data[end:]


def _pixel_offset(data: bytes) -> int:
    """Byte offset of the PixelData element's value in `data`."""
    return data.rindex(b"\xe0\x7f\x10\x00")


def make_cases(data: bytes, seed: int = SEED) -> dict[str, bytes]:
    """name -> mutated file bytes, all generated from `seed`."""
    rng = np.random.default_rng(seed)
    start = _pixel_offset(data)
    cases: dict[str, bytes] = {}
    for i in range(N_TRUNCATED):  # half cut inside the header, half anywhere
        end = int(rng.integers(0, start + 16 if i % 2 == 0 else len(data)))
        cases[f"truncated_{i}_at_{end}"] = data[:end]
    for kind, lo, hi, n_max, count in (
        ("header", 0, start, 8, N_HEADER_FLIPS),
        ("pixels", start, len(data), 64, N_PIXEL_FLIPS),
    ):
        for i in range(count):
            buf = bytearray(data)
            for pos in rng.integers(lo, hi, size=int(rng.integers(1, n_max + 1))):
                buf[pos] ^= int(rng.integers(1, 256))
            cases[f"{kind}_flips_{i}"] = bytes(buf)
    for name, edit in EDITS.items():
        cases[name] = _edited(data, [edit])
    for name, (keyword, value) in VALUES.items():
        cases[name] = _with_value(data, keyword, value)
    names = list(EDITS)
    for i in range(N_EDIT_PAIRS):  # a broken text value and a broken structure together
        value, edit = list(VALUES)[rng.integers(len(VALUES))], names[rng.integers(len(names))]
        broken = _with_value(data, *VALUES[value])
        cases[f"pair_{i}_{value}+{edit}"] = _edited(broken, [EDITS[edit]])
    pos = data.index(RLE_UID)
    for name, uid in SYNTAXES.items():
        cases[name] = data[:pos] + uid + data[pos + len(RLE_UID) :]
    return cases


READERS: dict[str, Callable[[Path], object]] = {
    "read_header": read_header,
    "read_slice": read_slice,
    "load_stacks": lambda file: load_stacks(file.parent),
}


def _outcome(reader: Callable[[Path], object], bad: Path) -> str:
    """'loaded', 'clean' (a one-line DicomError naming `bad`) or 'escape: ...'."""
    try:
        reader(bad)
    except DicomError as exc:
        msg = str(exc)
        return "clean" if str(bad) in msg and "\n" not in msg else f"escape: unnamed {msg!r}"
    except Exception as exc:  # noqa: BLE001 - counting exactly what escapes is the point
        return f"escape: {type(exc).__name__}: {exc}"
    return "loaded"


@pytest.mark.timeout(120)
def test_hostile_files_load_or_raise_a_clean_error(shared_data, tmp_path):
    series = shared_data("rsna_dicom") / SERIES
    good = (series / "1.dcm").read_bytes()
    neighbour = (series / "2.dcm").read_bytes()
    cases = make_cases(good)
    assert len(cases) >= 300
    counts: Counter[str] = Counter()
    escapes: list[str] = []
    raw_warnings: list[str] = []
    for i, (name, data) in enumerate(cases.items()):
        folder = tmp_path / f"c{i}"
        folder.mkdir()
        (folder / "2.dcm").write_bytes(neighbour)  # load_stacks reads the bad file with a good one
        bad = folder / "1.dcm"
        bad.write_bytes(data)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            outcomes = {name: _outcome(reader, bad) for name, reader in READERS.items()}
        raw_warnings += [f"{name}: {w.category.__name__}: {w.message}" for w in seen]
        for reader, outcome in outcomes.items():
            counts[outcome.split(":")[0]] += 1
            if outcome.startswith("escape"):
                escapes.append(f"{name} via {reader}: {outcome[8:]}")
    print(
        f"\n{len(cases)} hostile files x {len(READERS)} readers: loaded {counts['loaded']}, "
        f"clean errors {counts['clean']}, escapes {counts['escape']}; "
        f"raw warnings {len(raw_warnings)}"
    )
    for line in escapes[:20] + raw_warnings[:10]:
        print("  " + line)
    assert escapes == []
    assert raw_warnings == []
