"""A real PACS for the DICOMweb tests: Orthanc (Debian's `orthanc` + `orthanc-dicomweb`), started
once per session on a free port of 127.0.0.1 with a configuration and storage folder written here,
and stopped at the end. Skips with a reason where Orthanc is not installed
(`sudo bash scripts/system-packages.sh` installs it on Debian/Ubuntu).

The server needs HTTP basic authentication (`USER`/`PASSWORD`, given to spinegrade through the
environment by the `pacs` fixture) and runs two Lua filters, so that tests can see refusals: it
answers 403 to a STOW-RS addressed to the study `FORBIDDEN_STUDY`, and it drops the SR instances
of patient `REFUSED_PATIENT` (while its DICOMweb plugin still answers "stored").
"""

from __future__ import annotations

import glob
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from spinegrade.dicom import make_uid
from spinegrade.inference.dicomweb import ENV_PASSWORD, ENV_TOKEN, ENV_USER

USER, PASSWORD = "spinegrade", "not-a-secret"
REFUSED_PATIENT = "STOW-REFUSED"
FORBIDDEN_TAG = (
    "stow-forbidden"  #: `copy_study(..., FORBIDDEN_TAG)` makes the study FORBIDDEN_STUDY
)
FORBIDDEN_STUDY = make_uid("test-study", FORBIDDEN_TAG)
_PLUGIN_GLOBS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so*",
    "/usr/lib/x86_64-linux-gnu/orthanc/plugins/libOrthancDicomWeb.so*",
)
_LUA_FILTER = f"""
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
  if method == 'POST' and string.find(uri, '/studies/{FORBIDDEN_STUDY}', 1, true) then
    return false
  end
  return true
end

function ReceivedInstanceFilter(dicom, origin, info)
  if dicom.PatientID == '{REFUSED_PATIENT}' and dicom.Modality == 'SR' then
    return false
  end
  return true
end
"""


@dataclass
class Orthanc:
    """A running Orthanc: its REST root `url`, its DICOMweb root `dicomweb`, and its folder."""

    url: str
    dicomweb: str
    folder: Path

    def client(self) -> DICOMwebClient:
        """A dicomweb-client of this server, with its credentials."""
        session = requests.Session()
        session.auth = (USER, PASSWORD)
        return DICOMwebClient(self.dicomweb, session=session)

    def stow(self, files: Sequence[Path]) -> None:
        """Store `files` with STOW-RS (to `/studies`, which the filters let through)."""
        self.client().store_instances([pydicom.dcmread(f) for f in files])

    def series(self, study_uid: str) -> list[pydicom.Dataset]:
        """QIDO-RS: the series of a study, as datasets."""
        return [pydicom.Dataset.from_json(s) for s in self.client().search_for_series(study_uid)]


def _plugin() -> str | None:
    found = [p for pattern in _PLUGIN_GLOBS for p in sorted(glob.glob(pattern))]
    return found[0] if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """A running Orthanc with DICOMweb (see the module docstring), stopped after the session."""
    binary, plugin = shutil.which("Orthanc"), _plugin()
    if binary is None or plugin is None:
        pytest.skip(
            "Orthanc with its DICOMweb plugin is not installed "
            "(Debian/Ubuntu: sudo bash scripts/system-packages.sh)"
        )
    folder = tmp_path_factory.mktemp("orthanc")
    port = _free_port()
    (folder / "filter.lua").write_text(_LUA_FILTER)
    config: dict[str, Any] = {
        "Name": "spinegrade-test",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [plugin],
        "LuaScripts": [str(folder / "filter.lua")],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
    }
    (folder / "orthanc.json").write_text(json.dumps(config, indent=2))
    log = open(folder / "orthanc.log", "wb")
    proc = subprocess.Popen(
        [binary, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, proc, folder / "orthanc.log")
        yield Orthanc(url, f"{url}/dicom-web", folder)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"Orthanc exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if requests.get(f"{url}/system", auth=(USER, PASSWORD), timeout=1).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    pytest.fail(f"Orthanc did not answer within {timeout_s:.0f} s: {log.read_text()[-2000:]}")


@pytest.fixture
def pacs(orthanc: Orthanc, monkeypatch: pytest.MonkeyPatch) -> Orthanc:
    """The session's Orthanc, with its credentials in spinegrade's environment variables."""
    monkeypatch.setenv(ENV_USER, USER)
    monkeypatch.setenv(ENV_PASSWORD, PASSWORD)
    monkeypatch.delenv(ENV_TOKEN, raising=False)
    return orthanc


def copy_study(
    src: Path, dest: Path, tag: str, drop_series: Sequence[str] = (), **attributes: Any
) -> tuple[str, list[Path]]:
    """Copy the study folder `src` into `dest` with new UIDs derived from `tag` (so that each test
    has its own study on the shared server), without the series folders `drop_series`, and with
    the given attributes set (e.g. PatientName="Doe^Jane"). Returns (StudyInstanceUID, files)."""
    study_uid = make_uid("test-study", tag)
    out = []
    for f in sorted(src.rglob("*.dcm")):
        if f.parent.name in drop_series:
            continue
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = make_uid("test-series", tag, ds.SeriesInstanceUID)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = make_uid(
            "test-sop", tag, ds.SOPInstanceUID
        )
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
        target = dest / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(target, enforce_file_format=True)
        out.append(target)
    return study_uid, out


@dataclass
class Finding:
    """One measurement group of a spinegrade SR, read back with highdicom."""

    finding: tuple[str, str]  #: (code value, scheme) of the finding type
    site: tuple[str, str]  #: (code value, scheme) of the finding site (the level)
    laterality: str | None  #: code value of the site's laterality
    severity: str  #: key of SEVERITIES
    probabilities: dict[str, float]  #: SEVERITIES key -> probability
    flags: list[str]  #: code values of the processing flags
    point: tuple[float, float] | None  #: SCOORD POINT (column, row), image coordinates
    sop_class_uid: str | None
    sop_instance_uid: str | None


def read_findings(path: Path | pydicom.Dataset) -> dict[str, Finding]:
    """Tracking identifier (the row id) -> `Finding`, for every measurement group of the SR."""
    import highdicom as hd

    from spinegrade.inference import dicom_codes as dc

    severity_of = {code.value: key for key, code in dc.SEVERITY_CODES.items()}
    ds = path if isinstance(path, pydicom.Dataset) else pydicom.dcmread(path)
    report = hd.sr.ComprehensiveSR.from_dataset(ds).content
    groups = [*report.get_planar_roi_measurement_groups(), *report.get_image_measurement_groups()]
    out = {}
    for g in groups:
        probs, point, ref = {}, None, None
        for m in g.get_measurements(name=dc.PROBABILITY):
            probs[severity_of[m[0].ContentSequence[0].ConceptCodeSequence[0].CodeValue]] = float(
                m.value
            )
        evaluations = g.get_qualitative_evaluations()
        roi = getattr(g, "roi", None)
        if roi is not None:
            assert roi.graphic_type.value == "POINT"
            point = tuple(float(v) for v in roi.value[0])
            ref = roi.ContentSequence[0].ReferencedSOPSequence[0]
        site = g.finding_sites[0]
        lat = next(
            (m.ConceptCodeSequence[0].CodeValue for m in getattr(site, "ContentSequence", [])), None
        )
        out[g.tracking_identifier] = Finding(
            (g.finding_type.value, g.finding_type.scheme_designator),
            (site.value.value, site.value.scheme_designator),
            lat,
            next(severity_of[e.value.value] for e in evaluations if e.name == dc.SEVERITY),
            probs,
            [e.value.value for e in evaluations if e.name == dc.FLAG],
            point,
            None if ref is None else str(ref.ReferencedSOPClassUID),
            None if ref is None else str(ref.ReferencedSOPInstanceUID),
        )
    return out
