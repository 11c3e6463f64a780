"""`spinegrade compare RUN_DIR ...`: finished runs side by side, read from their `metrics.json`.

The figures (`ROWS`, every one a loss: lower is better) are read where `spinegrade evaluate` writes
them, and every one is optional, so that a run of another kind (a `slices` run, say, that scores
only some terms) shows what it has and `-` elsewhere:

- the model's score and its four terms: `model.score.score` and `model.score.terms.<term>`
  (`detailed_metrics`), or a bare score `model.score` / `model.terms.<term>`; without a `model`
  entry, the top level of the file is the model's;
- the uncalibrated model, the out-of-fold prior and the oracle: `model_uncalibrated`, `prior`,
  `oracle`, each a score (`score`, `terms`);
- per condition, the weighted log loss: `model.conditions.<condition>.log_loss`;
- `studies`: how many studies were scored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

from spinegrade.constants import CONDITION_LABELS, CONDITIONS, SCORE_TERMS
from spinegrade.cv.folder import METRICS_JSON
from spinegrade.errors import DataError
from spinegrade.report.compare import comparison_bars

Getter = Callable[[dict[str, Any]], Any]


def _dig(node: Any, *keys: str) -> Any:
    """`node[k1][k2]...`, or None where a key or a mapping is missing."""
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _score_entry(metrics: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The score (`score`, `terms`) of entry `name`, in either layout."""
    entry = metrics.get(name, metrics if name == "model" else None)
    if isinstance(entry, dict) and isinstance(entry.get("score"), dict):
        return entry["score"]  # detailed_metrics: {"score": {...}, "conditions": {...}}
    return entry if isinstance(entry, dict) else None


def _score(name: str, term: str | None = None) -> Getter:
    keys = ("score",) if term is None else ("terms", term)
    return lambda metrics: _dig(_score_entry(metrics, name), *keys)


def _condition(condition: str) -> Getter:
    return lambda metrics: _dig(metrics.get("model", metrics), "conditions", condition, "log_loss")


#: (label, where it is read, panel of the figure or None) of each row, in display order.
ROWS: tuple[tuple[str, Getter, str | None], ...] = (
    ("score", _score("model"), "score and its terms"),
    *((term, _score("model", term), "score and its terms") for term in SCORE_TERMS),
    *((CONDITION_LABELS[c], _condition(c), "weighted log loss per condition") for c in CONDITIONS),
    ("score, uncalibrated", _score("model_uncalibrated"), None),
    ("prior (out of fold)", _score("prior"), None),
    ("oracle", _score("oracle"), None),
    ("studies", lambda metrics: metrics.get("studies"), None),
)


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    """A finished run's `metrics.json` (DataError with one line when absent or unreadable)."""
    path = Path(run_dir) / METRICS_JSON
    if not path.is_file():
        raise DataError(f"{path}: not found (a finished run folder? `spinegrade evaluate` it)")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None
    if not isinstance(metrics, dict):
        raise DataError(f"{path}: expected a JSON object")
    return metrics


def compare_runs(run_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """Rows = `ROWS` labels, columns = runs (named by folder, or by path when names repeat);
    NaN where a run lacks a figure."""
    if not run_dirs:
        raise DataError("compare: give at least one run folder")
    paths = [Path(p) for p in run_dirs]
    names = [p.name for p in paths]
    if len(set(names)) < len(names):
        names = [str(p) for p in paths]
    columns = {}
    for name, path in zip(names, paths):
        metrics = read_metrics(path)
        columns[name] = [_number(get(metrics)) for _, get, _ in ROWS]
    return pd.DataFrame(columns, index=[label for label, _, _ in ROWS])


def comparison_table(frame: pd.DataFrame) -> Table:
    """A rich table of `compare_runs`: the best (lowest) value of each loss row in bold."""
    table = Table("figure", *frame.columns, title="runs compared (lower is better)")
    for label, row in frame.iterrows():
        best = row.min() if label != "studies" and row.notna().sum() > 1 else None
        cells = [_cell(v, label == "studies", v == best) for v in row]
        table.add_row(str(label), *cells)
    return table


def comparison_figure(frame: pd.DataFrame, path: str | Path) -> Path:
    """The figure of `compare_runs` (the score, its terms and the per-condition log loss)."""
    panels = {}
    for label, _, panel in ROWS:
        if panel is not None:
            panels.setdefault(panel, []).append(label)
    return comparison_bars(
        {name: frame.loc[rows] for name, rows in panels.items()},
        path,
        f"{len(frame.columns)} runs: {', '.join(map(str, frame.columns))}",
    )


def _number(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return math.nan


def _cell(value: float, integer: bool, best: bool) -> str:
    if math.isnan(value):
        return "-"
    text = f"{int(value)}" if integer else f"{value:.4f}"
    return f"[bold]{text}[/]" if best else text
