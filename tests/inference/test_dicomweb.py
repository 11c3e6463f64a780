"""`predict --dicomweb URL --study UID [--store]` against a real Orthanc (see conftest.py here): the
round trip, and every failure as one line with exit status 2 and nothing stored."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import ComprehensiveSRStorage
from typer.testing import CliRunner

from spinegrade import cli
from spinegrade.constants import AXIAL_T2, SEVERITIES
from spinegrade.inference.dicomweb import (
    ENV_PASSWORD,
    ENV_TOKEN,
    FETCH_DIR,
    connect,
    find_series,
    store_study,
)
from spinegrade.inference.discover import uid_to_id

from .conftest import FORBIDDEN_TAG, REFUSED_PATIENT, Orthanc, _free_port, copy_study, read_findings


def _source(tiny: dict[str, Any]) -> Path:
    return tiny["data"] / "train_images" / str(tiny["complete"])


def _axial_series(tiny: dict[str, Any]) -> list[str]:
    table = pd.read_csv(tiny["data"] / "train_series_descriptions.csv")
    rows = table[(table.study_id == tiny["complete"]) & (table.series_description == AXIAL_T2)]
    return [str(s) for s in rows.series_id]


def _main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    """Run `spinegrade ARGS` as the console script does: (exit status, the one error line).

    Fails unless stderr, the progress bars aside, is exactly one line `error: ...`.
    """
    monkeypatch.setattr("sys.argv", ["spinegrade", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    err = capsys.readouterr().err
    lines = [
        line for line in err.split("\n") if line and not line.startswith("\r")
    ]  # bars start with \r
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return int(info.value.code or 0), lines[0]


def _outputs(pacs: Orthanc, study_uid: str) -> list[pydicom.Dataset]:
    return [s for s in pacs.series(study_uid) if s.Modality in ("SR", "OT")]


def test_round_trip_through_orthanc(tiny: dict[str, Any], pacs: Orthanc, tmp_path: Path) -> None:
    """STOW a synthetic study, predict it by UID, store the SR and overlays back, find them with
    QIDO in the same study, and read the stored SR: it is the submission, on the study's images."""
    uid, files = copy_study(
        _source(tiny), tmp_path / "src", "round-trip", PatientName="Roe^Richard"
    )
    pacs.stow(files)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli.app,
        [
            "predict",
            str(tiny["run"]),
            "--dicomweb",
            pacs.dicomweb,
            "--study",
            uid,
            "--out",
            str(out),
            "--store",
            "--workers",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "4 instance(s) stored" in result.output
    fetched = sorted((out / FETCH_DIR / uid).rglob("*.dcm"))
    assert len(fetched) == len(files)  # every MR instance, nothing else

    stored = {s.Modality: s for s in _outputs(pacs, uid)}
    assert sorted(stored) == ["OT", "SR"]
    assert int(stored["SR"].NumberOfSeriesRelatedInstances) == 1
    assert int(stored["OT"].NumberOfSeriesRelatedInstances) == 3
    client = pacs.client()
    (sr,) = client.retrieve_series(uid, stored["SR"].SeriesInstanceUID)
    assert sr.SOPClassUID == ComprehensiveSRStorage and str(sr.PatientName) == "Roe^Richard"

    sid = uid_to_id(uid)
    sub = pd.read_csv(out / "submission.csv").set_index("row_id")
    record = json.loads((out / "studies" / str(sid) / "predictions.json").read_text())
    findings = read_findings(sr)
    assert len(findings) == 25
    on_server = {
        pydicom.Dataset.from_json(i).SOPInstanceUID: pydicom.Dataset.from_json(i)
        for i in client.search_for_instances(study_instance_uid=uid)
    }
    for t in record["targets"]:
        f = findings[t["row_id"]]
        row = sub.loc[t["row_id"], list(SEVERITIES)].to_numpy(dtype=float)
        assert f.severity == SEVERITIES[int(np.argmax(row))]
        np.testing.assert_allclose([f.probabilities[s] for s in SEVERITIES], row, rtol=1e-5)
        if t["series_id"] is not None:
            source = on_server[f.sop_instance_uid]  # an instance of the source study, on the server
            assert int(source.InstanceNumber) == t["instance_number"] and source.Modality == "MR"
            np.testing.assert_allclose(
                f.point, [t["pixel"]["x"] + 0.5, t["pixel"]["y"] + 0.5], atol=1e-4
            )

    # storing the same objects again keeps one copy: the UIDs are the same
    dicom = out / "studies" / str(sid)
    assert (
        len(store_study(connect(pacs.dicomweb), uid, [dicom / f for f in record["dicom"]["files"]]))
        == 4
    )
    assert sorted(int(s.NumberOfSeriesRelatedInstances) for s in _outputs(pacs, uid)) == [1, 3]


def test_server_down_is_one_line(
    tiny: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    url = f"http://127.0.0.1:{_free_port()}/dicom-web"  # nothing listens there
    code, err = _main(
        monkeypatch,
        capsys,
        "predict",
        str(tiny["run"]),
        "--dicomweb",
        url,
        "--study",
        "1.2.3",
        "--out",
        str(tmp_path / "out"),
    )
    assert code == 2 and "cannot reach the DICOMweb server" in err


def test_unknown_study_is_one_line(
    tiny: dict[str, Any],
    pacs: Orthanc,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    code, err = _main(
        monkeypatch,
        capsys,
        "predict",
        str(tiny["run"]),
        "--dicomweb",
        pacs.dicomweb,
        "--study",
        "1.2.826.0.1.3680043.8.498.1",
        "--out",
        str(tmp_path / "out"),
        "--store",
    )
    assert code == 2
    assert "no study 1.2.826.0.1.3680043.8.498.1 on the server" in err


def test_wrong_password_is_one_line_naming_the_variables(
    tiny: dict[str, Any],
    pacs: Orthanc,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv(ENV_PASSWORD, "wrong")
    code, err = _main(
        monkeypatch,
        capsys,
        "predict",
        str(tiny["run"]),
        "--dicomweb",
        pacs.dicomweb,
        "--study",
        "1.2.3",
        "--out",
        str(tmp_path / "out"),
    )
    assert code == 2 and "HTTP 401" in err and ENV_PASSWORD in err


def test_study_without_a_needed_series_stores_nothing(
    tiny: dict[str, Any],
    pacs: Orthanc,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    uid, files = copy_study(
        _source(tiny), tmp_path / "src", "no-axial", drop_series=_axial_series(tiny)
    )
    pacs.stow(files)
    out = tmp_path / "out"
    code, err = _main(
        monkeypatch,
        capsys,
        "predict",
        str(tiny["run"]),
        "--dicomweb",
        pacs.dicomweb,
        "--study",
        uid,
        "--out",
        str(out),
        "--store",
        "--workers",
        "0",
    )
    assert code == 2
    assert f"study {uid}: no Axial T2 series (needed for left subarticular stenosis" in err
    assert "nothing stored" in err and _outputs(pacs, uid) == []
    assert (
        out / "studies" / str(uid_to_id(uid)) / "dicom" / "sr.dcm"
    ).is_file()  # built, kept here


def test_stow_refused_says_what_was_stored(
    tiny: dict[str, Any],
    pacs: Orthanc,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """Refused whole (HTTP 403 for the second study, after the first was stored) and part-way
    (the SR dropped by the server's filter although it answered "stored")."""
    first, files_a = copy_study(_source(tiny), tmp_path / "a", "stored-first")
    forbidden, files_b = copy_study(_source(tiny), tmp_path / "b", FORBIDDEN_TAG)
    partial, files_c = copy_study(
        _source(tiny), tmp_path / "c", "part-way", PatientID=REFUSED_PATIENT
    )
    for files in (files_a, files_b, files_c):
        pacs.stow(files)
    run = ["predict", str(tiny["run"]), "--dicomweb", pacs.dicomweb, "--store", "--workers", "0"]

    code, err = _main(
        monkeypatch,
        capsys,
        *run,
        "--study",
        first,
        "--study",
        forbidden,
        "--out",
        str(tmp_path / "o1"),
    )
    assert code == 2
    assert f"STOW-RS refused for study {forbidden}: sr.dcm, overlay_" in err and "(HTTP 403" in err
    assert "stored: nothing" in err and f"study {first}: all 4 instance(s) stored" in err
    assert len(_outputs(pacs, first)) == 2 and _outputs(pacs, forbidden) == []

    code, err = _main(monkeypatch, capsys, *run, "--study", partial, "--out", str(tmp_path / "o2"))
    assert code == 2
    assert (
        f"STOW-RS refused for study {partial}: sr.dcm (answered as stored, not on the server)"
        in err
    )
    assert "stored: overlay_sagittal_t2.dcm, overlay_sagittal_t1.dcm, overlay_axial_t2.dcm" in err
    assert [s.Modality for s in _outputs(pacs, partial)] == ["OT"]


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every GET with an empty JSON list and keeps the Authorization headers it saw."""

    seen: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        type(self).seen.append(self.headers.get("Authorization"))
        body = b"[]"
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Recorder.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_bearer_token_from_the_environment(recorder: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_TOKEN, "tok-123")
    with pytest.raises(Exception, match="no study 1.2.3 on the server"):
        find_series(connect(recorder), "1.2.3")
    assert _Recorder.seen == ["Bearer tok-123"]
    monkeypatch.delenv(ENV_TOKEN)
    with pytest.raises(Exception, match="no study"):
        find_series(connect(recorder), "1.2.3")
    assert _Recorder.seen[-1] is None  # anonymous without credentials


def test_cli_refuses_a_folder_and_a_server_together(
    tiny: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    base = ["predict", str(tiny["run"]), "--out", str(tmp_path / "out")]
    code, err = _main(monkeypatch, capsys, *base)
    assert code == 2 and "either a STUDIES folder or --dicomweb" in err
    code, err = _main(
        monkeypatch, capsys, *base[:2], str(tmp_path), *base[2:], "--dicomweb", "http://x"
    )
    assert code == 2 and "either a STUDIES folder or --dicomweb" in err
    code, err = _main(monkeypatch, capsys, *base[:2], str(tmp_path), *base[2:], "--store")
    assert code == 2 and "--study and --store go with --dicomweb" in err


def test_fetched_studies_are_numbered_as_predict_does(make_series: Any, tmp_path: Path) -> None:
    """Alone in the fetch folder, a plain-number StudyInstanceUID (RSNA's are) is a numeric study
    folder, which predict numbers by its name; any other UID gets `uid_to_id`. The records are
    looked for under those ids."""
    from spinegrade.dicom import make_uid
    from spinegrade.inference.dicomweb import _study_ids

    other = make_uid("fetched")
    for study, expected in (("100206310", 100206310), (other, uid_to_id(other))):
        fetch = tmp_path / study / FETCH_DIR
        series = make_uid("fetched-series", study)
        make_series(fetch / study / series, study_uid=study, series_uid=series)
        assert _study_ids(fetch) == {study: expected}
