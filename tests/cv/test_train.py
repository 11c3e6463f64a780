"""`spinegrade train` / `evaluate`: run folder, metrics from saved OOF files, resuming, e2e."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from spinegrade.cli import main
from spinegrade.config import load_config, save_config
from spinegrade.constants import (
    CONDITION_LABELS,
    CONDITIONS,
    LEVEL_LABELS,
    SEVERITIES,
    TARGET_COLUMNS,
    TARGETS,
)
from spinegrade.cv.evaluate import evaluate
from spinegrade.cv.folder import (
    CALIBRATION_JSON,
    FOLD_JSON,
    FORMAT_VERSION,
    LOCALIZATION_ERRORS,
    OOF_CALIBRATED,
    OOF_POINTS,
    OOF_PREDICTIONS,
    PRIOR_CSV,
    RunFolder,
)
from spinegrade.cv.train import RunSummary, merge_oof, prior_table, train
from spinegrade.errors import ConfigError
from spinegrade.metrics import constant_prior_submission, score, submission_rows
from tests.grade.conftest import grade_data  # noqa: F401 - the 8-study RSNA folder fixture

FIGURES = (
    "learning_curves.png",
    "condition_level_logloss.png",
    "localization.png",
    *(f"confusion_{c}.png" for c in CONDITIONS),
    *(f"roc_{g}.png" for g in ("spinal", "foraminal", "subarticular")),
)


# --- a hand-made run folder (no training) ---------------------------------------------------------


def _labels(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    codes = rng.choice(3, size=(n, len(TARGET_COLUMNS)), p=[0.7, 0.2, 0.1])
    labels = pd.DataFrame(np.asarray(SEVERITIES, dtype=object)[codes], columns=list(TARGET_COLUMNS))
    labels.iloc[0, 3] = np.nan  # a blank label is not scored
    labels.insert(0, "study_id", 1000 + np.arange(n))
    return labels


def _submission(ids: list[int], rng: np.random.Generator) -> pd.DataFrame:
    from spinegrade.constants import row_id

    probs = rng.dirichlet([3, 1, 1], size=len(ids) * len(TARGETS))
    rows = [row_id(s, c, lv) for s in ids for c, lv in TARGETS]
    return pd.DataFrame({"row_id": rows, **{s: probs[:, i] for i, s in enumerate(SEVERITIES)}})


def _loc_errors(ids: list[int], rng: np.random.Generator) -> pd.DataFrame:
    rows = [
        (s, c, lv, True, rng.uniform(0, 4), int(rng.integers(0, 2)), True, False, who)
        for s in ids
        for c, lv in TARGETS
        for who in ("model", "baseline")
    ]
    return pd.DataFrame(
        rows,
        columns=[
            "study_id",
            "condition",
            "level",
            "located",
            "inplane_mm",
            "slice_error",
            "level_ok",
            "swap",
            "who",
        ],
    )


@pytest.fixture
def hand_run(tmp_path: Path) -> tuple[Path, Path, pd.DataFrame]:
    """Two complete folds of 4 studies each written by hand, and a data root with oracle.csv."""
    rng = np.random.default_rng(0)
    labels = _labels(8, seed=1)
    ids = labels["study_id"].tolist()
    folds = pd.DataFrame({"study_id": ids, "fold": [0, 1] * 4})
    run, root = tmp_path / "run", tmp_path / "data"
    root.mkdir()
    _submission(ids, rng).to_csv(root / "oracle.csv", index=False)
    run.mkdir()
    save_config(load_config("tiny"), run / "config.yaml")
    (run / "run.json").write_text(json.dumps({"format": FORMAT_VERSION}))
    folds.to_csv(run / "folds.csv", index=False)
    for k in (0, 1):
        held = folds.loc[folds.fold == k, "study_id"].tolist()
        fdir = run / f"fold_{k}"
        (fdir / "grader").mkdir(parents=True)
        prior_table(labels[labels.study_id.isin(folds.study_id[folds.fold != k])]).to_csv(
            fdir / PRIOR_CSV, index=False
        )
        _submission(held, rng).to_csv(fdir / OOF_PREDICTIONS, index=False)
        pd.DataFrame(
            {
                "study_id": np.repeat(held, 25),
                "condition": [CONDITION_LABELS[c] for c, _ in TARGETS] * len(held),
                "level": [LEVEL_LABELS[lv] for _, lv in TARGETS] * len(held),
                "graded": True,
                "reason": "",
            }
        ).to_csv(fdir / OOF_POINTS, index=False)
        _loc_errors(held, rng).to_csv(fdir / LOCALIZATION_ERRORS, index=False)
        (fdir / "grader" / "history.json").write_text(
            json.dumps(
                [
                    {"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "select_loss": 1.1 / e}
                    for e in (1, 2, 3)
                ]
            )
        )
        (fdir / FOLD_JSON).write_text("{}")
    merge_oof(RunFolder(run))
    return run, root, labels


def test_evaluate_recomputes_metrics_from_saved_files(
    hand_run: tuple[Path, Path, pd.DataFrame],
) -> None:
    run, root, labels = hand_run
    metrics = evaluate(run, labels, data_root=root)
    raw, calibrated = pd.read_csv(run / OOF_PREDICTIONS), pd.read_csv(run / OOF_CALIBRATED)
    assert metrics["model"]["score"]["score"] == pytest.approx(score(labels, calibrated).score)
    assert metrics["model_uncalibrated"]["score"] == pytest.approx(score(labels, raw).score)
    # random predictions: the cross-fitted temperatures flatten them, which can only help here
    assert metrics["model"]["score"]["score"] < metrics["model_uncalibrated"]["score"]
    temps = json.loads((run / CALIBRATION_JSON).read_text())
    assert set(temps["folds"]) == {"0", "1"} and metrics["temperatures"] == temps["folds"]
    oracle = pd.read_csv(root / "oracle.csv")
    assert metrics["oracle"]["score"] == pytest.approx(score(labels, oracle).score)
    folds = pd.read_csv(run / "folds.csv")
    prior = pd.concat(
        [
            submission_rows(
                s,
                prior_table(labels[labels.study_id.isin(folds.study_id[folds.fold != k])])[
                    list(SEVERITIES)
                ].to_numpy(),
            )
            for k in (0, 1)
            for s in folds.study_id[folds.fold == k]
        ]
    )
    assert metrics["prior"]["score"] == pytest.approx(score(labels, prior).score)
    assert metrics["prior_in_sample"]["score"] == pytest.approx(
        score(labels, constant_prior_submission(labels)).score
    )
    assert metrics["prior"]["score"] > metrics["prior_in_sample"]["score"]  # fitted out of sample
    assert metrics["ratio_to_oracle"] == pytest.approx(
        metrics["model"]["score"]["score"] / metrics["oracle"]["score"]
    )
    assert set(metrics["per_fold"]) == {"0", "1"} and metrics["studies"] == 8
    assert (
        json.loads((run / "metrics.json").read_text())["model"]["score"]
        == metrics["model"]["score"]
    )
    loc = json.loads((run / "localization.json").read_text())
    errors = pd.concat([pd.read_csv(run / f"fold_{k}" / LOCALIZATION_ERRORS) for k in (0, 1)])
    model = errors[errors.who == "model"]
    assert loc["model"]["overall"]["inplane_mm_median"] == pytest.approx(model.inplane_mm.median())
    assert loc["model"]["overall"]["slice_exact"] == pytest.approx((model.slice_error == 0).mean())
    for name in FIGURES:
        assert (run / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_evaluate_of_a_partial_run_covers_and_names_its_folds(
    hand_run: tuple[Path, Path, pd.DataFrame],
) -> None:
    run, root, labels = hand_run
    (run / "fold_1" / FOLD_JSON).unlink()
    assert merge_oof(RunFolder(run)) == [0] == RunFolder(run).completed_folds()
    metrics = evaluate(run, labels, data_root=root)
    assert metrics["studies"] == 4 and metrics["folds"] == [0]
    assert "only folds [0] of 2" in metrics["coverage"]
    held = labels[labels.study_id.isin(pd.read_csv(run / "folds.csv").query("fold == 0").study_id)]
    assert metrics["model"]["score"]["score"] == pytest.approx(
        score(held, pd.read_csv(run / OOF_PREDICTIONS)).score
    )


def test_prior_table_is_the_smoothed_weighted_class_frequency(tmp_path: Path) -> None:
    labels = pd.DataFrame({"study_id": [1, 2, 3], **{c: "normal_mild" for c in TARGET_COLUMNS}})
    labels["spinal_canal_stenosis_l1_l2"] = [
        "normal_mild",
        "normal_mild",
        "severe",
    ]  # weights 1+1, 4
    labels["left_subarticular_stenosis_l5_s1"] = np.nan  # never labelled
    table = prior_table(labels).set_index(["condition", "level"])
    np.testing.assert_allclose(table.loc[("spinal_canal_stenosis", "l1_l2")], [3 / 9, 1 / 9, 5 / 9])
    np.testing.assert_allclose(table.loc[("left_subarticular_stenosis", "l5_s1")], [1 / 3] * 3)
    np.testing.assert_allclose(table.loc[("spinal_canal_stenosis", "l2_l3")], [4 / 6, 1 / 6, 1 / 6])
    from spinegrade.metrics import smoothed_prior

    np.testing.assert_allclose(
        smoothed_prior(labels, pseudo_count=0.0),
        constant_prior_submission(labels).iloc[:25][list(SEVERITIES)],
    )
    assert list(table.index) == list(TARGETS)
    (tmp_path / "run" / "fold_0").mkdir(parents=True)
    table.reset_index().to_csv(tmp_path / "run" / "fold_0" / PRIOR_CSV, index=False)
    np.testing.assert_allclose(RunFolder(tmp_path / "run").prior(0), table.to_numpy())


def test_train_refuses_a_run_folder_with_another_config(tmp_path: Path) -> None:
    save_config(load_config("tiny"), tmp_path / "run" / "config.yaml")
    (tmp_path / "run" / "run.json").write_text(json.dumps({"format": FORMAT_VERSION}))
    other = load_config("tiny", ["grade.optim.epochs=99"])
    with pytest.raises(ConfigError, match="grade.optim.epochs"):
        train(tmp_path / "no-data", tmp_path / "run", other)
    with pytest.raises(ConfigError, match="folds"):
        train(tmp_path / "no-data", tmp_path / "run", load_config("tiny"), folds=[2])
    negative = load_config("tiny", ["grade.consistency_weight=-0.5"])
    with pytest.raises(ConfigError, match="consistency_weight"):  # before any data is read
        train(tmp_path / "no-data", tmp_path / "run", negative)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["train", "{tmp}/missing", "--out", "{tmp}/run", "--config", "tiny"],
            "RSNA data folder not found",
        ),
        (["train", "{tmp}", "--out", "{tmp}/run", "--folds", "a,b"], "--folds"),
        (["evaluate", "{tmp}"], "not a run folder"),
    ],
)
def test_cli_errors_are_one_line(
    tmp_path: Path,
    args: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys, "argv", ["spinegrade", *(a.format(tmp=tmp_path) for a in args)])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1, err


# --- end to end on a synthetic set (slow) ---------------------------------------------------------

#: The e2e set: 2 folds of 16 small studies (16 studies, 8 to train per fold, were too few to beat
#: the prior with any recipe tried; see configs/tiny.yaml).
E2E_STUDIES, E2E_SEED = 32, 11
#: Shorter than `tiny` (10 localiser and 20 grader epochs: 435 s of the suite's 505 s on 2 cores);
#: still out of fold 0.820 against the prior's 0.862 (tiny: 0.795).
E2E_OVERRIDES = ["localize.optim.epochs=6", "grade.optim.epochs=14"]


@dataclass
class E2E:
    """A tiny run trained as: folds=[0] (as if stopped after fold 0), resumed, then re-run."""

    run: Path
    first: RunSummary
    second: RunSummary
    third: RunSummary
    fold0_mtime: tuple[int, int]  #: grader model.pt mtime after the first and after the last call


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    from spinegrade.data.synthetic import generate

    root, run = tmp_path_factory.mktemp("synth"), tmp_path_factory.mktemp("e2e") / "run"
    generate(root, E2E_STUDIES, seed=E2E_SEED, size="small", progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two test workers share 2 cores
    try:
        cfg, model_pt = load_config("tiny", E2E_OVERRIDES), run / "fold_0" / "grader" / "model.pt"
        first = train(root, run, cfg, folds=[0], progress=False)
        after_first = model_pt.stat().st_mtime_ns
        second = train(root, run, cfg, progress=False)
        third = train(root, run, cfg, progress=False)
        yield E2E(run, first, second, third, (after_first, model_pt.stat().st_mtime_ns))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_tiny_run_resumes_after_an_interruption(e2e: E2E) -> None:
    run = e2e.run
    assert e2e.first.folds_trained == [0] and e2e.first.metrics["folds"] == [0]
    assert "only folds [0] of 2" in e2e.first.metrics["coverage"]
    assert (e2e.second.folds_reused, e2e.second.folds_trained) == ([0], [1])  # resumed at fold 1
    assert e2e.fold0_mtime[0] == e2e.fold0_mtime[1]  # fold 0 was not trained again
    assert (e2e.third.folds_reused, e2e.third.folds_trained) == ([0, 1], [])  # nothing left
    metrics = e2e.second.metrics
    assert json.dumps(e2e.third.metrics, sort_keys=True) == json.dumps(metrics, sort_keys=True)
    assert metrics["studies"] == E2E_STUDIES and metrics["folds"] == [0, 1]
    oof = pd.read_csv(run / OOF_PREDICTIONS)
    assert len(oof) == 25 * E2E_STUDIES and oof["row_id"].is_unique
    np.testing.assert_allclose(oof[list(SEVERITIES)].sum(axis=1), 1.0, atol=1e-6)
    points = pd.read_csv(run / OOF_POINTS)
    assert len(points) == 25 * E2E_STUDIES and set(points["fold"]) == {0, 1}
    assert metrics["oracle"]["score"] < metrics["model"]["score"]["score"]
    for name in (
        "config.yaml",
        "run.json",
        "folds.csv",
        "fold_0/prior.csv",
        "localization.json",
        "metrics.json",
        "calibration.json",
        "oof_calibrated.csv",
    ):
        assert (run / name).is_file(), name
    for name in FIGURES:
        assert (run / "figures" / name).is_file(), name


@pytest.mark.slow
def test_tiny_run_beats_the_prior_on_held_out_studies(e2e: E2E) -> None:
    """Out of fold, i.e. every study graded by the fold that did not train on it, from its predicted
    points."""
    metrics = e2e.second.metrics
    assert metrics["model"]["score"]["score"] < metrics["prior"]["score"], metrics


@pytest.mark.slow
def test_evaluate_names_a_missing_fold_file(e2e: E2E, tmp_path: Path) -> None:
    import shutil

    from spinegrade.errors import DataError

    copy = tmp_path / "run"
    shutil.copytree(e2e.run, copy, ignore=shutil.ignore_patterns("cache", "*.pt"))
    (copy / "fold_1" / "localization_errors.csv").unlink()
    with pytest.raises(DataError, match="fold_1/localization_errors.csv: missing"):
        evaluate(copy)


@pytest.mark.slow
def test_predict_with_one_fold_reproduces_its_out_of_fold_rows(e2e: E2E, tmp_path: Path) -> None:
    """OOF is `predict`: fold 0's model on fold 0's held-out studies gives their OOF rows."""
    from spinegrade.inference import predict

    run = RunFolder(e2e.run)
    root = Path(run.info()["data_root"])
    held = run.folds().query("fold == 0")["study_id"].tolist()
    images = tmp_path / "train_images"
    images.mkdir()
    for sid in held:
        (images / str(sid)).symlink_to(root / "train_images" / str(sid))
    result = predict(
        run.path,
        images,
        tmp_path / "out",
        folds=[0],
        workers=0,
        progress=False,
        series_descriptions=root / "train_series_descriptions.csv",
    )
    assert sorted(result.study_ids) == sorted(held)
    got = pd.read_csv(result.submission).set_index("row_id")
    oof = pd.read_csv(run / OOF_CALIBRATED).set_index("row_id").loc[got.index]
    np.testing.assert_allclose(got[list(SEVERITIES)], oof[list(SEVERITIES)], atol=1e-6)
    temps = run.temperatures(0)
    assert any(t != 1.0 for t in temps.values()), temps  # calibration was really applied


# --- early stopping keeps the out-of-fold figures honest ------------------------------------------

#: Both stages select their epoch on an inner fold (2 of the 4 training studies of fold 0 of the
#: 8-study `grade_data` folder); small networks and 3 epochs keep it to seconds.
HONEST = [
    "data.num_workers=0",
    "localize.backbone=test_resnet",
    "localize.image_size=48",
    "localize.heatmap_stride=4",
    "localize.optim.epochs=3",
    "localize.optim.early_stopping=true",
    "localize.optim.inner_folds=2",
    "grade.backbone=test_resnet",
    "grade.crop_px=16",
    "grade.dim=32",
    "grade.optim.epochs=3",
    "grade.optim.batch_size=2",
    "grade.optim.early_stopping=true",
    "grade.optim.inner_folds=2",
    "grade.resample_factor=0.5",
]


class Seen(torch.utils.data.Dataset):
    """A grade dataset that records the study of every sample taken from it."""

    def __init__(self, data, seen: list[int]) -> None:  # type: ignore[no-untyped-def]
        self.data, self.seen = data, seen

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        self.seen.append(self.data.ids[i])
        return self.data[i]


def test_early_stopping_never_selects_on_the_held_out_fold(
    grade_data: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import spinegrade.grade.train as grade_train
    import spinegrade.localize.train as localize_train
    from spinegrade.training.sampling import excess_weights
    from spinegrade.training.selection import SELECTION_JSON, Selection

    read_by_localizer: list[set[int]] = []  # the studies of each set of slices the localiser built
    grader: dict[str, list] = {"selected_on": [], "trained_on": [], "weights": []}
    real_samples, real_fit = localize_train.build_samples, grade_train.fit

    def samples_spy(cache_paths, *args, **kwargs):  # type: ignore[no-untyped-def]
        read_by_localizer.append(set(cache_paths))
        return real_samples(cache_paths, *args, **kwargs)

    def fit_spy(model, train_set, val_set, *args, select, sample_weights, **kwargs):  # type: ignore[no-untyped-def]
        grader["trained_on"] = list(train_set.ids)
        grader["weights"] = list(sample_weights)
        np.testing.assert_allclose(sample_weights, excess_weights(train_set.labels, 0.5))
        assert len(set(sample_weights)) > 1  # the training studies are drawn unequally
        spied = Selection(Seen(select.dataset, grader["selected_on"]), select.study_ids)
        return real_fit(
            model, train_set, val_set, *args, select=spied, sample_weights=sample_weights, **kwargs
        )

    monkeypatch.setattr(localize_train, "build_samples", samples_spy)
    monkeypatch.setattr(grade_train, "fit", fit_spy)
    monkeypatch.setattr("spinegrade.cv.evaluate.evaluate", lambda *a, **k: {})  # figures: not here
    torch.set_num_threads(1)
    run = tmp_path / "run"
    train(grade_data, run, load_config("tiny", HONEST), folds=[0], progress=False)

    folds = pd.read_csv(run / "folds.csv")
    held = set(folds.study_id[folds.fold == 0])
    training = set(folds.study_id[folds.fold != 0])
    fold = json.loads((run / "fold_0" / FOLD_JSON).read_text())
    assert set(fold["selection"]) == {"localizer/sagittal", "localizer/axial", "grader"}
    inner = set(fold["selection"]["grader"]["inner_studies"])
    assert len(inner) == 2 and inner < training
    # the localiser built slices only from training studies: the inner ones apart from the rest
    assert read_by_localizer and not set().union(*read_by_localizer) & held
    assert inner in read_by_localizer and training - inner in read_by_localizer
    # every sample the grader's selection loss saw is an inner training study; none is held out
    assert grader["selected_on"] and set(grader["selected_on"]) == inner
    assert set(grader["trained_on"]) == training - inner
    for name, record in fold["selection"].items():
        history = json.loads((run / "fold_0" / name / "history.json").read_text())
        losses = [h["select_loss"] for h in history]
        assert record["epoch"] == 1 + losses.index(min(losses)), name  # the best inner epoch
        assert record == json.loads((run / "fold_0" / name / SELECTION_JSON).read_text())
        assert set(record["inner_studies"]) == inner  # one inner split for both stages
    # the held-out studies are still watched (learning curves), never used to choose
    assert all(
        "val_loss" in h for h in json.loads((run / "fold_0/grader/history.json").read_text())
    )
