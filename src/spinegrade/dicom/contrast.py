"""What a series' own evidence says about its plane and contrast (the decision is in study.py).

Four kinds of evidence, read by `spinegrade.dicom.study.series_from_stacks` in this order:

- the plane, from the geometry: the stack normal along an LPS axis (`Volume.plane`);
- the SeriesDescription in the spellings scanners write (`read_description`): the contrast
  (T1, or T2 for T2/STIR/fat-saturated T2), the plane it names, and the words that put a series
  outside the task (localizers, contrast-enhanced, proton density, diffusion);
- the acquisition tags EchoTime, RepetitionTime, InversionTime, ScanningSequence, SequenceName
  (`contrast_from_tags`);
- the pixels of a sagittal stack (`midline_fade`): whether its brightest tissue is CSF, which
  only the midline holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from spinegrade.dicom.geometry import PLANES, SeriesMeta, Volume

T1, T2 = "T1", "T2"  #: contrasts; T2 stands for T2, STIR and fat-saturated T2 alike
SAGITTAL, CORONAL, AXIAL = PLANES

_SAGITTAL_WORDS = {"sag", "sagittal", "sagital", "sagit"}
_AXIAL_WORDS = {"ax", "axi", "axial", "tra", "trans", "transverse", "transversal"}
_CORONAL_WORDS = {"cor", "coronal", "coron"}
#: Words that put a series outside the task, and what they mean.
_EXCLUDED = {
    "a localizer": {"loc", "localizer", "localiser", "scout", "survey", "pilot", "3plane", "3pl"},
    "contrast-enhanced": {
        "gad",
        "gd",
        "gado",
        "gadolinium",
        "post",
        "postgad",
        "postgd",
        "postcontrast",
        "contrast",
        "enhanced",
        "ce",
    },
    "proton density": {"pd", "pdw", "pdfs"},
    "diffusion": {"dwi", "diffusion", "adc", "trace", "dti"},
}
#: '+C', 'C+', '+GD', 'GD+' (contrast given), written with or without spaces.
_PLUS_CONTRAST = re.compile(r"\+\s*(c|gd)\b|\b(c|gd)\s*\+")
_T1 = re.compile(r"(?<![a-z0-9])t1(?!\d)")
_T2 = re.compile(r"(?<![a-z0-9])t2(?!\d)")
_STIR = re.compile(r"stir|tirm")
#: SequenceName of gradient-echo sequences (Siemens *fl/*fi/*me, GE gre/fgre/spgr, Philips ffe).
_GRADIENT_ECHO_NAME = re.compile(r"^\*?(fl|fi|me)\d|gre|spgr|ffe")

#: The pixel rule (`midline_fade`): lateral distance (mm) at which the thecal sac (half-width
#: 8-10 mm) is gone, the midline candidates (slices within MIDLINE_MM of the stack centre), the
#: brightest share of a slice, and the signal ratio below which a voxel counts as faded.
LATERAL_MM, MIDLINE_MM, BRIGHT_PERCENTILE, FADED = 20.0, 15.0, 99.0, 0.5
#: midline fade >= FADE_T2 -> T2/STIR, <= FADE_T1 -> T1, in between: weak evidence, unknown.
FADE_T2, FADE_T1 = 0.70, 0.45
#: Two untyped sagittal series of one study whose fades differ by at least this are told apart
#: relative to each other (the higher is the T2/STIR).
FADE_GAP = 0.30


@dataclass(frozen=True)
class DescriptionWords:
    """What a SeriesDescription says: contrast (T1, T2 or None), plane (or None), and why it rules
    the series out (`excluded`, e.g. 'a localizer'; None when it does not)."""

    contrast: str | None
    plane: str | None
    excluded: str | None = None
    stir: bool = False  #: names STIR/TIRM (a sagittal series in lumbar protocols)


def read_description(text: str | None) -> DescriptionWords:
    """Contrast, plane and exclusion of a description: 'SAG T1', 'T1_TSE_SAG', 't2_tse_sag_384',
    'STIR', 'AX T2', 'T2 TSE AXIAL', 'T2_TSE_TRA', 'Sag T2 FS', 'Sagittal T2/STIR', 'SAG T1 +C'.

    A text naming both T1 and T2, or neither, has no contrast; one naming several planes has none.
    """
    low = (text or "").lower()
    words = set(re.findall(r"[a-z0-9]+", low))
    excluded = next((why for why, names in _EXCLUDED.items() if words & names), None)
    if excluded is None and _PLUS_CONTRAST.search(low):
        excluded = "contrast-enhanced"
    stir = bool(_STIR.search(low))
    t1, t2 = bool(_T1.search(low)), bool(_T2.search(low)) or stir
    planes = [
        plane
        for plane, names in (
            (SAGITTAL, _SAGITTAL_WORDS),
            (AXIAL, _AXIAL_WORDS),
            (CORONAL, _CORONAL_WORDS),
        )
        if words & names
    ]
    contrast = T1 if t1 and not t2 else T2 if t2 and not t1 else None
    return DescriptionWords(contrast, planes[0] if len(planes) == 1 else None, excluded, stir)


def contrast_from_tags(meta: SeriesMeta) -> tuple[str | None, str]:
    """(contrast or None, one line of evidence) from the acquisition tags; (None, '') without any.

    InversionTime 100-250 ms: STIR -> T2. Gradient echo (ScanningSequence GR without SE, or a
    gradient-echo SequenceName): TE/TR do not tell T1 from T2 without the flip angle -> None.
    EchoTime >= 60 ms -> T2; EchoTime < 40 ms and RepetitionTime < 1500 ms -> T1; else None
    (proton density and the like). Checked on synthetic headers only: the RSNA files carry none.
    """
    te, tr, ti = meta.echo_time, meta.repetition_time, meta.inversion_time
    if te is None and tr is None and ti is None:
        return None, ""
    values = [
        f"{name} {value:g} ms"
        for name, value in (("TE", te), ("TR", tr), ("TI", ti))
        if value is not None
    ]
    sequence = [s for s in (meta.scanning_sequence, meta.sequence_name) if s]
    said = ", ".join(values + sequence)
    kinds = set((meta.scanning_sequence or "").upper().replace("\\", " ").split())
    gradient = ("GR" in kinds and "SE" not in kinds) or bool(
        _GRADIENT_ECHO_NAME.search((meta.sequence_name or "").lower())
    )
    if ti is not None and 100 <= ti <= 250:
        return T2, f"acquisition tags ({said}): short-TI inversion recovery, STIR"
    if gradient:
        return None, f"acquisition tags ({said}): gradient echo, TE/TR do not give the contrast"
    if te is not None and te >= 60:
        return T2, f"acquisition tags ({said}): long TE, T2"
    if te is not None and te < 40 and tr is not None and tr < 1500:
        return T1, f"acquisition tags ({said}): short TE and TR, T1"
    return None, f"acquisition tags ({said}) fit neither T1 nor T2/STIR"


def midline_fade(volume: Volume) -> float | None:
    """Share of the brightest 1% of a midline slice's voxels whose signal, averaged over the two
    slices LATERAL_MM to either side, is below half of theirs (the maximum over the slices within
    MIDLINE_MM of the stack centre); None when no such slice has both neighbours in the stack.

    Physics: on T2 and STIR the brightest tissue is CSF, and the thecal sac holds it only in the
    midline, so the brightest midline voxels fade 20 mm to the sides (fade near 1); on T1 CSF is
    dark and the brightest tissue is fat and marrow, which continue laterally (fade near 0).
    Checked (benchmarks/bench_series_typing.py) on 98 sagittal series: the 6 real RSNA ones (T1
    0.09-0.35, T2/STIR 0.84-1.00) and 92 synthetic ones, 46 T1 (0.00-0.18) and 46 T2/STIR
    (0.83-1.00; the generator draws STIR for about a fifth), from 40 small and 6 full-size
    studies: all typed right. The thresholds were set on these same series, and six real ones are
    few: treat them as provisional until checked on more real studies.
    """
    n_slices = volume.shape[0]
    dz = volume.spacing[2]
    off = int(round(LATERAL_MM / dz))
    centre = (n_slices - 1) / 2
    fades = []
    for k in range(off, n_slices - off):
        if abs(k - centre) * dz > MIDLINE_MM:
            continue
        mid = volume.pixels[k].astype(np.float32)
        side = (volume.pixels[k - off].astype(np.float32) + volume.pixels[k + off]) / 2
        bright = mid >= np.percentile(mid, BRIGHT_PERCENTILE)
        if mid.max() > 0:
            fades.append(float(np.mean(side[bright] < FADED * mid[bright])))
    return max(fades) if fades else None
