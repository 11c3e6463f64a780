"""Synthetic RSNA studies: layout, geometry of each label point, laterality, determinism, oracle."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from spinegrade.cli import app
from spinegrade.constants import AXIAL_T2, SAGITTAL_T1, SAGITTAL_T2, TARGET_COLUMNS, TARGETS, row_id
from spinegrade.data.synthetic import LabelRows, ReaderModel, Tissue, generate, make_phantom
from spinegrade.data.synthetic.generate import (
    ANNOTATOR_JITTER_MM,
    StudyJob,
    draw_study,
    find_labels_root,
    label_scores,
    make_study,
    real_layouts,
)
from spinegrade.data.synthetic.labels import READER_NOISE, real_labels_frame, simulate_scores
from spinegrade.data.synthetic.phantom import narrowing
from spinegrade.data.synthetic.render import render_series
from spinegrade.data.tables import load_tables
from spinegrade.dicom import load_series, load_study, make_uid, write_series
from spinegrade.errors import DataError
from spinegrade.metrics import constant_prior_submission, score

SEED = 11
#: Tissues a label point of each condition may land on (the point is the root inside the space).
ALLOWED = {
    "spinal_canal_stenosis": {Tissue.CSF, Tissue.NERVE, Tissue.CORD},
    "left_neural_foraminal_narrowing": {Tissue.FORAMEN_FAT, Tissue.NERVE},
    "right_neural_foraminal_narrowing": {Tissue.FORAMEN_FAT, Tissue.NERVE},
    "left_subarticular_stenosis": {Tissue.CSF, Tissue.NERVE},
    "right_subarticular_stenosis": {Tissue.CSF, Tissue.NERVE},
}


@pytest.fixture(scope="module")
def rows() -> LabelRows:
    return LabelRows.load(find_labels_root())


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """Two small studies, generated once for the module."""
    out = tmp_path_factory.mktemp("synth") / "a"
    return out, generate(out, 2, SEED, progress=False)


def _hash_folder(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _job(
    out: Path, index: int, rows: LabelRows, counts: tuple[int, int, int] | None = None
) -> StudyJob:
    root = find_labels_root()
    ids = (
        pd.read_csv(out / "train.csv")["study_id"].tolist()
        if (out / "train.csv").exists()
        else [123 + index]
    )
    return StudyJob(
        out,
        SEED,
        index,
        int(ids[index]) if index < len(ids) else 123,
        "small",
        rows.codes,
        real_layouts(root),
        READER_NOISE,
        counts,
    )


def test_layout_reads_back_without_warnings(synth: tuple[Path, object]) -> None:
    out, summary = synth
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tables = load_tables(out)
        studies = [
            load_study(out / "train_images" / str(s), tables.series) for s in tables.labels.study_id
        ]
    assert list(tables.labels.columns) == ["study_id", *TARGET_COLUMNS]
    raw = pd.read_csv(out / "train.csv", dtype=str, keep_default_na=False)
    assert set(raw[list(TARGET_COLUMNS)].to_numpy().ravel()) <= {
        "Normal/Mild",
        "Moderate",
        "Severe",
        "",
    }
    coords = pd.read_csv(out / "train_label_coordinates.csv")
    assert set(coords.condition) <= {
        "Spinal Canal Stenosis",
        "Left Neural Foraminal Narrowing",
        "Right Neural Foraminal Narrowing",
        "Left Subarticular Stenosis",
        "Right Subarticular Stenosis",
    }
    assert set(coords.level) <= {"L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1"}
    for study in studies:
        assert not study.skipped
        for series in study.series:
            assert series.series_type in (SAGITTAL_T1, SAGITTAL_T2, AXIAL_T2)
    oracle = pd.read_csv(out / "oracle.csv")
    assert oracle.row_id.tolist() == [
        row_id(s, c, lv) for s in tables.labels.study_id for c, lv in TARGETS
    ]
    assert np.allclose(oracle[["normal_mild", "moderate", "severe"]].sum(axis=1), 1.0, atol=1e-4)
    assert summary.n_studies == 2 and summary.bytes_on_disk > 0


def test_every_coordinate_lands_on_its_structure(
    synth: tuple[Path, object], rows: LabelRows
) -> None:
    out, _ = synth
    tables = load_tables(out)
    labelled = 0
    for index, study_id in enumerate(tables.labels.study_id):
        draw = draw_study(_job(out, index, rows))
        study = load_study(out / "train_images" / str(study_id), tables.series)
        mine = tables.coordinates[tables.coordinates.study_id == study_id]
        n_labelled = int((draw.codes >= 0).sum())
        assert len(mine) == n_labelled  # every labelled target has a point (all series exist here)
        for hit in mine.itertuples():
            series = next(s for s in study.series if s.series_id == hit.series_id)
            volume = next(v for v in series.stacks if hit.instance_number in v.instance_numbers)
            world = volume.world_of_pixel(hit.instance_number, hit.x, hit.y)
            key = draw.phantom.keypoints[(hit.condition, hit.level)]
            normal = volume.normal
            off_plane = abs(float((key - world) @ normal))
            in_plane = np.linalg.norm((key - world) - ((key - world) @ normal) * normal)
            assert in_plane <= 2 * ANNOTATOR_JITTER_MM * 1.5 + 0.05, (hit, in_plane)
            assert off_plane <= volume.spacing[2] / 2 + 0.05, (hit, off_plane)
            on_slice = (
                key - ((key - world) @ normal) * normal
            )  # the point itself, moved into the slice
            tissue = Tissue(int(draw.phantom.tissue_at(on_slice[None])[0]))
            assert tissue in ALLOWED[hit.condition], (hit.condition, hit.level, tissue)
            labelled += 1
    assert labelled > 30


def test_left_is_patient_left(synth: tuple[Path, object]) -> None:
    out, _ = synth
    tables = load_tables(out)
    coords = tables.coordinates
    for study_id in tables.labels.study_id:
        study = load_study(out / "train_images" / str(study_id), tables.series)
        mine = coords[coords.study_id == study_id]

        def world(hit: pd.Series) -> np.ndarray:
            series = next(s for s in study.series if s.series_id == hit.series_id)
            volume = next(v for v in series.stacks if hit.instance_number in v.instance_numbers)
            return volume.world_of_pixel(hit.instance_number, hit.x, hit.y)

        for kind in ("neural_foraminal_narrowing", "subarticular_stenosis"):
            left = mine[mine.condition == f"left_{kind}"].set_index("level")
            right = mine[mine.condition == f"right_{kind}"].set_index("level")
            for level in left.index.intersection(right.index):
                assert (
                    world(left.loc[level])[0] > world(right.loc[level])[0] + 5.0
                )  # LPS: +x = left
                same_series = left.loc[level].series_id == right.loc[level].series_id
                if (
                    kind == "subarticular_stenosis" and same_series
                ):  # axial r ~ +x: larger column = left
                    assert left.loc[level].x > right.loc[level].x


def test_reversed_instance_order_sorts_spatially(tmp_path: Path, rows: LabelRows) -> None:
    draw = draw_study(_job(tmp_path, 0, rows, counts=(1, 0, 0)))
    plan = draw.plans[0]
    plan.instance_numbers = [np.arange(plan.n_slices, 0, -1)]  # instance 1 = last slice in space
    stack = plan.stacks[0]
    pixels = render_series(draw.phantom, plan, np.random.default_rng(0))[0]
    write_series(
        tmp_path / "s",
        pixels,
        origin=stack.positions[0],
        row_dir=stack.row_dir,
        col_dir=stack.col_dir,
        pixel_spacing=stack.spacing,
        slice_positions=stack.positions,
        slice_thickness=stack.thickness,
        series_description=SAGITTAL_T1,
        study_uid=make_uid("t"),
        series_uid=make_uid("t", 1),
        series_number=1,
        instance_numbers=plan.instance_numbers[0].tolist(),
    )
    volume = load_series(tmp_path / "s")
    assert volume.instance_numbers.tolist() == plan.instance_numbers[0].tolist()
    assert np.array_equal(volume.pixels, pixels)
    key = draw.phantom.keypoints[("left_neural_foraminal_narrowing", "l4_l5")]
    instance, x, y, dist = plan.project(key)
    assert np.linalg.norm(volume.world_of_pixel(instance, x, y) - key) == pytest.approx(
        dist, abs=1e-3
    )


def test_missing_series_and_two_axials(tmp_path: Path, rows: LabelRows) -> None:
    result = make_study(_job(tmp_path, 0, rows, counts=(0, 1, 2)))
    kinds = [d for _, d in result.series]
    assert kinds.count(AXIAL_T2) == 2 and SAGITTAL_T1 not in kinds
    conditions = {c for _, _, c, _, _, _ in result.coords}
    assert not any("Foraminal" in c for c in conditions)  # no Sagittal T1: no foraminal points
    study = load_study(tmp_path / "train_images" / str(result.study_id))
    assert sorted(s.series_type for s in study.series) == sorted(kinds)


def test_same_seed_same_bytes_and_other_seed_differs(
    synth: tuple[Path, object], tmp_path: Path
) -> None:
    out, _ = synth
    again = generate(tmp_path / "b", 2, SEED, workers=2, progress=False)
    assert _hash_folder(again.out_dir) == _hash_folder(out)
    runner = CliRunner()
    res = runner.invoke(
        app, ["synth", "--out", str(tmp_path / "c"), "--studies", "1", "--seed", str(SEED + 1)]
    )
    assert res.exit_code == 0, res.output
    assert "oracle" in res.output and "constant prior" in res.output
    assert (tmp_path / "c" / "oracle.csv").is_file()
    assert _hash_folder(tmp_path / "c" / "train_images") != _hash_folder(out / "train_images")


def test_refuses_non_empty_folder_and_bad_size(synth: tuple[Path, object], tmp_path: Path) -> None:
    out, _ = synth
    with pytest.raises(DataError, match="not empty"):
        generate(out, 1, 0)
    with pytest.raises(DataError, match="unknown size"):
        generate(tmp_path / "x", 1, 0, size="huge")
    res = CliRunner().invoke(app, ["synth", "--out", str(out), "--studies", "1"])
    assert res.exit_code != 0


def test_oracle_file_beats_constant_prior(synth: tuple[Path, object], rows: LabelRows) -> None:
    out, summary = synth
    labels = load_tables(out).labels
    oracle = score(labels, pd.read_csv(out / "oracle.csv")).score
    prior = score(labels, constant_prior_submission(real_labels_frame(rows), labels.study_id)).score
    joint = score(labels, pd.read_csv(out / "oracle_joint.csv")).score
    assert oracle == pytest.approx(summary.oracle_score, abs=1e-4)
    assert joint == pytest.approx(summary.oracle_joint_score, abs=1e-4)
    assert prior == pytest.approx(summary.prior_score, abs=1e-4)
    assert oracle < prior  # per target vs prior needs more studies: test_oracles_on_label_draws
    quick = label_scores(2, SEED)  # the same figures from the label draws alone
    assert quick["oracle_score"] == pytest.approx(summary.oracle_score, abs=1e-9)
    assert quick["prior_score"] == pytest.approx(summary.prior_score, abs=1e-9)


def test_oracles_on_label_draws(rows: LabelRows) -> None:
    """Label level (no images), 60 studies: joint oracle < per-target oracle (oracle.csv) < constant prior, and
    the latent model's label marginal equals the real class frequencies."""
    scores = simulate_scores(rows, READER_NOISE, n_studies=60, seed=0)
    assert scores["joint"] < scores["per_target"] < scores["prior"]
    assert scores["joint"] < scores["joint_loo"]  # its lead is the study's own real row
    model = ReaderModel.from_priors(rows.priors())
    marginal = model.class_probs(
        np.random.default_rng(1).standard_normal((20000, 1)).repeat(25, 1)
    ).mean(0)
    assert np.allclose(marginal, rows.priors(), atol=0.01)


def test_severity_is_visible_where_the_point_is() -> None:
    """Around each keypoint, in the plane it is graded on, the free space (CSF, foraminal fat)
    shrinks steadily as the latent severity z grows."""

    def free_area(z_value: float, condition: str, plane: str, radius: float) -> float:
        z = np.zeros(25)
        z[TARGETS.index((condition, "l3_l4"))] = z_value
        ph = make_phantom(np.random.default_rng(5), z)
        key = ph.keypoints[(condition, "l3_l4")]
        u, v = ph.spine_axes(ph.spine_coords(key[None])[1][0])
        e1 = u if plane == "sagittal" else np.array([1.0, 0.0, 0.0])
        g = np.linspace(-radius, radius, 81)
        a, b = (m.ravel() for m in np.meshgrid(g, g))
        keep = a**2 + b**2 <= radius**2
        pts = key + a[keep, None] * e1 + b[keep, None] * v
        cell = (g[1] - g[0]) ** 2
        return float(np.isin(ph.tissue_at(pts), [Tissue.CSF, Tissue.FORAMEN_FAT]).sum() * cell)

    for condition, plane, radius in (
        ("spinal_canal_stenosis", "sagittal", 10.0),
        ("left_neural_foraminal_narrowing", "sagittal", 10.0),
        ("right_subarticular_stenosis", "axial", 6.0),
    ):
        areas = [free_area(z, condition, plane, radius) for z in (-1.5, 0.5, 1.2, 2.5)]
        assert areas[0] >= areas[1] > areas[2] > areas[3], (condition, areas)
        assert areas[3] < 0.6 * areas[0], (condition, areas)  # severe is clearly visible
    assert np.all(np.diff(narrowing(np.linspace(-3, 3, 50))) > 0)
