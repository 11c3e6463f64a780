"""The RSNA label tables: loading, converting to the project's names, and validating.

Loading is strict about structure (missing folder, file or column, unparseable numbers raise a
one-line
`DataError` naming the file) and lenient about content: severity, condition and level strings that
are not known are *kept* (stripped, as written) so that :func:`validate_tables` can report them;
known
ones are converted to the snake_case names of `spinegrade.constants`. Code that needs clean labels
(:func:`labels_long`, the metric) raises `DataError` on an unknown value instead of guessing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from spinegrade.constants import (
    CONDITIONS,
    LEVELS,
    SERIES_OF_CONDITION,
    SERIES_TYPES,
    SEVERITIES,
    SEVERITY_LABELS,
    TARGET_COLUMNS,
    TARGETS,
    condition_from_label,
    level_from_label,
    row_id,
    severity_from_label,
)
from spinegrade.errors import DataError

SPLITS: tuple[str, ...] = ("train", "test")
LABELS_FILE = "train.csv"
COORDINATE_FILES: tuple[str, ...] = (
    "train_label_coordinates.csv",
    "train_label_coordinates_subset.csv",  # the 20% sample kept in shared/data/rsna
)
SERIES_COLUMNS: tuple[str, ...] = ("study_id", "series_id", "series_description")
COORDINATE_COLUMNS: tuple[str, ...] = (
    "study_id",
    "series_id",
    "instance_number",
    "condition",
    "level",
    "x",
    "y",
)
#: Label of a blank (not scored) target in :func:`labels_long`.
BLANK_LABEL = -1
_MAX_EXAMPLES = 5


@dataclass
class RsnaTables:
    """The label tables of one RSNA split, in the project's names.

    `labels`: wide train.csv layout, `study_id` (int) + the 25 `TARGET_COLUMNS` holding snake_case
    severities, NaN for blank, or an unknown string kept as written (see module docstring); None for
    the test split. `series`: `study_id, series_id, series_description`. `coordinates`:
    `study_id, series_id, instance_number, condition, level, x, y, series_description` with
    snake_case condition/level (unknown ones kept as written); None for the test split.
    """

    labels: pd.DataFrame | None
    series: pd.DataFrame
    coordinates: pd.DataFrame | None
    root: Path
    split: str


def series_file(split: str) -> str:
    """`train_series_descriptions.csv` or `test_series_descriptions.csv`."""
    return f"{split}_series_descriptions.csv"


def load_tables(root: str | Path, split: str = "train") -> RsnaTables:
    """Read the label tables of `split` ('train' or 'test') from the RSNA folder `root`.

    For 'train': `train.csv`, `train_series_descriptions.csv` and `train_label_coordinates.csv`
    (or `train_label_coordinates_subset.csv` when the full file is absent). For 'test': only
    `test_series_descriptions.csv`. Raises DataError for a missing folder, file or column and for
    numbers that do not parse.
    """
    root = Path(root)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    if not root.is_dir():
        raise DataError(f"{root}: RSNA data folder not found")
    series = read_series(_existing(root, series_file(split)))
    if split == "test":
        return RsnaTables(labels=None, series=series, coordinates=None, root=root, split=split)
    labels = read_labels(_existing(root, LABELS_FILE))
    coordinates = read_coordinates(_existing(root, *COORDINATE_FILES), series)
    return RsnaTables(labels=labels, series=series, coordinates=coordinates, root=root, split=split)


def read_labels(path: str | Path) -> pd.DataFrame:
    """Read a train.csv-like file: `study_id` + the 25 target columns, severities in snake_case."""
    raw = _read_csv(path, ("study_id", *TARGET_COLUMNS))
    out = pd.DataFrame({"study_id": _integers(raw["study_id"], path, "study_id")})
    for column in TARGET_COLUMNS:
        out[column] = raw[column].map(lambda v: _name(v, severity_from_label)).astype(object)
    return out


def read_series(path: str | Path) -> pd.DataFrame:
    """Read a `*_series_descriptions.csv`: `study_id, series_id` (int), `series_description`
    (str)."""
    raw = _read_csv(path, SERIES_COLUMNS)
    return pd.DataFrame(
        {
            "study_id": _integers(raw["study_id"], path, "study_id"),
            "series_id": _integers(raw["series_id"], path, "series_id"),
            "series_description": raw["series_description"].fillna("").str.strip().astype(object),
        }
    )


def read_coordinates(path: str | Path, series: pd.DataFrame | None = None) -> pd.DataFrame:
    """Read `train_label_coordinates*.csv` with snake_case condition/level, float x/y (NaN allowed).

    With `series`, its `series_description` is merged in (NaN where the series is not listed).
    """
    raw = _read_csv(path, COORDINATE_COLUMNS)
    out = pd.DataFrame(
        {
            "study_id": _integers(raw["study_id"], path, "study_id"),
            "series_id": _integers(raw["series_id"], path, "series_id"),
            "instance_number": _integers(raw["instance_number"], path, "instance_number"),
            "condition": raw["condition"]
            .map(lambda v: _name(v, condition_from_label))
            .astype(object),
            "level": raw["level"].map(lambda v: _name(v, level_from_label)).astype(object),
            "x": _floats(raw["x"], path, "x"),
            "y": _floats(raw["y"], path, "y"),
        }
    )
    if series is not None:
        described = series.drop_duplicates(["study_id", "series_id"])
        out = out.merge(described, on=["study_id", "series_id"], how="left", validate="many_to_one")
    return out


def labels_long(labels: pd.DataFrame) -> pd.DataFrame:
    """Wide labels (n_studies x 25) -> long table of n_studies*25 rows, in study then target order.

    Columns: `study_id, condition, level, severity` (snake_case, NaN blank), `label` (0/1/2, or
    `BLANK_LABEL` = -1 for blank), `row_id`. Raises DataError on an unknown severity string.
    """
    _require_columns(labels, ("study_id", *TARGET_COLUMNS), "labels")
    values = labels[list(TARGET_COLUMNS)].to_numpy(dtype=object)  # (n_studies, 25)
    n = len(labels)
    studies = np.repeat(labels["study_id"].to_numpy(dtype=np.int64), len(TARGETS))
    conditions, levels = (np.tile(np.array(part, dtype=object), n) for part in zip(*TARGETS))
    severity = values.ravel()
    out = pd.DataFrame(
        {
            "study_id": studies,
            "condition": conditions,
            "level": levels,
            "severity": severity,
            "label": severity_labels(severity),
        }
    )
    out["row_id"] = [row_id(s, c, lv) for s, c, lv in zip(studies, conditions, levels)]
    return out


def severity_labels(values: Any) -> np.ndarray:
    """Snake_case severities (NaN = blank) -> int64 class indices 0/1/2, -1 for blank.

    Raises DataError naming the first unknown value.
    """
    values = np.asarray(values, dtype=object)
    out = np.full(values.shape, BLANK_LABEL, dtype=np.int64)
    blank = pd.isna(values)
    for index, name in enumerate(SEVERITIES):
        out[values == name] = index
    unknown = ~blank & (out == BLANK_LABEL)
    if unknown.any():
        raise DataError(
            f"{int(unknown.sum())} unknown severity value(s), e.g. {values[unknown][0]!r}; "
            f"expected one of {list(SEVERITY_LABELS.values())} (run `spinegrade validate`)"
        )
    return out


# --- validation ----------------------------------------------------------------------------------


@dataclass
class Problem:
    """One kind of problem found in the tables: how many, a few examples, and how bad."""

    kind: str
    count: int
    examples: list[str] = field(default_factory=list)
    severity: Literal["error", "warning"] = "error"


@dataclass(frozen=True)
class ImageCoverage:
    """Which studies of the tables have images: a user's download is often partial.

    `with_images`: studies of the tables (labels for train, descriptions for test) that have a
    folder in `<split>_images/`; `without_images`: the others; `unknown_folders`: image folders of
    studies the tables do not list. All sorted.
    """

    images_dir: Path
    with_images: tuple[int, ...]
    without_images: tuple[int, ...]
    unknown_folders: tuple[int, ...]

    @property
    def partial(self) -> bool:
        return bool(self.without_images)

    def summary(self) -> str:
        """One line: how many studies have images, and that the commands use those."""
        n, total = len(self.with_images), len(self.with_images) + len(self.without_images)
        if not self.images_dir.is_dir():
            return f"images: no {self.images_dir.name}/ folder (tables only)"
        line = f"images: {n:,} of {total:,} studies have a folder in {self.images_dir.name}/"
        if self.partial and n:
            line += " (a partial download: the commands use those)"
        if self.unknown_folders:
            line += f"; {len(self.unknown_folders):,} folder(s) of studies not in the tables"
        return line

    def to_dict(self) -> dict[str, Any]:
        return {
            "images_dir": str(self.images_dir),
            "with_images": len(self.with_images),
            "without_images": len(self.without_images),
            "unknown_folders": list(self.unknown_folders),
        }


def image_coverage(tables: RsnaTables) -> ImageCoverage:
    """Which studies of `tables` have an image folder (`<root>/<split>_images/<study_id>/`)."""
    images = tables.root / f"{tables.split}_images"
    listed = set(
        tables.labels["study_id"] if tables.labels is not None else tables.series["study_id"]
    )
    folders = (
        {int(d.name) for d in images.iterdir() if d.is_dir() and d.name.isdigit()}
        if images.is_dir()
        else set()
    )
    return ImageCoverage(
        images,
        tuple(sorted(listed & folders)),
        tuple(sorted(listed - folders)),
        tuple(sorted(folders - listed)),
    )


@dataclass
class ValidationReport:
    """Problems found by :func:`validate_tables` (empty when the tables are clean), and which
    studies have images."""

    root: str
    split: str
    problems: list[Problem] = field(default_factory=list)
    images: ImageCoverage | None = None

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there are no errors (warnings allowed)."""
        return not self.errors

    def find(self, kind: str) -> Problem | None:
        """The problem of this kind, or None."""
        return next((p for p in self.problems if p.kind == kind), None)

    def summary(self) -> str:
        """Plain-text summary: one line per problem, then the verdict."""
        lines = [
            f"{self.root} ({self.split}): {len(self.errors)} error(s), "
            f"{len(self.warnings)} warning(s)"
        ]
        for p in self.problems:
            example = f" e.g. {p.examples[0]}" if p.examples else ""
            lines.append(f"  {p.severity:7s} {p.kind}: {p.count}{example}")
        if self.images is not None:
            lines.append(self.images.summary())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "root": self.root,
            "split": self.split,
            "ok": self.ok,
            "problems": [
                {"kind": p.kind, "count": p.count, "severity": p.severity, "examples": p.examples}
                for p in self.problems
            ],
            "images": None if self.images is None else self.images.to_dict(),
        }


def validate_tables(tables: RsnaTables) -> ValidationReport:
    """Check the tables for content problems (see the `kind` names below); never raises on content.

    Errors: unknown severity/condition/level strings, duplicate rows, coordinates on a series that
    is not described, coordinates with NaN or negative x/y. Warnings (real-world mess the pipeline
    copes with): blank labels, coordinates on another series type than `SERIES_OF_CONDITION` says,
    studies lacking a series type, studies present in one table only, coordinates of blank targets,
    more than one coordinate for the same (study, condition, level). `images` says which studies
    have an image folder (not a problem: downloads are often partial).
    """
    report = ValidationReport(
        root=str(tables.root), split=tables.split, images=image_coverage(tables)
    )
    add = report.problems.append
    for problem in _series_problems(tables.series):
        add(problem)
    if tables.labels is not None:
        for problem in _label_problems(tables.labels, tables.series):
            add(problem)
    if tables.coordinates is not None:
        for problem in _coordinate_problems(tables.coordinates, tables.labels):
            add(problem)
    return report


def _series_problems(series: pd.DataFrame) -> list[Problem]:
    out = [
        _problem(
            "duplicate series rows", _dup_examples(series, ["study_id", "series_id"]), "error"
        ),
        _problem(
            "unknown series description",
            [
                f"study {r.study_id} series {r.series_id}: {r.series_description!r}"
                for r in series[~series["series_description"].isin(SERIES_TYPES)].itertuples()
            ],
            "warning",
        ),
    ]
    types_per_study = series.groupby("study_id")["series_description"].agg(set)
    for series_type in SERIES_TYPES:
        lacking = types_per_study[types_per_study.map(lambda s, t=series_type: t not in s)]
        out.append(
            _problem(
                f"studies without {series_type}", [f"study {s}" for s in lacking.index], "warning"
            )
        )
    return [p for p in out if p.count]


def _label_problems(labels: pd.DataFrame, series: pd.DataFrame) -> list[Problem]:
    values = labels[list(TARGET_COLUMNS)]
    blank = values.isna()
    unknown = ~blank & ~values.isin(SEVERITIES)
    out = [
        _problem("unknown severity", _cell_examples(labels, unknown), "error"),
        _problem("duplicate label rows", _dup_examples(labels, ["study_id"]), "error"),
        _problem("blank labels (not scored)", _cell_examples(labels, blank), "warning"),
        _problem(
            "labelled studies without series",
            [f"study {s}" for s in sorted(set(labels["study_id"]) - set(series["study_id"]))],
            "warning",
        ),
        _problem(
            "studies with series but no labels",
            [f"study {s}" for s in sorted(set(series["study_id"]) - set(labels["study_id"]))],
            "warning",
        ),
    ]
    return [p for p in out if p.count]


def _coordinate_problems(coords: pd.DataFrame, labels: pd.DataFrame | None) -> list[Problem]:
    def where(frame: pd.DataFrame) -> list[str]:
        return [
            f"study {r.study_id} series {r.series_id} instance {r.instance_number} "
            f"{r.condition} {r.level}"
            for r in frame.itertuples()
        ]

    described = coords["series_description"].notna() if "series_description" in coords else None
    expected = coords["condition"].map(SERIES_OF_CONDITION)
    xy = coords[["x", "y"]]
    key = ["study_id", "condition", "level"]
    out = [
        _problem(
            "unknown condition in coordinates",
            where(coords[~coords["condition"].isin(CONDITIONS)]),
            "error",
        ),
        _problem(
            "unknown level in coordinates", where(coords[~coords["level"].isin(LEVELS)]), "error"
        ),
        _problem(
            "duplicate coordinate rows",
            _dup_examples(coords, ["study_id", "series_id", "instance_number", *key[1:]]),
            "error",
        ),
        _problem(
            "coordinates with NaN or negative x/y",
            where(coords[xy.isna().any(axis=1) | (xy < 0).any(axis=1)]),
            "error",
        ),
        _problem(
            "several coordinates for one study/condition/level",
            _dup_examples(
                coords.drop_duplicates(["study_id", "series_id", "instance_number", *key[1:]]), key
            ),
            "warning",
        ),
    ]
    if described is not None:
        wrong = described & expected.notna() & (coords["series_description"] != expected)
        out += [
            _problem(
                "coordinates on a series not in the descriptions",
                where(coords[~described]),
                "error",
            ),
            _problem(
                "coordinates on an unexpected series type",
                [
                    f"{e} (on {d}, expected {x})"
                    for e, d, x in zip(
                        where(coords[wrong]),
                        coords.loc[wrong, "series_description"],
                        expected[wrong],
                    )
                ],
                "warning",
            ),
        ]
    if labels is not None:
        out.append(
            _problem(
                "coordinates of blank or unlabelled targets",
                where(_coordinates_without_label(coords, labels)),
                "warning",
            )
        )
    return [p for p in out if p.count]


def _coordinates_without_label(coords: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Coordinate rows whose (study, condition, level) has no severity in `labels`."""
    long = labels.melt(id_vars="study_id", value_vars=list(TARGET_COLUMNS), value_name="severity")
    long = long.drop_duplicates(["study_id", "variable"])
    column = coords["condition"].astype(str) + "_" + coords["level"].astype(str)
    merged = pd.DataFrame({"study_id": coords["study_id"], "variable": column}).merge(
        long, on=["study_id", "variable"], how="left"
    )
    return coords[merged["severity"].isna().to_numpy()]


def _problem(kind: str, examples: list[str], severity: Literal["error", "warning"]) -> Problem:
    return Problem(
        kind=kind, count=len(examples), examples=examples[:_MAX_EXAMPLES], severity=severity
    )


def _dup_examples(frame: pd.DataFrame, key: list[str]) -> list[str]:
    """One example per surplus row whose `key` repeats an earlier row."""
    dups = frame[frame.duplicated(key)]
    return [", ".join(f"{k}={getattr(r, k)}" for k in key) for r in dups.itertuples()]


def _cell_examples(labels: pd.DataFrame, mask: pd.DataFrame) -> list[str]:
    rows, cols = np.nonzero(mask.to_numpy())
    studies = labels["study_id"].to_numpy()
    values = mask.columns
    out = []
    for r, c in zip(rows, cols):
        value = labels[values[c]].iat[r]
        out.append(f"study {studies[r]} {values[c]}" + ("" if pd.isna(value) else f": {value!r}"))
    return out


# --- parsing helpers -----------------------------------------------------------------------------


def _existing(root: Path, *names: str) -> Path:
    """The first of `names` that exists in `root`, else DataError naming what was looked for."""
    for name in names:
        if (root / name).is_file():
            return root / name
    raise DataError(
        f"{root / names[0]}: file not found"
        + (f" (nor {', '.join(names[1:])})" if len(names) > 1 else "")
    )


def _read_csv(path: str | Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """Read a CSV as strings and check that it has `columns`."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: not a readable CSV ({reason})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    _require_columns(frame, columns, str(path))
    return frame


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{what}: missing column(s) {', '.join(missing)}")


def _integers(values: pd.Series, path: str | Path, column: str) -> pd.Series:
    """Parse a column of integer ids; DataError naming file, column and a bad value otherwise."""
    numbers = pd.to_numeric(values.str.strip(), errors="coerce")
    bad = numbers.isna() | (numbers != np.round(numbers))
    if bad.any():
        raise DataError(
            f"{path}: column {column} must hold integers; row {int(bad.idxmax()) + 2} "
            f"has {values[bad].iloc[0]!r}"
        )
    return numbers.astype(np.int64)


def _floats(values: pd.Series, path: str | Path, column: str) -> pd.Series:
    """Parse a float column where blank means NaN; DataError on text that is not a number."""
    numbers = pd.to_numeric(values.str.strip(), errors="coerce")
    bad = numbers.isna() & values.notna()
    if bad.any():
        raise DataError(
            f"{path}: column {column} must hold numbers; row {int(bad.idxmax()) + 2} "
            f"has {values[bad].iloc[0]!r}"
        )
    return numbers.astype(np.float64)


def _name(value: Any, convert: Callable[[str], str]) -> Any:
    """CSV label -> snake_case name with `convert` ('Normal/Mild' -> 'normal_mild'); blank -> NaN;
    unknown text is kept, stripped, as written (for validation to report)."""
    if pd.isna(value) or not str(value).strip():
        return np.nan
    try:
        return convert(str(value))
    except ValueError:
        return str(value).strip()
