"""Every command on a real partial download: `../shared/data/rsna_dicom` is a user's DATA_ROOT with
the full real tables and the images of three studies (two labelled training studies and the public
test study). Each command must say what it has and go on."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from spinegrade.cli import main
from spinegrade.constants import TARGETS

TRAINING_STUDIES = (100206310, 1002894806)
TEST_STUDY = 44036939


def _cli(args: list[object], monkeypatch: pytest.MonkeyPatch, capsys) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sys, "argv", ["spinegrade", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def download(shared_data: Callable[[str], Path]) -> Path:
    return shared_data("rsna_dicom")


def test_validate_says_how_many_studies_have_images(download: Path, monkeypatch, capsys) -> None:
    code, out, _ = _cli(["validate", download], monkeypatch, capsys)
    assert code == 0, out
    assert "images: 2 of 1,975 studies have a folder in train_images/ (a partial download" in out
    code, out, _ = _cli(["validate", download, "--split", "test"], monkeypatch, capsys)
    assert code == 0 and "images: 1 of 1 studies" in out, out


def test_inspect_draws_the_real_points_and_lists_the_dicom_facts(
    download: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    code, out, err = _cli(
        ["inspect", download, "--out", tmp_path, "--workers", "0"], monkeypatch, capsys
    )
    assert code == 0, err
    facts = json.loads((tmp_path / "facts.json").read_text())
    assert facts["images"]["coverage"]["with_images"] == 2
    assert facts["images"]["series_read"] == 6 and facts["images"]["header_failures"] == 0
    # a partial download is not a problem: only series missing inside a downloaded study would be
    assert "described series without readable images" not in facts["problems"]
    for sid in TRAINING_STUDIES:
        for name in ("sagittal_t2", "sagittal_t1", "axial_t2"):
            assert (tmp_path / f"labelled_{sid}_{name}.png").read_bytes()[:4] == b"\x89PNG"
    page = (tmp_path / "report.html").read_text()
    for text in (
        "Labelled points on the images",
        "RLE Lossless",
        "Enhanced MR Image Storage",
        "patient right",
        "a partial download",
    ):
        assert text in page, text


@pytest.fixture(scope="module")
def trained(download: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """`train -c tiny` on the two training studies that have images, a few steps."""
    from spinegrade.config import load_config
    from spinegrade.cv.train import train

    run = tmp_path_factory.mktemp("real") / "run"
    cfg = load_config("tiny", ["localize.optim.epochs=1", "grade.optim.epochs=2"])
    return run, train(download, run, cfg, progress=False)


@pytest.mark.slow
def test_train_uses_the_studies_with_images_and_names_the_others(trained, download: Path) -> None:
    run, summary = trained
    assert summary.folds_trained == [0, 1] and not summary.failed_studies
    left_out = json.loads((run / "run.json").read_text())["studies_left_out_without_images"]
    labels = pd.read_csv(download / "train.csv")
    assert len(left_out) == len(labels) - 2 and not set(TRAINING_STUDIES) & set(left_out)
    assert sorted(pd.read_csv(run / "folds.csv").study_id) == sorted(TRAINING_STUDIES)
    assert summary.metrics["studies"] == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    ("images", "studies"),
    [("test_images", [TEST_STUDY]), ("train_images", sorted(TRAINING_STUDIES))],
)
def test_predict_on_real_images_writes_rows_overlays_and_reports(
    trained, download: Path, tmp_path: Path, images: str, studies: list[int], monkeypatch, capsys
) -> None:
    run, _ = trained
    code, out, err = _cli(
        ["predict", run, download / images, "--out", tmp_path, "--workers", "0"],
        monkeypatch,
        capsys,
    )
    assert code == 0, err
    sub = pd.read_csv(tmp_path / "submission.csv")
    assert len(sub) == len(TARGETS) * len(studies)
    assert pd.read_csv(tmp_path / "errors.csv").empty
    for sid in studies:
        folder = tmp_path / "studies" / str(sid)
        record = json.loads((folder / "predictions.json").read_text())
        assert record["status"] == "ok" and len(record["targets"]) == 25
        assert {s["series_type"] for s in record["series"]} == {
            "Sagittal T1",
            "Sagittal T2/STIR",
            "Axial T2",
        }
        assert {p.name for p in folder.glob("*.png")} == {
            "sagittal_t2.png",
            "sagittal_t1.png",
            "axial_t2.png",
        }
        assert (folder / "report.html").is_file()
