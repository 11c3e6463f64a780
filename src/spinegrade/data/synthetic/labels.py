"""Labels of synthetic studies: label rows, a latent severity per target, and the exact oracle.

The model (one per target t, 25 in all; class k in 0/1/2 = normal_mild/moderate/severe):

    z ~ N(0, 1)                     the disease the image shows (rendered by the phantom)
    e ~ N(0, s^2)                   reader noise (s = :data:`READER_NOISE`)
    k = 0 if z + e < t1, 1 if z + e < t2, else 2
    t1 = sqrt(1 + s^2) Phi^-1(p0),  t2 = sqrt(1 + s^2) Phi^-1(p0 + p1)

with (p0, p1, p2) the class frequencies of target t in the label source (`source.py`), so the
label marginal equals the source's. Generation runs the other way: a study draws one label row
from the source (a *real* train.csv row, or a row of the bundled label model, `label_model.py`,
with the real class shares, blank rates and correlations between targets), then
z_t ~ p(z | k_t) ∝ phi(z) P(k_t | z) for each labelled target and z_t ~ N(0, 1) for a blank one.
As the source's marginal of k_t equals the model's, P(k | z_t) is exact for either source. Given
all 25 z of a study drawn from real rows, the Bayes-optimal prediction is a posterior over the real
rows c (uniform prior, as drawn):

    w_c ∝ prod_{t labelled in c} P(k_t^c | z_t) / P(k_t^c)

and the oracle for target t is sum_c w_c [k_t^c = k] over the rows c where t is labelled, normalised
(:func:`oracle_joint`). The per-target oracle P(k | z_t) (:func:`oracle_independent`) uses only
target t's own evidence.

Which one is `oracle.csv`: the per-target oracle P(k | z_t), the Bayes-optimal prediction given
the rendered severity, the reader-noise model and the real per-target priors. The joint oracle is
lower still, but almost all of its lead comes from recognising *which* of the 1,975 real rows a
study was drawn from (1,271 rows occur once): with the study's own row left out it is worse than
the per-target one. No model trained on a few hundred studies can learn that row list, so the joint
posterior is written as `oracle_joint.csv`, a diagnostic, not the reference (only when real rows
drew the labels; the bundled model's exact joint posterior is not computed).
On 200 label draws (seeds 0-5 of `generate`), s = 0.40 gives per-target 0.31-0.39 (joint
0.07-0.11, constant prior 0.79-0.83); s = 0.88 would give per-target 0.58-0.69.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import log_softmax, ndtr, ndtri

from spinegrade.constants import SEVERITIES, SEVERITY_WEIGHTS, TARGET_COLUMNS, TARGETS, row_id
from spinegrade.errors import DataError

#: Reader-noise standard deviation s. With s = 0.40 the per-target oracle (`oracle.csv`) scores
#: about 0.30-0.39 on a 200-study set (a set varies by about +-0.04 around the mean) and the
#: constant prior 0.79-0.83, as on the real data (0.79). Figures per s:
#: `benchmarks/bench_synth.py --calibrate`; exact figures of a set: `generate.label_scores`.
READER_NOISE = 0.40
#: Grid for sampling z | k by inverse CDF.
_Z_GRID = np.linspace(-7.0, 7.0, 4001)
BLANK = -1


@dataclass(frozen=True)
class LabelRows:
    """Real train.csv label rows: `codes` (rows, 25) int8 in {-1 blank, 0, 1, 2}, target order
    of `TARGET_COLUMNS`; `study_ids` (rows,) the real study of each row (for reference only)."""

    codes: np.ndarray
    study_ids: np.ndarray

    @classmethod
    def from_labels(cls, labels: pd.DataFrame) -> LabelRows:
        """From the wide `labels` frame of `spinegrade.data.load_tables` (snake_case, NaN blank)."""
        index = {name: k for k, name in enumerate(SEVERITIES)}
        values = labels[list(TARGET_COLUMNS)]
        unknown = set(pd.unique(values.to_numpy().ravel())) - set(index) - {None}
        unknown = {u for u in unknown if not pd.isna(u)}
        if unknown:
            raise DataError(f"train.csv: unknown severities {sorted(map(str, unknown))}")
        codes = values.apply(lambda col: col.map(index)).fillna(BLANK).to_numpy(np.int8)
        return cls(codes=codes, study_ids=labels["study_id"].to_numpy(np.int64))

    @classmethod
    def load(cls, root: str | Path) -> LabelRows:
        """Read `train.csv` of the RSNA folder `root`."""
        from spinegrade.data.tables import load_tables

        labels = load_tables(root).labels
        assert labels is not None
        return cls.from_labels(labels)

    def priors(self) -> np.ndarray:
        """Class frequencies per target over labelled cells, shape (25, 3)."""
        counts = np.stack([(self.codes == k).sum(0) for k in range(3)], axis=1).astype(float)
        return counts / counts.sum(1, keepdims=True)


@dataclass(frozen=True)
class ReaderModel:
    """Thresholds of the latent model per target: `cuts` (25, 4) = (-inf, t1, t2, +inf)."""

    cuts: np.ndarray
    noise: float

    @classmethod
    def from_priors(cls, priors: np.ndarray, noise: float = READER_NOISE) -> ReaderModel:
        """Thresholds that reproduce `priors` (25, 3) as the label marginal."""
        cum = np.clip(np.cumsum(priors, axis=1)[:, :2], 1e-9, 1 - 1e-9)
        inner = np.sqrt(1.0 + noise**2) * ndtri(cum)
        inf = np.full((len(priors), 1), np.inf)
        return cls(cuts=np.concatenate([-inf, inner, inf], axis=1), noise=float(noise))

    def class_probs(self, z: np.ndarray) -> np.ndarray:
        """P(k | z): z (..., 25) -> (..., 25, 3)."""
        z = np.asarray(z, dtype=np.float64)[..., None]
        cdf = ndtr((self.cuts - z) / self.noise)  # (..., 25, 4)
        return np.clip(np.diff(cdf, axis=-1), 1e-300, 1.0)

    def sample_z(self, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Latent severities (25,) for one label row `codes` (25,): z | k, or N(0, 1) if blank."""
        z = rng.standard_normal(len(codes))
        grid_p = self.class_probs(np.broadcast_to(_Z_GRID[:, None], (len(_Z_GRID), len(codes))))
        u = rng.random(len(codes))
        for t, k in enumerate(codes):
            if k == BLANK:
                continue
            dens = np.exp(-0.5 * _Z_GRID**2) * grid_p[:, t, k]
            cdf = np.cumsum(dens)
            z[t] = np.interp(u[t] * cdf[-1], cdf, _Z_GRID)
        return z


def oracle_independent(model: ReaderModel, z: np.ndarray) -> np.ndarray:
    """Per-target Bayes probabilities P(k | z_t): z (n, 25) -> (n, 25, 3)."""
    return model.class_probs(z)


def oracle_joint(
    model: ReaderModel,
    rows: LabelRows,
    z: np.ndarray,
    exclude: np.ndarray | None = None,
    chunk: int = 64,
) -> np.ndarray:
    """Bayes-optimal probabilities given all 25 z of each study: z (n, 25) -> (n, 25, 3).

    Posterior over the real label rows (see the module docstring), evaluated in log space.
    `exclude` (n,): a row index per study left out of its posterior. Leaving out the row a study
    was drawn from gives the "leave-own-row-out" oracle: what a perfect model of the label
    population learnt from *other* studies could do, without recognising the study's exact row.
    """
    codes = rows.codes.astype(np.int64)  # (R, 25)
    labelled = codes != BLANK
    onehot = (codes[..., None] == np.arange(3)).astype(np.float64)  # (R, 25, 3)
    log_prior = np.log(np.clip(rows.priors(), 1e-300, None))  # (25, 3)
    out = np.empty((len(z), codes.shape[1], 3))
    t_idx = np.arange(codes.shape[1])
    safe = np.where(labelled, codes, 0)
    for start in range(0, len(z), chunk):
        logp = np.log(model.class_probs(z[start : start + chunk])) - log_prior  # (m, 25, 3)
        ratio = logp[:, t_idx, safe] * labelled  # (m, R, 25)
        log_lik = ratio.sum(-1)  # (m, R)
        if exclude is not None:
            log_lik[np.arange(len(log_lik)), exclude[start : start + chunk]] = -np.inf
        log_w = log_softmax(log_lik, axis=1)
        w = np.exp(log_w)
        num = np.einsum("mr,rtk->mtk", w, onehot)
        out[start : start + chunk] = num / num.sum(-1, keepdims=True)
    return out


def weighted_prior(priors: np.ndarray) -> np.ndarray:
    """The best constant prediction under the metric's class weights: class shares (25, 3) times
    `SEVERITY_WEIGHTS`, renormalised, (25, 3) (`metrics.constant_prior_submission` from shares)."""
    weighted = np.asarray(priors, np.float64) * np.asarray(SEVERITY_WEIGHTS)
    return weighted / weighted.sum(-1, keepdims=True)


def submission_frame(study_ids_: list[int], probs: np.ndarray) -> pd.DataFrame:
    """Submission rows in study order, TARGETS order within a study."""
    flat = probs.reshape(-1, 3)
    ids = [row_id(s, c, lv) for s in study_ids_ for c, lv in TARGETS]
    return pd.DataFrame({"row_id": ids, **{s: flat[:, i] for i, s in enumerate(SEVERITIES)}})


def real_labels_frame(rows: LabelRows) -> pd.DataFrame:
    """The real label rows as a wide labels frame (snake_case severities, NaN blank)."""
    values = np.where(
        rows.codes == BLANK, None, np.array(SEVERITIES, dtype=object)[np.clip(rows.codes, 0, 2)]
    )
    frame = pd.DataFrame(values, columns=list(TARGET_COLUMNS))
    frame.insert(0, "study_id", rows.study_ids)
    return frame


__all__ = [
    "BLANK",
    "READER_NOISE",
    "LabelRows",
    "ReaderModel",
    "oracle_independent",
    "oracle_joint",
    "real_labels_frame",
    "submission_frame",
    "weighted_prior",
]
