"""A stack of slices as a volume: pixels[slice, row, col] plus the affine to LPS millimetres."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from spinegrade.errors import DicomError

#: A slice normal within this angle of an LPS axis names the plane (x sagittal, y coronal, z axial);
#: farther from every axis the stack is oblique. Lumbar axial blocks are tilted to their disc
#: (lumbosacral tilts: 28 degrees in the real RSNA studies here, up to 40 in the synthetic ones), so
#: the tolerance is wider than a "true axial" would need; below 45, two axes can never both claim
#: a normal (cos 41.4 deg = 0.75).
PLANE_TOLERANCE_DEG = 41.4
PLANES = ("sagittal", "coronal", "axial")


def plane_of(normal: npt.ArrayLike, tolerance_deg: float = PLANE_TOLERANCE_DEG) -> str:
    """`sagittal` / `coronal` / `axial` when the slice normal (3,) is within `tolerance_deg` of the
    patient x / y / z axis, `oblique` when it is farther from all three, `unknown` when
    degenerate."""
    n = np.abs(np.asarray(normal, dtype=np.float64).reshape(3))
    norm = float(np.linalg.norm(n))
    if not norm or not np.isfinite(norm):
        return "unknown"
    k = int(np.argmax(n))
    return PLANES[k] if n[k] / norm >= np.cos(np.deg2rad(tolerance_deg)) else "oblique"


@dataclass(frozen=True)
class SeriesMeta:
    """Identity and acquisition facts of the series a volume came from.

    `pixel_spacing` is (dy between rows, dx between columns) as the DICOM tag; `series_id` is the
    series folder name as an int when numeric (RSNA layout), else None.
    """

    study_uid: str
    series_uid: str
    series_id: int | None
    description: str
    rows: int
    cols: int
    pixel_spacing: tuple[float, float]
    slice_thickness: float | None
    manufacturer: str | None
    path: Path
    echo_time: float | None = None
    repetition_time: float | None = None
    inversion_time: float | None = None
    scanning_sequence: str | None = None
    sequence_name: str | None = None


@dataclass(frozen=True, eq=False)
class Volume:
    """One spatially consistent stack of slices.

    `pixels` (slices, rows, cols) integer after rescale (float32 only for non-integral rescale);
    `affine` (4, 4) maps homogeneous (col, row, slice, 1) to LPS mm; `instance_numbers` (slices,)
    are the DICOM InstanceNumbers of the slices in sorted spatial order (increasing along the
    normal); `sop_instance_uids` and `sop_class_uids` (slices,) are the slices' SOPInstanceUID and
    SOPClassUID in the same order (empty tuples for volumes not read from files, e.g. crops).
    """

    pixels: np.ndarray
    affine: np.ndarray
    instance_numbers: np.ndarray
    meta: SeriesMeta
    sop_instance_uids: tuple[str, ...] = ()
    sop_class_uids: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (
            f"Volume(shape={self.shape}, dtype={self.pixels.dtype}, spacing="
            f"{tuple(round(v, 4) for v in self.spacing)}, series_id={self.meta.series_id}, "
            f"description={self.meta.description!r})"
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """(slices, rows, cols)."""
        s, r, c = self.pixels.shape
        return int(s), int(r), int(c)

    @property
    def orientation(self) -> np.ndarray:
        """(3, 3) matrix whose columns are the unit vectors r (along cols), c (along rows), n."""
        r = self.affine[:3, 0] / np.linalg.norm(self.affine[:3, 0])
        c = self.affine[:3, 1] / np.linalg.norm(self.affine[:3, 1])
        n = np.cross(r, c)
        return np.stack([r, c, n / np.linalg.norm(n)], axis=1)

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal n = r x c, shape (3,); slices are sorted along it."""
        return self.orientation[:, 2]

    @property
    def plane(self) -> str:
        """`plane_of(self.normal)`: sagittal, coronal, axial or oblique."""
        return plane_of(self.normal)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """(dx, dy, dz) in mm along (col, row, slice); dz is the distance between slice planes."""
        dx = float(np.linalg.norm(self.affine[:3, 0]))
        dy = float(np.linalg.norm(self.affine[:3, 1]))
        dz = float(abs(self.affine[:3, 2] @ self.normal))
        return dx, dy, dz

    def voxel_to_world(self, points: npt.ArrayLike) -> np.ndarray:
        """(n, 3) float (col, row, slice) -> (n, 3) LPS mm."""
        p = np.atleast_2d(np.asarray(points, dtype=np.float64))
        return p @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_voxel(self, points: npt.ArrayLike) -> np.ndarray:
        """(n, 3) LPS mm -> (n, 3) float (col, row, slice)."""
        p = np.atleast_2d(np.asarray(points, dtype=np.float64))
        return np.linalg.solve(self.affine[:3, :3], (p - self.affine[:3, 3]).T).T

    def slice_index(self, instance_number: int) -> int:
        """Index along the slice axis of the slice with this InstanceNumber."""
        hits = np.flatnonzero(self.instance_numbers == int(instance_number))
        if len(hits) == 0:
            raise DicomError(
                self.meta.path,
                f"instance number {instance_number} is not in this stack "
                f"(it holds {_ranges(self.instance_numbers)})",
            )
        return int(hits[0])

    def world_of_pixel(self, instance_number: int, x: float, y: float) -> np.ndarray:
        """LPS mm (3,) of pixel column `x`, row `y` in the slice `instance_number` (RSNA x, y)."""
        return self.voxel_to_world([[x, y, self.slice_index(instance_number)]])[0]


def make_affine(
    first_position: np.ndarray,
    orientation: np.ndarray,
    pixel_spacing: tuple[float, float],
    slice_step: np.ndarray,
) -> np.ndarray:
    """(4, 4) affine from the first slice's IPP (3,), IOP (6,), (dy, dx) and the slice step vector
    (3,)."""
    r, c = orientation[:3], orientation[3:]
    dy, dx = pixel_spacing
    affine = np.eye(4)
    affine[:3, 0] = r / np.linalg.norm(r) * dx
    affine[:3, 1] = c / np.linalg.norm(c) * dy
    affine[:3, 2] = slice_step
    affine[:3, 3] = first_position
    return affine


def _ranges(numbers: np.ndarray) -> str:
    """Compact description of a set of instance numbers, e.g. '1-15' or '3, 7, 9'."""
    vals = sorted(int(v) for v in numbers)
    if vals and vals == list(range(vals[0], vals[-1] + 1)):
        return f"instances {vals[0]}-{vals[-1]}"
    return "instances " + ", ".join(map(str, vals[:10])) + (" ..." if len(vals) > 10 else "")
