"""The bundled label model: what synthetic studies draw their 25 labels from without train.csv.

A multivariate ordinal probit fitted to the real RSNA train.csv (1,975 studies), so that a bare
clone of the repository, which has no real labels (their licence forbids shipping them), still
makes studies with the real class balance and the real dependence between targets:

    y ~ N(0, R)                       one latent value per target (25, `TARGET_COLUMNS` order)
    k_t = #{j : y_t > c_tj}           c_t1 = Phi^-1(p_t0), c_t2 = Phi^-1(p_t0 + p_t1)
    k_t = blank with probability b_t  (independently of everything else)

with p_t the real class shares of target t over its labelled cells and b_t its blank rate. R
holds the polychoric correlations of every pair of targets (maximum likelihood on the pair's 3 x 3
table, thresholds fixed), made a valid correlation matrix by :func:`nearest_correlation`. The
model also holds how many real studies had each series layout (counts of Sagittal T1, Sagittal
T2/STIR and Axial T2 series). Only these aggregates are shipped (`label_model.json`), never a
label row; :func:`fit_label_model` makes them and `scripts/fit_label_model.py` rewrites the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import ndtr, ndtri, owens_t

from spinegrade.constants import TARGET_COLUMNS
from spinegrade.data.synthetic.labels import BLANK, LabelRows
from spinegrade.errors import DataError
from spinegrade.io import write_text

#: The shipped parameters, fitted from the real train.csv by `scripts/fit_label_model.py`.
MODEL_JSON = Path(__file__).with_name("label_model.json")
#: Format and fit version of `label_model.json`; raise it when either changes.
VERSION = 1
#: Decimals of the stored correlations (the JSON stays small and diffable).
DECIMALS = 6
#: Smallest eigenvalue :func:`nearest_correlation` leaves (keeps R safely positive definite).
MIN_EIGENVALUE = 1e-4
_RHO_BOUND = 0.999


def bivariate_cdf(h: np.ndarray, k: np.ndarray, rho: float) -> np.ndarray:
    """P(X <= h, Y <= k) of a standard bivariate normal with correlation `rho` (|rho| < 1), by
    Owen's T function; `h`, `k` finite, broadcast against each other."""
    h, k = np.broadcast_arrays(np.asarray(h, np.float64), np.asarray(k, np.float64))
    h = np.where(h == 0.0, 1e-12, h)  # the formula divides by h and k; the CDF is continuous
    k = np.where(k == 0.0, 1e-12, k)
    s = np.sqrt(1.0 - rho * rho)
    beta = np.where(h * k < 0.0, 0.5, 0.0)
    return (
        0.5 * (ndtr(h) + ndtr(k))
        - owens_t(h, (k - rho * h) / (h * s))
        - owens_t(k, (h - rho * k) / (k * s))
        - beta
    )


def cell_probs(cuts_a: np.ndarray, cuts_b: np.ndarray, rho: float) -> np.ndarray:
    """Probabilities of the 3 x 3 classes of two ordinal probit targets with inner thresholds
    `cuts_a`, `cuts_b` (2,) each and latent correlation `rho`: shape (3, 3), summing to 1."""
    grid = np.zeros((4, 4))  # P(y_a <= c_i, y_b <= c_j) at c = (-inf, t1, t2, +inf)
    grid[1:3, 1:3] = bivariate_cdf(cuts_a[:, None], cuts_b[None, :], rho)
    grid[3, 1:3], grid[1:3, 3], grid[3, 3] = ndtr(cuts_b), ndtr(cuts_a), 1.0
    cells = grid[1:, 1:] - grid[:-1, 1:] - grid[1:, :-1] + grid[:-1, :-1]
    return np.clip(cells, 1e-300, 1.0)


def polychoric(table: np.ndarray, cuts_a: np.ndarray, cuts_b: np.ndarray) -> float:
    """Maximum-likelihood latent correlation of a 3 x 3 count `table` (rows: classes of a,
    columns: classes of b) with the inner thresholds `cuts_a`, `cuts_b` (2,) fixed."""

    def nll(rho: float) -> float:
        return -float((table * np.log(cell_probs(cuts_a, cuts_b, rho))).sum())

    fit = minimize_scalar(
        nll, bounds=(-_RHO_BOUND, _RHO_BOUND), method="bounded", options={"xatol": 1e-8}
    )
    return float(fit.x)


def nearest_correlation(
    a: np.ndarray, min_eigenvalue: float = MIN_EIGENVALUE, tol: float = 1e-10, max_iter: int = 1000
) -> np.ndarray:
    """The nearest correlation matrix (Frobenius norm) to the symmetric `a` (n, n): Higham's
    (2002) alternating projections with Dykstra's correction, then eigenvalues floored at
    `min_eigenvalue` and the diagonal rescaled to 1. A valid correlation matrix comes back
    unchanged up to that floor."""
    y = np.array(a, dtype=np.float64)
    correction = np.zeros_like(y)
    for _ in range(max_iter):
        r = y - correction
        x = _floor_eigenvalues(r, 0.0)
        correction = x - r
        previous, y = y, x.copy()
        np.fill_diagonal(y, 1.0)
        if np.linalg.norm(y - previous) <= tol * np.linalg.norm(y):
            break
    y = _floor_eigenvalues(y, min_eigenvalue)
    d = 1.0 / np.sqrt(np.diag(y))
    return (y * d[:, None]) * d[None, :]


def _floor_eigenvalues(a: np.ndarray, floor: float) -> np.ndarray:
    """Symmetric (n, n) -> the same eigenvectors with eigenvalues max(lambda, floor)."""
    values, vectors = np.linalg.eigh((a + a.T) / 2)
    return (vectors * np.maximum(values, floor)) @ vectors.T


@dataclass(frozen=True)
class LabelModel:
    """The fitted label model (see the module docstring); built by :func:`fit_label_model` or
    read by :meth:`load`. Arrays: `class_counts` (25, 3) labelled cells per class, `blank_counts`
    (25,), `correlation` R (25, 25), `layouts` (m, 3) series counts (Sagittal T1, Sagittal
    T2/STIR, Axial T2) and `layout_counts` (m,) the real studies with each."""

    version: int
    n_studies: int
    class_counts: np.ndarray
    blank_counts: np.ndarray
    correlation: np.ndarray
    layouts: np.ndarray
    layout_counts: np.ndarray

    @property
    def name(self) -> str:
        """How summaries name this label source."""
        return f"bundled label model v{self.version}"

    def priors(self) -> np.ndarray:
        """Class shares per target over labelled cells, shape (25, 3)."""
        return self.class_counts / self.class_counts.sum(1, keepdims=True)

    def blank_rate(self) -> np.ndarray:
        """Share of studies whose target is blank, shape (25,)."""
        return self.blank_counts / self.n_studies

    def thresholds(self) -> np.ndarray:
        """Inner thresholds (c_t1, c_t2) of each target's latent value, shape (25, 2)."""
        return ndtri(np.clip(np.cumsum(self.priors(), axis=1)[:, :2], 1e-12, 1 - 1e-12))

    def layout_rows(self) -> np.ndarray:
        """One series layout per real study, (n_studies, 3), grouped by layout."""
        return np.repeat(self.layouts, self.layout_counts, axis=0)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Label codes of `n` studies, (n, 25) int8 in {-1 blank, 0, 1, 2}."""
        y = rng.standard_normal((n, len(self.correlation))) @ np.linalg.cholesky(self.correlation).T
        codes = (y[..., None] > self.thresholds()).sum(-1).astype(np.int8)
        codes[rng.random(codes.shape) < self.blank_rate()] = BLANK
        return codes

    def draw(self, rng: np.random.Generator) -> tuple[int, np.ndarray]:
        """One study's labels (25,) from `rng`; -1 as its row index (it is no real row)."""
        return -1, self.sample(1, rng)[0]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (plain lists; `targets` names the order)."""
        return {
            "version": self.version,
            "source": "RSNA 2024 LSDC train.csv and train_series_descriptions.csv (aggregates)",
            "n_studies": self.n_studies,
            "targets": list(TARGET_COLUMNS),
            "class_counts": self.class_counts.tolist(),
            "blank_counts": self.blank_counts.tolist(),
            "correlation": self.correlation.tolist(),
            "layouts": [
                {"series": lay.tolist(), "studies": int(n)}
                for lay, n in zip(self.layouts, self.layout_counts)
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelModel:
        """Inverse of :meth:`to_dict`; DataError if the targets or shapes do not fit."""
        if data.get("targets") != list(TARGET_COLUMNS):
            raise DataError("label model: targets differ from spinegrade's 25 targets")
        n = len(TARGET_COLUMNS)
        model = cls(
            version=int(data["version"]),
            n_studies=int(data["n_studies"]),
            class_counts=np.array(data["class_counts"], dtype=np.int64).reshape(n, 3),
            blank_counts=np.array(data["blank_counts"], dtype=np.int64).reshape(n),
            correlation=np.array(data["correlation"], dtype=np.float64).reshape(n, n),
            layouts=np.array([lay["series"] for lay in data["layouts"]], np.int64).reshape(-1, 3),
            layout_counts=np.array([lay["studies"] for lay in data["layouts"]], np.int64),
        )
        if np.linalg.eigvalsh(model.correlation).min() <= 0:
            raise DataError("label model: the correlation matrix is not positive definite")
        return model

    @classmethod
    def load(cls, path: str | Path = MODEL_JSON) -> LabelModel:
        """Read a label model JSON (default: the bundled one); DataError if it cannot be used."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: unreadable label model ({exc})") from exc

    def save(self, path: str | Path = MODEL_JSON) -> Path:
        """Write the JSON form atomically, one line per key and per row of a table."""
        return write_text(path, _dumps(self.to_dict()))


def _dumps(data: dict[str, Any]) -> str:
    """JSON text of a flat dict whose tables (lists of lists or dicts) get one line per row."""
    items = []
    for key, value in data.items():
        if isinstance(value, list) and value and isinstance(value[0], (list, dict)):
            text = "[\n    " + ",\n    ".join(json.dumps(row) for row in value) + "\n  ]"
        else:
            text = json.dumps(value)
        items.append(f"  {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(items) + "\n}\n"


def fit_label_model(rows: LabelRows, layouts: np.ndarray) -> LabelModel:
    """Fit the model to real label rows (`rows.codes` (studies, 25)) and the real studies' series
    layouts (studies, 3); correlations rounded to :data:`DECIMALS` as stored."""
    codes = rows.codes
    class_counts = np.stack([(codes == k).sum(0) for k in range(3)], axis=1).astype(np.int64)
    if (class_counts == 0).any():
        raise DataError("label model: a target has a class without any labelled cell")
    n = codes.shape[1]
    cuts = ndtri(np.cumsum(class_counts / class_counts.sum(1, keepdims=True), axis=1)[:, :2])
    pairwise = np.eye(n)
    for a in range(n):
        for b in range(a + 1, n):
            both = (codes[:, a] != BLANK) & (codes[:, b] != BLANK)
            table = np.zeros((3, 3))
            np.add.at(table, (codes[both, a], codes[both, b]), 1.0)
            pairwise[a, b] = pairwise[b, a] = polychoric(table, cuts[a], cuts[b])
    correlation = np.round(nearest_correlation(pairwise), DECIMALS)
    np.fill_diagonal(correlation, 1.0)
    kinds, counts = np.unique(np.asarray(layouts, np.int64), axis=0, return_counts=True)
    return LabelModel(
        version=VERSION,
        n_studies=len(codes),
        class_counts=class_counts,
        blank_counts=(codes == BLANK).sum(0).astype(np.int64),
        correlation=correlation,
        layouts=kinds,
        layout_counts=counts.astype(np.int64),
    )


__all__ = [
    "MODEL_JSON",
    "VERSION",
    "LabelModel",
    "bivariate_cdf",
    "cell_probs",
    "fit_label_model",
    "nearest_correlation",
    "polychoric",
]
