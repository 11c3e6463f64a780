"""`predict --dicom-out`: each study's results as DICOM, in two new series of the source study.

- **Structured Report** (`dicom/sr.dcm`, Comprehensive SR, TID 1500 Measurement Report, built with
  highdicom): one finding per target (25). A located target is a TID 1410 planar ROI group whose
  region is a SCOORD POINT on the source instance graded (its SOP Class and Instance UID); a target
  no fold located is a TID 1501 group without a region. Each group holds the condition (finding
  type), the level and side (finding site), the most likely severity (qualitative evaluation),
  the three probabilities (numeric, post-coordinated with their class), the localisation
  confidence and the folds' spread, the processing flags, and the algorithm's identification
  (name, version, run folder fingerprint, folds, TTA). Codes: `inference.dicom_codes`.
- **Overlays** (`dicom/overlay_<name>.dcm`, Secondary Capture, built with highdicom): the overlay
  PNGs of the report as RGB images. Secondary Capture because every PACS viewer shows it as is;
  a presentation state over the MR images would leave the drawing to each viewer (many web
  viewers ignore them) and could not carry the probability labels. The images are marked
  derived (ImageType DERIVED\\SECONDARY, conversion type WSD), burned-in annotation YES, with a
  not-for-diagnosis disclaimer in the series description, the image comments and a banner burned
  in below the picture (viewers rarely show the comments). PatientOrientation is left empty (type
  2): a figure puts several planes side by side, each labelled with its own directions.

Patient and study attributes are copied from one instance of the source study (never invented:
an attribute the source lacks stays empty, as the IOD allows for type 2). UIDs are derived from
the study, the referenced instances and the model's fingerprint: predicting the same study with
the same run again gives the same UIDs, so storing twice does not duplicate the series.

SCOORD points are in DICOM image coordinates, where (0, 0) is the top left corner of the top left
pixel; `predictions.json` gives pixel indices (pixel centres: (0, 0) is the centre of the top
left pixel), so a point at `pixel {x, y}` is written as (x + 0.5, y + 0.5).
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

from spinegrade import __version__
from spinegrade.dicom import Study, make_uid
from spinegrade.dicom.headers import read_dataset
from spinegrade.errors import DicomError, SpinegradeError
from spinegrade.inference import dicom_codes as dc
from spinegrade.inference.discover import StudySource
from spinegrade.io import write_with
from spinegrade.report.overlays import OVERLAY_TITLES, OVERLAYS

DICOM_DIR = "dicom"  #: under OUT/studies/<id>/
SR_FILE = "sr.dcm"
MANUFACTURER = "spinegrade"
SR_SERIES_NUMBER, OVERLAY_SERIES_NUMBER = 9001, 9002  #: high, to sort after the acquired series
DISCLAIMER = (
    "Research use only, not for diagnostic use: computed by the spinegrade algorithm, "
    "not reviewed by a physician."
)
BANNER = "spinegrade - research use only - NOT FOR DIAGNOSTIC USE"  #: burned into each overlay
BANNER_PX = 28
#: Type 2 attributes of the Patient and General Study modules: copied from the source, or empty.
STUDY_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


class DicomOutputError(SpinegradeError):
    """A study's DICOM outputs could not be built or written (one line, names the study)."""


@dataclass(frozen=True)
class Provenance:
    """Which model wrote the outputs: spinegrade's version, the run folder's fingerprint (SHA-256
    of its config, prior, calibration and the checkpoints used), the folds and TTA."""

    version: str
    fingerprint: str
    folds: tuple[int, ...]
    tta: bool

    def parameters(self) -> list[str]:
        """The algorithm parameters written into the SR (TID 4019)."""
        return [
            f"run folder sha256 {self.fingerprint}",
            f"folds {','.join(map(str, self.folds))}",
            f"tta {str(self.tta).lower()}",
        ]


@dataclass(frozen=True)
class SourceImage:
    """The source instance a target's point lies on."""

    sop_class_uid: str
    sop_instance_uid: str
    series_uid: str


@dataclass
class DicomJob:
    """What a worker needs to write one study's DICOM outputs (no pixels of the study).

    `header` holds the source study's patient and study attributes (one instance's header);
    `sources` maps a located target's row id to its instance; `overlays` are the overlay names
    (`report.overlays.OVERLAYS`) that have a PNG; `uids` the new series and instance UIDs.
    """

    header: Dataset
    sources: dict[str, SourceImage]
    provenance: Provenance
    overlays: list[str]
    uids: dict[str, str] = field(default_factory=dict)

    @property
    def files(self) -> dict[str, str]:
        """File name under `dicom/` -> SOP Instance UID, SR first."""
        return {SR_FILE: self.uids["sr"], **{overlay_file(n): self.uids[n] for n in self.overlays}}


def overlay_file(name: str) -> str:
    """`sagittal_t2` -> `overlay_sagittal_t2.dcm`."""
    return f"overlay_{name}.dcm"


# --- planning (main process: needs the read study and the run folder) --------------------------


def run_provenance(run_dir: str | Path, folds: Sequence[int], tta: bool) -> Provenance:
    """The `Provenance` of predicting with `folds` of the run folder `run_dir`.

    The fingerprint is `RunFolder.fingerprint`: the config, the calibration and each used fold's
    prior and checkpoints.
    """
    from spinegrade.cv.folder import RunFolder  # torch: main process only

    return Provenance(__version__, RunFolder(run_dir).fingerprint(folds), tuple(sorted(folds)), tta)


def plan_dicom(
    study: Study | None,
    source: StudySource,
    record: dict[str, Any],
    overlays: Iterable[str],
    provenance: Provenance,
) -> DicomJob | None:
    """The job that writes a study's SR and overlays, or None for a failed study.

    One header of the source's files gives the patient and study attributes; `overlays` are the
    overlay names that have panels. Records in `record["dicom"]` the files to be written and their
    UIDs, or why there is no SR.
    """
    if study is None or record["status"] != "ok":
        record["dicom"] = {"files": {}, "reason": "no DICOM SR: the study could not be read"}
        return None
    sources = _sources(study, record["targets"])
    study_uid = next(v.meta.study_uid for s in study.series for v in s.stacks)
    files = source.files or sorted(p for p in source.path.rglob("*") if p.is_file())
    header = _study_header(files, study_uid)
    seed = (
        study_uid,
        provenance.version,
        provenance.fingerprint,
        provenance.folds,
        provenance.tta,
        hashlib.sha256(
            "|".join(sorted(s.sop_instance_uid for s in sources.values())).encode()
        ).hexdigest(),
    )
    names = [n for n in OVERLAYS if n in set(overlays)]
    uids = {
        key: make_uid("spinegrade", key, *seed)
        for key in ("sr_series", "sr", "overlay_series", *names)
    }
    job = DicomJob(header, sources, provenance, names, uids)
    record["dicom"] = {
        "files": {f"{DICOM_DIR}/{f}": uid for f, uid in job.files.items()},
        "sr_series_uid": uids["sr_series"],
        "overlay_series_uid": uids["overlay_series"],
    }
    return job


def _sources(study: Study, targets: Sequence[Mapping[str, Any]]) -> dict[str, SourceImage]:
    """Row id -> source instance of every located target."""
    series = {s.series_id: s for s in study.series}
    out = {}
    for t in targets:
        if t["series_id"] is None:
            continue
        vol = series[t["series_id"]].stacks[t["stack_index"]]
        k = t["slice_index"]
        if not vol.sop_instance_uids or not vol.sop_instance_uids[k]:
            raise DicomError(
                vol.meta.path, f"slice {k} has no SOPInstanceUID: the SR cannot refer to it"
            )
        out[t["row_id"]] = SourceImage(
            vol.sop_class_uids[k], vol.sop_instance_uids[k], vol.meta.series_uid
        )
    return out


def _study_header(files: Iterable[Path], study_uid: str) -> Dataset:
    """Patient and study attributes from the first readable file of the study."""
    for path in files:
        try:
            ds = read_dataset(path, stop_before_pixels=True)
        except DicomError:
            continue
        if ds.get("StudyInstanceUID") == study_uid and "SOPInstanceUID" in ds:
            if "SOPClassUID" not in ds and "MediaStorageSOPClassUID" in ds.file_meta:
                ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID  # as RSNA's files have it
            for keyword in STUDY_ATTRIBUTES:  # type 2: present, empty when the source lacks it
                if keyword not in ds:
                    setattr(ds, keyword, None)
            return ds
    raise DicomOutputError(f"study {study_uid}: no readable source file to copy the patient from")


# --- building (worker) ---------------------------------------------------------------------------


def build_sr(record: Mapping[str, Any], job: DicomJob) -> hd.sr.ComprehensiveSR:
    """The study's TID 1500 Measurement Report (see the module docstring)."""
    p = job.provenance
    algorithm = hd.sr.AlgorithmIdentification(
        name=MANUFACTURER, version=p.version, parameters=p.parameters()
    )
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=make_uid("spinegrade-device", p.fingerprint),
        name=MANUFACTURER,
        manufacturer_name=MANUFACTURER,
        model_name=f"spinegrade {p.version}",
        serial_number=p.fingerprint[:16],
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=dc.IMAGING_PROCEDURE,
        imaging_measurements=[_finding(t, job, algorithm) for t in record["targets"]],
    )
    with _source_names_as_they_are():
        return hd.sr.ComprehensiveSR(
            evidence=[job.header, *(_evidence(s, job.header) for s in job.sources.values())],
            content=report,
            series_instance_uid=job.uids["sr_series"],
            series_number=SR_SERIES_NUMBER,
            sop_instance_uid=job.uids["sr"],
            instance_number=1,
            manufacturer=MANUFACTURER,
            is_complete=True,
            is_final=False,
            is_verified=False,
            series_description="spinegrade grading (research use, not for diagnosis)",
            manufacturer_model_name="spinegrade",
            software_versions=p.version,
            coding_schemes=[dc.coding_scheme()],
        )


@contextlib.contextmanager
def _source_names_as_they_are() -> Iterator[None]:
    """Silence highdicom's warning on a one-part PatientName: it is the source's, copied as is."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person")
        yield


def _finding(
    t: Mapping[str, Any], job: DicomJob, algorithm: hd.sr.AlgorithmIdentification
) -> hd.sr.Template:
    """One target as a TID 1410 group (located) or a TID 1501 group (not located)."""
    args: dict[str, Any] = dict(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=make_uid("spinegrade-finding", job.uids["sr"], t["row_id"]), identifier=t["row_id"]
        ),
        finding_type=dc.CONDITION_CODES[t["condition"]],
        algorithm_id=algorithm,
        finding_sites=[
            hd.sr.FindingSite(dc.LEVEL_CODES[t["level"]], laterality=dc.laterality(t["condition"]))
        ],
        measurements=_measurements(t),
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(dc.SEVERITY, dc.SEVERITY_CODES[t["most_likely"]]),
            *(hd.sr.QualitativeEvaluation(dc.FLAG, dc.flag_code(f)) for f in t["flags"]),
        ],
    )
    source = job.sources.get(t["row_id"])
    if source is None:
        return hd.sr.MeasurementsAndQualitativeEvaluations(**args)
    point = np.array([[t["pixel"]["x"] + 0.5, t["pixel"]["y"] + 0.5]])
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POINT,
        graphic_data=point,
        source_image=hd.sr.SourceImageForRegion(source.sop_class_uid, source.sop_instance_uid),
    )
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(referenced_region=region, **args)


def _measurements(t: Mapping[str, Any]) -> list[hd.sr.Measurement]:
    """The three probabilities (each with its class as concept modifier), confidence, spread."""
    out = []
    for severity, p in t["probabilities"].items():
        m = hd.sr.Measurement(name=dc.PROBABILITY, value=float(p), unit=dc.PROBABILITY_UNIT)
        m[0].ContentSequence = [
            hd.sr.CodeContentItem(
                name=dc.SEVERITY,
                value=dc.SEVERITY_CODES[severity],
                relationship_type=hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD,
            )
        ]
        out.append(m)
    if t["confidence"] is not None:
        out.append(
            hd.sr.Measurement(name=dc.CONFIDENCE, value=float(t["confidence"]), unit=dc.NO_UNITS)
        )
    if t["spread_mm"] is not None:
        out.append(
            hd.sr.Measurement(name=dc.SPREAD, value=float(t["spread_mm"]), unit=dc.MILLIMETRE)
        )
    return out


def _evidence(source: SourceImage, header: Dataset) -> Dataset:
    """The minimal dataset highdicom lists as evidence for a referenced instance."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = source.sop_class_uid, source.sop_instance_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = header.StudyInstanceUID, source.series_uid
    return ds


def build_overlay(png: str | Path, name: str, number: int, job: DicomJob) -> hd.sc.SCImage:
    """One overlay PNG as an RGB Secondary Capture image of the overlay series."""
    with Image.open(png) as im:
        pixels = _with_banner(im.convert("RGB"))
    with _source_names_as_they_are():
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=job.header,
            pixel_array=pixels,
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            patient_orientation=("L", "P"),
            series_instance_uid=job.uids["overlay_series"],
            series_number=OVERLAY_SERIES_NUMBER,
            sop_instance_uid=job.uids[name],
            instance_number=number,
            manufacturer=MANUFACTURER,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            series_description="spinegrade overlays (not for diagnostic use)",
            manufacturer_model_name="spinegrade",
            software_versions=job.provenance.version,
        )
    sc.PatientOrientation = None  # several planes side by side: each panel carries its letters
    sc.BodyPartExamined = job.header.get("BodyPartExamined") or "LSPINE"  # unpaired: no Laterality
    sc.BurnedInAnnotation = "YES"
    sc.ConversionType = "WSD"  # drawn by software on a workstation (highdicom's default: DI)
    sc.ImageComments = f"{OVERLAY_TITLES[name]}. {DISCLAIMER}"
    sc.DerivationDescription = "Overlay of the points graded by spinegrade, coloured by severity"
    return sc


def _with_banner(image: Image.Image) -> np.ndarray:
    """The RGB image (H, W) over a black strip saying it is not for diagnosis: (H + 28, W, 3)."""
    out = Image.new("RGB", (image.width, image.height + BANNER_PX), "black")
    out.paste(image, (0, 0))
    draw = ImageDraw.Draw(out)
    draw.text((8, image.height + 6), BANNER, fill="white", font=ImageFont.load_default(size=15))
    return np.asarray(out)


def write_study_dicom(folder: str | Path, record: Mapping[str, Any], job: DicomJob) -> list[Path]:
    """Build the SR and every overlay first, then write them atomically into `folder/dicom/`.

    The overlay PNGs must already be in `folder`. Raises DicomOutputError (nothing is written)
    when an object cannot be built.
    """
    folder = Path(folder)
    try:
        objects = {SR_FILE: build_sr(record, job)}
        for number, name in enumerate(job.overlays, start=1):
            objects[overlay_file(name)] = build_overlay(folder / f"{name}.png", name, number, job)
    except (ValueError, TypeError, AttributeError, OSError) as exc:
        raise DicomOutputError(
            f"study {record['study_id']}: DICOM outputs not built "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    return [
        write_with(
            folder / DICOM_DIR / f, lambda tmp, ds=ds: ds.save_as(tmp, enforce_file_format=True)
        )
        for f, ds in objects.items()
    ]


__all__ = [
    "DicomJob",
    "DicomOutputError",
    "Provenance",
    "build_overlay",
    "build_sr",
    "plan_dicom",
    "run_provenance",
    "write_study_dicom",
]
