"""The bundled label model: its pieces (bivariate normal, polychoric, nearest correlation), its
JSON, its sampler, and (with ../shared) its fit to the real train.csv."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from spinegrade.constants import CONDITIONS, LEVELS, MIRROR_CONDITION, TARGET_COLUMNS, TARGETS
from spinegrade.data.synthetic import LabelModel, LabelRows, RealLabels, fit_label_model
from spinegrade.data.synthetic.label_model import (
    MODEL_JSON,
    bivariate_cdf,
    cell_probs,
    nearest_correlation,
    polychoric,
)
from spinegrade.errors import DataError

#: Studies sampled from the bundled model to compare its shares and correlations with the real ones.
N_SAMPLED = 100_000


@pytest.fixture(scope="module")
def model() -> LabelModel:
    return LabelModel.load()


def pearson(codes: np.ndarray, a: int, b: int) -> float:
    """Pearson correlation of the 0/1/2 codes of targets a and b over studies labelled in both."""
    both = (codes[:, a] >= 0) & (codes[:, b] >= 0)
    return float(np.corrcoef(codes[both, a], codes[both, b])[0, 1])


def shares(codes: np.ndarray) -> np.ndarray:
    """Class shares per target over labelled cells, (25, 3)."""
    return LabelRows(codes, np.arange(len(codes))).priors()


def compared_pairs() -> list[tuple[str, int, int]]:
    """(kind, a, b): neighbouring levels of every condition, left vs right at every level, and
    the spinal canal vs each other condition at every level."""
    index = {t: i for i, t in enumerate(TARGETS)}
    pairs = [
        ("levels", index[(c, lo)], index[(c, hi)])
        for c in CONDITIONS
        for lo, hi in itertools.pairwise(LEVELS)
    ]
    pairs += [
        ("left/right", index[(c, lv)], index[(MIRROR_CONDITION[c], lv)])
        for c in CONDITIONS
        if c.startswith("left_")
        for lv in LEVELS
    ]
    spinal, others = CONDITIONS[0], CONDITIONS[1:]
    pairs += [("conditions", index[(spinal, lv)], index[(c, lv)]) for c in others for lv in LEVELS]
    return pairs


def test_bivariate_cdf_matches_scipy() -> None:
    for h, k, rho in [
        (0.3, -1.2, 0.5),
        (-2.0, -1.5, -0.9),
        (1.5, 0.0, 0.2),
        (0.0, 0.0, 0.7),
        (0.7, 2.1, 0.99),
        (-0.4, 1.1, -0.3),
        (2.5, -2.5, 0.0),
    ]:
        exact = multivariate_normal(cov=[[1.0, rho], [rho, 1.0]]).cdf([h, k])
        assert float(bivariate_cdf(h, k, rho)) == pytest.approx(exact, abs=1e-7), (h, k, rho)


def test_cell_probs_sum_to_one_with_the_margins() -> None:
    cuts_a, cuts_b = np.array([0.7, 1.6]), np.array([-0.2, 1.1])
    cells = cell_probs(cuts_a, cuts_b, 0.6)
    assert cells.sum() == pytest.approx(1.0, abs=1e-12)

    def edges(cuts: np.ndarray) -> np.ndarray:
        return np.diff(np.concatenate([[0.0], multivariate_normal().cdf(cuts), [1.0]]))

    assert cells.sum(1) == pytest.approx(edges(cuts_a), abs=1e-12)
    assert cells.sum(0) == pytest.approx(edges(cuts_b), abs=1e-12)
    assert cell_probs(cuts_a, cuts_b, 0.0) == pytest.approx(
        np.outer(edges(cuts_a), edges(cuts_b)), abs=1e-9
    )


@pytest.mark.parametrize("rho", [0.6, -0.4, 0.0])
def test_polychoric_recovers_the_latent_correlation(rho: float) -> None:
    rng = np.random.default_rng(3)
    y = rng.multivariate_normal([0.0, 0.0], [[1.0, rho], [rho, 1.0]], size=20_000)
    cuts_a, cuts_b = np.array([0.6, 1.5]), np.array([0.1, 1.2])
    table = np.zeros((3, 3))
    np.add.at(table, ((y[:, 0, None] > cuts_a).sum(1), (y[:, 1, None] > cuts_b).sum(1)), 1.0)
    assert polychoric(table, cuts_a, cuts_b) == pytest.approx(rho, abs=0.02)


def test_nearest_correlation() -> None:
    """Higham's (2002) example: the nearest correlation matrix to [[1 1 0] [1 1 1] [0 1 1]]; a
    valid correlation matrix comes back unchanged; the floor makes R positive definite."""
    a = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    expected = np.array([[1.0, 0.7607, 0.1573], [0.7607, 1.0, 0.7607], [0.1573, 0.7607, 1.0]])
    assert nearest_correlation(a, min_eigenvalue=0.0) == pytest.approx(expected, abs=1e-4)
    floored = nearest_correlation(a)
    assert np.diag(floored) == pytest.approx(1.0) and np.allclose(floored, floored.T)
    assert np.linalg.eigvalsh(floored).min() > 0
    valid = np.array([[1.0, 0.5, 0.2], [0.5, 1.0, 0.3], [0.2, 0.3, 1.0]])
    assert nearest_correlation(valid) == pytest.approx(valid, abs=1e-9)


def test_bundled_model_is_a_valid_model(model: LabelModel) -> None:
    assert model.name == f"bundled label model v{model.version}"
    assert model.correlation.shape == (25, 25) and np.allclose(
        model.correlation, model.correlation.T
    )
    assert np.diag(model.correlation) == pytest.approx(1.0)
    assert np.linalg.eigvalsh(model.correlation).min() > 0
    assert model.priors().sum(1) == pytest.approx(1.0)
    assert (model.class_counts.sum(1) + model.blank_counts == model.n_studies).all()
    assert model.layout_counts.sum() == model.n_studies == len(model.layout_rows())
    assert (model.layouts.sum(1) > 0).all()
    text = MODEL_JSON.read_text()
    assert len(text) < 20_000 and "study_id" not in text  # aggregates only, never a label row


def test_sampler_reproduces_its_own_parameters(model: LabelModel) -> None:
    """The sampled class shares and blank rates are the model's; the sampled latent correlation
    behind them is R (checked through the polychoric fit of the sampled codes)."""
    codes = model.sample(N_SAMPLED, np.random.default_rng(4))
    assert codes.dtype == np.int8 and set(np.unique(codes)) <= {-1, 0, 1, 2}
    assert shares(codes) == pytest.approx(model.priors(), abs=0.01)
    assert (codes == -1).mean(0) == pytest.approx(model.blank_rate(), abs=0.005)
    refit = fit_label_model(LabelRows(codes[:8000], np.arange(8000)), model.layout_rows())
    off = ~np.eye(25, dtype=bool)
    error = np.abs(refit.correlation - model.correlation)[off]
    assert error.mean() < 0.03 and error.max() < 0.2, (error.mean(), error.max())
    rng = np.random.default_rng(5)
    assert np.array_equal(model.draw(rng)[1], model.sample(1, np.random.default_rng(5))[0])


def test_json_round_trip_and_refusals(model: LabelModel, tmp_path: Path) -> None:
    path = model.save(tmp_path / "m.json")
    again = LabelModel.load(path)
    assert again.to_dict() == model.to_dict()
    data = json.loads(path.read_text())
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        LabelModel.load(tmp_path / "bad.json")
    with pytest.raises(DataError, match="targets"):
        LabelModel.from_dict({**data, "targets": list(TARGET_COLUMNS)[::-1]})
    indefinite = np.full((25, 25), -0.5)
    np.fill_diagonal(indefinite, 1.0)
    with pytest.raises(DataError, match="positive definite"):
        LabelModel.from_dict({**data, "correlation": indefinite.tolist()})


def test_bundled_model_is_the_fit_of_the_real_tables(rsna: Path, model: LabelModel) -> None:
    """The shipped JSON is what `fit_label_model` gives on the real train.csv (so it cannot drift
    from `scripts/fit_label_model.py`), and the bundled model's samples have the real class
    shares (within 1 percentage point) and the real correlations of neighbouring levels, of
    left vs right and across conditions (Pearson of the 0/1/2 codes, within 0.05; all 300 pairs
    too). Prints both side by side."""
    real = RealLabels.load(rsna)
    fitted = fit_label_model(real.rows, real.layouts).to_dict()
    shipped = model.to_dict()
    drift = np.array(fitted.pop("correlation")) - np.array(shipped.pop("correlation"))
    assert np.abs(drift).max() < 2e-6  # rounding to DECIMALS may flip a last digit elsewhere
    assert fitted == shipped

    codes = model.sample(N_SAMPLED, np.random.default_rng(0))
    real_shares, model_shares = real.rows.priors(), shares(codes)
    print(f"\nclass shares per target: real train.csv vs {N_SAMPLED:,} studies of {model.name}")
    print(f"{'target':40s} {'real N/M Mod Sev':>20s} {'model N/M Mod Sev':>20s} {'max |d|':>8s}")
    for t, name in enumerate(TARGET_COLUMNS):
        cells = [" ".join(f"{v:6.3f}" for v in s[t]) for s in (real_shares, model_shares)]
        diff = np.abs(real_shares[t] - model_shares[t]).max()
        print(f"{name:40s} {cells[0]:>20s} {cells[1]:>20s} {diff:8.4f}")
    print("\nPearson of the 0/1/2 codes (studies labelled in both): real vs model")
    print(f"{'pair':11s} {'target a':39s} {'target b':39s} {'real':>6s} {'model':>6s} {'d':>7s}")
    worst = 0.0
    for kind, a, b in compared_pairs():
        r, m = pearson(real.rows.codes, a, b), pearson(codes, a, b)
        worst = max(worst, abs(r - m))
        print(
            f"{kind:11s} {TARGET_COLUMNS[a]:39s} {TARGET_COLUMNS[b]:39s} {r:6.3f} {m:6.3f} "
            f"{m - r:+7.3f}"
        )
        assert abs(r - m) < 0.05, (TARGET_COLUMNS[a], TARGET_COLUMNS[b], r, m)
    every = max(
        abs(pearson(real.rows.codes, a, b) - pearson(codes, a, b))
        for a in range(25)
        for b in range(a + 1, 25)
    )
    print(
        f"max |share difference| {np.abs(real_shares - model_shares).max():.4f}; max |correlation"
        f" difference| {worst:.3f} of the pairs above, {every:.3f} of all 300 pairs"
    )
    assert np.abs(real_shares - model_shares).max() < 0.01
    assert every < 0.05
