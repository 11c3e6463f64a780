"""DICOM in and out: series folders to volumes with exact LPS geometry, studies, synthetic series.

Geometry conventions (DICOM, LPS mm): IOP = (r, c), r along increasing column index, c along
increasing row index, n = r x c; PixelSpacing = (dy, dx); slices sorted by dot(IPP, n).
"""

from spinegrade.dicom.geometry import PLANE_TOLERANCE_DEG, SeriesMeta, Volume, plane_of
from spinegrade.dicom.headers import SliceHeader, read_header, read_series_headers, read_slice
from spinegrade.dicom.series import load_many, load_series, load_stacks
from spinegrade.dicom.study import (
    Series,
    SliceHit,
    Study,
    load_study,
    nearest_axial_slice,
    nearest_slice,
    series_from_stacks,
    series_type_from_description,
)
from spinegrade.dicom.write import make_uid, write_series

__all__ = [
    "PLANE_TOLERANCE_DEG",
    "SliceHit",
    "Series",
    "SeriesMeta",
    "SliceHeader",
    "Study",
    "Volume",
    "load_many",
    "load_series",
    "load_stacks",
    "load_study",
    "make_uid",
    "nearest_axial_slice",
    "nearest_slice",
    "plane_of",
    "read_header",
    "read_series_headers",
    "read_slice",
    "series_from_stacks",
    "series_type_from_description",
    "write_series",
]
