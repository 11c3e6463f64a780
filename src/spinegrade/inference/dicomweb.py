"""`predict --dicomweb URL --study UID`: studies pulled from a PACS over DICOMweb, predicted the way
folders are, and (with `store`) their SR and overlay images stored back into the same studies.

1. QIDO-RS lists each study's series; the image series (Modality MR, or none: RSNA files omit it)
   are fetched; SR, overlays and other non-MR series (spinegrade's own outputs among them) are not.
2. WADO-RS fetches them (dicomweb-client, one progress bar) into
   `OUT/.fetch/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`, emptied first.
3. `inference.predict` runs on `OUT/.fetch` with `dicom_out=True`, so every output is the one a
   folder gets (study ids as `inference.discover` gives them: `uid_to_id` of the Study Instance
   UID, or the UID itself where it is a plain number, as RSNA's are).
4. Every study must have been read and hold the three series types the conditions need; else
   each problem is one line of the `DicomwebError` raised, and nothing is stored.
5. With `store`, STOW-RS sends each study's SR and overlays (built in step 3, before anything is
   sent). A refusal, whole or part-way, raises `DicomwebError` naming what was stored and what
   was refused. UIDs are derived from the study and the model (`inference.dicom_out`), so storing
   again after a refusal does not duplicate what went through.

Authentication, from the environment only (a command line shows in `ps` and the shell history):
`SPINEGRADE_DICOMWEB_TOKEN` (HTTP bearer token, e.g. an OAuth access token), or
`SPINEGRADE_DICOMWEB_USER` and `SPINEGRADE_DICOMWEB_PASSWORD` (HTTP basic); none: anonymous.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from tqdm.auto import tqdm

from spinegrade.constants import SERIES_OF_CONDITION
from spinegrade.cv.ensemble import FLAG_MISSING_SERIES
from spinegrade.errors import SpinegradeError
from spinegrade.inference.discover import discover_studies, uid_to_id
from spinegrade.inference.outputs import study_dir
from spinegrade.inference.run import PredictResult, predict
from spinegrade.io import write_with

ENV_USER, ENV_PASSWORD, ENV_TOKEN = (
    f"SPINEGRADE_DICOMWEB_{k}" for k in ("USER", "PASSWORD", "TOKEN")
)
FETCH_DIR = ".fetch"
IMAGE_MODALITIES = ("MR", "")  #: series fetched ("": no Modality, as in the RSNA files)
TIMEOUT_S = 60.0
#: Transient failures (no connection, HTTP 408, 429, 503, 504) are tried this many times, waiting
#: 2^k x RETRY_WAIT_MS in between (1 s, then 2 s): a server that is down fails in about 3 s.
RETRY_ATTEMPTS, RETRY_WAIT_MS = 3, 500
_ANY_SYNTAX = (("application/dicom", "*"),)  #: WADO-RS: the stored transfer syntax, no transcoding
T = TypeVar("T")


class DicomwebError(SpinegradeError):
    """A DICOMweb step that failed; `problems` holds one line per failure."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass
class SeriesInfo:
    """One series as QIDO-RS lists it."""

    uid: str
    modality: str
    description: str
    instances: int | None


@dataclass
class DicomwebResult:
    """What `predict_dicomweb` did: the predict result, study UID -> study id, and per study UID
    the SOP Instance UIDs stored (empty without `store`)."""

    predict: PredictResult
    study_ids: dict[str, int]
    stored: dict[str, list[str]] = field(default_factory=dict)


def connect(url: str, timeout: float = TIMEOUT_S) -> DICOMwebClient:
    """A DICOMweb client of `url`, authenticated from the environment (module docstring)."""
    session = requests.Session()
    token, user = os.environ.get(ENV_TOKEN), os.environ.get(ENV_USER)
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    elif user:
        session.auth = (user, os.environ.get(ENV_PASSWORD, ""))
    client = DICOMwebClient(url.rstrip("/"), session=session, timeout=timeout)
    client.set_http_retry_params(
        max_attempts=RETRY_ATTEMPTS, wait_exponential_multiplier=RETRY_WAIT_MS
    )
    return client


def find_series(client: DICOMwebClient, study_uid: str) -> list[SeriesInfo]:
    """QIDO-RS: the series of a study (DicomwebError when the server has no such study)."""
    found = _call(
        client,
        f"QIDO-RS of study {study_uid}",
        lambda: client.search_for_series(study_instance_uid=study_uid),
        not_found=[],
    )
    if not found:
        raise DicomwebError([f"{client.base_url}: no study {study_uid} on the server"])
    out = []
    for item in found:
        ds = Dataset.from_json(item)
        n = ds.get("NumberOfSeriesRelatedInstances")
        out.append(
            SeriesInfo(
                str(ds.SeriesInstanceUID),
                str(ds.get("Modality") or ""),
                str(ds.get("SeriesDescription") or ""),
                None if n in (None, "") else int(n),
            )
        )
    return out


def image_series(study_uid: str, series: Sequence[SeriesInfo]) -> list[SeriesInfo]:
    """The series to fetch (`IMAGE_MODALITIES`); DicomwebError when there is none."""
    wanted = [s for s in series if s.modality in IMAGE_MODALITIES]
    if not wanted:
        kinds = ", ".join(sorted({s.modality for s in series}))
        raise DicomwebError([f"study {study_uid}: no MR series to grade (it holds {kinds})"])
    return wanted


def fetch_studies(
    client: DICOMwebClient, plans: dict[str, list[SeriesInfo]], dest: Path, progress: bool = True
) -> int:
    """WADO-RS: every planned series into `dest/<study>/<series>/<sop>.dcm`; returns the count."""
    total = sum(s.instances or 0 for series in plans.values() for s in series) or None
    with tqdm(total=total, desc="fetch", unit="instance", disable=not progress) as bar:
        for study_uid, series in plans.items():
            for s in series:
                _call(
                    client,
                    f"WADO-RS of series {s.uid}",
                    lambda s=s, study_uid=study_uid: _save_series(
                        client, study_uid, s.uid, dest / study_uid / s.uid, bar
                    ),
                )
        return bar.n


def _save_series(
    client: DICOMwebClient, study_uid: str, series_uid: str, folder: Path, bar: tqdm
) -> None:
    """Stream one series' instances into `folder`, one file each, counting them on `bar`."""
    for ds in client.iter_series(study_uid, series_uid, media_types=_ANY_SYNTAX):
        write_with(
            folder / f"{ds.SOPInstanceUID}.dcm",
            lambda tmp, ds=ds: ds.save_as(tmp, enforce_file_format=True),
        )
        bar.update()


def store_study(client: DICOMwebClient, study_uid: str, files: Sequence[Path]) -> list[str]:
    """STOW-RS: store `files` (one request) into the study; returns their SOP Instance UIDs.

    What was stored is then checked with QIDO-RS: a server may answer success for an instance it
    did not keep (Orthanc 1.10 with its DICOMweb plugin 1.7 does so for an instance its filter
    refused). Raises DicomwebError naming the files stored and those refused, with the reasons.
    """
    datasets = [pydicom.dcmread(f) for f in files]
    names = {str(ds.SOPInstanceUID): f.name for ds, f in zip(datasets, files)}
    status = ""
    try:
        response = client.store_instances(datasets, study_instance_uid=study_uid)
    except requests.HTTPError as exc:
        response = _response_dataset(exc.response)
        status = f"HTTP {exc.response.status_code} {exc.response.reason}".strip()
    except requests.RequestException as exc:
        raise DicomwebError(
            [f"{client.base_url}: STOW-RS of study {study_uid} failed ({_short(exc)})"]
        ) from None
    reasons = {
        str(i.ReferencedSOPInstanceUID): _failure(i) for i in response.get("FailedSOPSequence", [])
    }
    series = sorted({str(ds.SeriesInstanceUID) for ds in datasets})
    kept = _instances_on_server(client, study_uid, series)
    if all(u in kept for u in names):
        return list(names)
    refused: dict[str, list[str]] = {}  # reason -> files
    for u, name in names.items():
        if u not in kept:
            refused.setdefault(
                reasons.get(u) or status or "answered as stored, not on the server", []
            ).append(name)
    why = "; ".join(f"{', '.join(files)} ({reason})" for reason, files in refused.items())
    stored = ", ".join(name for u, name in names.items() if u in kept) or "nothing"
    raise DicomwebError(
        [f"{client.base_url}: STOW-RS refused for study {study_uid}: {why}; stored: {stored}"]
    )


def _instances_on_server(client: DICOMwebClient, study_uid: str, series: Sequence[str]) -> set[str]:
    """QIDO-RS: the SOP Instance UIDs the server holds in these series of the study."""
    found: set[str] = set()
    for uid in series:
        items = _call(
            client,
            f"QIDO-RS of series {uid}",
            lambda uid=uid: client.search_for_instances(
                study_instance_uid=study_uid, series_instance_uid=uid
            ),
            not_found=[],
        )
        found.update(str(Dataset.from_json(i).SOPInstanceUID) for i in items)
    return found


def predict_dicomweb(
    run_dir: str | Path,
    url: str,
    study_uids: Sequence[str],
    out_dir: str | Path,
    *,
    store: bool = False,
    progress: bool = True,
    **predict_kwargs: Any,
) -> DicomwebResult:
    """Fetch, predict and (with `store`) store back the studies `study_uids` of the server `url`.

    `predict_kwargs` go to `inference.predict` (workers, tta, device, folds, ...). See the module
    docstring for the steps and the failures raised (`DicomwebError`, one line per problem).
    """
    if not study_uids:
        raise DicomwebError(["give at least one --study StudyInstanceUID"])
    out_dir = Path(out_dir)
    client = connect(url)
    series = {uid: find_series(client, uid) for uid in dict.fromkeys(study_uids)}
    plans = {uid: image_series(uid, s) for uid, s in series.items()}
    fetch_root = out_dir / FETCH_DIR
    shutil.rmtree(fetch_root, ignore_errors=True)
    fetch_studies(client, plans, fetch_root, progress)
    ids = _study_ids(fetch_root)  # as predict will number them (a numeric UID keeps its number)
    result = predict(
        run_dir, fetch_root, out_dir, progress=progress, dicom_out=True, **predict_kwargs
    )
    ids = {uid: ids.get(uid, uid_to_id(uid)) for uid in plans}
    records = {uid: _record(out_dir, sid) for uid, sid in ids.items()}
    failed = result.failed.dropna(subset=["study_id"])
    errors = {uid: failed.reason[failed.study_id == sid].tolist() for uid, sid in ids.items()}
    problems = [p for uid, r in records.items() for p in _problems(uid, r, errors[uid])]
    if problems:
        raise DicomwebError([*problems, f"outputs in {out_dir}, nothing stored"])
    stored: dict[str, list[str]] = {}
    if not store:
        return DicomwebResult(result, ids, stored)
    for uid, record in records.items():
        assert record is not None  # _problems refused the studies without one
        files = [study_dir(out_dir, ids[uid]) / f for f in record["dicom"]["files"]]
        try:
            stored[uid] = store_study(client, uid, files)
        except DicomwebError as exc:
            done = [f"study {u}: all {len(v)} instance(s) stored" for u, v in stored.items()]
            raise DicomwebError([*exc.problems, *done]) from None
    return DicomwebResult(result, ids, stored)


def _study_ids(fetch_root: Path) -> dict[str, int]:
    """Study UID (the folder under `fetch_root`) -> the study id `inference.predict` gives it."""
    found = discover_studies(fetch_root).studies
    return {s.path.relative_to(fetch_root).parts[0]: s.study_id for s in found}


def _record(out_dir: Path, study_id: int) -> dict[str, Any] | None:
    path = study_dir(out_dir, study_id) / "predictions.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _problems(study_uid: str, record: dict[str, Any] | None, errors: Sequence[str]) -> list[str]:
    """Why a study's results must not be stored (empty when they can); `errors` are its rows of
    errors.csv."""
    if record is None:
        return [f"study {study_uid}: no prediction was written"]
    if errors:
        return [f"study {study_uid}: {reason}" for reason in errors]
    missing: dict[str, set[str]] = {}
    for t in record["targets"]:
        if FLAG_MISSING_SERIES in t["flags"]:
            missing.setdefault(SERIES_OF_CONDITION[t["condition"]], set()).add(
                t["condition"].replace("_", " ")
            )
    out = [
        f"study {study_uid}: no {kind} series (needed for {', '.join(sorted(conditions))})"
        for kind, conditions in sorted(missing.items())
    ]
    if not out and not record.get("dicom", {}).get("files"):
        out.append(
            f"study {study_uid}: {record.get('dicom', {}).get('reason', 'no DICOM outputs')}"
        )
    return out


def _call(client: DICOMwebClient, what: str, fn: Callable[[], T], not_found: T | None = None) -> T:
    """`fn()`, with network and HTTP failures turned into a one-line DicomwebError."""
    try:
        return fn()
    except requests.HTTPError as exc:
        code = exc.response.status_code
        if code == 404 and not_found is not None:
            return not_found
        hint = f" (set {ENV_USER} and {ENV_PASSWORD}, or {ENV_TOKEN})" if code in (401, 403) else ""
        raise DicomwebError(
            [f"{client.base_url}: {what} refused: HTTP {code} {exc.response.reason}{hint}"]
        ) from None
    except requests.ConnectionError as exc:
        raise DicomwebError(
            [f"{client.base_url}: cannot reach the DICOMweb server ({_short(exc)})"]
        ) from None
    except requests.RequestException as exc:
        raise DicomwebError([f"{client.base_url}: {what} failed ({_short(exc)})"]) from None


def _response_dataset(response: requests.Response | None) -> Dataset:
    """The STOW-RS response body as a dataset (empty when there is none or it is not JSON)."""
    try:
        return (
            Dataset.from_json(response.json())
            if response is not None and response.content
            else Dataset()
        )
    except ValueError:
        return Dataset()


def _failure(item: Dataset) -> str:
    """A Failed SOP Sequence item's reason, as its code (PS3.18 Table I.2-1) in words when known."""
    code = item.get("FailureReason")
    words = {
        0x0110: "processing failure",
        0x0122: "SOP class not supported",
        0x0124: "not authorized",
        0xA700: "out of resources",
        0xA900: "data set does not match SOP class",
        0xC000: "cannot understand",
        0xC122: "referenced transfer syntax not supported",
    }
    return (
        "no reason given"
        if code is None
        else f"failure reason 0x{int(code):04X} {words.get(int(code), '')}".strip()
    )


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


__all__ = [
    "DicomwebError",
    "DicomwebResult",
    "connect",
    "fetch_studies",
    "find_series",
    "image_series",
    "predict_dicomweb",
    "store_study",
]
