"""Reading DICOM series into volumes with exact LPS geometry, and writing synthetic series."""

from spinegrade.dicom.write import make_uid, write_series

__all__ = ["make_uid", "write_series"]
